"""The jobs-queue worker: one SQS message per item (or archive), idempotent.

Webhooks are never delivered here: a ``webhook`` message still found on the jobs queue
is forwarded to the webhooks queue (:mod:`chalicelib.services.webhook_queue`).

The handler gets Lambda SQS events (``@app.on_sqs_message`` on the jobs queue) and
returns a *partial batch response*: ``{"batchItemFailures": [{"itemIdentifier":
messageId}]}`` lists the messages to see again; every other message of the batch is
deleted by Lambda. Source: AWS Lambda developer guide, "Handling errors for an SQS
event source in Lambda" (ReportBatchItemFailures). The records of one batch are
processed in parallel threads (``WORKER_THREADS``), each bounded by the invocation's
remaining time.

The item state machine (every arrow a DynamoDB conditional write; source: Amazon
DynamoDB developer guide, "Condition expressions")::

    queued --lease--> running --store--> succeeded
      ^                 |  \\--permanent--> failed (reason)
      |                 |                      |
      +----release------+  (cooling keys,      +--retry (POST /retry)--> queued
                            transient error)

- *lease*: ``status = queued``, or ``running`` whose ``lease_until`` has passed (the
  worker that held it died), and ``attempts < MAX_ITEM_ATTEMPTS`` and no
  ``cancel_requested``: sets ``running``, a fresh ``lease_token``, ``lease_until =
  now + ITEM_LEASE_SECONDS`` and ``attempts + 1``. A redelivered message for a
  finished item is a no-op; one for an item leased by a live worker is put back for
  the rest of that lease (ChangeMessageVisibility).
- *store*: the image id is fixed on the item at submit; the S3 keys derive from it,
  so a retry overwrites the same objects, and the metadata write is conditional
  (``attribute_not_exists``). A crash between upload and metadata write, then a
  retry, leaves one image and no orphan object; a later attempt that finds the
  metadata already written completes the item without calling Flux again.
- *complete* / *fail* / *release* require ``status = running`` and our
  ``lease_token``, so a worker whose lease was taken over cannot overwrite the new
  holder's outcome.

Each item transition then moves the job counters in one atomic ADD
(:func:`chalicelib.services.jobs.move_item_count`), which finishes the job when
nothing is left queued or running.

Retries and visibility (source: Amazon SQS API reference, ChangeMessageVisibility:
0 to 43,200 s, applied to this receipt only):

- every key cooling (:class:`AllKeysCoolingError`): the message's visibility moves to
  the cooldown (plus up to 1 s of jitter). Not a failure; it spends none of the item's
  attempts: the key pool is asked before leasing, and an item that meets the cooldown
  inside the Flux call is released with its attempt given back;
- transient upstream/storage failure: released (the attempt counts) and made visible
  again after an exponential back-off; after ``MAX_ITEM_ATTEMPTS`` the item fails;
- permanent failure (422 content rejection, a corrupt image, invalid parameters, a
  cancelled job): the item fails with a reason and the message is deleted.

A message that was received ``JOBS_MAX_RECEIVE_COUNT - 1`` times is not put back
(the next receive would move it to the DLQ although nothing is wrong): it is deleted
and a fresh copy is sent with ``DelaySeconds`` instead. Messages that still exhaust
maxReceiveCount (a worker crashing on them) land in the DLQ; the stuck-work sweep
records their items as failed.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import PutError, TransactWriteError, UpdateError

from chalicelib.aws import client
from chalicelib.db import ImageModel, JobItemModel
from chalicelib.db.images import condition_failed, save_new_image
from chalicelib.db.jobs import FAILED, QUEUED, RUNNING, SUCCEEDED
from chalicelib.errors import ValidationError
from chalicelib.flux.catalog import GenerationParams, parse_generation_params
from chalicelib.flux.exceptions import (
    AllKeysCoolingError,
    FailureKind,
    NoUsableKeysError,
    UpstreamFailedError,
    UpstreamRejectedError,
)
from chalicelib.services import images, jobs, usage
from chalicelib.settings import get_settings
from chalicelib.storage import imaging, objects

logger = logging.getLogger("promptcanvas.worker")

STORE_MARGIN_S = 10.0  # seconds kept for storing after the upstream call
MIN_FLUX_BUDGET_S = 3.0  # seconds; with less time left an item is put back untouched
NO_KEYS_RETRY_S = 60  # seconds before a message is seen again when no key is usable
ERROR_RETRY_S = 30  # seconds before a message whose handling raised is seen again
BACKOFF_BASE_S = 2  # seconds; transient failure k is retried after base * 4**(k-1), capped
BACKOFF_CAP_S = 120
IMAGE_EXTS = ("jpg", "png")


# --- results of one record ---------------------------------------------------------------------


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
class Lease:
    """A lease on one item: the item as written by the lease, its token, and the state
    it was taken from (``queued`` or an expired ``running``)."""

    item: JobItemModel
    token: str
    previous: str


@dataclass
class StagedImage:
    """Objects uploaded for an item, metadata not yet written."""

    model: ImageModel
    keys: list[str]


# --- leasing -----------------------------------------------------------------------------------


def lease_item(
    item: JobItemModel, now: float | None = None, *, user_id: str | None = None, optimistic: bool = False
) -> Lease | Done | Later:
    """Take the lease on ``item`` (see the module docstring), or say why not.

    Args:
        item: the item as read, or (``optimistic``) a model holding only its keys: the
            lease is then first tried as ``queued -> running`` without a read, and the
            item is read only if that condition fails (saves a GetItem per message).
        user_id: when given, the item must belong to this user (else :class:`Done`).

    Returns:
        :class:`Lease`; :class:`Done` (finished, failed now, gone, or not the user's);
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
                failed = fail_stranded(item, jobs.REASON_CANCELLED, "the job was cancelled")
                return Done("cancelled" if failed else "raced")
            if int(item.attempts or 0) >= settings.max_item_attempts:
                reason = jobs.REASON_LEASE if item.status == RUNNING else jobs.REASON_UPSTREAM
                message = f"gave up after {int(item.attempts)} attempts"
                return Done("exhausted" if fail_stranded(item, reason, message) else "raced")
            previous = item.status
        token = uuid.uuid4().hex
        if previous == QUEUED:
            taken_from = JobItemModel.status == QUEUED
        else:
            taken_from = (
                (JobItemModel.status == RUNNING)
                & (JobItemModel.lease_until < now)
                & (JobItemModel.lease_token == item.lease_token)
            )
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
            if not jobs.is_conditional_failure(exc):
                raise
            try:
                item.refresh(consistent_read=True)
            except JobItemModel.DoesNotExist:
                return Done("unknown-item")
            now = None
            continue
        if previous == QUEUED:
            jobs.move_item_count(item.user_id, item.job_id, {QUEUED: -1, RUNNING: 1}, started_at=now)
        return Lease(item=item, token=token, previous=previous)
    return Later(1, "contended")


def _owned() -> Any:
    return JobItemModel.status == RUNNING


def release(lease: Lease, *, give_back_attempt: bool) -> bool:
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
            condition=_owned()
            & (JobItemModel.lease_token == lease.token)
            & JobItemModel.cancel_requested.does_not_exist(),
        )
    except UpdateError as exc:
        if not jobs.is_conditional_failure(exc):
            raise
        item.refresh(consistent_read=True)
        if item.status == RUNNING and item.lease_token == lease.token and item.cancel_requested:
            return fail_item(lease, jobs.REASON_CANCELLED, "the job was cancelled")
        return False
    jobs.move_item_count(item.user_id, item.job_id, {RUNNING: -1, QUEUED: 1})
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


def fail_item(lease: Lease, reason: str, message: str) -> bool:
    """running (our lease) -> failed with ``reason``; refunds the image; may finish the job.

    Returns:
        False when the lease was lost (someone else decides the outcome).
    """
    item = lease.item
    try:
        item.update(
            actions=_fail_actions(reason, message, time.time()),
            condition=_owned() & (JobItemModel.lease_token == lease.token),
        )
    except UpdateError as exc:
        if jobs.is_conditional_failure(exc):
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
        condition = (
            (JobItemModel.status == RUNNING)
            & (JobItemModel.lease_until < now)
            & (JobItemModel.lease_token == item.lease_token)
        )
    else:
        return False
    try:
        item.update(
            actions=_fail_actions(reason, message, now),
            condition=condition,
        )
    except UpdateError as exc:
        if jobs.is_conditional_failure(exc):
            return False
        raise
    _after_failure(item, previous, reason)
    return True


def _after_failure(item: JobItemModel, previous: str, reason: str) -> None:
    """Counters, refund and orphan clean-up after an item moved to failed."""
    usage.refund(item.user_id, 1, item.charged_period)
    if int(item.attempts or 0) > 0:
        discard_orphans(item.user_id, item.image_id)
    logger.info("item failed job_id=%s item_id=%s reason=%s", item.job_id, item.item_id, reason)
    jobs.move_item_count(item.user_id, item.job_id, {previous: -1, FAILED: 1}, reason=reason)


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


# --- the steps of one item (public so tests can interrupt them honestly) --------------------


def params_for(item: JobItemModel) -> GenerationParams:
    """The item's generation parameters (job parameters + its prompt and seed, ``n = 1``).

    Raises:
        ValidationError: the stored parameters no longer validate.
    """
    return parse_generation_params({**(item.params or {}), "prompt": item.prompt, "seed": int(item.seed), "n": 1})


def stored_image(item: JobItemModel) -> ImageModel | None:
    """The item's image if its metadata was written already."""
    try:
        return ImageModel.get(item.user_id, item.image_id, consistent_read=True)
    except ImageModel.DoesNotExist:
        return None


def generate_image(lease: Lease, deadline_s: float | None = None) -> Any:
    """Call Flux for the item's one image.

    Returns:
        The :class:`~chalicelib.flux.client.GeneratedImage`.

    Raises:
        The Flux client's errors (see the module docstring for what each means here).
    """
    from chalicelib.flux.client import get_flux_client

    return get_flux_client().generate(params_for(lease.item), deadline_s=deadline_s)[0]


def upload_objects(lease: Lease, generated: Any) -> StagedImage:
    """Process the bytes and upload original and thumbnail under the item's image id.

    Raises:
        ValueError: the bytes do not decode. botocore errors: the upload failed.
    """
    item = lease.item
    params = params_for(item)
    processed = imaging.process(generated.data)
    model = images.new_image_model(
        item.user_id,
        item.image_id,
        params,
        processed,
        seed=int(generated.seed),
        key_id=generated.key_id,
        upstream_ms=generated.upstream_ms,
        collection=item.collection,
        job_id=item.job_id,
        item_id=item.item_id,
    )
    s3_key, t_key = model.s3_key, model.thumb_key
    objects.put(s3_key, processed.original, processed.content_type)
    objects.put(t_key, processed.thumbnail, "image/webp")
    return StagedImage(model=model, keys=[s3_key, t_key])


def write_metadata(lease: Lease, staged: StagedImage) -> ImageModel:
    """Write the image metadata with ``attribute_not_exists`` (and its collection counter,
    in one transaction; then its cost to the month's); if it exists already (an earlier attempt got this far), keep
    that one and delete only our objects that it does not use.

    Returns:
        The stored image.
    """
    try:
        save_new_image(staged.model)
        usage.add_cost(staged.model.user_id, float(staged.model.cost_usd or 0))  # once: only the first save
        return staged.model
    except (PutError, TransactWriteError) as exc:
        if not condition_failed(exc):
            raise
    existing = ImageModel.get(staged.model.user_id, staged.model.image_id, consistent_read=True)
    extra = [k for k in staged.keys if k not in (existing.s3_key, existing.thumb_key)]
    if extra:
        objects.delete(extra)
    return existing


def complete_item(lease: Lease, image: ImageModel) -> bool:
    """running (our lease) -> succeeded; counters; may finish the job.

    Returns:
        False when the lease was lost (the new holder finds the image and completes).
    """
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
            condition=_owned() & (JobItemModel.lease_token == lease.token),
        )
    except UpdateError as exc:
        if jobs.is_conditional_failure(exc):
            logger.warning("lease lost before completing job_id=%s item_id=%s", item.job_id, item.item_id)
            return False
        raise
    jobs.move_item_count(item.user_id, item.job_id, {RUNNING: -1, SUCCEEDED: 1})
    return True


def keys_unavailable() -> Later | None:
    """A :class:`Later` for the whole cooldown when no key can serve now and the Flux
    client would not wait for one (every key cooling beyond its short wait, or none
    usable); None when a key is free. Saves a lease and a release per deferred message.
    A little jitter (up to 1 s) spreads the messages that wake at the same cooldown."""
    from chalicelib.flux.client import MAX_COOLDOWN_WAIT_S
    from chalicelib.flux.keypool import get_key_pool

    try:
        get_key_pool().acquire()
    except AllKeysCoolingError as exc:
        if exc.retry_after > MAX_COOLDOWN_WAIT_S:
            return Later(exc.retry_after + random.uniform(0.0, 1.0), "keys-cooling")
    except NoUsableKeysError:
        return Later(NO_KEYS_RETRY_S, "no-usable-keys")
    return None


def backoff_s(attempt: int) -> int:
    """Seconds before transient failure number ``attempt`` (1-based) is retried."""
    return int(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 4 ** max(0, attempt - 1)))


def run_item(
    item: JobItemModel, deadline: float, *, user_id: str | None = None, optimistic: bool = False
) -> Done | Later:
    """Lease, generate, store and complete one item (``deadline``: ``time.monotonic()``
    by which the invocation must be done; ``user_id``/``optimistic``: see :func:`lease_item`)."""
    settings = get_settings()
    waiting = keys_unavailable()
    if waiting is not None:  # every key cooling: do not even lease, come back at the cooldown
        return waiting
    leased = lease_item(item, user_id=user_id, optimistic=optimistic)
    if not isinstance(leased, Lease):
        return leased
    lease = leased
    attempt = int(lease.item.attempts)
    existing = stored_image(lease.item) if attempt > 1 else None  # the first attempt cannot find one
    if existing is not None:  # an earlier attempt stored it and died before completing
        complete_item(lease, existing)
        return Done("stored-earlier")
    try:
        params_for(lease.item)
    except ValidationError as exc:
        fail_item(lease, jobs.REASON_INVALID, exc.message)
        return Done("invalid")
    budget = min(settings.flux_deadline_seconds, deadline - time.monotonic() - STORE_MARGIN_S)
    if budget < MIN_FLUX_BUDGET_S:
        release(lease, give_back_attempt=True)
        return Later(0, "no-time-left")
    try:
        generated = generate_image(lease, deadline_s=budget)
    except AllKeysCoolingError as exc:
        release(lease, give_back_attempt=True)
        return Later(max(1.0, exc.retry_after) + random.uniform(0.0, 1.0), "keys-cooling")
    except NoUsableKeysError:
        release(lease, give_back_attempt=True)
        return Later(NO_KEYS_RETRY_S, "no-usable-keys")
    except UpstreamRejectedError as exc:
        fail_item(lease, jobs.REASON_REJECTED, exc.message)
        return Done("rejected")
    except UpstreamFailedError as exc:
        if exc.last_kind is FailureKind.CORRUPT_IMAGE:  # still corrupt after the client's retries: permanent
            fail_item(lease, jobs.REASON_CORRUPT, exc.last_error or exc.message)
            return Done("corrupt")
        if attempt >= settings.max_item_attempts:
            fail_item(lease, jobs.REASON_UPSTREAM, exc.last_error or exc.message)
            return Done("upstream-failed")
        release(lease, give_back_attempt=False)
        return Later(backoff_s(attempt), "upstream-failed")
    try:
        staged = upload_objects(lease, generated)
        image = write_metadata(lease, staged)
    except ValueError as exc:
        fail_item(lease, jobs.REASON_CORRUPT, f"image does not decode: {exc}")
        return Done("corrupt")
    except Exception as exc:  # noqa: BLE001 - S3 / DynamoDB: retried like an upstream failure
        logger.warning("storing failed job_id=%s item_id=%s (%s)", item.job_id, item.item_id, type(exc).__name__)
        if attempt >= settings.max_item_attempts:
            fail_item(lease, jobs.REASON_STORAGE, f"storing the image failed ({type(exc).__name__})")
            return Done("storage-failed")
        release(lease, give_back_attempt=False)
        return Later(backoff_s(attempt), "storage-failed")
    complete_item(lease, image)
    return Done("succeeded")


# --- messages ----------------------------------------------------------------------------------


def process_message(body: dict[str, Any], deadline: float) -> Done | Later:
    """Dispatch one decoded message by ``type``: ``item``, ``archive`` or ``webhook``."""
    kind = body.get("type")
    if kind == "item":
        job_id, item_id, user_id = (str(body.get(k) or "") for k in ("job_id", "item_id", "user_id"))
        if not (job_id and item_id and user_id):
            return Done("bad-message")
        return run_item(JobItemModel(job_id, item_id), deadline, user_id=user_id, optimistic=True)
    if kind == "archive":
        from chalicelib.services import archives

        return Done() if archives.process_message(body) else Later(30, "archive-busy")
    if kind == "webhook":  # sent here before webhooks had their own queue: forward, never deliver here
        from chalicelib.services import webhook_queue

        webhook_queue.enqueue(str(body.get("user_id")), str(body.get("job_id")))
        return Done("webhook-forwarded")
    logger.warning("unknown message type %r dropped", kind)
    return Done("unknown-type")


def _defer(record: dict[str, Any], body: str, delay_s: float) -> bool:
    """Make the message visible again in ``delay_s`` seconds.

    Returns:
        True when the message may be deleted (a fresh delayed copy was sent, because
        one more receive would move it to the DLQ); False to report it as a batch item
        failure (its visibility was changed).
    """
    settings = get_settings()
    delay = max(0, min(43_200, math.ceil(delay_s)))
    receives = int((record.get("attributes") or {}).get("ApproximateReceiveCount") or 1)
    if receives >= settings.jobs_max_receive_count - 1:
        try:
            jobs.send_messages([json.loads(body)], delay_s=min(900, delay))
            return True
        except Exception:  # noqa: BLE001 - fall back to the visibility timeout
            logger.warning("could not re-send a deferred message")
            return False
    try:
        client("sqs").change_message_visibility(
            QueueUrl=jobs.queue_url(), ReceiptHandle=record["receiptHandle"], VisibilityTimeout=delay
        )
    except Exception as exc:  # noqa: BLE001 - the message comes back after the queue's timeout
        logger.warning("ChangeMessageVisibility failed (%s)", type(exc).__name__)
    return False


def process_record(record: dict[str, Any], deadline: float) -> bool:
    """Handle one Lambda SQS record. Returns True when it may be deleted."""
    raw = record.get("body") or ""
    try:
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise ValueError("not an object")
    except ValueError:
        logger.warning("undecodable message %s dropped", record.get("messageId"))
        return True
    try:
        result = process_message(body, deadline)
    except Exception:  # e.g. DynamoDB throttling: see it again soon, not after the queue's long timeout
        logger.exception("message %s failed; it will be retried", record.get("messageId"))
        return _defer(record, raw, ERROR_RETRY_S)
    if isinstance(result, Done):
        return True
    logger.info("message %s deferred %.0f s (%s)", record.get("messageId"), result.delay_s, result.note)
    return _defer(record, raw, result.delay_s)


def handle_event(event: dict[str, Any], context: Any = None) -> dict[str, list[dict[str, str]]]:
    """The SQS handler: process every record, answer a partial batch response.

    Args:
        event: the Lambda SQS event (``{"Records": [...]}``).
        context: the Lambda context (``get_remaining_time_in_millis``), or None.

    Returns:
        ``{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}``.
    """
    records = list(event.get("Records") or [])
    remaining_s = 900.0
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        remaining_s = context.get_remaining_time_in_millis() / 1000.0
    deadline = time.monotonic() + remaining_s - 1.0
    threads = max(1, min(len(records), get_settings().worker_threads))
    if threads == 1:
        results = [process_record(r, deadline) for r in records]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            results = list(pool.map(lambda r: process_record(r, deadline), records))
    failures = [{"itemIdentifier": r["messageId"]} for r, ok in zip(records, results, strict=True) if not ok]
    return {"batchItemFailures": failures}


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
            condition=(JobItemModel.status == RUNNING)
            & (JobItemModel.lease_until < now)
            & (JobItemModel.lease_token == item.lease_token)
            & JobItemModel.cancel_requested.does_not_exist(),
        )
    except UpdateError as exc:
        if jobs.is_conditional_failure(exc):
            return False
        raise
    jobs.move_item_count(item.user_id, item.job_id, {RUNNING: -1, QUEUED: 1})
    return True
