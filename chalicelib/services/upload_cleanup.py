"""Cleanup sweeps for uploads, run with the image sweeps (``chalicelib.services.cleanup``).

===================  ==================================================================
sweep                rule
===================  ==================================================================
upload_retention     uploads whose ``created_at`` is older than ``IMAGE_RETENTION_DAYS``
                     days lose their item (with their quota bytes, in one transaction),
                     then their objects. 0 days keeps uploads forever.
upload_orphans       (a) objects ``users/{user}/uploads/{id}.*`` older than 1 h that no
                     upload item references, and sources ``uploads/{user}/{id}`` older
                     than 1 h whose upload is gone or no longer pending, are deleted;
                     (b) pending uploads older than the presigned POST's lifetime plus
                     1 h are settled: verified now when their file arrived (a lost S3
                     event), else ``rejected`` as ``not-received`` (their reservation
                     goes back to the quota); (c) ZIPs still ``processing`` 1 h after
                     their worker's lease ended (it crashed every time) are ``rejected``
                     as ``unpack-failed``, keeping their per-file results so far.
===================  ==================================================================

Both are paginated, stop at their time budget (``complete=False``), are idempotent, and
have a dry-run mode, as the image sweeps are (same :class:`SweepReport` counts).
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from typing import Any

from pynamodb.exceptions import TransactWriteError

from chalicelib.db import UploadModel
from chalicelib.db.uploads import KIND_IMAGE, PENDING, PROCESSING
from chalicelib.services.cleanup import (
    ORPHAN_MIN_AGE,
    SCAN_PAGE_SIZE,
    USERS_PREFIX,
    _chunks,
    _delete_objects,
    _dry_run,
    _finish,
    _list_objects,
    _now,
)
from chalicelib.services.uploads import delete_item
from chalicelib.settings import get_settings
from chalicelib.storage import uploads as upload_store
from chalicelib.sweeps import Deadline, SweepReport

#: ``users/{user_id}/uploads/{upload_id}.{suffix}``, the layout of ``storage.uploads.stored_key``/``thumb_key``.
STORED_OBJECT_RE = re.compile(r"^users/(?P<user_id>[^/]+)/uploads/(?P<upload_id>[^/.]+)\.[^/]+$")
BATCH_GET_MAX = 100


def _scan_uploads(filter_condition: Any = None) -> Any:
    """Upload items, one Scan page at a time (pages yielded even when empty)."""
    results = UploadModel.scan(filter_condition=filter_condition, page_size=SCAN_PAGE_SIZE)
    for page in results.page_iter:
        yield [UploadModel.from_raw_data(raw) for raw in page.get("Items", [])]


def sweep_upload_retention(
    *,
    now: datetime | None = None,
    retention_days: int | None = None,
    dry_run: bool | None = None,
    budget_s: float | None = None,
) -> SweepReport:
    """Delete uploads older than ``retention_days`` (default ``IMAGE_RETENTION_DAYS``; 0 keeps all).

    Returns:
        counts ``scanned_expired``, ``uploads_deleted``, ``objects_deleted``, ``already_gone``,
        ``errors`` (or ``would_delete_uploads`` in dry-run; ``disabled`` when retention is 0).
    """
    started = time.monotonic()
    now = _now(now)
    dry = _dry_run(dry_run)
    report = SweepReport("upload_retention", dry, now)
    days = get_settings().image_retention_days if retention_days is None else retention_days
    if days <= 0:
        report.add("disabled")
        return _finish(report, started)
    cutoff = (now - timedelta(days=days)).timestamp()
    deadline = Deadline(budget_s)
    for batch in _scan_uploads(UploadModel.created_at < cutoff):
        if deadline.expired():
            report.complete = False
            break
        report.add("scanned_expired", len(batch))
        if dry:
            report.add("would_delete_uploads", len(batch))
            continue
        keys: list[str] = []
        for item in batch:
            try:
                report.add("uploads_deleted" if delete_item(item) else "already_gone")
            except TransactWriteError:
                report.add("errors")
                continue
            keys.extend(k for k in (item.source_key, item.s3_key, item.thumb_key) if k)
        _delete_objects(keys, report, "objects_deleted")
    return _finish(report, started)


def _items_of(pairs: set[tuple[str, str]]) -> dict[tuple[str, str], UploadModel]:
    found: dict[tuple[str, str], UploadModel] = {}
    for chunk in _chunks(sorted(pairs), BATCH_GET_MAX):
        for item in UploadModel.batch_get(chunk, consistent_read=True):
            found[(item.user_id, item.upload_id)] = item
    return found


def _orphan_objects(prefix: str, pattern: Any, report: SweepReport, cutoff: datetime, deadline: Deadline) -> None:
    """Delete (or count, dry-run) objects under ``prefix`` older than ``cutoff`` that no
    upload owns: stored copies no item references, sources of gone or settled uploads."""
    for page in _list_objects(prefix):
        if deadline.expired():
            report.complete = False
            return
        candidates: dict[str, tuple[str, str]] = {}
        for obj in page:
            match = pattern(obj["Key"])
            if match is None:
                continue
            report.add("listed")
            if obj["LastModified"] >= cutoff:
                report.add("kept_young")
                continue
            candidates[obj["Key"]] = match
        if not candidates:
            continue
        items = _items_of(set(candidates.values()))
        orphans = []
        for key, pair in candidates.items():
            item = items.get(pair)
            owned = item is not None and (
                key in (item.s3_key, item.thumb_key) or (key == item.source_key and item.status == PENDING)
            )
            if not owned:
                orphans.append(key)
        report.add("kept_referenced", len(candidates) - len(orphans))
        if report.dry_run:
            report.add("would_delete_objects", len(orphans))
        else:
            _delete_objects(orphans, report, "objects_deleted")


def _stored_match(key: str) -> tuple[str, str] | None:
    match = STORED_OBJECT_RE.match(key)
    return (match["user_id"], match["upload_id"]) if match else None


def _settle_stale_pending(report: SweepReport, now: datetime, deadline: Deadline) -> None:
    """Pending uploads past their POST's lifetime + 1 h: verify if the file came, else reject."""
    from chalicelib.services import upload_worker

    cutoff = (now - ORPHAN_MIN_AGE).timestamp() - get_settings().upload_post_expires_seconds
    for batch in _scan_uploads((UploadModel.status == PENDING) & (UploadModel.created_at < cutoff)):
        if deadline.expired():
            report.complete = False
            return
        for item in batch:
            report.add("stale_pending")
            arrived = upload_store.head(item.source_key) is not None if item.source_key else False
            if report.dry_run:
                report.add("would_settle")
                continue
            if arrived and item.kind == KIND_IMAGE:
                upload_worker.verify_image(item)
                report.add("verified_late")
            elif not arrived:
                moved = upload_worker.reject(item, "not-received", "the file was never uploaded")
                report.add("rejected_not_received" if moved else "already_gone")
            else:
                report.add("zip_left_to_queue")
    stuck_before = (now - ORPHAN_MIN_AGE).timestamp()
    for batch in _scan_uploads((UploadModel.status == PROCESSING) & (UploadModel.lease_until < stuck_before)):
        if deadline.expired():
            report.complete = False
            return
        for item in batch:
            report.add("stuck_processing")
            if report.dry_run:
                report.add("would_settle")
                continue
            moved = upload_worker.reject(
                item, "unpack-failed", "the ZIP could not be unpacked; its results so far are kept", PROCESSING
            )
            report.add("rejected_unpack_failed" if moved else "already_gone")


def sweep_upload_orphans(
    *,
    now: datetime | None = None,
    dry_run: bool | None = None,
    budget_s: float | None = None,
    min_age: timedelta = ORPHAN_MIN_AGE,
) -> SweepReport:
    """Orphaned upload objects and stale pending uploads (see the module docstring).

    Returns:
        counts ``listed``, ``kept_young``, ``kept_referenced``, ``objects_deleted`` (or
        ``would_delete_objects``), ``stale_pending``, ``verified_late``,
        ``rejected_not_received``, ``stuck_processing``, ``rejected_unpack_failed`` (or
        ``would_settle``), ``errors``.
    """
    started = time.monotonic()
    now = _now(now)
    report = SweepReport("upload_orphans", _dry_run(dry_run), now)
    deadline = Deadline(budget_s)
    cutoff = now - min_age
    _orphan_objects(USERS_PREFIX, _stored_match, report, cutoff, deadline)
    _orphan_objects(upload_store.SOURCE_PREFIX, upload_store.parse_source_key, report, cutoff, deadline)
    _settle_stale_pending(report, now, deadline)
    return _finish(report, started)
