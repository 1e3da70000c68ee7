"""Image metadata and per-user prompt history."""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, LocalSecondaryIndex

from chalicelib.db.base import BaseModel, table_name


class ImagesByCollection(GlobalSecondaryIndex):
    """GSI ``by_collection``: hash ``user_collection`` (``"{user_id}#{collection}"``), range ``image_id``."""

    class Meta:
        index_name = "by_collection"
        projection = AllProjection()

    user_collection = UnicodeAttribute(hash_key=True)
    image_id = UnicodeAttribute(range_key=True)


class ImageModel(BaseModel):
    """One stored image. Hash ``user_id``, range ``image_id`` (a ULID, so a
    descending query returns newest first).

    The object lives at ``s3_key`` (original, metadata stripped) and ``thumb_key``
    (WebP, 256 px on the long side) in the images bucket.
    """

    class Meta(BaseModel.Meta):
        table_name = table_name("images")

    user_id = UnicodeAttribute(hash_key=True)
    image_id = UnicodeAttribute(range_key=True)
    prompt = UnicodeAttribute()
    negative_prompt = UnicodeAttribute(null=True)
    model = UnicodeAttribute()
    width = NumberAttribute()  # pixels
    height = NumberAttribute()  # pixels
    steps = NumberAttribute(null=True)  # None: the model takes no steps, or the upstream's default
    seed = NumberAttribute()
    guidance = NumberAttribute(null=True)
    cost_usd = NumberAttribute(null=True)  # what the generation cost upstream, USD (catalog price)
    key_id = UnicodeAttribute(null=True)  # sha256 prefix of the Together key used, never the key
    job_id = UnicodeAttribute(null=True)
    item_id = UnicodeAttribute(null=True)
    collection = UnicodeAttribute(null=True)
    user_collection = UnicodeAttribute(null=True)
    s3_key = UnicodeAttribute()
    thumb_key = UnicodeAttribute()
    bytes = NumberAttribute()  # size of the original object in bytes
    content_type = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()
    upstream_ms = NumberAttribute(null=True)  # Together call latency, milliseconds
    # DynamoDB TTL backstop for the retention sweep (IMAGE_RETENTION_DAYS); None keeps it forever.
    expires_at = TTLAttribute(null=True)

    by_collection = ImagesByCollection()


class PromptsByLastUsed(LocalSecondaryIndex):
    """LSI ``by_last_used``: the user's prompts ordered by ``last_used`` (epoch ms)."""

    class Meta:
        index_name = "by_last_used"
        projection = AllProjection()

    user_id = UnicodeAttribute(hash_key=True)
    last_used = NumberAttribute(range_key=True)


class PromptHistoryModel(BaseModel):
    """A user's recently used prompts. Hash ``user_id``, range ``prompt_key``
    (sha256 prefix of the prompt, so a re-used prompt updates one item)."""

    class Meta(BaseModel.Meta):
        table_name = table_name("prompts")

    user_id = UnicodeAttribute(hash_key=True)
    prompt_key = UnicodeAttribute(range_key=True)
    prompt = UnicodeAttribute()
    last_used = NumberAttribute()  # epoch milliseconds
    uses = NumberAttribute(default=0)

    by_last_used = PromptsByLastUsed()
