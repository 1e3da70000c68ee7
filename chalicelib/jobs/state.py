"""The jobs state machine: every conditional write of jobs and items, and the counters.

Item states (every arrow a DynamoDB conditional write; source: Amazon DynamoDB developer
guide, "Condition expressions")::

    queued --lease--> running --complete--> succeeded
      ^                 |  \\--fail--> failed (reason)
      |                 |                   |
      +----release------+                   +--requeue (POST /retry)--> queued

- *lease* (:func:`lease_item`): ``status = queued``, or ``running`` whose lease expired
  (:func:`expired_lease`: the same ``lease_token`` as read and ``lease_until`` passed),
  and ``attempts < MAX_ITEM_ATTEMPTS`` and no ``cancel_requested``: sets ``running``, a
  fresh ``lease_token``, ``lease_until = now + ITEM_LEASE_SECONDS`` and ``attempts + 1``.
- *complete* / *fail* / *release* (:func:`complete_item`, :func:`fail_item`,
  :func:`release`) require ``status = running`` and our ``lease_token``
  (:func:`lease_held`), so a worker whose lease was taken over cannot overwrite the new
  holder's outcome.
- *stranded* items (nobody works on them: queued, or running with an expired lease)
  are failed by :func:`fail_stranded` or re-queued by :func:`requeue_expired`, both
  conditional on :func:`expired_lease`, so a live lease is never touched.
- cancel and retry: :func:`fail_queued_item`, :func:`cancel_item`,
  :func:`requeue_failed`, :func:`uncancel_running`.

Counters: every item transition moves one unit between two of ``queued_count``,
``running_count``, ``succeeded_count``, ``failed_count`` in one UpdateItem with ADD
(:func:`move_item_count`), so the counters always add up to ``total``. Source: Amazon
DynamoDB developer guide, "Atomic counters". The job's status is derived from the
counters (:func:`derive_status`) and stored for the list filter; ``started_at`` is set
by the first lease, ``finished_at`` by :func:`finish_if_done` once nothing is queued or
running. A worker that dies between its item write and its counter write leaves the
counters behind; the recovery sweep reconciles them from the items. An ADD is not idempotent:
one that the SDK retried (its first attempt may have been applied, its answer lost) or that
failed may have counted twice or not at all, so it also sends a ``recount`` message, which
recounts the job from its items once the counters have been quiet for
:func:`counters_quiet_s` (:func:`chalicelib.jobs.recovery.recount`).

Quota: an item that ends failed is refunded to the month it was charged to.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import UpdateError

from chalicelib import queue
from chalicelib.db import ImageModel, JobItemModel, JobModel, is_condition_failure, watching_retries
from chalicelib.db.jobs import (
    FAILED,
    JOB_CANCELLED,
    JOB_COMPLETED,
    JOB_COMPLETED_WITH_ERRORS,
    JOB_FAILED,
    JOB_PAUSED,
    JOB_QUEUED,
    JOB_RUNNING,
    QUEUED,
    RUNNING,
    SUCCEEDED,
)
from chalicelib.services import images, usage, webhook_queue
from chalicelib.settings import get_settings
from chalicelib.storage import objects

logger = logging.getLogger("promptcanvas.jobs")

# Why an item failed: the keys of ``JobModel.failure_reasons`` and ``JobItemModel.error_code``.
REASON_REJECTED = "upstream-rejected"  # Together refused the prompt (422 content policy / parameters)
REASON_UPSTREAM = "upstream-failed"  # transient upstream failures outlasted the item's attempts
REASON_CORRUPT = "corrupt-image"  # the image did not decode after the client's retries
REASON_CANCELLED = "cancelled"  # the job was cancelled before the item ran
REASON_LEASE = "lease-expired"  # workers died holding the item MAX_ITEM_ATTEMPTS times
REASON_DEAD_LETTER = "dead-lettered"  # its message exceeded the queue's maxReceiveCount
REASON_INVALID = "invalid-parameters"  # the stored parameters no longer validate
REASON_STORAGE = "storage-failed"  # S3 / DynamoDB kept failing while storing the image
REASONS = (
    REASON_REJECTED,
    REASON_UPSTREAM,
    REASON_CORRUPT,
    REASON_CANCELLED,
    REASON_LEASE,
    REASON_DEAD_LETTER,
    REASON_INVALID,
    REASON_STORAGE,
)

IMAGE_EXTS = ("jpg", "png")  # original extensions an interrupted store may leave


# --- small helpers ---------------------------------------------------------------------------


def now_s() -> float:
    """Epoch seconds."""
    return time.time()


def item_id_for(index: int) -> str:
    """The item id of the 0-based ``index``: 4 digits, so ids sort in prompt order."""
    return f"{index:04d}"


def item_message(item: JobItemModel) -> dict[str, Any]:
    """The jobs-queue message of one item: ``{"type": "item", user_id, job_id, item_id, round}``,
    plus ``"key_source": "own"`` for an item that runs on the user's own key (so the worker
    checks that key, not the shared pool, before leasing) and ``"kind": "video"`` for an
    item of a video job (it needs no key to start)."""
    message: dict[str, Any] = {
        "type": "item",
        "user_id": item.user_id,
        "job_id": item.job_id,
        "item_id": item.item_id,
        "round": int(item.retry_round or 0),
    }
    if item.key_source == "own":
        message["key_source"] = "own"
    if item.kind:
        message["kind"] = item.kind
    return message


def query_items(
    job_id: str, status: str | None = None, *, attributes: Iterable[Any] | None = None
) -> list[JobItemModel]:
    """Every item of a job (strongly consistent), optionally only those in ``status``
    (filtered here: a FilterExpression would read the same items anyway).

    Args:
        attributes: read only these model attributes (a DynamoDB ``ProjectionExpression``;
            the others are left at their defaults); ``status`` is added when filtering on it.
            The read capacity is the same (DynamoDB charges a Query by the items' whole size),
            but a 500-item job's answer shrinks to a fraction, and so does parsing it.
            Source: Amazon DynamoDB developer guide, "Projection expressions".
    """
    if attributes is not None:
        attributes = [*attributes, *([JobItemModel.status] if status is not None else [])]
    items = JobItemModel.query(job_id, consistent_read=True, attributes_to_get=attributes)
    return [i for i in items if status is None or i.status == status]


# --- results of one message ------------------------------------------------------------------


@dataclass(frozen=True)
class Done:
    """The message is finished with: Lambda deletes it."""

    note: str = "done"


@dataclass(frozen=True)
class Later:
    """See the message again after ``delay_s`` seconds (``note`` says why: keys cooling,
    leased elsewhere, a transient failure that spent an attempt, ...)."""

    delay_s: float
    note: str = "later"


@dataclass
class ItemLease:
    """A lease on one item: the item as written by the lease, its token, and the state
    it was taken from (``queued`` or an expired ``running``)."""

    item: JobItemModel
    token: str
    previous: str


# --- counters and status ---------------------------------------------------------------------


COUNTER_ATTRS = {
    QUEUED: JobModel.queued_count,
    RUNNING: JobModel.running_count,
    SUCCEEDED: JobModel.succeeded_count,
    FAILED: JobModel.failed_count,
}


def counts(job: JobModel) -> dict[str, int]:
    """``{"queued", "running", "succeeded", "failed"}`` of ``job`` as ints."""
    return {
        QUEUED: int(job.queued_count or 0),
        RUNNING: int(job.running_count or 0),
        SUCCEEDED: int(job.succeeded_count or 0),
        FAILED: int(job.failed_count or 0),
    }


def derive_status(job: JobModel) -> str:
    """The job's status from its counters and cancel flag.

    queued (nothing started) -> running -> completed (no failure) |
    completed_with_errors | failed (nothing succeeded) | cancelled (cancel requested);
    paused while work is left and the job's own key stopped it (``paused_code``).
    """
    c = counts(job)
    if job.cancelled:
        return JOB_CANCELLED
    if c[QUEUED] + c[RUNNING] > 0 and job.paused_code:
        return JOB_PAUSED
    if c[QUEUED] + c[RUNNING] > 0:
        started = job.started_at is not None or c[RUNNING] + c[SUCCEEDED] + c[FAILED] > 0
        return JOB_RUNNING if started else JOB_QUEUED
    if c[FAILED] == 0:
        return JOB_COMPLETED
    if c[SUCCEEDED] == 0:
        return JOB_FAILED
    return JOB_COMPLETED_WITH_ERRORS


def apply_counts(
    user_id: str,
    job_id: str,
    deltas: Mapping[str, int],
    *,
    reasons: Mapping[str, int] | None = None,
    extra: list[Any] | None = None,
) -> JobModel:
    """Atomically add ``deltas`` (``{state: +-n}``) to the job's counters and ``reasons`` to
    ``failure_reasons``, in one UpdateItem; returns the job as it is after the update.

    The deltas of one transition sum to 0, so the counters keep adding up to ``total``.

    Raises:
        UpdateError: the job does not exist (condition) or DynamoDB failed.
    """
    actions: list[Any] = [COUNTER_ATTRS[state].add(n) for state, n in deltas.items() if n]
    for reason, n in (reasons or {}).items():
        if n:
            path = JobModel.failure_reasons[reason]
            actions.append(path.set((path | 0) + n))
    actions.append(JobModel.counters_at.set(now_s()))
    actions.extend(extra or [])
    job = JobModel(user_id, job_id)
    with watching_retries() as retries:
        try:
            job.update(actions=actions, condition=JobModel.job_id.exists())
        except UpdateError as exc:
            if not is_condition_failure(exc):  # applied or not: unknown
                schedule_recount(user_id, job_id)
            raise
    if retries:  # an attempt before the last may have been applied too
        logger.warning("counter move of job %s was retried %d times; recount scheduled", job_id, sum(retries))
        schedule_recount(user_id, job_id)
    return job


#: Seconds of counter quiet after which a recount is safe: a worker writes an item's new
#: state and then, at once, its counter move, which with the SDK's retries takes at most
#: 3 attempts of (3 s connect + 5 s read) plus back-off, about 25 s (chalicelib/db/base.py).
COUNTERS_QUIET_MAX_S = 60.0


def counters_quiet_s() -> float:
    """Seconds without counter change before counters may be recomputed from the items:
    twice the lease, at most :data:`COUNTERS_QUIET_MAX_S` (by then no worker is still
    between its item write and its counter write, so a recount cannot miss a move in flight)."""
    return min(2.0 * get_settings().item_lease_seconds, COUNTERS_QUIET_MAX_S)


def schedule_recount(user_id: str, job_id: str) -> None:
    """Send a ``{"type": "recount", user_id, job_id}`` message, delayed past the quiet period.
    Best effort: if SQS fails, the recovery sweep recounts the job later."""
    try:
        queue.send_messages(
            [{"type": "recount", "user_id": user_id, "job_id": job_id}], delay_s=math.ceil(counters_quiet_s()) + 1
        )
    except Exception:  # noqa: BLE001 - the sweep is the fallback
        logger.warning("could not schedule a recount of job %s", job_id)


def move_item_count(
    user_id: str,
    job_id: str,
    deltas: Mapping[str, int],
    *,
    reason: str | None = None,
    started_at: float | None = None,
    cost_usd: float | None = None,
) -> None:
    """The counter update for one item transition, then what follows from it.

    ``cost_usd``: a stored image's cost, added to the job's ``actual_usd`` in the same write.

    One atomic ADD whose deltas sum to 0 (:func:`apply_counts`, which returns the job as
    written). With ``started_at`` (epoch seconds, on a lease) the job's ``started_at`` /
    ``progress_since`` are set if unset, and if this lease set them the job is marked
    running (:func:`mark_started`). A transition into succeeded/failed may end the job:
    :func:`finish_if_done`.

    Raises:
        UpdateError: the job does not exist (condition) or DynamoDB failed.
    """
    extra: list[Any] = []
    if started_at is not None:
        extra = [
            JobModel.started_at.set(JobModel.started_at | started_at),
            JobModel.progress_since.set(JobModel.progress_since | started_at),
        ]
    if cost_usd:
        extra.append(JobModel.actual_usd.add(round(cost_usd, 6)))
    job = apply_counts(user_id, job_id, deltas, reasons={reason: 1} if reason else None, extra=extra)
    if started_at is not None and job.started_at is not None and float(job.started_at) == started_at:
        mark_started(job)
    if any(deltas.get(state, 0) > 0 for state in (SUCCEEDED, FAILED)):
        finish_if_done(job)


def mark_started(job: JobModel) -> None:
    """Record the first start: ``started_at`` / ``progress_since`` and status running. Best effort."""
    if job.started_at is not None and job.status != JOB_QUEUED:
        return
    now = now_s()
    try:
        job.update(
            actions=[
                JobModel.started_at.set(JobModel.started_at | now),
                JobModel.progress_since.set(JobModel.progress_since | now),
                JobModel.status.set(JOB_RUNNING),
            ],
            condition=(JobModel.status == JOB_QUEUED) & JobModel.job_id.exists(),
        )
    except UpdateError as exc:
        if not is_condition_failure(exc):
            logger.warning("could not record the start of job %s", job.job_id)


def finish_if_done(job: JobModel) -> bool:
    """Finish ``job`` when nothing is queued or running: set the derived status,
    ``finished_at``, leave the sweep index (or stay in it with a webhook due) and
    queue the webhook. A conditional write, so only one caller finishes a job.

    Returns:
        True when this call finished the job.
    """
    c = counts(job)
    if c[QUEUED] or c[RUNNING] or job.finished_at is not None:
        return False
    status = derive_status(job)
    now = now_s()
    actions: list[Any] = [
        JobModel.status.set(status),
        JobModel.finished_at.set(now),
        JobModel.finish_seq.add(1),
    ]
    if job.webhook_url:
        actions += [
            JobModel.webhook_state.set("pending"),
            JobModel.webhook_attempts.set(0),
            JobModel.webhook_next_at.set(now),
            JobModel.webhook_last_error.remove(),
        ]
    else:
        actions.append(JobModel.active_shard.remove())
    condition = (
        JobModel.job_id.exists()
        & (JobModel.queued_count == 0)
        & (JobModel.running_count == 0)
        & JobModel.finished_at.does_not_exist()
    )
    try:
        job.update(actions=actions, condition=condition)
    except UpdateError as exc:
        if is_condition_failure(exc):
            return False
        raise
    logger.info(
        "job finished job_id=%s status=%s succeeded=%d failed=%d",
        job.job_id,
        status,
        int(job.succeeded_count),
        int(job.failed_count),
    )
    if job.webhook_url:
        try:
            webhook_queue.enqueue(job.user_id, job.job_id)
        except Exception:  # noqa: BLE001 - the sweep enqueues due webhooks too
            logger.warning("could not queue the webhook of job %s; the sweep will send it", job.job_id)
    return True


# --- lease conditions ------------------------------------------------------------------------


def expired_lease(item: JobItemModel, now: float) -> Any:
    """The condition "``item`` is running under the lease it was read with, and that lease
    has expired at ``now`` (epoch seconds)": the same ``lease_token`` as read, so a lease
    taken (or renewed) since the read is never touched."""
    return (
        (JobItemModel.status == RUNNING)
        & (JobItemModel.lease_until < now)
        & (JobItemModel.lease_token == item.lease_token)
    )


def lease_held(lease: ItemLease) -> Any:
    """The condition "``lease`` is still the item's lease": running with our token."""
    return (JobItemModel.status == RUNNING) & (JobItemModel.lease_token == lease.token)


# --- item transitions ------------------------------------------------------------------------


def lease_item(
    item: JobItemModel, now: float | None = None, *, user_id: str | None = None, optimistic: bool = False
) -> ItemLease | Done | Later:
    """Take the lease on ``item`` (see the module docstring), or say why not.

    Args:
        item: the item as read, or (``optimistic``) a model holding only its keys: the
            lease is then first tried as ``queued -> running`` without a read, and the
            item is read only if that condition fails (saves a GetItem per message).
        user_id: when given, the item must belong to this user (else :class:`Done`).

    Returns:
        :class:`ItemLease`; :class:`Done` (finished, failed now, gone, or not the user's);
        :class:`Later` (a live lease is held elsewhere: retry when it ends).
    """
    settings = get_settings()
    owner = (JobItemModel.user_id == user_id) if user_id else None
    for round_ in range(4):
        now = time.time() if now is None else now
        if optimistic and round_ == 0:
            previous = QUEUED
        else:
            if user_id and item.user_id != user_id:
                return Done("not-the-users-item")
            if item.status in (SUCCEEDED, FAILED):
                return Done("already-finished")
            if item.status == RUNNING and (item.lease_until or 0) > now:
                return Later(float(item.lease_until) - now + 1, "leased-elsewhere")
            if item.status == RUNNING and item.cancel_requested:
                failed = fail_stranded(item, REASON_CANCELLED, "the job was cancelled")
                return Done("cancelled" if failed else "raced")
            if int(item.attempts or 0) >= settings.max_item_attempts:
                reason = REASON_LEASE if item.status == RUNNING else REASON_UPSTREAM
                message = f"gave up after {int(item.attempts)} attempts"
                return Done("exhausted" if fail_stranded(item, reason, message) else "raced")
            previous = item.status
        token = uuid.uuid4().hex
        taken_from = (JobItemModel.status == QUEUED) if previous == QUEUED else expired_lease(item, now)
        condition = (
            taken_from
            & JobItemModel.cancel_requested.does_not_exist()
            & (JobItemModel.attempts < settings.max_item_attempts)
        )
        try:
            item.update(
                actions=[
                    JobItemModel.status.set(RUNNING),
                    JobItemModel.lease_token.set(token),
                    JobItemModel.lease_until.set(now + settings.item_lease_seconds),
                    JobItemModel.attempts.add(1),
                    JobItemModel.started_at.set(JobItemModel.started_at | now),
                ],
                condition=condition if owner is None else condition & owner,
            )
        except UpdateError as exc:
            if not is_condition_failure(exc):
                raise
            try:
                item.refresh(consistent_read=True)
            except JobItemModel.DoesNotExist:
                return Done("unknown-item")
            now = None
            continue
        if previous == QUEUED:
            move_item_count(item.user_id, item.job_id, {QUEUED: -1, RUNNING: 1}, started_at=now)
        return ItemLease(item=item, token=token, previous=previous)
    return Later(1, "contended")


def release(lease: ItemLease, *, give_back_attempt: bool) -> bool:
    """running -> queued (the message will be seen again). ``give_back_attempt`` undoes
    the lease's attempt (cooling keys are not the item's fault). If the job was
    cancelled meanwhile, the item fails as cancelled instead.

    Returns:
        True when released (or failed as cancelled); False when the lease was lost.
    """
    item = lease.item
    actions = [
        JobItemModel.status.set(QUEUED),
        JobItemModel.lease_token.remove(),
        JobItemModel.lease_until.remove(),
        JobItemModel.enqueued_at.set(time.time()),
    ]
    if give_back_attempt:
        actions.append(JobItemModel.attempts.add(-1))
    try:
        item.update(
            actions=actions,
            condition=lease_held(lease) & JobItemModel.cancel_requested.does_not_exist(),
        )
    except UpdateError as exc:
        if not is_condition_failure(exc):
            raise
        item.refresh(consistent_read=True)
        if item.status == RUNNING and item.lease_token == lease.token and item.cancel_requested:
            return fail_item(lease, REASON_CANCELLED, "the job was cancelled")
        return False
    move_item_count(item.user_id, item.job_id, {RUNNING: -1, QUEUED: 1})
    return True


def _fail_actions(reason: str, message: str, at: float) -> list[Any]:
    """The UpdateItem actions that end an item as failed with ``reason`` at ``at`` (epoch seconds)."""
    return [
        JobItemModel.status.set(FAILED),
        JobItemModel.error_code.set(reason),
        JobItemModel.error_message.set(message[:500]),
        JobItemModel.finished_at.set(at),
        JobItemModel.lease_token.remove(),
        JobItemModel.lease_until.remove(),
    ]


def fail_item(lease: ItemLease, reason: str, message: str) -> bool:
    """running (our lease) -> failed with ``reason``; refunds the image; may finish the job.

    Returns:
        False when the lease was lost (someone else decides the outcome).
    """
    item = lease.item
    try:
        item.update(
            actions=_fail_actions(reason, message, time.time()),
            condition=lease_held(lease),
        )
    except UpdateError as exc:
        if is_condition_failure(exc):
            return False
        raise
    _after_failure(item, RUNNING, reason)
    return True


def fail_stranded(item: JobItemModel, reason: str, message: str, now: float | None = None) -> bool:
    """Fail an item nobody works on: ``queued``, or ``running`` with an expired lease
    (the same token as read, so a fresh lease is never overridden). Used for exhausted
    attempts, cancelled leases, DLQ messages and the stuck-work sweep.

    Returns:
        True when this call failed it.
    """
    now = time.time() if now is None else now
    previous = item.status
    if previous == QUEUED:
        condition = JobItemModel.status == QUEUED
    elif previous == RUNNING:
        condition = expired_lease(item, now)
    else:
        return False
    try:
        item.update(
            actions=_fail_actions(reason, message, now),
            condition=condition,
        )
    except UpdateError as exc:
        if is_condition_failure(exc):
            return False
        raise
    _after_failure(item, previous, reason)
    return True


def _after_failure(item: JobItemModel, previous: str, reason: str) -> None:
    """Counters, refund and orphan clean-up after an item moved to failed (an own-key
    item was never charged, so nothing is refunded)."""
    if item.key_source != "own":
        usage.refund(item.user_id, 1, item.charged_period, float(item.estimated_usd or 0))
    if int(item.attempts or 0) > 0:
        discard_orphans(item.user_id, item.image_id)
    logger.info("item failed job_id=%s item_id=%s reason=%s", item.job_id, item.item_id, reason)
    move_item_count(item.user_id, item.job_id, {previous: -1, FAILED: 1}, reason=reason)


def discard_orphans(user_id: str, image_id: str) -> None:
    """Delete objects an interrupted store may have left for ``image_id``, unless its
    metadata exists (then they are the image). Best effort."""
    try:
        ImageModel.get(user_id, image_id, consistent_read=True)
        return
    except ImageModel.DoesNotExist:
        pass
    except Exception:  # noqa: BLE001
        return
    keys = [objects.image_key(user_id, image_id, ext) for ext in IMAGE_EXTS]
    keys.append(objects.thumb_key(user_id, image_id))
    try:
        objects.delete(keys)
    except Exception:  # noqa: BLE001
        logger.warning("could not delete leftover objects of image %s", image_id)


def _mark_succeeded(lease: ItemLease) -> bool:
    """running (our lease) -> succeeded; False when the lease was lost."""
    item = lease.item
    try:
        item.update(
            actions=[
                JobItemModel.status.set(SUCCEEDED),
                JobItemModel.finished_at.set(time.time()),
                JobItemModel.lease_token.remove(),
                JobItemModel.lease_until.remove(),
                JobItemModel.error_code.remove(),
                JobItemModel.error_message.remove(),
            ],
            condition=lease_held(lease),
        )
    except UpdateError as exc:
        if is_condition_failure(exc):
            logger.warning("lease lost before completing job_id=%s item_id=%s", item.job_id, item.item_id)
            return False
        raise
    return True


def complete_item(lease: ItemLease, image: ImageModel) -> bool:
    """running (our lease) -> succeeded; counters and the job's ``actual_usd``; the image's
    cost to the month's spend; may finish the job.

    Returns:
        False when the lease was lost (the new holder finds the image and completes).
    """
    if not _mark_succeeded(lease):
        return False
    item = lease.item
    cost = float(image.cost_usd or 0)
    move_item_count(item.user_id, item.job_id, {RUNNING: -1, SUCCEEDED: 1}, cost_usd=cost)
    images.record_cost(image)  # once per item: only the lease holder completes it
    return True


def complete_result_item(lease: ItemLease, cost_usd: float) -> bool:
    """running (our lease) -> succeeded for an item whose result recorded its own cost (a
    video: the video worker adds it to the month's spend); counters and the job's
    ``actual_usd`` (``cost_usd``, USD); may finish the job.

    Returns:
        False when the lease was lost.
    """
    if not _mark_succeeded(lease):
        return False
    item = lease.item
    move_item_count(item.user_id, item.job_id, {RUNNING: -1, SUCCEEDED: 1}, cost_usd=float(cost_usd or 0))
    return True


def requeue_expired(item: JobItemModel, now: float | None = None) -> bool:
    """running with an expired lease -> queued (the stuck-work sweep then sends a
    message). Conditional on the same lease token, so a live lease is never touched.

    Returns:
        True when this call moved it.
    """
    now = time.time() if now is None else now
    try:
        item.update(
            actions=[
                JobItemModel.status.set(QUEUED),
                JobItemModel.lease_token.remove(),
                JobItemModel.lease_until.remove(),
                JobItemModel.enqueued_at.set(now),
            ],
            condition=expired_lease(item, now) & JobItemModel.cancel_requested.does_not_exist(),
        )
    except UpdateError as exc:
        if is_condition_failure(exc):
            return False
        raise
    move_item_count(item.user_id, item.job_id, {RUNNING: -1, QUEUED: 1})
    return True


def fail_queued_item(item: JobItemModel, code: str, message: str) -> bool:
    """queued -> failed, conditionally. Returns True when this call moved it."""
    now = now_s()
    try:
        item.update(
            actions=[
                JobItemModel.status.set(FAILED),
                JobItemModel.error_code.set(code),
                JobItemModel.error_message.set(message),
                JobItemModel.finished_at.set(now),
            ],
            condition=JobItemModel.status == QUEUED,
        )
        return True
    except UpdateError as exc:
        if is_condition_failure(exc):
            return False
        raise


def cancel_item(item: JobItemModel) -> bool:
    """Cancel one item: queued -> failed(cancelled); running -> cancel_requested."""
    for _ in range(3):
        if item.status == QUEUED:
            if fail_queued_item(item, REASON_CANCELLED, "the job was cancelled"):
                return True
        elif item.status == RUNNING:
            try:
                item.update(actions=[JobItemModel.cancel_requested.set(True)], condition=JobItemModel.status == RUNNING)
                return False
            except UpdateError as exc:
                if not is_condition_failure(exc):
                    raise
        else:
            return False
        item.refresh(consistent_read=True)
    return False


def requeue_failed(item: JobItemModel, period: str | None) -> str | None:
    """failed -> queued for a retry (attempts reset, error cleared, charged to ``period``).
    Returns the item's old failure reason when this call moved it, else None."""
    reason = item.error_code or REASON_UPSTREAM
    try:
        item.update(
            actions=[
                JobItemModel.status.set(QUEUED),
                JobItemModel.charged_period.set(period) if period else JobItemModel.charged_period.remove(),
                JobItemModel.attempts.set(0),
                JobItemModel.retry_round.add(1),
                JobItemModel.enqueued_at.set(now_s()),
                JobItemModel.error_code.remove(),
                JobItemModel.error_message.remove(),
                JobItemModel.lease_token.remove(),
                JobItemModel.lease_until.remove(),
                JobItemModel.cancel_requested.remove(),
                JobItemModel.finished_at.remove(),
            ],
            condition=JobItemModel.status == FAILED,
        )
    except UpdateError as exc:
        if is_condition_failure(exc):
            return None
        raise
    return reason


def uncancel_running(item: JobItemModel) -> None:
    try:
        item.update(actions=[JobItemModel.cancel_requested.remove()], condition=JobItemModel.status == RUNNING)
    except UpdateError:
        pass


# --- pausing (the user's own key) ------------------------------------------------------------


def pause_job(user_id: str, job_id: str, code: str, reason: str, *, not_resumed_since: float | None = None) -> bool:
    """Mark a job paused: its own Together key was refused (``code`` ``together-key-refused``),
    is out of credits (``together-key-out-of-credits``) or was removed
    (``together-key-removed``). ``reason`` is for people (never holds a key). Items stay
    queued without messages until :func:`resume_job`. Only the first pause is recorded.
    ``not_resumed_since`` (epoch seconds): pause only if the job was not resumed after it (a
    worker that began before a resume must not pause the resumed job with its old key's state).

    Returns:
        True if this call paused it (False: already paused, finished, cancelled, or resumed
        since ``not_resumed_since``).
    """
    condition = (
        JobModel.job_id.exists()
        & JobModel.paused_code.does_not_exist()
        & JobModel.finished_at.does_not_exist()
        & (JobModel.cancelled == False)  # noqa: E712 - a PynamoDB condition, not a comparison
    )
    if not_resumed_since is not None:
        condition &= JobModel.resumed_at.does_not_exist() | (JobModel.resumed_at < not_resumed_since)
    try:
        JobModel(user_id, job_id).update(
            actions=[
                JobModel.paused_code.set(code),
                JobModel.paused_reason.set(reason),
                JobModel.paused_at.set(now_s()),
                JobModel.status.set(JOB_PAUSED),
            ],
            condition=condition,
        )
    except UpdateError as exc:
        if is_condition_failure(exc):
            return False
        raise
    logger.warning("job paused job_id=%s code=%s", job_id, code)
    return True


def resume_job(job: JobModel) -> list[JobItemModel]:
    """Clear a job's pause and return its queued items (the caller sends their messages).

    Conditional on the pause it read, so two resumes do not both send.

    Returns:
        The queued items ([] when this call did not clear the pause).
    """
    try:
        job.update(
            actions=[
                JobModel.paused_code.remove(),
                JobModel.paused_reason.remove(),
                JobModel.paused_at.remove(),
                JobModel.status.set(JOB_RUNNING if job.started_at is not None else JOB_QUEUED),
                JobModel.counters_at.set(now_s()),
                JobModel.resumed_at.set(time.time()),
            ],
            condition=JobModel.paused_code == job.paused_code,
        )
    except UpdateError as exc:
        if is_condition_failure(exc):
            return []
        raise
    return query_items(job.job_id, QUEUED)
