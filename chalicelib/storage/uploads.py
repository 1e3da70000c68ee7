"""S3 side of uploads: object keys, presigned POST policies, bounded and ranged reads.

Keys (all in the images bucket):

- ``uploads/{user_id}/{upload_id}``: where the client POSTs the file (the source). The
  bucket notifies the uploads queue of every object created under :data:`SOURCE_PREFIX`.
  A source is deleted once verified.
- ``users/{user_id}/uploads/{upload_id}.{ext}``: the verified, metadata-stripped copy.
- ``users/{user_id}/uploads/{upload_id}.thumb.webp``: its thumbnail.

The presigned POST's policy pins the bucket, the key, the ``Content-Type`` and a
``content-length-range`` of 1 .. the announced size, and expires after
``UPLOAD_POST_EXPIRES_SECONDS``. S3 enforces all of it; the worker still re-checks every
object (size, real type by decoding, key) because a stand-in S3 may not.
Sources: Amazon S3 API reference, "Browser-based uploads using POST (AWS Signature
Version 4)" and "Creating a POST policy"; boto3 ``S3.Client.generate_presigned_post``.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

from chalicelib.aws import client
from chalicelib.settings import get_settings

SOURCE_PREFIX = "uploads/"
SOURCE_KEY_RE = re.compile(r"^uploads/(?P<user_id>[^/]+)/(?P<upload_id>[0-9A-HJKMNP-TV-Z]{26})$")
RANGE_CHUNK_BYTES = 4 * 1024 * 1024  # one ranged GET when reading a ZIP


def source_key(user_id: str, upload_id: str) -> str:
    """Where the client uploads the file."""
    return f"{SOURCE_PREFIX}{user_id}/{upload_id}"


def stored_key(user_id: str, upload_id: str, ext: str) -> str:
    """The verified, metadata-stripped copy."""
    return f"users/{user_id}/uploads/{upload_id}.{ext}"


def thumb_key(user_id: str, upload_id: str) -> str:
    """The verified copy's WebP thumbnail."""
    return f"users/{user_id}/uploads/{upload_id}.thumb.webp"


def parse_source_key(key: str) -> tuple[str, str] | None:
    """``(user_id, upload_id)`` of a source key, or None when ``key`` is not one."""
    match = SOURCE_KEY_RE.match(key)
    return (match["user_id"], match["upload_id"]) if match else None


@dataclass(frozen=True)
class PresignedPost:
    """A presigned POST: the client sends ``fields`` plus a ``file`` part to ``url``
    as ``multipart/form-data``; ``expires_in`` is seconds."""

    url: str
    fields: dict[str, str]
    expires_in: int


def presign_post(key: str, content_type: str, max_bytes: int) -> PresignedPost:
    """Sign a POST policy for exactly ``key``, ``content_type`` and 1..``max_bytes`` bytes.

    Objects are stored SSE-S3 encrypted (the field and its condition are part of the policy).
    """
    expires = get_settings().upload_post_expires_seconds
    fields = {"Content-Type": content_type, "x-amz-server-side-encryption": "AES256"}
    conditions: list[Any] = [
        {"Content-Type": content_type},
        {"x-amz-server-side-encryption": "AES256"},
        ["content-length-range", 1, int(max_bytes)],
    ]
    signed = client("s3").generate_presigned_post(
        get_settings().images_bucket, key, Fields=fields, Conditions=conditions, ExpiresIn=expires
    )
    return PresignedPost(signed["url"], dict(signed["fields"]), expires)


def head(key: str) -> dict[str, Any] | None:
    """HeadObject of ``key`` (``ContentLength`` bytes, ``ContentType``), or None when missing."""
    from botocore.exceptions import ClientError

    try:
        return client("s3").head_object(Bucket=get_settings().images_bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def read_bounded(key: str, max_bytes: int) -> bytes:
    """The object's bytes, reading at most ``max_bytes + 1`` (the caller compares the length).

    Raises:
        botocore.exceptions.ClientError: the object is missing or unreadable.
    """
    response = client("s3").get_object(Bucket=get_settings().images_bucket, Key=key, Range=f"bytes=0-{max_bytes}")
    body = response["Body"]
    try:
        return body.read(max_bytes + 1)
    finally:
        body.close()


class RangedObject(io.RawIOBase):
    """A read-only, seekable file over one S3 object, read with ranged GETs.

    Memory stays bounded whatever the object's size: wrap it in
    ``io.BufferedReader(obj, RANGE_CHUNK_BYTES)`` and each buffer fill is one GET
    ``Range: bytes=a-b`` of at most the requested length. ``zipfile`` only needs
    ``seek``/``tell``/``read``. Source: RFC 9110 section 14 (range requests), S3 GetObject ``Range``.

    Args:
        key: the object key in the images bucket.
        size: its length in bytes (from HeadObject).
    """

    def __init__(self, key: str, size: int) -> None:
        super().__init__()
        self.key = key
        self.size = int(size)
        self._pos = 0
        self.requests = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), RANGE_CHUNK_BYTES, self.size - self._pos)
        if want <= 0:
            return 0
        response = client("s3").get_object(
            Bucket=get_settings().images_bucket, Key=self.key, Range=f"bytes={self._pos}-{self._pos + want - 1}"
        )
        body = response["Body"]
        try:
            data = body.read(want)
        finally:
            body.close()
        self.requests += 1
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)


def open_ranged(key: str, size: int) -> io.BufferedReader:
    """A buffered, seekable reader over ``key`` (see :class:`RangedObject`)."""
    return io.BufferedReader(RangedObject(key, size), buffer_size=RANGE_CHUNK_BYTES)
