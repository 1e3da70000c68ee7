"""Per-user counters: the monthly quota and the per-minute request rate limit."""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute

from chalicelib.db.base import BaseModel, table_name


class UsageModel(BaseModel):
    """A counter for one user and one period. Hash ``user_id``, range ``period``.

    The admin page's spend per upstream key uses the same shape under a hash no user id
    takes: ``("@spend#YYYY-MM", key id)`` (a shared key's id, or ``"own:<key id>"``).

    ``period`` is ``"YYYY-MM"`` for the monthly image quota (and the month's cost, the
    estimates held against the monthly budget, and the per-minute rate-limit window:
    ``window`` is the current minute ``"YYYY-MM-DDTHH:MM"``, ``writes`` and ``generations``
    what was counted in it), ``"spend#YYYY-MM#<source>#<model>"`` for the month's cost of one
    model (``source`` ``shared`` or ``own``), ``"webhook#<n>"`` for the webhook delivery window
    (expiring through DynamoDB TTL on ``expires_at``), or ``"collection#{name}"``
    for the number of images in one of the user's collections (changed only together
    with the image items, see ``chalicelib.db.images``).
    """

    class Meta(BaseModel.Meta):
        table_name = table_name("usage")

    user_id = UnicodeAttribute(hash_key=True)
    period = UnicodeAttribute(range_key=True)
    count = NumberAttribute(default=0)
    cost_usd = NumberAttribute(null=True)  # monthly items: upstream cost of the stored images, USD
    committed_usd = NumberAttribute(null=True)  # monthly items: estimated USD held against MONTHLY_BUDGET_USD
    window = UnicodeAttribute(null=True)  # monthly items: the rate-limit minute, "YYYY-MM-DDTHH:MM" (UTC)
    writes = NumberAttribute(null=True)  # state-changing requests counted in ``window``
    generations = NumberAttribute(null=True)  # generation requests counted in ``window``
    expires_at = TTLAttribute(null=True)


class UserModel(BaseModel):
    """Per-user settings: the webhook signing secret and the user's own Together key.
    Hash ``user_id``.

    ``webhook_secret_sealed`` is the secret's KMS envelope (``chalicelib.crypto.envelope``);
    ``webhook_secret`` is the legacy plaintext shape, read once and removed.
    ``together_key_sealed`` is the user's own Together key's KMS envelope (never the key);
    ``together_key_id`` its sha256 prefix, ``together_key_last4`` its last four
    characters, ``together_key_verified_at`` when ``GET /v1/models`` accepted it (epoch s).
    """

    class Meta(BaseModel.Meta):
        table_name = table_name("users")

    user_id = UnicodeAttribute(hash_key=True)
    webhook_secret = UnicodeAttribute(null=True)
    webhook_secret_sealed = UnicodeAttribute(null=True)
    together_key_sealed = UnicodeAttribute(null=True)
    together_key_id = UnicodeAttribute(null=True)
    together_key_last4 = UnicodeAttribute(null=True)
    together_key_verified_at = NumberAttribute(null=True)
