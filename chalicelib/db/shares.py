"""Share links and the public share pages' rate-limit counters."""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex

from chalicelib.db.base import BaseModel, table_name


class SharesByUser(GlobalSecondaryIndex):
    """GSI ``by_user``: hash ``user_id``, range ``share_id`` (a ULID: newest last)."""

    class Meta:
        index_name = "by_user"
        projection = AllProjection()

    user_id = UnicodeAttribute(hash_key=True)
    share_id = UnicodeAttribute(range_key=True)


class ShareModel(BaseModel):
    """One share link. Hash ``code_hash`` (sha256 hex of the link's code), so the public
    page is one strongly consistent key operation; the owner's links are on ``by_user``.

    ``target_type`` is ``"image"`` (``target_id`` an image id) or ``"collection"``
    (``target_id`` a collection name). A revoked link is deleted, never flagged.
    ``expires_at`` is the link's end (epoch seconds) and DynamoDB's TTL attribute: the
    cleanup sweep deletes expired links, TTL is the backstop.
    """

    class Meta(BaseModel.Meta):
        table_name = table_name("shares")

    code_hash = UnicodeAttribute(hash_key=True)
    share_id = UnicodeAttribute()
    user_id = UnicodeAttribute()
    code = UnicodeAttribute()  # shown to the owner only (GET /v1/shares), never logged
    target_type = UnicodeAttribute()
    target_id = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()
    expires_at = TTLAttribute()
    views = NumberAttribute(default=0)
    last_viewed_at = UTCDateTimeAttribute(null=True)

    by_user = SharesByUser()


class ShareHitModel(BaseModel):
    """A fixed one-minute window counter for the public share pages. Hash ``bucket``:
    ``"ip#{address}#{window}"`` or ``"code#{code_hash prefix}#{window}"``; items expire by TTL."""

    class Meta(BaseModel.Meta):
        table_name = table_name("share_hits")

    bucket = UnicodeAttribute(hash_key=True)
    count = NumberAttribute(default=0)
    expires_at = TTLAttribute(null=True)
