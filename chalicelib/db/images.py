"""Image metadata and per-user prompt history; the writes that keep collection counters.

A collection's image count is a counter item in the usage table (``UsageModel``, range
key ``"collection#{name}"``), changed in the same transaction as the image item it
counts, so ``GET /v1/collections`` is one Query and the counts never drift from the
items (except for DynamoDB TTL deletions, which run no code; the retention sweep
deletes images a day before their TTL backstop).
"""

from __future__ import annotations

import uuid
from typing import Any

from pynamodb.attributes import JSONAttribute, NumberAttribute, TTLAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.exceptions import DeleteError, TransactWriteError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, LocalSecondaryIndex
from pynamodb.transactions import TransactWrite

from chalicelib.db.base import BaseModel, is_condition_failure, table_name
from chalicelib.db.usage import UsageModel


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

    ``inputs`` records what an edit or multi-reference generation was given, so it can be
    reproduced: ``{"image": {"id", "source", "sha256"}?, "references": [{...}],
    "mask": {...}?}`` (``source`` ``upload`` | ``image``, ``sha256`` hex digest of the
    bytes handed upstream); None for text-to-image.
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
    inputs = JSONAttribute(null=True)  # image inputs (ids, sha256), see the class docstring
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


#: ``UsageModel.period`` prefix of a collection's image counter: ``"collection#{name}"``.
COLLECTION_COUNTER_PREFIX = "collection#"


def collection_counter_period(collection: str) -> str:
    """The ``UsageModel`` range key that counts the images of ``collection``."""
    return f"{COLLECTION_COUNTER_PREFIX}{collection}"


def _counter_add(transaction: TransactWrite, user_id: str, collection: str, n: int) -> None:
    transaction.update(UsageModel(user_id, collection_counter_period(collection)), actions=[UsageModel.count.add(n)])


def save_new_image(item: ImageModel) -> None:
    """Write a new image item (``attribute_not_exists(image_id)``) and, when it is in a
    collection, add 1 to that collection's counter, atomically (one TransactWriteItems
    with a ClientRequestToken, so a retry of a committed call is idempotent for 10
    minutes; source: Amazon DynamoDB developer guide, "Amazon DynamoDB Transactions").

    Raises:
        PutError / TransactWriteError: the item exists already (see :func:`is_condition_failure`)
        or DynamoDB failed; nothing was written then.
    """
    condition = ImageModel.image_id.does_not_exist()
    if not item.collection:
        item.save(condition=condition)
        return
    connection = ImageModel._get_connection().connection
    with TransactWrite(connection=connection, client_request_token=uuid.uuid4().hex) as transaction:
        transaction.save(item, condition=condition)
        _counter_add(transaction, item.user_id, item.collection, 1)


def delete_image_item(user_id: str, image_id: str, collection: str | None, condition: Any) -> bool:
    """Delete one image item under ``condition`` and take 1 off its collection's counter,
    atomically (one transaction when ``collection`` is set).

    Returns:
        True when this call removed it; False when ``condition`` failed (gone already, or
        no longer matching), in which case the counter is unchanged.

    Raises:
        DeleteError / TransactWriteError: any other DynamoDB failure.
    """
    try:
        if not collection:
            ImageModel(user_id, image_id).delete(condition=condition)
            return True
        connection = ImageModel._get_connection().connection
        with TransactWrite(connection=connection, client_request_token=uuid.uuid4().hex) as transaction:
            transaction.delete(ImageModel(user_id, image_id), condition=condition & ImageModel.collection.exists())
            _counter_add(transaction, user_id, collection, -1)
        return True
    except (DeleteError, TransactWriteError) as exc:
        if is_condition_failure(exc):
            return False
        raise


def collection_counts(user_id: str) -> dict[str, int]:
    """``{collection: image_count}`` of the user's non-empty collections: one Query of the
    ``collection#`` counters (a page of the user's usage partition)."""
    found: dict[str, int] = {}
    for counter in UsageModel.query(
        user_id,
        range_key_condition=UsageModel.period.startswith(COLLECTION_COUNTER_PREFIX),
        consistent_read=True,
    ):
        n = int(counter.count or 0)
        if n > 0:
            found[counter.period[len(COLLECTION_COUNTER_PREFIX) :]] = n
    return found
