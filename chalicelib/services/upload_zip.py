"""Bulk upload: unpack a ZIP of images into one upload per image, with bounded memory.

The ZIP is never loaded whole: it is read through ranged GETs
(:func:`chalicelib.storage.uploads.open_ranged`), and one member at a time is
decompressed, at most ``UPLOAD_MAX_BYTES`` of it. Guards (each member that fails one
gets a per-file result saying why; nothing is ever written to a file system):

- the ZIP: at most ``ZIP_MAX_BYTES`` bytes and ``ZIP_MAX_MEMBERS`` files, and declared
  uncompressed sizes summing to at most ``ZIP_MAX_TOTAL_BYTES`` (else the ZIP is rejected);
- a member: a relative path without ``..``, backslashes or a drive (``unsafe-path``); not
  encrypted; stored or deflated (``unsupported-compression``); declared size at most
  ``UPLOAD_MAX_BYTES``; declared size / compressed size at most ``ZIP_MAX_RATIO``
  (``suspicious-compression-ratio``); the bytes actually
  decompressed never exceed the declared size (``size-mismatch``, checked while reading)
  and match its CRC-32; the running total of decompressed bytes stays under
  ``ZIP_MAX_TOTAL_BYTES``; and it is a JPEG, PNG or WebP image that passes the same
  verification as a single upload.
- ``__MACOSX/`` entries and dot-files are ``skipped``.

Each image becomes an upload of its own (same collection, ``parent_id`` = the ZIP) with an
id derived from the ZIP's id and the member's index, so a retried message skips what is
already done. The ZIP item holds a lease while a worker unpacks it. A worker unpacks for at
most ``ZIP_SLICE_SECONDS`` (and never past its Lambda's deadline), then saves its results so
far, releases the lease and sends a continuation message to the uploads queue: one user's
1,000-image ZIP never holds a worker for long while other users' uploads wait.

Sources: PKWARE APPNOTE.TXT (local/central headers, general purpose flag bit 0 =
encrypted); Python docs, ``zipfile`` ("Decompression pitfalls", ``ZipInfo``).
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
import zipfile
import zlib
from typing import Any
from urllib.parse import quote_plus

from pynamodb.exceptions import TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite
from ulid import ULID

from chalicelib import queue
from chalicelib.db import UploadModel
from chalicelib.db.uploads import KIND_IMAGE, PENDING, PROCESSING, READY, REJECTED
from chalicelib.services import storage_quota
from chalicelib.services.upload_worker import reject, store_verified
from chalicelib.settings import get_settings
from chalicelib.storage import imaging, objects
from chalicelib.storage import uploads as upload_store

logger = logging.getLogger("promptcanvas.uploads")

READ_CHUNK_BYTES = 1024 * 1024
READ_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # the compression methods a member may use
CENTRAL_DIRECTORY_BYTES_PER_MEMBER = 4096  # a generous bound on one central directory entry
EOCD_SEARCH_BYTES = 22 + 65535 + 20  # end record, the longest comment, the ZIP64 locator
MAX_NAME_CHARS = 200  # a member name as shown in the results
LEASE_MARGIN_S = 30.0


class MemberRejected(Exception):
    """One member fails a guard: ``code`` and a message for the per-file result."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def member_upload_id(zip_id: str, index: int) -> str:
    """The upload id of member ``index``: the ZIP's timestamp, a hash for the rest (a ULID)."""
    stamp = ULID.from_str(zip_id).bytes[:6]
    return str(ULID.from_bytes(stamp + hashlib.sha256(f"{zip_id}:{index}".encode()).digest()[:10]))


def display_name(name: str) -> str:
    """A member name safe to show: control characters replaced, at most 200 characters."""
    return "".join(c if c.isprintable() else "?" for c in name)[:MAX_NAME_CHARS]


def is_skipped(name: str) -> bool:
    """macOS resource forks (``__MACOSX/``) and dot-files carry no image."""
    base = name.rstrip("/").rsplit("/", 1)[-1]
    return name.startswith("__MACOSX/") or base.startswith(".")


def check_path(name: str) -> None:
    """Raises MemberRejected(``unsafe-path``) for absolute paths, ``..``, backslashes, drives."""
    parts = name.split("/")
    if (
        name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or (len(name) > 1 and name[1] == ":")
        or any(part == ".." for part in parts)
    ):
        raise MemberRejected("unsafe-path", "the member's path leaves the archive (absolute or '..')")


def check_member(info: zipfile.ZipInfo) -> None:
    """The guards that need only the central directory entry.

    Raises:
        MemberRejected: ``unsafe-path`` | ``encrypted`` | ``unsupported-compression`` |
            ``file-too-large`` | ``suspicious-compression-ratio``.
    """
    settings = get_settings()
    check_path(info.filename)
    if info.flag_bits & 0x1:
        raise MemberRejected("encrypted", "encrypted members are not supported")
    if info.compress_type not in READ_METHODS:
        # bzip2 and LZMA decoders fail on bad data with OSError / LZMAError, which a read from
        # S3 can raise too; JPEG, PNG and WebP gain nothing from them, and zip tools deflate
        raise MemberRejected("unsupported-compression", "only stored and deflated members are read")
    if info.file_size > settings.upload_max_bytes:
        raise MemberRejected("file-too-large", f"the file is larger than {settings.upload_max_bytes} bytes")
    if info.file_size > max(1, info.compress_size) * settings.zip_max_ratio:
        raise MemberRejected(
            "suspicious-compression-ratio",
            f"the file expands more than {settings.zip_max_ratio} times (a zip bomb)",
        )


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: list[int]) -> bytes:
    """Decompress one member, chunk by chunk, never past its declared size or the total budget.

    Args:
        budget: ``[bytes left of ZIP_MAX_TOTAL_BYTES]``, decreased in place.

    Raises:
        MemberRejected: ``size-mismatch`` | ``zip-total-exceeded`` | ``corrupt-member``.
    """
    chunks: list[bytes] = []
    total = 0
    try:
        with zf.open(info) as fh:
            while True:
                chunk = fh.read(READ_CHUNK_BYTES)
                if not chunk:
                    break
                total += len(chunk)
                budget[0] -= len(chunk)
                if total > info.file_size:
                    raise MemberRejected("size-mismatch", "the file is larger than its header says")
                if budget[0] < 0:
                    raise MemberRejected("zip-total-exceeded", "the ZIP expands to more than allowed")
                chunks.append(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as exc:
        raise MemberRejected("corrupt-member", f"the file does not decompress: {exc}") from None
    if total != info.file_size:
        raise MemberRejected("size-mismatch", "the file's size differs from its header")
    return b"".join(chunks)


def unpack_member(
    zip_item: UploadModel, zf: zipfile.ZipFile, info: zipfile.ZipInfo, index: int, budget: list[int]
) -> dict[str, Any]:
    """One member → its per-file result ``{"name", "status", "upload_id"?, "error"?}``."""
    result: dict[str, Any] = {"name": display_name(info.filename)}
    if is_skipped(info.filename):
        return {**result, "status": "skipped"}
    child_id = member_upload_id(zip_item.upload_id, index)
    try:
        done = UploadModel.get(zip_item.user_id, child_id, consistent_read=True)
        return {**result, "status": done.status, "upload_id": child_id}
    except UploadModel.DoesNotExist:
        pass
    try:
        check_member(info)
        data = read_member(zf, info, budget)
        try:
            processed = imaging.process_upload(data, get_settings().upload_max_pixels)
        except imaging.ImageRejected as exc:
            raise MemberRejected(exc.code, str(exc)) from None
        child = UploadModel(
            zip_item.user_id,
            child_id,
            kind=KIND_IMAGE,
            filename=display_name(info.filename.rsplit("/", 1)[-1]) or "image",
            declared_type=processed.content_type,
            declared_bytes=len(data),
            collection=zip_item.collection,
            user_collection=zip_item.user_collection,
            parent_id=zip_item.upload_id,
            created_at=time.time(),
        )
        try:
            store_verified(child, processed, create=True)
        except storage_quota.QuotaExceeded:
            raise MemberRejected("storage-quota-exceeded", "the image does not fit the storage quota") from None
        return {**result, "status": READY, "upload_id": child_id}
    except MemberRejected as exc:
        return {**result, "status": REJECTED, "error": {"code": exc.code, "message": str(exc)}}


def central_directory(fh: Any, size: int) -> tuple[int, int]:
    """``(entries, bytes)`` of a ZIP's central directory, read from its end records only,
    found exactly where ``zipfile`` looks for them.

    ``zipfile`` parses the whole central directory into memory when it opens an archive, so
    a crafted one (millions of tiny entries) would exhaust memory before any count is
    checked; this reads the end of central directory record first. It must read the record
    ``zipfile`` will use, or a crafted archive could show it one count and ``zipfile``
    another: the record ending the file with no comment, else the last signature in the
    tail; then, whenever a ZIP64 locator sits right before it, the ZIP64 record right
    before the locator (``zipfile._EndRecData`` / ``_EndRecData64``, which ignore the
    locator's offset and the 0xFFFF markers).
    Source: PKWARE APPNOTE.TXT 4.3.14-4.3.16; CPython Lib/zipfile.

    Raises:
        zipfile.BadZipFile: no end of central directory record, or one that says ZIP64
            without a ZIP64 record where ``zipfile`` reads it.
    """
    tail_len = min(size, EOCD_SEARCH_BYTES)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    if len(tail) >= 22 and tail[-22:-18] == b"PK\x05\x06" and tail[-2:] == b"\x00\x00":
        at = len(tail) - 22  # no archive comment: zipfile takes this one
    else:
        at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise zipfile.BadZipFile("no end of central directory record")
    entries, cd_bytes = struct.unpack("<HI", tail[at + 10 : at + 16])
    record_end = size - tail_len + at  # where the end record starts in the file
    zip64 = None
    if record_end >= 20:
        fh.seek(record_end - 20)
        locator = fh.read(20)
        if locator.startswith(b"PK\x06\x07") and record_end >= 20 + 56:
            fh.seek(record_end - 20 - 56)
            record = fh.read(56)
            if record.startswith(b"PK\x06\x06") and len(record) == 56:
                zip64 = struct.unpack("<QQ", record[32:48])
    if zip64 is not None:
        entries, cd_bytes = zip64
    elif entries == 0xFFFF or cd_bytes == 0xFFFFFFFF:
        raise zipfile.BadZipFile("ZIP64 end of central directory record missing")
    fh.seek(0)
    return int(entries), int(cd_bytes)


def _take(item: UploadModel, deadline: float) -> bool:
    """Lease the ZIP: pending → processing (its reservation goes back to the quota, each
    image is charged on its own), or take over an expired lease. False: not ours."""
    now = time.time()
    lease_until = now + max(0.0, deadline - time.monotonic()) + LEASE_MARGIN_S
    try:
        if item.status == PENDING:
            reserved = int(item.stored_bytes or 0)
            with TransactWrite(connection=storage_quota.connection()) as tx:
                tx.update(
                    item,
                    actions=[
                        UploadModel.status.set(PROCESSING),
                        UploadModel.lease_until.set(lease_until),
                        UploadModel.stored_bytes.set(0),
                    ],
                    condition=(UploadModel.status == PENDING) & (UploadModel.stored_bytes == reserved),
                )
                storage_quota.add_to(tx, item.user_id, -reserved)
        else:
            item.update(
                actions=[UploadModel.lease_until.set(lease_until)],
                condition=(UploadModel.status == PROCESSING) & (UploadModel.lease_until < now),
            )
    except (TransactWriteError, UpdateError) as exc:
        if isinstance(exc, TransactWriteError) and not storage_quota.failed_condition(exc, 0):
            raise
        if (
            isinstance(exc, UpdateError)
            and getattr(exc, "cause_response_code", "") != "ConditionalCheckFailedException"
        ):
            raise
        return False
    item.status = PROCESSING
    return True


def _save(item: UploadModel, results: list[dict[str, Any]], final: bool) -> None:
    """Store the results so far; ``final`` marks the ZIP ready, else the lease is released."""
    actions = [UploadModel.results.set(results)]
    if final:
        actions += [
            UploadModel.status.set(READY),
            UploadModel.verified_at.set(time.time()),
            UploadModel.lease_until.remove(),
        ]
    else:
        actions.append(UploadModel.lease_until.set(0))
    try:
        item.update(actions=actions, condition=UploadModel.status == PROCESSING)
    except UpdateError:
        logger.info("zip upload %s changed while unpacking (deleted?)", item.upload_id)


def unpack(item: UploadModel, deadline: float) -> bool:
    """Unpack a ZIP upload whose file has arrived (see the module docstring).

    Returns:
        True when finished, handed to a continuation message, or nothing to do; False when
        it must be retried (another worker holds the lease).
    """
    settings = get_settings()
    if item.status in (READY, REJECTED):
        objects.delete([item.source_key] if item.source_key else [])
        return True
    meta = upload_store.head(item.source_key)
    if meta is None:
        return True  # not uploaded yet: a later event brings it
    size = int(meta.get("ContentLength", 0))
    limit = min(int(item.declared_bytes), settings.zip_max_bytes)
    if item.status == PENDING and size > limit:
        reject(item, "file-too-large", f"the ZIP is larger than the announced {limit} bytes")
        objects.delete([item.source_key])
        return True
    if not _take(item, deadline):
        return item.status != PROCESSING
    fh = upload_store.open_ranged(item.source_key, size)
    try:
        entries, cd_bytes = central_directory(fh, size)
        if (
            entries > settings.zip_max_members
            or cd_bytes > settings.zip_max_members * CENTRAL_DIRECTORY_BYTES_PER_MEMBER
        ):
            _finish_rejected(item, "too-many-files", f"the ZIP holds more than {settings.zip_max_members} files")
            return True
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error):
        _finish_rejected(item, "not-a-zip", "the file is not a readable ZIP archive")
        return True
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > settings.zip_max_members:
            _finish_rejected(item, "too-many-files", f"the ZIP holds more than {settings.zip_max_members} files")
            return True
        if sum(i.file_size for i in infos) > settings.zip_max_total_bytes:
            _finish_rejected(
                item, "zip-total-exceeded", f"the ZIP expands to more than {settings.zip_max_total_bytes} bytes"
            )
            return True
        budget = [settings.zip_max_total_bytes]
        previous = list(item.results or [])  # earlier turns' results, in member order
        results: list[dict[str, Any]] = []
        slice_end = min(deadline, time.monotonic() + settings.zip_slice_seconds)
        fresh = 0
        for index, info in enumerate(infos):
            if index < len(previous):
                results.append(previous[index])
                continue
            if fresh and time.monotonic() >= slice_end:  # at least one new member per turn
                _save(item, results, final=False)
                continue_later(item)
                return True
            results.append(unpack_member(item, zf, info, index, budget))
            fresh += 1
    _save(item, results, final=True)
    objects.delete([item.source_key])
    logger.info("zip upload %s unpacked: %d files", item.upload_id, len(results))
    return True


def continue_later(item: UploadModel) -> None:
    """Queue another turn at this ZIP: an S3-shaped ``ObjectCreated`` record for its source key."""
    record = {"eventName": "ObjectCreated:Continue", "s3": {"object": {"key": quote_plus(item.source_key)}}}
    queue.send_messages([{"Records": [record]}], queue=get_settings().uploads_queue_name)


def _finish_rejected(item: UploadModel, code: str, message: str) -> None:
    item.stored_bytes = 0  # the reservation went back when the lease was taken
    reject(item, code, message, from_status=PROCESSING)
    objects.delete([item.source_key])
