"""Uploads (images in): presigned POSTs, listing, reading, deleting, use by generation.

``POST /v1/uploads`` creates a ``pending`` upload and answers an S3 presigned POST: the
client sends the file straight to S3, never through Lambda. S3 notifies the uploads
queue; the worker (``chalicelib.services.upload_worker``) verifies the object and the
upload ends ``ready`` (a metadata-stripped copy and a thumbnail stored) or ``rejected``
with a reason; a ZIP (``content_type: application/zip``) is unpacked into one upload per
image in the same collection. :func:`ready_upload` verifies on first use when the
notification has not been processed yet, and :func:`upstream_url` is what generation
hands upstream: a short-lived presigned GET of the stripped copy, never the original.

Every route is owner-only: another user's upload is a 404. The storage quota is kept
by ``chalicelib.services.storage_quota`` in the same transactions as the items.
"""

from __future__ import annotations

import functools
import re
import sys
import time
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite
from ulid import ULID

from chalicelib.db import UploadModel
from chalicelib.db.uploads import KIND_IMAGE, KIND_ZIP, PENDING, READY, REJECTED
from chalicelib.errors import DomainError, ErrorCode, NotFound, ValidationError
from chalicelib.services import image_inputs, storage_quota
from chalicelib.services.images import ULID_RE, check_unknown_fields, parse_collection
from chalicelib.services.pagination import owner_page
from chalicelib.settings import get_settings
from chalicelib.storage import imaging, objects
from chalicelib.storage import uploads as upload_store
from chalicelib.timefmt import iso8601

CREATE_FIELDS = frozenset({"filename", "content_type", "size_bytes", "collection"})
ZIP_CONTENT_TYPES = ("application/zip", "application/x-zip-compressed")  # the latter: Windows browsers
MAX_FILENAME_CHARS = 255


def _class_body(keep: Callable[[int], bool]) -> str:
    """The code points ``keep`` admits, as an ECMA-262 class body of ranges (BMP as
    ``\\uXXXX``, astral code points as themselves, read with Unicode semantics)."""
    ranges: list[tuple[int, int]] = []
    for cp in range(sys.maxunicode + 1):
        if keep(cp):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))

    def esc(cp: int) -> str:
        return chr(cp) if cp > 0xFFFF else f"\\u{cp:04x}"

    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges)


#: White space a file name's last segment may not consist of alone.
_BLANK_CHARS = frozenset("\x20\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | frozenset(
    chr(c) for c in range(0x2000, 0x200B)
)
_SLASHES = frozenset("/\\")
_SEGMENT_SPLIT = re.compile(r"[/\\]")


@functools.cache
def filename_pattern() -> str:
    """:data:`FILENAME_PATTERN`, built on first use: it walks every code point for Unicode
    category C (about a second of CPU), which no request but the OpenAPI check needs.

    The classes list the characters allowed (every category but C) rather than negating
    category C: the same set over all code points, and about 150,000 code points to
    enumerate for a generator such as Hypothesis instead of about 970,000.
    """
    allowed = [unicodedata.category(chr(cp))[0] != "C" for cp in range(sys.maxunicode + 1)]
    slashes = {ord(c) for c in _SLASHES}
    slashes_and_blanks = slashes | {ord(c) for c in _BLANK_CHARS}
    shown = _class_body(lambda cp: allowed[cp])
    unslashed = _class_body(lambda cp: allowed[cp] and cp not in slashes)
    visible = _class_body(lambda cp: allowed[cp] and cp not in slashes_and_blanks)
    return rf"^[{shown}]*[{visible}][{unslashed}]*$"


def __getattr__(name: str) -> str:
    """``FILENAME_PATTERN``: a file name as sent (the document's ``pattern``): no character of
    Unicode category C, and its last path segment (after the last ``/`` or ``\\``) holds a
    character that is not white space. Computed lazily (:func:`filename_pattern`)."""
    if name == "FILENAME_PATTERN":
        return filename_pattern()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def filename_matches(value: str) -> bool:
    """True when ``value`` matches :data:`FILENAME_PATTERN`, checked character by character
    (the same rule without building the pattern)."""
    if any(unicodedata.category(c)[0] == "C" for c in value):
        return False
    return any(c not in _BLANK_CHARS for c in _SEGMENT_SPLIT.split(value)[-1])


def parse_filename(value: Any) -> str:
    """A display file name: 1-255 characters as sent matching :data:`FILENAME_PATTERN`;
    returns its last path segment, trimmed.

    Raises:
        ValidationError: 400 naming ``filename``.
    """
    if not isinstance(value, str) or not value:
        raise ValidationError("filename is required", field="filename")
    if len(value) > MAX_FILENAME_CHARS or not filename_matches(value):
        raise ValidationError(f"filename must be 1-{MAX_FILENAME_CHARS} printable characters", field="filename")
    return value.replace("\\", "/").rsplit("/", 1)[-1].strip()


def parse_content_type(value: Any) -> tuple[str, str]:
    """``(content_type, kind)``: an accepted image type, or a ZIP (normalised to ``application/zip``).

    Raises:
        ValidationError: 400 ``unsupported-content-type`` naming ``content_type``.
    """
    if isinstance(value, str):
        ct = value.strip().lower()
        if ct in imaging.UPLOAD_CONTENT_TYPES:
            return ct, KIND_IMAGE
        if ct in ZIP_CONTENT_TYPES:
            return "application/zip", KIND_ZIP
    accepted = ", ".join((*imaging.UPLOAD_CONTENT_TYPES, "application/zip"))
    raise ValidationError(
        f"content_type must be one of {accepted}", field="content_type", code="unsupported-content-type"
    )


def parse_size(value: Any, kind: str) -> int:
    """The announced size in bytes: 1 .. ``UPLOAD_MAX_BYTES`` (images) or ``ZIP_MAX_BYTES`` (ZIPs).

    Raises:
        ValidationError: 400 naming ``size_bytes`` (``file-too-large`` above the limit).
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError("size_bytes must be a positive integer", field="size_bytes")
    settings = get_settings()
    limit = settings.zip_max_bytes if kind == KIND_ZIP else settings.upload_max_bytes
    if value > limit:
        raise ValidationError(
            f"{'a ZIP' if kind == KIND_ZIP else 'an image'} may be at most {limit} bytes",
            field="size_bytes",
            code="file-too-large",
        )
    return value


def create(user_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """``POST /v1/uploads``: reserve quota, create a pending upload, sign its POST.

    Args:
        body: ``{"filename", "content_type", "size_bytes", "collection"?}``.

    Returns:
        ``{"upload_id", "url", "fields", "expires_at", "max_bytes"}``: POST ``fields`` and the
        file (last, as the ``file`` part) to ``url`` as ``multipart/form-data`` before ``expires_at``.

    Raises:
        ValidationError: 400 naming the field.
        DomainError: 403 ``storage-quota-exceeded`` (field ``size_bytes``).
    """
    check_unknown_fields(body, CREATE_FIELDS)
    filename = parse_filename(body.get("filename"))
    content_type, kind = parse_content_type(body.get("content_type"))
    size = parse_size(body.get("size_bytes"), kind)
    if "collection" in body and body["collection"] is None:
        raise ValidationError("collection must be a string when given", field="collection")
    collection = parse_collection(body.get("collection"))
    upload_id = str(ULID())
    key = upload_store.source_key(user_id, upload_id)
    item = UploadModel(
        user_id,
        upload_id,
        kind=kind,
        status=PENDING,
        filename=filename,
        declared_type=content_type,
        declared_bytes=size,
        collection=collection,
        user_collection=f"{user_id}#{collection}" if collection else None,
        source_key=key,
        stored_bytes=size,
        created_at=time.time(),
    )
    try:
        with TransactWrite(connection=storage_quota.connection()) as tx:
            tx.save(item, condition=UploadModel.upload_id.does_not_exist())
            storage_quota.add_to(tx, user_id, size)
    except storage_quota.QuotaExceeded:
        raise storage_quota.exceeded() from None
    except TransactWriteError as exc:
        if storage_quota.failed_condition(exc, 1):
            raise storage_quota.exceeded() from None
        raise
    try:
        post = upload_store.presign_post(key, content_type, size)
    except Exception:
        delete_item(item)  # no POST to hand out: give the reservation back at once
        raise
    return {
        "upload_id": upload_id,
        "url": post.url,
        "fields": post.fields,
        "expires_at": iso8601(time.time() + post.expires_in),
        "max_bytes": size,
    }


def upload_json(item: UploadModel) -> dict[str, Any]:
    """The API shape of an upload, with fresh presigned URLs once it is ready.

    ``error`` (``{"code", "message"}``) only when rejected; ``files`` (per-file results)
    and ``file_counts`` only for ZIPs.
    """
    ready_image = item.kind == KIND_IMAGE and item.status == READY and item.s3_key
    body: dict[str, Any] = {
        "id": item.upload_id,
        "kind": item.kind,
        "status": item.status,
        "filename": item.filename,
        "collection": item.collection,
        "content_type": item.content_type if ready_image else item.declared_type,
        "width": int(item.width) if ready_image and item.width is not None else None,
        "height": int(item.height) if ready_image and item.height is not None else None,
        "bytes": int(item.stored_bytes or 0) if item.status == READY else int(item.declared_bytes or 0),
        "url": objects.presign_get(item.s3_key) if ready_image else None,
        "thumbnail_url": objects.presign_get(item.thumb_key) if ready_image and item.thumb_key else None,
        "parent_id": item.parent_id,
        "created_at": iso8601(item.created_at),
        "verified_at": iso8601(item.verified_at),
    }
    if item.status == REJECTED:
        body["error"] = {"code": item.error_code or "rejected", "message": item.error_message or "rejected"}
    if item.kind == KIND_ZIP:
        files = list(item.results or [])
        body["files"] = files
        body["file_counts"] = {
            state: sum(1 for f in files if f.get("status") == state) for state in ("ready", "rejected", "skipped")
        }
    return body


def get_owned_upload(user_id: str, upload_id: str, consistent: bool = False) -> UploadModel:
    """The caller's upload.

    Raises:
        NotFound: 404 when it does not exist or belongs to another user.
    """
    if not ULID_RE.match(upload_id or ""):
        raise NotFound("upload")
    try:
        return UploadModel.get(user_id, upload_id, consistent_read=consistent)
    except UploadModel.DoesNotExist:
        raise NotFound("upload") from None


def get_upload(user_id: str, upload_id: str) -> dict[str, Any]:
    """``GET /v1/uploads/{id}``."""
    return upload_json(get_owned_upload(user_id, upload_id, consistent=True))


def list_uploads(user_id: str, query: Mapping[str, str]) -> dict[str, Any]:
    """``GET /v1/uploads``: newest first, ``?collection=&limit=&cursor=``.

    Returns:
        ``{"uploads": [...], "next_cursor": str | None, "storage": {"used_bytes", "quota_bytes"}}``.

    Raises:
        ValidationError: 400 naming ``collection``, ``limit`` or ``cursor``.
    """
    collection = parse_collection(query.get("collection"))
    page = owner_page(UploadModel, user_id, query, collection)
    return {
        "uploads": [upload_json(i) for i in page["items"]],
        "next_cursor": page["next_cursor"],
        "storage": storage_quota.current(user_id),
    }


def object_keys(item: UploadModel) -> list[str]:
    """Every S3 object an upload may own (source, stripped copy, thumbnail)."""
    return [k for k in (item.source_key, item.s3_key, item.thumb_key) if k]


def delete_upload(user_id: str, upload_id: str) -> None:
    """``DELETE /v1/uploads/{id}``: the item (and its quota bytes) first, then the objects.

    Deleting a ZIP upload does not delete the images unpacked from it (they are uploads
    of their own). A leftover object is an orphan the cleanup sweep removes.

    Raises:
        NotFound: 404 when it does not exist or belongs to another user.
    """
    item = get_owned_upload(user_id, upload_id, consistent=True)
    if not delete_item(item):
        raise DomainError(ErrorCode.UPLOAD_CHANGED, "the upload changed while deleting it; try again")
    objects.delete(object_keys(item))


def delete_item(item: UploadModel) -> bool:
    """Delete an upload's item and give its bytes back to the quota, in one transaction.

    Returns:
        False when the item changed (its ``stored_bytes``) or is gone meanwhile.
    """
    try:
        with TransactWrite(connection=storage_quota.connection()) as tx:
            tx.delete(item, condition=UploadModel.stored_bytes == item.stored_bytes)
            storage_quota.add_to(tx, item.user_id, -int(item.stored_bytes or 0))
    except TransactWriteError as exc:
        if storage_quota.failed_condition(exc, 0):
            return False
        raise
    return True


# Generation's use of uploads (verify on first use, the presigned GET handed upstream) lives
# in chalicelib.services.image_inputs; these names stay here for callers of this module.
ready_upload = image_inputs.ready_upload
upstream_url = image_inputs.upstream_url
