"""The recovery sweep (``@app.schedule(Rate(5, unit=Rate.MINUTES))``): it finds work that
stopped moving and moves it on again.

What can get stuck, and what the sweep does about it:

=====================================  =================================================
stuck                                  action
=====================================  =================================================
DLQ message (maxReceiveCount spent)    item: failed ``dead-lettered`` (if queued or its
                                       lease expired); archive: failed; video (not ended):
                                       failed ``dead-lettered``, refunded; then deleted
item ``running``, lease expired        re-queued and re-sent, or failed ``lease-expired``
                                       after ``MAX_ITEM_ATTEMPTS`` (``cancelled`` if its
                                       job was cancelled)
job never fully enqueued               its queued items are sent (``enqueued_at`` unset
                                       :data:`ENQUEUE_GRACE_S` after submit)
job stalled with queued items          their messages are sent again (no counter change
                                       for :data:`STALLED_S`)
counters disagree with the items       set from the items, if nothing moved for
                                       :data:`RECONCILE_AFTER_S` (a worker died between
                                       its item write and its counter write)
counters complete, job not finished    finished (status, ``finished_at``, webhook due)
webhook attempt due                    enqueued on the webhooks queue (the webhook
                                       worker delivers; the sweep never does)
archive ``queued``, message never      its message is sent (``enqueued_at`` unset for
sent or long unanswered                ``ARCHIVE_ENQUEUE_GRACE_S``, or sent
                                       ``ARCHIVE_RESEND_S`` ago)
archive ``building``, lease expired    its message is sent (the worker takes the lease
                                       over), or failed after ``ARCHIVE_MAX_ATTEMPTS``
archive unfinished after 1 h           failed (``ARCHIVE_GIVE_UP_S``)
=====================================  =================================================

Only jobs in the sparse ``by_active`` index are read, page by page, within a time
budget (``SWEEP_TIME_BUDGET_SECONDS``, see :func:`chalicelib.sweeps.time_budget`).
Every change is a conditional write and
every re-sent message is idempotent, so two sweeps may run at once. With
``dry_run`` (``SWEEP_DRY_RUN``) it counts what it would do and changes nothing
(DLQ messages are received with a zero visibility timeout and left in place).
It returns a :class:`~chalicelib.sweeps.SweepReport` (``sweep = "recovery"``), also
logged as one JSON line.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from pynamodb.exceptions import UpdateError

from chalicelib import queue
from chalicelib.db import JobItemModel, JobModel, VideoModel
from chalicelib.db.jobs import ACTIVE_SHARD, FAILED, QUEUED, RUNNING, SUCCEEDED, ArchiveModel
from chalicelib.jobs import state
from chalicelib.jobs.submit import ensure_enqueued
from chalicelib.services import archives, video_worker, webhook_queue
from chalicelib.settings import get_settings
from chalicelib.sweeps import Deadline, SweepReport

logger = logging.getLogger("promptcanvas.recovery")

ENQUEUE_GRACE_S = 120  # a submit still enqueuing is left alone this long, seconds
STALLED_S = 1800  # no counter change for this long, with queued items: re-send them, seconds


def recount(body: dict[str, Any], deadline: float) -> state.Done | state.Later:
    """``{"type": "recount", "user_id", "job_id"}`` on the jobs queue (sent by a counter move
    that was retried or failed): once the counters have been quiet for
    :func:`~chalicelib.jobs.state.counters_quiet_s`, set them from the items
    (:func:`reconcile`) and finish the job if nothing is left; until then the message comes
    back when the quiet period would end."""
    try:
        job = JobModel.get(str(body.get("user_id")), str(body.get("job_id")), consistent_read=True)
    except JobModel.DoesNotExist:
        return state.Done("no-job")
    if job.finished_at is not None:
        return state.Done("finished")
    wait = state.counters_quiet_s() - (time.time() - float(job.counters_at or 0))
    if wait > 0:
        return state.Later(wait + 1, "counters-moving")
    report = SweepReport(sweep="recount", dry_run=False, now=datetime.now(UTC))
    reconcile(job, report)
    job.refresh(consistent_read=True)
    state.finish_if_done(job)
    return state.Done("recounted" if report.counts.get("counters_reconciled") else "counters-agreed")


def drain_dlq(report: SweepReport, deadline: Deadline, now: float) -> None:
    """Record every DLQ message's item (or archive) as failed, then delete the message."""
    dlq = get_settings().jobs_dlq_name
    try:
        queue.queue_url(dlq)
    except Exception:  # noqa: BLE001 - no DLQ configured
        logger.warning("the jobs DLQ %s is not reachable", dlq)
        return
    seen: set[str] = set()
    while not deadline.expired():
        messages = queue.receive(dlq, visibility_s=0 if report.dry_run else 60)
        fresh = [m for m in messages if m["MessageId"] not in seen]
        if not fresh:
            return
        done = []
        for message in fresh:
            seen.add(message["MessageId"])
            report.add("dlq_messages")
            if _record_dead_letter(message.get("Body") or "", report, now):
                done.append(message)
        if done and not report.dry_run:
            queue.delete(dlq, [m["ReceiptHandle"] for m in done])
            report.add("dlq_deleted", len(done))


def _record_dead_letter(raw: str, report: SweepReport, now: float) -> bool:
    """Fail what a dead-lettered message was about. Returns True when it may be deleted."""
    try:
        body = json.loads(raw)
        kind = body.get("type")
    except (ValueError, AttributeError):
        return True
    if kind == "item":
        try:
            item = JobItemModel.get(str(body.get("job_id")), str(body.get("item_id")), consistent_read=True)
        except JobItemModel.DoesNotExist:
            return True
        stranded = item.status == QUEUED or (item.status == RUNNING and (item.lease_until or 0) < now)
        if stranded:
            report.add("items_dead_lettered")
            if not report.dry_run:
                state.fail_stranded(item, state.REASON_DEAD_LETTER, "its message exceeded the queue's receive limit")
        return True
    if kind == "archive":
        try:
            archive = ArchiveModel.get(str(body.get("user_id")), str(body.get("archive_id")), consistent_read=True)
        except ArchiveModel.DoesNotExist:
            return True
        if archive.status in ("queued", "building") and (archive.lease_until or 0) < now:
            report.add("archives_dead_lettered")
            if not report.dry_run:
                try:
                    archives.fail(archive, "the archive could not be built", now)
                except UpdateError:
                    pass
        return True
    if kind == "video":
        return _dead_video(body, report)
    return True  # webhook messages: the job's webhook state drives retries


def _dead_video(body: dict, report: SweepReport) -> bool:
    """A dead-lettered ``video`` message: nothing moves that video on any more, so it fails now
    with ``dead-lettered`` (refunded once; a job's video fails its item), rather than at the
    stuck-video sweep after its deadline. Returns True when the message may be deleted."""
    try:
        video = VideoModel.get(str(body.get("user_id")), str(body.get("video_id")), consistent_read=True)
    except VideoModel.DoesNotExist:
        return True
    if video.status in ("completed", "failed"):
        return True
    report.add("videos_dead_lettered")
    if not report.dry_run:
        try:
            video_worker.fail_video(video, state.REASON_DEAD_LETTER, "its message exceeded the queue's receive limit")
        except UpdateError:
            return False
    return True


def sweep_job(job: JobModel, report: SweepReport, now: float) -> None:
    """Everything the sweep does for one active job (see the module table)."""
    settings = get_settings()
    dry = report.dry_run
    report.add("jobs_seen")
    if job.enqueued_at is None and now - float(job.created_at) > ENQUEUE_GRACE_S:
        report.add("jobs_enqueued")
        if not dry:
            ensure_enqueued(job)
    items = state.query_items(job.job_id)
    resend: list[JobItemModel] = []
    for item in items:
        if item.status != RUNNING or (item.lease_until or 0) >= now:
            continue
        if item.cancel_requested:
            report.add("items_cancelled")
            if not dry:
                state.fail_stranded(item, state.REASON_CANCELLED, "the job was cancelled", now=now)
        elif int(item.attempts or 0) >= settings.max_item_attempts:
            report.add("items_lease_exhausted")
            if not dry:
                state.fail_stranded(item, state.REASON_LEASE, f"its lease expired {int(item.attempts)} times", now=now)
        else:
            report.add("leases_requeued")
            if not dry and state.requeue_expired(item, now=now):
                resend.append(item)
    stalled = job.counters_at is not None and now - float(job.counters_at) > STALLED_S
    if stalled and job.enqueued_at is not None:
        old = [i for i in items if i.status == QUEUED and now - float(i.enqueued_at or i.created_at) > STALLED_S]
        report.add("stalled_resent", len(old))
        resend.extend(old)
    if resend and not dry:
        try:
            queue.send_messages([state.item_message(i) for i in resend])
        except queue.QueueError:
            logger.error("sweep could not re-send %d messages of job %s", len(resend), job.job_id)
    if not dry:
        job.refresh(consistent_read=True)
        reconcile(job, report)
        if state.finish_if_done(job):
            report.add("jobs_finished")
    elif not (int(job.queued_count) or int(job.running_count)) and job.finished_at is None:
        report.add("jobs_finished")
    if job.webhook_state == "pending" and (job.webhook_next_at or 0) <= now:
        report.add("webhooks_due")
        if not dry:
            try:
                webhook_queue.enqueue(job.user_id, job.job_id)
                report.add("webhooks_enqueued")
            except queue.QueueError:
                logger.error("sweep could not enqueue the webhook of job %s", job.job_id)
                report.add("webhooks_enqueue_failed")


def reconcile(job: JobModel, report: SweepReport) -> bool:
    """Set the counters from the items when they disagree and nothing moved for
    :func:`~chalicelib.jobs.state.counters_quiet_s` (conditional on ``counters_at`` being unchanged).

    Returns:
        True when the counters were rewritten.
    """
    if job.counters_at is None or time.time() - float(job.counters_at) < state.counters_quiet_s():
        return False
    actual = {QUEUED: 0, RUNNING: 0, SUCCEEDED: 0, FAILED: 0}
    reasons: dict[str, int] = dict.fromkeys(state.REASONS, 0)
    for item in state.query_items(job.job_id, attributes=(JobItemModel.status, JobItemModel.error_code)):
        actual[item.status] = actual.get(item.status, 0) + 1
        if item.status == FAILED:
            code = item.error_code or state.REASON_UPSTREAM
            reasons[code] = reasons.get(code, 0) + 1
    if actual == state.counts(job):
        return False
    report.add("counters_reconciled")
    if report.dry_run:
        return True
    try:
        job.update(
            actions=[
                JobModel.queued_count.set(actual[QUEUED]),
                JobModel.running_count.set(actual[RUNNING]),
                JobModel.succeeded_count.set(actual[SUCCEEDED]),
                JobModel.failed_count.set(actual[FAILED]),
                JobModel.failure_reasons.set(reasons),
                JobModel.counters_at.set(time.time()),
            ],
            condition=JobModel.counters_at == job.counters_at,
        )
    except UpdateError:
        return False
    logger.warning("job counters reconciled job_id=%s counts=%s", job.job_id, actual)
    return True


def sweep(*, budget_s: float | None = None, dry_run: bool | None = None, now: float | None = None) -> SweepReport:
    """Run the recovery sweep once.

    Args:
        budget_s: seconds this run may take (default ``SWEEP_TIME_BUDGET_SECONDS``);
            work left over waits for the next run.
        dry_run: count only (default ``SWEEP_DRY_RUN``).
        now: epoch seconds to judge leases and due times by (tests).

    Returns:
        The :class:`~chalicelib.sweeps.SweepReport` (``sweep = "recovery"``), also logged.
    """
    settings = get_settings()
    started = time.monotonic()
    deadline = Deadline(settings.sweep_time_budget_seconds if budget_s is None else budget_s)
    now = time.time() if now is None else now
    report = SweepReport(
        "recovery", settings.sweep_dry_run if dry_run is None else dry_run, datetime.fromtimestamp(now, UTC)
    )
    drain_dlq(report, deadline, now)
    last_key = None
    while not deadline.expired():
        page = JobModel.by_active.query(ACTIVE_SHARD, limit=25, last_evaluated_key=last_key)
        for job in page:
            if deadline.expired():
                break
            try:
                full = JobModel.get(job.user_id, job.job_id, consistent_read=True)
            except JobModel.DoesNotExist:
                continue
            try:
                sweep_job(full, report, now)
            except Exception:  # noqa: BLE001 - one bad job must not stop the sweep
                logger.exception("sweep failed on job %s", job.job_id)
                report.add("job_errors")
        last_key = page.last_evaluated_key
        if not last_key:
            break
    try:
        for name, n in archives.sweep_stuck(now, dry_run=report.dry_run, deadline=deadline).items():
            report.add(name, n)
    except Exception:  # noqa: BLE001 - the job part of the sweep has run; report and go on
        logger.exception("sweep failed on archives")
        report.add("archive_errors")
    report.complete = not deadline.expired()
    report.seconds = time.monotonic() - started
    logger.info(json.dumps(report.as_dict()))
    return report
