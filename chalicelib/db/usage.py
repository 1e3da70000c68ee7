"""Per-user counters: the monthly quota and the per-minute request rate limit."""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute

from chalicelib.db.base import BaseModel, table_name


class UsageModel(BaseModel):
    """A counter for one user and one period. Hash ``user_id``, range ``period``.

    ``period`` is ``"YYYY-MM"`` for the monthly image quota (and the month's cost), or
    ``"rate#YYYY-MM-DDTHH:MM"`` / ``"mut#YYYY-MM-DDTHH:MM"`` for the fixed-window rate limits (those
    items expire through DynamoDB TTL on ``expires_at``), or ``"collection#{name}"``
    for the number of images in one of the user's collections (changed only together
    with the image items, see ``chalicelib.db.images``).
    """

    class Meta(BaseModel.Meta):
        table_name = table_name("usage")

    user_id = UnicodeAttribute(hash_key=True)
    period = UnicodeAttribute(range_key=True)
    count = NumberAttribute(default=0)
    cost_usd = NumberAttribute(null=True)  # monthly items: upstream cost of the stored images, USD
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
