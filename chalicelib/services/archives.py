"""ZIP archives of a user's images, built in S3 with bounded memory.

Routes: ``POST /v1/jobs/{id}/archive`` (the job's succeeded images, in prompt order),
``POST /v1/collections/{name}/archive`` (the collection's images, oldest first),
``POST /v1/archives {"image_ids": [...]}`` (at most ``ARCHIVE_MAX_IMAGES``, 1,000), and
``GET /v1/archives/{id}`` (status, then a presigned URL). Each POST takes an optional
``"format"``: ``zip`` (the default: the images and ``manifest.csv``, below) or
``imagefolder`` (a Hugging Face ImageFolder dataset: ``train/`` with the images, the
inputs of image-to-image results and ``metadata.jsonl``; see
:mod:`chalicelib.services.dataset_export`).

An archive of up to ``ARCHIVE_INLINE_MAX_IMAGES`` images is built in the request
(201, ``ready``); a larger one is queued as an ``{"type": "archive"}`` message on the
jobs queue (202, ``queued``) and built by the worker (``building`` -> ``ready`` |
``failed``), under a lease so a redelivered message never builds it twice at once.

Identical requests are deduplicated: the selection (source, reference, the image
ids in order and the format) is hashed, and the first request claims the hash with a conditional put
(in the idempotency table, key ``"archive {hash}"``). While that archive is queued or
building, or was ready less than :data:`ARCHIVE_REUSE_S` ago, the same request from
the same user gets that archive back (same ``archive_id``, 202 or 201 as it stands)
instead of building another; once it failed or grew old, the next request takes the
claim over and builds a new one.

An archive whose message could not be sent stays ``queued`` without ``enqueued_at``;
one whose build died stays ``building`` with an expired lease. The stuck-work sweep
(:func:`sweep_stuck`) sends their messages again, or fails them after
:data:`ARCHIVE_GIVE_UP_S`.

The ZIP goes to ``archives/{user_id}/{archive_id}.zip`` through an S3 multipart
upload: every part but the last is ``ARCHIVE_PART_BYTES`` (>= 5 MiB, S3's minimum
part size; at most 10,000 parts; source: Amazon S3 user guide, "Uploading and copying
objects using multipart upload"). :class:`MultipartZipSink` is the file object Python's
:mod:`zipfile` writes to; it keeps at most one part plus one image in memory. Entries
are STORED (JPEG/PNG are already compressed). The sink lets zipfile seek back only
inside the not-yet-uploaded buffer, and parts are cut only between entries, so each
local header is rewritten with its real CRC and sizes and the ZIP needs no data
descriptors (any unzip tool reads it). The last entry is ``manifest.csv`` with
``file, prompt, seed, model, width, height, steps, created_at``; a text cell that a
spreadsheet would read as a formula (first character ``= + - @``, tab or carriage
return) is prefixed with a single quote, so it opens as text (source: OWASP, "CSV
Injection"). Only the CSV is escaped: the JSON API keeps the exact prompt.

Archives are deleted after 24 h by the cleanup sweep (``chalicelib.services.cleanup``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import time
import zipfile
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pynamodb.exceptions import DeleteError, PutError, UpdateError
from ulid import ULID

from chalicelib import queue
from chalicelib.db import ImageModel, VideoModel, is_condition_failure, same_item
from chalicelib.db.jobs import SUCCEEDED, ArchiveModel, IdempotencyModel
from chalicelib.errors import DomainError, ErrorCode, NotFound, ValidationError
from chalicelib.jobs.state import query_items
from chalicelib.jobs.views import get_owned_job, images_by_id, videos_by_id
from chalicelib.jsonbody import reject_nulls
from chalicelib.services import videos
from chalicelib.services.dataset_export import inputs_resolver, write_imagefolder, zip_date_time, zip_entry
from chalicelib.services.images import ULID_RE, check_unknown_fields, collection_from_path
from chalicelib.settings import get_settings
from chalicelib.storage import objects
from chalicelib.storage.multipart import MultipartZipSink
from chalicelib.sweeps import Deadline
from chalicelib.timefmt import iso8601

logger = logging.getLogger("promptcanvas.archives")

ARCHIVE_LEASE_S = 600  # seconds a worker may build one archive before another may take over
ARCHIVE_MAX_ATTEMPTS = 3
ARCHIVE_TTL_S = 24 * 3600  # the object is swept after 24 h; the record expires then too
ARCHIVE_REUSE_S = 3600  # a ready archive is handed to an identical request this long, seconds
ARCHIVE_ENQUEUE_GRACE_S = 120  # a queued archive without a sent message is left alone this long, seconds
ARCHIVE_RESEND_S = 1800  # a queued archive not leased this long after its message: sent again, seconds
ARCHIVE_GIVE_UP_S = 3600  # an archive still queued/building this long after creation fails, seconds
CLAIM_ATTEMPTS = 3  # rounds of reading and taking over a selection claim
MANIFEST_COLUMNS = ("file", "prompt", "seed", "model", "width", "height", "steps", "created_at")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # OWASP CSV Injection: cells a spreadsheet evaluates
ZIP = "zip"
IMAGEFOLDER = "imagefolder"
FORMATS = (ZIP, IMAGEFOLDER)  # the archive "format" values; zip is the default


def parse_format(body: Mapping[str, Any]) -> str:
    """The ``format`` of an archive request body: ``zip`` (also when left out) or ``imagefolder``.

    Raises:
        ValidationError: 400 naming ``format`` when it is anything else (null included).
    """
    if "format" not in body:
        return ZIP
    value = body["format"]
    if value not in FORMATS:
        raise ValidationError(f"format must be one of: {', '.join(FORMATS)}", field="format")
    return value


def parse_format_body(body: Mapping[str, Any]) -> str:
    """The body of ``POST /v1/jobs/{id}/archive`` and ``POST /v1/collections/{name}/archive``:
    ``{}`` or ``{"format": ...}`` (an empty request body counts as ``{}``).

    Raises:
        ValidationError: 400 naming ``format`` or an unknown field.
    """
    check_unknown_fields(body, {"format"})
    return parse_format(body)


def csv_cell(value: Any) -> Any:
    """``value`` made safe for a spreadsheet: a string starting with ``= + - @``, tab or
    carriage return gets a leading single quote (OWASP, "CSV Injection"); anything else
    (numbers included) is returned as is. The csv writer then quotes as needed."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def archive_key(user_id: str, archive_id: str) -> str:
    """``archives/{user_id}/{archive_id}.zip``."""
    return f"archives/{user_id}/{archive_id}.zip"


def manifest_row(name: str, entry: ImageModel | VideoModel) -> list[Any]:
    """The ``manifest.csv`` row of one file: an image, or a video (no steps; its seed may be
    None when Together picked it)."""
    if isinstance(entry, VideoModel):
        params = videos.params_of(entry)
        return [
            name,
            entry.prompt,
            params.seed,
            entry.model,
            params.width,
            params.height,
            None,
            iso8601(entry.created_at),
        ]
    return [
        name,
        entry.prompt,
        int(entry.seed),
        entry.model,
        int(entry.width),
        int(entry.height),
        int(entry.steps) if entry.steps is not None else None,  # models without steps store none
        iso8601(entry.created_at),
    ]


def write_zip(sink: MultipartZipSink, entries: list[ImageModel | VideoModel]) -> int:
    """Write ``entries`` (images and videos, in order) and ``manifest.csv`` into ``sink`` as a ZIP.

    Returns:
        The number of files written (ones whose object is gone are skipped).
    """
    rows: list[list[Any]] = []
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for number, entry in enumerate(entries, start=1):
            entry_id = entry.video_id if isinstance(entry, VideoModel) else entry.image_id
            data = objects.get(entry.s3_key) if entry.s3_key else None
            if data is None:
                logger.warning("archive skips %s: object missing", entry_id)
                continue
            ext = str(entry.s3_key).rsplit(".", 1)[-1]
            name = f"{number:04d}-{entry_id}.{ext}"
            zip_entry(zf, name, data, zip_date_time(entry))
            sink.flush_parts()
            rows.append(manifest_row(name, entry))
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows([csv_cell(cell) for cell in row] for row in rows)
        info = zipfile.ZipInfo("manifest.csv", date_time=time.gmtime()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        zf.writestr(info, text.getvalue().encode("utf-8"))
        sink.flush_parts()
    return len(rows)


def archive_format(archive: ArchiveModel) -> str:
    """``zip`` or ``imagefolder`` (a record without a format is a ``zip``)."""
    return archive.format or ZIP


def download_name(archive: ArchiveModel) -> str:
    """The file name a browser saves the archive as: ``promptcanvas-{id}.zip``, or
    ``promptcanvas-{id}-imagefolder.zip``."""
    suffix = "-imagefolder" if archive_format(archive) == IMAGEFOLDER else ""
    return f"promptcanvas-{archive.archive_id}{suffix}.zip"


def archive_json(archive: ArchiveModel) -> dict[str, Any]:
    """The API shape: ``archive_id``, ``status`` (queued | building | ready | failed),
    ``format`` (zip | imagefolder), ``source``, ``source_ref``, ``image_count``, ``bytes``,
    ``url`` (presigned, when ready), ``error``, ``created_at``, ``finished_at``, ``expires_at``."""
    ready = archive.status == "ready"
    return {
        "archive_id": archive.archive_id,
        "status": archive.status,
        "format": archive_format(archive),
        "source": archive.source,
        "source_ref": archive.source_ref,
        "image_count": int(archive.image_count or 0),
        "bytes": int(archive.bytes) if archive.bytes is not None else None,
        "url": objects.presign_get(archive.s3_key, download_name=download_name(archive)) if ready else None,
        "error": archive.error_message if archive.status == "failed" else None,
        "created_at": iso8601(archive.created_at),
        "finished_at": iso8601(archive.finished_at),
        "expires_at": iso8601(float(archive.created_at) + ARCHIVE_TTL_S) if ready else None,
    }


def _lease(archive: ArchiveModel, now: float) -> bool:
    """queued (or building with an expired lease) -> building. True when leased here."""
    try:
        archive.update(
            actions=[
                ArchiveModel.status.set("building"),
                ArchiveModel.lease_until.set(now + ARCHIVE_LEASE_S),
                ArchiveModel.attempts.add(1),
            ],
            condition=(
                (ArchiveModel.status == "queued")
                | ((ArchiveModel.status == "building") & (ArchiveModel.lease_until < now))
            )
            & (ArchiveModel.attempts < ARCHIVE_MAX_ATTEMPTS),
        )
        return True
    except UpdateError as exc:
        if is_condition_failure(exc):
            return False
        raise


def build(archive: ArchiveModel) -> bool:
    """Lease and build ``archive``; record ``ready`` (with size and count) or, after
    :data:`ARCHIVE_MAX_ATTEMPTS`, ``failed``.

    Returns:
        True when the archive is finished (ready or failed); False when it should be
        tried again later (another worker holds a live lease, or this build failed).
    """
    now = time.time()
    if archive.status in ("ready", "failed"):
        return True
    if not _lease(archive, now):
        archive.refresh(consistent_read=True)
        if archive.status in ("ready", "failed"):
            return True
        if archive.status == "building" and (archive.lease_until or 0) > now:
            return False
        _give_up(archive, "the archive could not be built")
        return True
    settings = get_settings()
    sink: MultipartZipSink | None = None
    try:
        found = images_by_id(archive.user_id, list(archive.image_ids))
        images = [found[i] for i in archive.image_ids if i in found]
        sink = MultipartZipSink(settings.images_bucket, archive.s3_key, settings.archive_part_bytes)
        if archive_format(archive) == IMAGEFOLDER:
            count = write_imagefolder(sink, images, inputs_resolver(archive.user_id, images))
        else:  # ids that are no image are a video job's videos
            clips = videos_by_id(archive.user_id, [i for i in archive.image_ids if i not in found])
            entries: list[ImageModel | VideoModel] = []
            for one in archive.image_ids:
                entry = found.get(one) or clips.get(one)
                if entry is not None:
                    entries.append(entry)
            count = write_zip(sink, entries)
        size = sink.complete()
    except Exception as exc:  # noqa: BLE001 - recorded below; retried by the queue
        if sink is not None:
            sink.abort()
        logger.exception("archive build failed archive_id=%s", archive.archive_id)
        if int(archive.attempts) >= ARCHIVE_MAX_ATTEMPTS:
            _give_up(archive, f"building the archive failed ({type(exc).__name__})")
            return True
        archive.update(
            actions=[ArchiveModel.status.set("queued"), ArchiveModel.lease_until.remove()],
            condition=ArchiveModel.status == "building",
        )
        return False
    archive.update(
        actions=[
            ArchiveModel.status.set("ready"),
            ArchiveModel.bytes.set(size),
            ArchiveModel.image_count.set(count),
            ArchiveModel.finished_at.set(time.time()),
            ArchiveModel.lease_until.remove(),
        ]
    )
    logger.info("archive ready archive_id=%s images=%d bytes=%d", archive.archive_id, count, size)
    return True


def _give_up(archive: ArchiveModel, message: str) -> None:
    try:
        fail(archive, message, time.time())
    except UpdateError:
        pass


def process_message(body: Mapping[str, Any]) -> bool:
    """The worker's handler for ``{"type": "archive", "user_id", "archive_id"}``.

    Returns:
        True when the message is done with; False to see it again later.
    """
    try:
        archive = ArchiveModel.get(str(body.get("user_id")), str(body.get("archive_id")), consistent_read=True)
    except ArchiveModel.DoesNotExist:
        return True
    return build(archive)


def selection_hash(source: str, ref: str | None, image_ids: list[str], archive_format: str = ZIP) -> str:
    """sha256 (hex) of what an archive holds: ``source``, ``ref``, the image ids in order
    and, for any format but ``zip``, the format (so a ``zip`` keeps the hash it had
    before formats existed)."""
    parts: list[Any] = [source, ref, image_ids]
    if archive_format != ZIP:
        parts.append(archive_format)
    canonical = json.dumps(parts, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def reusable(archive: ArchiveModel, now: float) -> bool:
    """True when an identical request may get ``archive`` instead of a new one: it is
    queued or building, or ready since less than :data:`ARCHIVE_REUSE_S` seconds."""
    if archive.status in ("queued", "building"):
        return True
    return archive.status == "ready" and float(archive.finished_at or 0) >= now - ARCHIVE_REUSE_S


def _discard(archive: ArchiveModel) -> None:
    """Delete a queued archive record that lost the selection claim (never built). Best effort."""
    try:
        archive.delete(condition=ArchiveModel.status == "queued")
    except DeleteError:
        logger.warning("could not discard duplicate archive %s", archive.archive_id)


def claim_selection(archive: ArchiveModel, now: float) -> ArchiveModel:
    """Claim ``archive.selection`` for ``archive``, or find the archive that holds it.

    The claim is a conditional put of ``(user_id, "archive {selection}")``; when it is
    taken, its archive is returned if :func:`reusable`, else the claim is taken over with
    a conditional update on the archive id read (so two takers cannot both win).

    Returns:
        ``archive`` when this request builds it; otherwise the existing archive (and
        ``archive``'s record, written but never queued, is deleted).
    """
    key = f"archive {archive.selection}"
    claim = IdempotencyModel(
        archive.user_id,
        key,
        request_hash=archive.selection,
        job_id=archive.archive_id,
        claimed_at=now,
        expires_at=timedelta(seconds=ARCHIVE_TTL_S),
    )
    try:
        claim.save(condition=IdempotencyModel.key.does_not_exist())
        return archive
    except PutError as exc:
        if not is_condition_failure(exc):
            raise
    for _ in range(CLAIM_ATTEMPTS):
        try:
            held: IdempotencyModel | None = IdempotencyModel.get(archive.user_id, key, consistent_read=True)
        except IdempotencyModel.DoesNotExist:
            held = None
        if held is not None:
            if held.job_id == archive.archive_id:
                return archive  # our own claim (a retried put that committed)
            try:
                other = ArchiveModel.get(archive.user_id, held.job_id, consistent_read=True)
            except ArchiveModel.DoesNotExist:
                other = None
            if other is not None and reusable(other, now):
                _discard(archive)
                logger.info("archive request deduplicated archive_id=%s", other.archive_id)
                return other
        try:
            if held is None:
                claim.save(condition=IdempotencyModel.key.does_not_exist())
            else:
                held.update(
                    actions=[
                        IdempotencyModel.job_id.set(archive.archive_id),
                        IdempotencyModel.claimed_at.set(now),
                        IdempotencyModel.expires_at.set(timedelta(seconds=ARCHIVE_TTL_S)),
                    ],
                    condition=IdempotencyModel.job_id == held.job_id,
                )
            return archive
        except (PutError, UpdateError) as exc:
            if not is_condition_failure(exc):
                raise
    return archive  # still contended: build it (a duplicate at worst)


def enqueue(archive: ArchiveModel) -> bool:
    """Send the archive's message and record ``enqueued_at``.

    Returns:
        False when SQS refused it (logged); the archive stays queued for the stuck-work
        sweep to send again.
    """
    try:
        queue.send_messages([{"type": "archive", "user_id": archive.user_id, "archive_id": archive.archive_id}])
    except Exception as exc:  # noqa: BLE001 - QueueError, or the queue could not be reached at all
        logger.error(
            "archive enqueue failed archive_id=%s (%s); the stuck-work sweep will retry",
            archive.archive_id,
            type(exc).__name__,
        )
        return False
    try:
        archive.update(actions=[ArchiveModel.enqueued_at.set(time.time())], condition=ArchiveModel.archive_id.exists())
    except UpdateError:
        logger.warning("could not record enqueued_at archive_id=%s", archive.archive_id)
    return True


def _create(user_id: str, source: str, ref: str | None, image_ids: list[str], fmt: str) -> dict[str, Any]:
    settings = get_settings()
    if not image_ids:
        raise DomainError(ErrorCode.NOTHING_TO_ARCHIVE, "there are no images to archive")
    if len(image_ids) > settings.archive_max_images:
        raise DomainError(ErrorCode.TOO_MANY_IMAGES, f"an archive holds at most {settings.archive_max_images} images")
    archive_id = str(ULID())
    now = time.time()
    archive = ArchiveModel(
        user_id,
        archive_id,
        status="queued",
        source=source,
        source_ref=ref,
        image_ids=image_ids,
        s3_key=archive_key(user_id, archive_id),
        image_count=len(image_ids),
        attempts=0,
        selection=selection_hash(source, ref, image_ids, fmt),
        format=fmt,
        created_at=now,
        expires_at=timedelta(seconds=ARCHIVE_TTL_S),
    )
    try:
        archive.save(condition=ArchiveModel.archive_id.does_not_exist())
    except PutError as exc:  # a retried put whose first attempt committed fails its condition
        if not is_condition_failure(exc):
            raise
        if not same_item(ArchiveModel.get(user_id, archive_id, consistent_read=True), archive):
            raise
    holder = claim_selection(archive, now)
    if holder is not archive:
        return archive_json(holder)
    if len(image_ids) <= settings.archive_inline_max_images:
        build(archive)
        archive.refresh(consistent_read=True)
        if archive.status in ("ready", "failed"):
            return archive_json(archive)
    enqueue(archive)
    return archive_json(archive)


def fail(archive: ArchiveModel, message: str, now: float) -> bool:
    """queued | building -> failed with ``message`` at ``now`` (epoch seconds).

    Returns:
        True when this call moved it; False when it had finished already.

    Raises:
        UpdateError: DynamoDB failed.
    """
    try:
        archive.update(
            actions=[
                ArchiveModel.status.set("failed"),
                ArchiveModel.error_message.set(message),
                ArchiveModel.finished_at.set(now),
                ArchiveModel.lease_until.remove(),
            ],
            condition=ArchiveModel.status.is_in("queued", "building"),
        )
        return True
    except UpdateError as exc:
        if is_condition_failure(exc):
            return False
        raise


def stuck_action(archive: ArchiveModel, now: float) -> str | None:
    """What the stuck-work sweep does with ``archive`` (epoch seconds ``now``):

    - ``"fail"``: still queued/building :data:`ARCHIVE_GIVE_UP_S` after creation, or
      its lease expired after :data:`ARCHIVE_MAX_ATTEMPTS` builds;
    - ``"send"``: queued without a sent message for :data:`ARCHIVE_ENQUEUE_GRACE_S`
      (the enqueue failed), queued :data:`ARCHIVE_RESEND_S` after its message, or
      building with an expired lease (a build that died; the worker takes the lease over);
    - None: in progress, or finished.
    """
    if archive.status not in ("queued", "building"):
        return None
    age = now - float(archive.created_at)
    if archive.status == "building":
        if float(archive.lease_until or 0) >= now:
            return None
        if age > ARCHIVE_GIVE_UP_S or int(archive.attempts or 0) >= ARCHIVE_MAX_ATTEMPTS:
            return "fail"
        return "send"
    if age > ARCHIVE_GIVE_UP_S:
        return "fail"
    if archive.enqueued_at is None:
        return "send" if age > ARCHIVE_ENQUEUE_GRACE_S else None
    return "send" if now - float(archive.enqueued_at) > ARCHIVE_RESEND_S else None


def sweep_stuck(now: float, *, dry_run: bool, deadline: Deadline) -> dict[str, int]:
    """Finish or fail archives left queued or building (see :func:`stuck_action`).

    Reads the archives table with a filtered Scan: records expire through TTL a day
    after creation, so the table holds about one day of archives.

    Args:
        now: epoch seconds to judge ages and leases by.
        dry_run: count only.
        deadline: the sweep's time budget; the scan stops when it expires (the rest waits).

    Returns:
        Counts ``archives_seen``, ``archives_resent``, ``archives_failed`` (non-zero only).
    """
    counts: dict[str, int] = {}
    stuck = ArchiveModel.scan(filter_condition=ArchiveModel.status.is_in("queued", "building"), page_size=100)
    for archive in stuck:
        if deadline.expired():
            break
        counts["archives_seen"] = counts.get("archives_seen", 0) + 1
        action = stuck_action(archive, now)
        if action is None:
            continue
        if action == "fail":
            if dry_run or fail(archive, "the archive could not be built", now):
                counts["archives_failed"] = counts.get("archives_failed", 0) + 1
        elif dry_run or enqueue(archive):
            counts["archives_resent"] = counts.get("archives_resent", 0) + 1
    return counts


def create_for_job(user_id: str, job_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """``POST /v1/jobs/{id}/archive`` with ``body`` ``{}`` or ``{"format": ...}``: the
    job's succeeded images (or videos, for a video job: ``zip`` only), in prompt order.

    Raises:
        ValidationError: 400 naming ``format`` (also ``imagefolder`` for a video job). NotFound: 404. DomainError: 409
        ``nothing-to-archive``.
    """
    fmt = parse_format_body(body)
    job = get_owned_job(user_id, job_id)
    if job.kind == "video" and fmt != ZIP:
        raise ValidationError("a video job's archive is a zip", field="format")
    items = sorted(query_items(job_id, SUCCEEDED), key=lambda i: int(i.index))
    return _create(user_id, "job", job_id, [i.image_id for i in items], fmt)


def create_for_collection(user_id: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """``POST /v1/collections/{name}/archive`` with ``body`` ``{}`` or ``{"format": ...}``:
    the collection's images, oldest first (``name`` as in the path; percent-escapes are
    decoded).

    Raises:
        ValidationError: 400 (field ``name`` or ``format``). NotFound: 404 when the user
        has no such collection. DomainError: 400 ``too-many-images``.
    """
    fmt = parse_format_body(body)
    collection = collection_from_path(name)
    limit = get_settings().archive_max_images
    ids = [image.image_id for image in ImageModel.by_collection.query(f"{user_id}#{collection}", limit=limit + 1)]
    if not ids:
        raise NotFound("collection")
    return _create(user_id, "collection", collection, ids, fmt)


def create_for_images(user_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """``POST /v1/archives {"image_ids": [...], "format"?: "zip" | "imagefolder"}``: 1 to
    ``ARCHIVE_MAX_IMAGES`` of the caller's images, in the order given (duplicates dropped).

    Raises:
        ValidationError: 400 naming ``image_ids`` / ``image_ids[i]``, ``format`` or an
        unknown field.
        NotFound: 404 when an id is not one of the caller's images.
    """
    check_unknown_fields(body, {"image_ids", "format"})
    reject_nulls(body)
    fmt = parse_format(body)
    raw = body.get("image_ids")
    maximum = get_settings().archive_max_images
    if not isinstance(raw, list) or not raw:
        raise ValidationError("image_ids must be a non-empty list of image ids", field="image_ids")
    if len(raw) > maximum:
        raise ValidationError(f"image_ids may hold at most {maximum} ids (got {len(raw)})", field="image_ids")
    for index, value in enumerate(raw):
        if not isinstance(value, str) or not ULID_RE.match(value):
            raise ValidationError("not an image id", field=f"image_ids[{index}]")
    ids = list(dict.fromkeys(raw))
    found = images_by_id(user_id, ids)
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound("image")
    return _create(user_id, "images", None, ids, fmt)


def get_archive(user_id: str, archive_id: str) -> dict[str, Any]:
    """``GET /v1/archives/{id}``.

    Raises:
        NotFound: 404 when it does not exist or belongs to another user.
    """
    if not ULID_RE.match(archive_id or ""):
        raise NotFound("archive")
    try:
        archive = ArchiveModel.get(user_id, archive_id, consistent_read=True)
    except ArchiveModel.DoesNotExist:
        raise NotFound("archive") from None
    return archive_json(archive)
