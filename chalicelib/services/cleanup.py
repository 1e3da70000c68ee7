"""Scheduled cleanup sweeps: image and video retention, orphans, stuck videos, expired archives.

Storage stays bounded and no live data is ever deleted. Each sweep

- is paginated (S3 ListObjectsV2 pages of up to 1000 keys, DynamoDB Scan pages of
  :data:`SCAN_PAGE_SIZE` items) and stops at a time budget kept under its Lambda's
  timeout (:func:`chalicelib.sweeps.time_budget`), reporting ``complete=False``; the next run starts over;
- is idempotent and safe to run twice at once: S3 DeleteObjects succeeds for keys
  already gone, and metadata is removed with a conditional DeleteItem, so of two
  concurrent runs exactly one removes an item and the other counts it ``already_gone``;
- logs what it did as counts (one JSON log line and one EMF metric per count);
- has a dry-run mode (``dry_run=True`` or ``CLEANUP_DRY_RUN=true``): it reads and
  counts (``would_delete_*``) and changes nothing.

The sweeps, their rules and schedules (``app.py``, section "scheduled cleanup"):

===============  ========  ================================================================
sweep            schedule  rule
===============  ========  ================================================================
retention        hourly    images whose ``created_at`` is older than ``IMAGE_RETENTION_DAYS``
                           days lose their metadata (conditional DeleteItem) and then their
                           original and thumbnail objects. 0 days keeps images forever.
                           DynamoDB TTL on ``expires_at`` is the backstop (see infra/).
video_retention  hourly    videos that ended (``completed`` / ``failed``) and whose
                           ``created_at`` is older than ``VIDEO_RETENTION_DAYS`` days (unset:
                           ``IMAGE_RETENTION_DAYS``) lose their item (conditional DeleteItem),
                           then their file and poster. 0 days keeps videos forever. A video
                           still running is left to the stuck-video sweep.
orphans          daily     (a) objects ``users/{user}/images/{image}.{ext}`` older than
                           :data:`ORPHAN_MIN_AGE` (1 h) that no image item references are
                           deleted; younger ones are uploads in flight (the write path puts
                           the objects first, then the item) and are kept. The same for
                           ``users/{user}/videos/{video}.{ext}`` (file and poster) and
                           video items: an object is kept while its video's item references
                           it (the poster via ``poster_key``, the file while the video runs
                           or once it is ``completed``); a failed video's file is not. Keys
                           under ``users/`` in any other layout are counted ``unrecognized``
                           and kept. (b) items whose original object is missing (HeadObject
                           404) are removed with their thumbnail; a missing thumbnail alone
                           is only counted (the image is still viewable).
stuck_videos     15 min    videos still ``queued`` / ``submitting`` / ``rendering``
                           :data:`STUCK_VIDEO_GRACE` (15 min) past their ``deadline_at``
                           (their queue message is gone, e.g. dead-lettered) fail with code
                           ``deadline`` through the worker's own fail path
                           (:func:`chalicelib.services.video_worker.fail_video`): one
                           conditional write, so of the sweep and a live worker exactly one
                           ends the video and gives its quota unit back.
uploads          (above)   the retention and orphan rules for uploads, in
                           ``chalicelib.services.upload_cleanup``.
archives         hourly    ZIPs under ``archives/`` older than :data:`ARCHIVE_MAX_AGE` (24 h)
                           are deleted; an S3 lifecycle rule (infra/) backs this up.
shares           hourly    share links whose ``expires_at`` has passed are deleted (conditional
                           DeleteItem); DynamoDB TTL on ``expires_at`` is the backstop.
===============  ========  ================================================================

Order of deletes: metadata first, then objects (as ``images.delete_image`` does), so a
crash in between leaves an orphan object, which the orphan sweep removes, never an item
pointing at nothing.

Ages are measured against ``now`` (an aware UTC datetime, default the current time), so
tests pass ``now`` instead of waiting.

Sources: Amazon S3 API reference, ListObjectsV2 (1000 keys per page, ``LastModified``),
DeleteObjects (up to 1000 keys; deleting a missing key succeeds), HeadObject (404 when
missing); Amazon DynamoDB developer guide, "Condition expressions" (conditional
DeleteItem), "Time to Live" (TTL deletes within a few days, hence only a backstop),
Scan pagination (``LastEvaluatedKey``), BatchGetItem (100 keys per call).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError
from pynamodb.exceptions import DeleteError, TransactWriteError, UpdateError

from chalicelib import observability
from chalicelib.db import ImageModel, UsageModel, VideoModel, is_condition_failure
from chalicelib.db.images import collection_counter_period, delete_image_item
from chalicelib.services.video_worker import fail_video
from chalicelib.settings import get_settings
from chalicelib.storage import objects
from chalicelib.sweeps import Deadline, SweepReport

USERS_PREFIX = "users/"
ARCHIVES_PREFIX = "archives/"
ORPHAN_MIN_AGE = timedelta(hours=1)
ARCHIVE_MAX_AGE = timedelta(hours=24)
STUCK_VIDEO_GRACE = timedelta(minutes=15)
SCAN_PAGE_SIZE = 100  # DynamoDB items per Scan page
BATCH_GET_MAX = 100  # DynamoDB BatchGetItem keys per call
LIST_PAGE_SIZE = 1000  # S3 ListObjectsV2 keys per page
HEAD_CONCURRENCY = 8  # parallel HeadObject calls in the metadata check

#: ``users/{user_id}/images/{image_id}.{suffix}`` (``.png``/``.jpeg``/``.thumb.webp``),
#: the layout of :func:`chalicelib.storage.objects.image_key` / ``thumb_key``.
IMAGE_OBJECT_RE = re.compile(r"^users/(?P<user_id>[^/]+)/images/(?P<image_id>[^/.]+)\.[^/]+$")
#: ``users/{user_id}/videos/{video_id}.{suffix}`` (``.mp4``/``.poster.webp``), the layout of
#: :func:`chalicelib.storage.objects.video_key` / ``poster_key``.
VIDEO_OBJECT_RE = re.compile(r"^users/(?P<user_id>[^/]+)/videos/(?P<video_id>[^/.]+)\.[^/]+$")
#: Video states in which the worker still owns the video (it may yet write the file).
VIDEO_RUNNING = ("queued", "submitting", "rendering")


def _now(now: datetime | None) -> datetime:
    """``now`` as an aware UTC datetime (default: the current time).

    Raises:
        ValueError: ``now`` is naive.
    """
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


def _dry_run(dry_run: bool | None) -> bool:
    return get_settings().cleanup_dry_run if dry_run is None else dry_run


def _chunks[T](items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _finish(report: SweepReport, started: float) -> SweepReport:
    """Time, log and meter a finished run (counts only: no keys, no user data)."""
    report.seconds = time.monotonic() - started
    summary = report.as_dict()
    observability.get_logger().info(
        "cleanup sweep %s %s",
        report.sweep,
        "finished" if report.complete else "stopped at its time budget",
        extra={"cleanup": summary},
    )
    camel = "".join(part.capitalize() for part in report.sweep.split("_"))
    observability.record_counts(f"Cleanup{camel}", {**report.counts, "incomplete": 0 if report.complete else 1})
    return report


# -- S3 helpers -----------------------------------------------------------------------------------


def _list_objects(prefix: str) -> Iterator[list[dict[str, Any]]]:
    """Pages of ``{"Key", "LastModified", ...}`` under ``prefix``, :data:`LIST_PAGE_SIZE` a page."""
    return objects.list_pages(prefix, page_size=LIST_PAGE_SIZE)


def _delete_objects(keys: list[str], report: SweepReport, counter: str) -> None:
    """Delete ``keys``; failures are counted ``errors``, the rest ``counter``. Keys
    already gone count as deleted (S3 reports them deleted)."""
    keys = sorted({k for k in keys if k})
    for chunk in _chunks(keys, objects.DELETE_OBJECTS_MAX):
        try:
            failed = objects.delete_chunk(chunk)
        except ClientError:
            observability.get_logger().warning("cleanup: DeleteObjects failed for %d keys", len(chunk))
            report.add("errors", len(chunk))
            continue
        report.add("errors", failed)
        report.add(counter, len(chunk) - failed)


def _scan_pages(filter_condition: Any = None) -> Iterator[list[ImageModel]]:
    """Image items, one DynamoDB Scan page at a time (``SCAN_PAGE_SIZE`` items read per
    page, fewer returned when filtered), with only the attributes the sweeps use. Pages
    are yielded even when empty, so the caller checks its deadline on every request."""
    results = ImageModel.scan(
        filter_condition=filter_condition,
        attributes_to_get=["user_id", "image_id", "s3_key", "thumb_key", "created_at", "collection"],
        page_size=SCAN_PAGE_SIZE,
    )
    for page in results.page_iter:
        yield [ImageModel.from_raw_data(raw) for raw in page.get("Items", [])]


def _delete_item(item: ImageModel, condition: Any) -> bool:
    """Conditional delete of one image item (as scanned), with its collection counter
    (:func:`chalicelib.db.images.delete_image_item`). True if this call removed it, False
    if the condition failed (already gone, or no longer matching).

    Raises:
        DeleteError / TransactWriteError: any other DynamoDB failure.
    """
    return delete_image_item(item.user_id, item.image_id, item.collection, condition)


def _run_retention[T](
    sweep: str,
    noun: str,
    *,
    now: datetime | None,
    dry_run: bool | None,
    budget_s: float | None,
    days: int,
    pages: Callable[[datetime], Iterable[list[T]]],
    remove: Callable[[T, datetime], tuple[bool, list[str]]],
) -> SweepReport:
    """The retention loop shared by images and videos: scan the items older than ``days``
    days (``pages(cutoff)``), remove each item (``remove(item, cutoff)`` answers whether this
    call removed it, and the keys of its two objects), then delete the objects.

    Returns:
        counts ``scanned_expired``, ``{noun}_deleted``, ``objects_deleted``, ``already_gone``,
        ``errors`` (or ``would_delete_{noun}`` / ``would_delete_objects`` in dry-run;
        ``disabled`` when ``days`` is 0 or less).
    """
    started = time.monotonic()
    now = _now(now)
    dry = _dry_run(dry_run)
    report = SweepReport(sweep, dry, now)
    if days <= 0:
        report.add("disabled")
        return _finish(report, started)
    cutoff = now - timedelta(days=days)
    deadline = Deadline(budget_s)
    for batch in pages(cutoff):
        if deadline.expired():
            report.complete = False
            break
        report.add("scanned_expired", len(batch))
        if dry:
            report.add(f"would_delete_{noun}", len(batch))
            report.add("would_delete_objects", 2 * len(batch))
            continue
        keys: list[str] = []
        for item in batch:
            try:
                removed, item_keys = remove(item, cutoff)
            except (DeleteError, TransactWriteError):
                report.add("errors")
                continue
            report.add(f"{noun}_deleted" if removed else "already_gone")
            # objects go in both cases: an item gone by another run/user left them to us or the orphan sweep
            keys.extend(item_keys)
        _delete_objects(keys, report, "objects_deleted")
    return _finish(report, started)


# -- retention ------------------------------------------------------------------------------------


def sweep_retention(
    *,
    now: datetime | None = None,
    retention_days: int | None = None,
    dry_run: bool | None = None,
    budget_s: float | None = None,
) -> SweepReport:
    """Delete images older than ``retention_days``: metadata, then original and thumbnail.

    Args:
        now: reference time (aware UTC; default now).
        retention_days: default ``IMAGE_RETENTION_DAYS``; 0 (or less) keeps every image.
        dry_run: default ``CLEANUP_DRY_RUN``.
        budget_s: seconds this run may take (default: no limit).

    Returns:
        counts ``scanned_expired``, ``images_deleted``, ``objects_deleted``,
        ``already_gone``, ``errors`` (or ``would_delete_images`` / ``would_delete_objects``
        in dry-run; ``disabled`` when retention is 0).
    """

    def remove(item: ImageModel, cutoff: datetime) -> tuple[bool, list[str]]:
        removed = _delete_item(item, ImageModel.image_id.exists() & (ImageModel.created_at < cutoff))
        return removed, [item.s3_key, item.thumb_key]

    return _run_retention(
        "retention",
        "images",
        now=now,
        dry_run=dry_run,
        budget_s=budget_s,
        days=get_settings().image_retention_days if retention_days is None else retention_days,
        pages=lambda cutoff: _scan_pages(ImageModel.created_at < cutoff),
        remove=remove,
    )


# -- orphans --------------------------------------------------------------------------------------


def _referenced_keys(pairs: set[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
    """``{(user_id, image_id): {s3_key, thumb_key}}`` for the pairs that have an item
    (BatchGetItem, strongly consistent, 100 keys per call)."""
    found: dict[tuple[str, str], set[str]] = {}
    for chunk in _chunks(sorted(pairs), BATCH_GET_MAX):
        for item in ImageModel.batch_get(
            chunk, consistent_read=True, attributes_to_get=["user_id", "image_id", "s3_key", "thumb_key"]
        ):
            found[(item.user_id, item.image_id)] = {item.s3_key, item.thumb_key}
    return found


def _referenced_video_keys(pairs: set[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
    """``{(user_id, video_id): keys its item references}`` for the pairs that have a video
    item (BatchGetItem, strongly consistent, 100 keys per call): the poster when
    ``poster_key`` is set, the file while the video runs (the worker writes the object,
    then the item) or once it is ``completed``; a failed video's file is referenced by nothing."""
    found: dict[tuple[str, str], set[str]] = {}
    for chunk in _chunks(sorted(pairs), BATCH_GET_MAX):
        for item in VideoModel.batch_get(
            chunk, consistent_read=True, attributes_to_get=["user_id", "video_id", "status", "s3_key", "poster_key"]
        ):
            keys = {item.poster_key} if item.poster_key else set()
            if item.status in VIDEO_RUNNING:
                keys.add(objects.video_key(item.user_id, item.video_id))
            elif item.status == "completed" and item.s3_key:
                keys.add(item.s3_key)
            found[(item.user_id, item.video_id)] = keys
    return found


def _orphans_of(
    candidates: dict[str, tuple[str, str]],
    referenced: Callable[[set[tuple[str, str]]], dict[tuple[str, str], set[str]]],
) -> list[str]:
    """The keys of ``candidates`` (``{key: (user_id, id)}``) that ``referenced`` (a function of
    the id pairs, answering ``{pair: referenced keys}``) does not reference."""
    if not candidates:
        return []
    found = referenced(set(candidates.values()))
    return [key for key, pair in candidates.items() if key not in found.get(pair, set())]


def sweep_orphan_objects(
    *,
    now: datetime | None = None,
    dry_run: bool | None = None,
    budget_s: float | None = None,
    min_age: timedelta = ORPHAN_MIN_AGE,
) -> SweepReport:
    """Delete image and video objects under ``users/`` older than ``min_age`` that no item
    references (image objects: an image item; video files and posters: a video item, as
    :func:`_referenced_video_keys` says).

    Args:
        now: reference time (aware UTC; default now). An object is old when
            ``LastModified < now - min_age``.
        dry_run: default ``CLEANUP_DRY_RUN``.
        budget_s: seconds this run may take (default: no limit).
        min_age: default 1 h; younger objects are uploads in flight and are kept.

    Returns:
        counts ``listed``, ``kept_young``, ``kept_referenced``, ``unrecognized``,
        ``video_orphans`` (of the orphans, video files and posters), ``objects_deleted``
        (or ``would_delete_objects``), ``errors``.
    """
    started = time.monotonic()
    now = _now(now)
    dry = _dry_run(dry_run)
    report = SweepReport("orphan_objects", dry, now)
    deadline = Deadline(budget_s)
    cutoff = now - min_age
    for page in _list_objects(USERS_PREFIX):
        if deadline.expired():
            report.complete = False
            break
        report.add("listed", len(page))
        image_candidates: dict[str, tuple[str, str]] = {}
        video_candidates: dict[str, tuple[str, str]] = {}
        for obj in page:
            if obj["LastModified"] >= cutoff:
                report.add("kept_young")
                continue
            if match := IMAGE_OBJECT_RE.match(obj["Key"]):
                image_candidates[obj["Key"]] = (match["user_id"], match["image_id"])
            elif match := VIDEO_OBJECT_RE.match(obj["Key"]):
                video_candidates[obj["Key"]] = (match["user_id"], match["video_id"])
            else:
                report.add("unrecognized")
        if not (image_candidates or video_candidates):
            continue
        orphans = _orphans_of(image_candidates, _referenced_keys)
        video_orphans = _orphans_of(video_candidates, _referenced_video_keys)
        report.add("kept_referenced", len(image_candidates) + len(video_candidates) - len(orphans) - len(video_orphans))
        report.add("video_orphans", len(video_orphans))
        orphans += video_orphans
        if dry:
            report.add("would_delete_objects", len(orphans))
        else:
            _delete_objects(orphans, report, "objects_deleted")
    return _finish(report, started)


def sweep_orphan_metadata(
    *,
    now: datetime | None = None,
    dry_run: bool | None = None,
    budget_s: float | None = None,
) -> SweepReport:
    """Remove image items whose original object is missing (and their thumbnail object).

    An item whose thumbnail alone is missing is kept and counted ``missing_thumbnail``.
    An object S3 cannot answer for (not a 404) is never treated as missing.

    Args:
        now: reference time for the report (aware UTC; default now).
        dry_run: default ``CLEANUP_DRY_RUN``.
        budget_s: seconds this run may take (default: no limit).

    Returns:
        counts ``checked``, ``images_deleted`` (or ``would_delete_images``),
        ``already_gone``, ``missing_thumbnail``, ``unknown`` (S3 error), ``errors``.
    """
    started = time.monotonic()
    now = _now(now)
    dry = _dry_run(dry_run)
    report = SweepReport("orphan_metadata", dry, now)
    deadline = Deadline(budget_s)
    with ThreadPoolExecutor(max_workers=HEAD_CONCURRENCY) as pool:
        for batch in _scan_pages():
            if deadline.expired():
                report.complete = False
                break
            report.add("checked", len(batch))
            originals = list(pool.map(objects.exists, [item.s3_key for item in batch]))
            thumbs = list(pool.map(objects.exists, [item.thumb_key for item in batch]))
            leftovers: list[str] = []
            for item, original, thumb in zip(batch, originals, thumbs, strict=True):
                if original is None or thumb is None:
                    report.add("unknown")
                    continue
                if original:
                    if not thumb:
                        report.add("missing_thumbnail")
                    continue
                if dry:
                    report.add("would_delete_images")
                    continue
                try:
                    removed = _delete_item(item, ImageModel.s3_key == item.s3_key)
                except (DeleteError, TransactWriteError):
                    report.add("errors")
                    continue
                report.add("images_deleted" if removed else "already_gone")
                if thumb:
                    leftovers.append(item.thumb_key)
            _delete_objects(leftovers, report, "objects_deleted")
    return _finish(report, started)


def sweep_archives(
    *,
    now: datetime | None = None,
    dry_run: bool | None = None,
    budget_s: float | None = None,
    max_age: timedelta = ARCHIVE_MAX_AGE,
) -> SweepReport:
    """Delete objects under ``archives/`` whose ``LastModified`` is older than ``max_age``.

    Args:
        now: reference time (aware UTC; default now).
        dry_run: default ``CLEANUP_DRY_RUN``.
        budget_s: seconds this run may take (default: no limit).
        max_age: default 24 h.

    Returns:
        counts ``listed``, ``kept_young``, ``objects_deleted`` (or
        ``would_delete_objects``), ``errors``.
    """
    started = time.monotonic()
    now = _now(now)
    dry = _dry_run(dry_run)
    report = SweepReport("archives", dry, now)
    deadline = Deadline(budget_s)
    cutoff = now - max_age
    for page in _list_objects(ARCHIVES_PREFIX):
        if deadline.expired():
            report.complete = False
            break
        report.add("listed", len(page))
        old = [obj["Key"] for obj in page if obj["LastModified"] < cutoff]
        report.add("kept_young", len(page) - len(old))
        if dry:
            report.add("would_delete_objects", len(old))
        else:
            _delete_objects(old, report, "objects_deleted")
    return _finish(report, started)


# -- videos ---------------------------------------------------------------------------------------


def _scan_videos(filter_condition: Any, attributes: list[str] | None = None) -> Iterator[list[VideoModel]]:
    """Video items matching ``filter_condition``, one Scan page (:data:`SCAN_PAGE_SIZE` items
    read) at a time, pages yielded even when empty; only ``attributes`` when given."""
    results = VideoModel.scan(filter_condition=filter_condition, attributes_to_get=attributes, page_size=SCAN_PAGE_SIZE)
    for page in results.page_iter:
        yield [VideoModel.from_raw_data(raw) for raw in page.get("Items", [])]


def _delete_video_item(item: VideoModel, condition: Any) -> bool:
    """Conditional DeleteItem of one video item. True if this call removed it, False if the
    condition failed (gone already, or no longer matching).

    Raises:
        DeleteError: any other DynamoDB failure.
    """
    try:
        VideoModel(item.user_id, item.video_id).delete(condition=condition)
    except DeleteError as exc:
        if is_condition_failure(exc):
            return False
        raise
    return True


def sweep_video_retention(
    *,
    now: datetime | None = None,
    retention_days: int | None = None,
    dry_run: bool | None = None,
    budget_s: float | None = None,
) -> SweepReport:
    """Delete ended videos older than ``retention_days``: the item, then the file and poster.

    Only ``completed`` and ``failed`` videos are deleted: a running one holds a quota unit
    that :func:`sweep_stuck_videos` gives back when it fails it, and is deleted by a later run.

    Args:
        now: reference time (aware UTC; default now).
        retention_days: default ``VIDEO_RETENTION_DAYS`` (unset: ``IMAGE_RETENTION_DAYS``);
            0 (or less) keeps every video.
        dry_run: default ``CLEANUP_DRY_RUN``.
        budget_s: seconds this run may take (default: no limit).

    Returns:
        counts ``scanned_expired``, ``videos_deleted``, ``objects_deleted``, ``already_gone``,
        ``errors`` (or ``would_delete_videos`` / ``would_delete_objects`` in dry-run;
        ``disabled`` when retention is 0).
    """

    def expired(cutoff: datetime) -> Any:
        return (VideoModel.created_at < cutoff) & VideoModel.status.is_in("completed", "failed")

    def remove(item: VideoModel, cutoff: datetime) -> tuple[bool, list[str]]:
        removed = _delete_video_item(item, VideoModel.video_id.exists() & expired(cutoff))
        # the fixed keys, not only the item's: a file written by a worker that lost a race goes too
        return removed, [
            objects.video_key(item.user_id, item.video_id),
            objects.poster_key(item.user_id, item.video_id),
        ]

    return _run_retention(
        "video_retention",
        "videos",
        now=now,
        dry_run=dry_run,
        budget_s=budget_s,
        days=get_settings().video_retention_days if retention_days is None else retention_days,
        pages=lambda cutoff: _scan_videos(expired(cutoff), ["user_id", "video_id"]),
        remove=remove,
    )


def sweep_stuck_videos(
    *,
    now: datetime | None = None,
    dry_run: bool | None = None,
    budget_s: float | None = None,
    grace: timedelta = STUCK_VIDEO_GRACE,
) -> SweepReport:
    """Fail videos still running ``grace`` past their ``deadline_at``, with code ``deadline``.

    A live worker fails such a video itself at its next delivery (at most
    ``VIDEO_POLL_MAX_SECONDS`` or the submit-claim TTL later); one still running well past
    its deadline has lost its queue message (dead-lettered, or a send that never happened).
    Each is failed through :func:`chalicelib.services.video_worker.fail_video`: a
    conditional UpdateItem on the running states, then the quota unit back, so a video the
    worker or another sweep ended meanwhile is counted ``already_ended`` and refunded once.

    Args:
        now: reference time (aware UTC; default now).
        dry_run: default ``CLEANUP_DRY_RUN``.
        budget_s: seconds this run may take (default: no limit).
        grace: default 15 min.

    Returns:
        counts ``scanned_stuck``, ``videos_failed`` (or ``would_fail_videos``),
        ``already_ended``, ``errors``.
    """
    started = time.monotonic()
    now = _now(now)
    dry = _dry_run(dry_run)
    report = SweepReport("stuck_videos", dry, now)
    cutoff = int((now - grace).timestamp())
    deadline = Deadline(budget_s)
    for batch in _scan_videos(VideoModel.status.is_in(*VIDEO_RUNNING) & (VideoModel.deadline_at < cutoff)):
        if deadline.expired():
            report.complete = False
            break
        report.add("scanned_stuck", len(batch))
        if dry:
            report.add("would_fail_videos", len(batch))
            continue
        for item in batch:
            try:
                ended = fail_video(item, "deadline", "the video was not ready before its deadline")
            except UpdateError:
                report.add("errors")
                continue
            report.add("videos_failed" if ended else "already_ended")
    return _finish(report, started)


# -- collection counters --------------------------------------------------------------------------


def rebuild_collection_counts() -> dict[str, int]:
    """Set every user's collection counters from the image items (one Scan of the images
    table, projected to ``user_id`` and ``collection``). For a stage whose images were
    stored before the counters existed: run it once after deploying. A store or delete
    that lands while it scans can leave that collection off by one until the next run.

    Returns:
        ``{"images": scanned, "counters": counters written}``.
    """
    counts: Counter[tuple[str, str]] = Counter()
    scanned = 0
    for page in ImageModel.scan(attributes_to_get=["user_id", "collection"], page_size=SCAN_PAGE_SIZE).page_iter:
        for raw in page.get("Items", []):
            item = ImageModel.from_raw_data(raw)
            scanned += 1
            if item.collection:
                counts[(item.user_id, item.collection)] += 1
    for (user_id, collection), n in counts.items():
        UsageModel(user_id, collection_counter_period(collection)).update(actions=[UsageModel.count.set(n)])
    observability.get_logger().info("collection counters rebuilt images=%d counters=%d", scanned, len(counts))
    return {"images": scanned, "counters": len(counts)}


# -- share links ----------------------------------------------------------------------------------


def sweep_shares(
    *, now: datetime | None = None, dry_run: bool | None = None, budget_s: float | None = None
) -> SweepReport:
    """Delete expired share links (``chalicelib.services.shares.sweep_expired``).

    Args:
        now: reference time (aware UTC; default now).
        dry_run: default ``CLEANUP_DRY_RUN``.
        budget_s: seconds this run may take (default: no limit).

    Returns:
        counts ``scanned``, ``shares_deleted`` (or ``would_delete_shares``), ``already_gone``.
    """
    from chalicelib.services import shares

    started = time.monotonic()
    now = _now(now)
    dry = _dry_run(dry_run)
    report = SweepReport("shares", dry, now)
    counts = shares.sweep_expired(now=now, dry_run=dry, deadline=Deadline(budget_s))
    report.complete = not counts.pop("incomplete")
    for name, n in counts.items():
        report.add(name, n)
    return _finish(report, started)
