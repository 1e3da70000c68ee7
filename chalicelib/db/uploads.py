"""User uploads (images in): one item per uploaded image or ZIP.

Table ``uploads`` (PAY_PER_REQUEST, name ``{TABLE_PREFIX}uploads``): :class:`UploadModel`,
hash ``user_id``, range ``upload_id`` (a ULID, so a descending query lists newest first).
GSI ``by_collection`` (hash ``user_collection`` = ``"{user_id}#{collection}"``, range
``upload_id``) lists one collection.

The state machine lives in ``chalicelib.services.uploads``:
``pending`` (presigned POST handed out; nothing verified) → ``ready`` (verified: a
metadata-stripped copy and a thumbnail are stored) or ``rejected`` (with a reason). A ZIP
goes ``pending`` → ``processing`` (a worker holds a lease and unpacks it) → ``ready`` (with
per-file ``results``) or ``rejected``.
"""

from __future__ import annotations

from pynamodb.attributes import JSONAttribute, NumberAttribute, TTLAttribute, UnicodeAttribute
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex

from chalicelib.db.base import BaseModel, table_name

PENDING = "pending"
PROCESSING = "processing"
READY = "ready"
REJECTED = "rejected"
UPLOAD_STATES = (PENDING, PROCESSING, READY, REJECTED)

KIND_IMAGE = "image"
KIND_ZIP = "zip"


class UploadsByCollection(GlobalSecondaryIndex):
    """GSI ``by_collection``: hash ``user_collection`` (``"{user_id}#{collection}"``), range ``upload_id``."""

    class Meta:
        index_name = "by_collection"
        projection = AllProjection()

    user_collection = UnicodeAttribute(hash_key=True)
    upload_id = UnicodeAttribute(range_key=True)


class UploadModel(BaseModel):
    """One upload: an image, or a ZIP of images that the worker unpacks.

    Attributes (units):
        kind: ``image`` | ``zip``.
        status: ``pending`` | ``processing`` (ZIPs only) | ``ready`` | ``rejected``.
        filename: the client's file name (display only; never part of an object key).
        declared_type / declared_bytes: what ``POST /v1/uploads`` announced (MIME type, bytes).
        source_key: where the client POSTs the file (``uploads/{user_id}/{upload_id}``);
            None for images unpacked from a ZIP. Deleted once verified.
        s3_key / thumb_key: the metadata-stripped copy and its WebP thumbnail (ready images).
        content_type / width / height: the verified image's real type (by decoding) and pixels.
        stored_bytes: bytes charged to the storage quota (the reservation while pending;
            the stored copy plus thumbnail once ready; 0 once rejected).
        parent_id: the ZIP an image was unpacked from.
        error_code / error_message: why it was rejected.
        results: a ZIP's per-file results, ``[{"name", "status", "upload_id"?, "error"?}]``.
        lease_until: epoch seconds; a ZIP being unpacked is not taken by another worker before.
        created_at / verified_at: epoch seconds.
        expires_at: DynamoDB TTL backstop (retention), None to keep.
    """

    class Meta(BaseModel.Meta):
        table_name = table_name("uploads")

    user_id = UnicodeAttribute(hash_key=True)
    upload_id = UnicodeAttribute(range_key=True)
    kind = UnicodeAttribute(default=KIND_IMAGE)
    status = UnicodeAttribute(default=PENDING)
    filename = UnicodeAttribute(null=True)
    declared_type = UnicodeAttribute(null=True)
    declared_bytes = NumberAttribute(default=0)
    collection = UnicodeAttribute(null=True)
    user_collection = UnicodeAttribute(null=True)
    source_key = UnicodeAttribute(null=True)
    s3_key = UnicodeAttribute(null=True)
    thumb_key = UnicodeAttribute(null=True)
    content_type = UnicodeAttribute(null=True)
    width = NumberAttribute(null=True)  # pixels
    height = NumberAttribute(null=True)  # pixels
    stored_bytes = NumberAttribute(default=0)
    parent_id = UnicodeAttribute(null=True)
    error_code = UnicodeAttribute(null=True)
    error_message = UnicodeAttribute(null=True)
    results = JSONAttribute(null=True)
    lease_until = NumberAttribute(null=True)
    created_at = NumberAttribute()
    verified_at = NumberAttribute(null=True)
    expires_at = TTLAttribute(null=True)

    by_collection = UploadsByCollection()
