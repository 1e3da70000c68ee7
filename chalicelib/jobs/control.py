"""Cancelling and retrying a job (``POST /v1/jobs/{id}/cancel`` and ``/retry``).

Both move many items at once: each item moves by its own conditional write
(:mod:`chalicelib.jobs.state`), up to :data:`PARALLEL_WRITES` at a time, and then the
job's counters move once by the number that actually moved.
"""

from __future__ import annotations

import logging
from typing import Any

from chalicelib.db import JobItemModel, JobModel
from chalicelib.db.jobs import ACTIVE_SHARD, FAILED, JOB_CANCELLED, JOB_QUEUED, JOB_RUNNING, QUEUED, RUNNING
from chalicelib.errors import DomainError, ErrorCode
from chalicelib.jobs import state
from chalicelib.jobs.views import get_owned_job, job_json
from chalicelib.queue import QueueError, parallel, send_messages
from chalicelib.services import together_keys, usage

logger = logging.getLogger("promptcanvas.jobs")

PARALLEL_WRITES = 8  # conditional item writes in flight at once (cancel, retry)


def _parallel(fn: Any, items: Any) -> list[Any]:
    return parallel(fn, items, workers=PARALLEL_WRITES)


def cancel_job(user_id: str, job_id: str) -> dict[str, Any]:
    """``POST /v1/jobs/{id}/cancel``: once it returns, no further item of the job starts.

    The job is flagged cancelled, then every queued item moves to failed (reason
    ``cancelled``) by a conditional write, and running items get ``cancel_requested``;
    a worker can only lease a queued item (or take over an expired lease without
    ``cancel_requested``), so nothing starts afterwards. Items already running finish.
    Cancelled items are refunded. Cancelling a cancelled job is a no-op.

    Raises:
        NotFound: 404. DomainError: 409 ``job-finished`` when the job already ended otherwise.
    """
    job = get_owned_job(user_id, job_id)
    if job.finished_at is not None and not job.cancelled:
        raise DomainError(ErrorCode.JOB_FINISHED, "the job has already finished")
    job.update(
        actions=[
            JobModel.cancelled.set(True),
            JobModel.cancelled_at.set(state.now_s()),
            JobModel.status.set(JOB_CANCELLED),
        ],
        condition=JobModel.job_id.exists(),
    )
    open_items = [i for i in state.query_items(job_id) if i.status in (QUEUED, RUNNING)]
    cancelled = [item for item, ok in zip(open_items, _parallel(state.cancel_item, open_items), strict=True) if ok]
    moved = len(cancelled)
    if moved:
        job = state.apply_counts(
            user_id, job_id, {QUEUED: -moved, FAILED: moved}, reasons={state.REASON_CANCELLED: moved}
        )
        refund_items(user_id, cancelled)
    else:
        job.refresh(consistent_read=True)
    state.finish_if_done(job)
    logger.info("job cancelled job_id=%s items_cancelled=%d", job_id, moved)
    return job_json(job)


def refund_items(user_id: str, items: list[JobItemModel]) -> None:
    """Refund one image per item to the quota month it was charged to (``charged_period``),
    and release its share of the estimate from that month's budget. Own-key items were
    never charged and are skipped."""
    by_period: dict[str | None, list[float]] = {}
    for item in items:
        if item.key_source == "own":
            continue
        entry = by_period.setdefault(item.charged_period, [0, 0.0])
        entry[0] += 1
        entry[1] += float(item.estimated_usd or 0)
    for period, (n, usd) in by_period.items():
        usage.refund(user_id, int(n), period, usd)


def _require_own_key(user_id: str) -> None:
    """A job submitted with the user's own key runs only on it: one must be saved and usable.

    Raises:
        DomainError: 422 ``together-key-unusable``.
    """
    own = together_keys.active_key(user_id)
    if own is None:
        raise DomainError(
            ErrorCode.TOGETHER_KEY_UNUSABLE,
            "this job runs on your own Together key; save one on the Account screen, then retry",
        )
    together_keys.require_usable(user_id, own)


def resume(job: JobModel) -> int:
    """Resume a paused job: clear the pause and send its queued items' messages.

    Returns:
        Messages sent (0 when another call resumed it first).
    """
    queued = state.resume_job(job)
    if queued:
        try:
            send_messages([state.item_message(i) for i in queued])
        except QueueError:
            logger.error("resume enqueue incomplete job_id=%s; the stuck-work sweep will resend", job.job_id)
    logger.info("job resumed job_id=%s items=%d", job.job_id, len(queued))
    return len(queued)


def retry_job(user_id: str, job_id: str) -> dict[str, Any]:
    """``POST /v1/jobs/{id}/retry``: resume a paused job and re-enqueue its failed items,
    under their own ids.

    A job paused because its own key was refused, ran out of credits or was removed
    resumes once the user has saved a usable key (``PUT /v1/me/together-key``): the pause
    is cleared and its queued items are sent again.

    Order for failed items: charge the quota and hold their estimate against the budget
    (all or nothing; nothing for an own-key job), move each failed -> queued
    (conditional), move the counters, reopen the job (un-cancel, clear ``finished_at``),
    then send their messages. The job cannot finish in between, since its queued
    counter is already non-zero when it reopens.

    Returns:
        The job's JSON (the route answers 202).

    Raises:
        NotFound: 404. DomainError: 409 ``nothing-to-retry``; 422 ``together-key-unusable``
            (own-key job without a usable key); 429 ``quota-exceeded`` / ``budget-exceeded``.
    """
    job = get_owned_job(user_id, job_id)
    own = job.key_source == "own"
    items = state.query_items(job_id)
    failed = [i for i in items if i.status == FAILED]
    if not failed and not job.paused_code:
        raise DomainError(ErrorCode.NOTHING_TO_RETRY, "the job has no failed items")
    if own:
        _require_own_key(user_id)
    if job.paused_code:
        resume(job)
        if not failed:
            job.refresh(consistent_read=True)
            return job_json(job)
    period: str | None = None
    if not own:
        usd = sum(float(i.estimated_usd or 0) for i in failed)
        period = usage.charge(user_id, len(failed), usd, {"images": len(failed), "usd": round(usd, 6)})
    results = _parallel(lambda item: state.requeue_failed(item, period), failed)
    moved = [item for item, reason in zip(failed, results, strict=True) if reason is not None]
    reasons: dict[str, int] = {}
    for reason in results:
        if reason is not None:
            reasons[reason] = reasons.get(reason, 0) - 1
    if len(moved) < len(failed) and not own:
        unmoved = [item for item, reason in zip(failed, results, strict=True) if reason is None]
        usage.refund(user_id, len(unmoved), period, sum(float(i.estimated_usd or 0) for i in unmoved))
    if job.cancelled:
        _parallel(state.uncancel_running, [i for i in items if i.status == RUNNING])
    now = state.now_s()
    reopen = [
        JobModel.cancelled.set(False),
        JobModel.cancelled_at.remove(),
        JobModel.finished_at.remove(),
        JobModel.active_shard.set(ACTIVE_SHARD),
        JobModel.webhook_state.set("none"),
        JobModel.webhook_next_at.remove(),
        JobModel.progress_since.set(now),
        JobModel.status.set(JOB_RUNNING if job.started_at is not None else JOB_QUEUED),
    ]
    if moved:
        job = state.apply_counts(
            user_id, job_id, {FAILED: -len(moved), QUEUED: len(moved)}, reasons=reasons, extra=reopen
        )
        job.update(
            actions=[JobModel.progress_base.set(int(job.succeeded_count) + int(job.failed_count))],
            condition=JobModel.job_id.exists(),
        )
        try:
            send_messages([state.item_message(i) for i in moved])
        except QueueError:
            logger.error("retry enqueue incomplete job_id=%s; the stuck-work sweep will resend", job_id)
    else:
        job.refresh(consistent_read=True)
        state.finish_if_done(job)
    logger.info("job retried job_id=%s items=%d", job_id, len(moved))
    return job_json(job)
