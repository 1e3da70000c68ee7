"""Per-user counters: the monthly quota and the per-minute request rate limit."""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute

from chalicelib.db.base import BaseModel, table_name


class UsageModel(BaseModel):
    """A counter for one user and one period. Hash ``user_id``, range ``period``.

    ``period`` is ``"YYYY-MM"`` for the monthly image quota (and the month's cost, and the
    per-minute rate-limit window: ``window`` is the current minute ``"YYYY-MM-DDTHH:MM"``,
    ``writes`` and ``generations`` what was counted in it), ``"webhook#<n>"`` for the webhook
    delivery window (expiring through DynamoDB TTL on ``expires_at``), or ``"collection#{name}"``
    for the number of images in one of the user's collections (changed only together
    with the image items, see ``chalicelib.db.images``).
    """

    class Meta(BaseModel.Meta):
        table_name = table_name("usage")

    user_id = UnicodeAttribute(hash_key=True)
    period = UnicodeAttribute(range_key=True)
    count = NumberAttribute(default=0)
    cost_usd = NumberAttribute(null=True)  # monthly items: upstream cost of the stored images, USD
    window = UnicodeAttribute(null=True)  # monthly items: the rate-limit minute, "YYYY-MM-DDTHH:MM" (UTC)
    writes = NumberAttribute(null=True)  # state-changing requests counted in ``window``
    generations = NumberAttribute(null=True)  # generation requests counted in ``window``
    expires_at = TTLAttribute(null=True)


class UserModel(BaseModel):
    """Per-user settings: the webhook signing secret. Hash ``user_id``.

    ``webhook_secret_sealed`` is the secret's KMS envelope (``chalicelib.crypto.envelope``);
    ``webhook_secret`` is the legacy plaintext shape, read once and removed.
    """

    class Meta(BaseModel.Meta):
        table_name = table_name("users")

    user_id = UnicodeAttribute(hash_key=True)
    webhook_secret = UnicodeAttribute(null=True)
    webhook_secret_sealed = UnicodeAttribute(null=True)
