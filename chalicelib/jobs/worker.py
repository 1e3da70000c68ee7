"""The jobs-queue worker: one SQS message per item (or archive), idempotent.

Webhooks are never delivered here: a ``webhook`` message still found on the jobs queue
is forwarded to the webhooks queue (:mod:`chalicelib.services.webhook_queue`).

The handler gets Lambda SQS events (``@app.on_sqs_message`` on the jobs queue) and
answers a partial batch response through :func:`chalicelib.sqsbatch.process_batch`
(Powertools' batch processor). The records of one batch are processed in parallel
threads (``WORKER_THREADS``), each bounded by the invocation's remaining time.
Messages are dispatched by their ``type`` through :data:`MESSAGE_HANDLERS`
(``item``, ``archive``, ``webhook``, ``video``, ``recount``). A message to see again later raises
:class:`~chalicelib.sqsbatch.Deferred`; the :func:`defer` hook then moves its
visibility (or sends a fresh delayed copy).

The item state machine and its conditional writes live in :mod:`chalicelib.jobs.state`
(lease, release, complete, fail). Here:

- *store*: the image id is fixed on the item at submit; the S3 keys derive from it,
  so a retry overwrites the same objects, and the metadata write is conditional
  (``attribute_not_exists``). A crash between upload and metadata write, then a
  retry, leaves one image and no orphan object; a later attempt that finds the
  metadata already written completes the item without calling Flux again.

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
maxReceiveCount (a worker crashing on them) land in the DLQ; the recovery sweep
records their items as failed.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import PutError, TransactWriteError

from chalicelib import queue
from chalicelib.db import ImageModel, JobItemModel, JobModel, is_condition_failure
from chalicelib.db.images import save_new_image
from chalicelib.errors import DomainError, ValidationError
from chalicelib.flux import own_keys
from chalicelib.flux.catalog import GenerationParams, parse_generation_params
from chalicelib.flux.client import MAX_COOLDOWN_WAIT_S, FluxClient, get_flux_client
from chalicelib.flux.exceptions import (
    AllKeysCoolingError,
    FailureKind,
    NoUsableKeysError,
    UpstreamFailedError,
    UpstreamRejectedError,
)
from chalicelib.flux.keypool import KeyPool, get_key_pool
from chalicelib.jobs import recovery, state, video_items
from chalicelib.jobs.state import Done, ItemLease, Later
from chalicelib.services import archives, image_inputs, images, together_keys, usage, webhook_queue
from chalicelib.services.video_worker import handle_video
from chalicelib.settings import get_settings
from chalicelib.sqsbatch import Deferred, invocation_deadline, process_batch
from chalicelib.storage import imaging, objects

logger = logging.getLogger("promptcanvas.worker")

STORE_MARGIN_S = 10.0  # seconds kept for storing after the upstream call
MIN_FLUX_BUDGET_S = 3.0  # seconds; with less time left an item is put back untouched
NO_KEYS_RETRY_S = 60  # seconds before a message is seen again when no key is usable
ERROR_RETRY_S = 30  # seconds before a message whose handling raised is seen again
BACKOFF_BASE_S = 2  # seconds; transient failure k is retried after base * 4**(k-1), capped
BACKOFF_CAP_S = 120


@dataclass
class StagedImage:
    """Objects uploaded for an item, metadata not yet written."""

    model: ImageModel
    keys: list[str]


# --- the steps of one item (public so tests can interrupt them honestly) ---------------------


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


def inputs_for(item: JobItemModel) -> image_inputs.Prepared:
    """The item's image inputs resolved again now (ownership, state) and prepared: fresh
    presigned URLs, sha256 of each input. Empty for a text-to-image item.

    Raises:
        DomainError: an input was deleted or rejected since the job was submitted (404/422).
        botocore / pynamodb errors: S3 or DynamoDB failed.
    """
    if not item.inputs:
        return image_inputs.Prepared()
    return image_inputs.prepare(image_inputs.from_json(item.user_id, item.inputs))


def generate_image(
    lease: ItemLease,
    deadline_s: float | None = None,
    prepared: image_inputs.Prepared | None = None,
    client: FluxClient | None = None,
) -> Any:
    """Call Flux for the item's one image (with its image inputs: ``prepared``, default
    :func:`inputs_for`; ``client``: the user's own-key client, default the shared pool's).

    Returns:
        The :class:`~chalicelib.flux.client.GeneratedImage`.

    Raises:
        The Flux client's errors (see the module docstring for what each means here).
    """
    prepared = prepared if prepared is not None else inputs_for(lease.item)
    return (client or get_flux_client()).generate(prepared.apply(params_for(lease.item)), deadline_s=deadline_s)[0]


def upload_objects(lease: ItemLease, generated: Any, prepared: image_inputs.Prepared | None = None) -> StagedImage:
    """Process the bytes (after the mask of ``prepared``, default :func:`inputs_for`) and
    upload original and thumbnail under the item's image id; the metadata records the inputs.

    Raises:
        ValueError: the bytes do not decode. botocore errors: the upload failed.
    """
    item = lease.item
    params = params_for(item)
    prepared = prepared if prepared is not None else inputs_for(item)
    processed = imaging.process(prepared.finish(generated.data))
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
        inputs=prepared.record,
    )
    s3_key, t_key = model.s3_key, model.thumb_key
    objects.put(s3_key, processed.original, processed.content_type)
    objects.put(t_key, processed.thumbnail, "image/webp")
    return StagedImage(model=model, keys=[s3_key, t_key])


def write_metadata(lease: ItemLease, staged: StagedImage) -> ImageModel:
    """Write the image metadata with ``attribute_not_exists`` (and its collection counter,
    in one transaction); if it exists already (an earlier attempt got this far), keep that one
    and delete only our objects that it does not use. Its cost is recorded once, when the item
    completes (:func:`chalicelib.jobs.state.complete_item`).

    Returns:
        The stored image.
    """
    try:
        save_new_image(staged.model)
        return staged.model
    except (PutError, TransactWriteError) as exc:
        if not is_condition_failure(exc):
            raise
    existing = ImageModel.get(staged.model.user_id, staged.model.image_id, consistent_read=True)
    extra = [k for k in staged.keys if k not in (existing.s3_key, existing.thumb_key)]
    if extra:
        objects.delete(extra)
    return existing


def keys_unavailable(pool: KeyPool | None = None) -> Later | None:
    """A :class:`Later` for the whole cooldown when no key of ``pool`` (default: the shared
    pool) can serve now and the Flux client would not wait for one (every key cooling
    beyond its short wait, or none usable); None when a key is free. Saves a lease and a
    release per deferred message. A little jitter (up to 1 s) spreads the messages that
    wake at the same cooldown."""
    try:
        (pool or get_key_pool()).acquire()
    except AllKeysCoolingError as exc:
        if exc.retry_after > MAX_COOLDOWN_WAIT_S:
            return Later(exc.retry_after + random.uniform(0.0, 1.0), "keys-cooling")
    except NoUsableKeysError:
        return Later(NO_KEYS_RETRY_S, "no-usable-keys")
    return None


def retry_delay_s(attempt: int) -> int:
    """Seconds before transient failure number ``attempt`` (1-based) is retried."""
    return int(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 4 ** max(0, attempt - 1)))


PAUSE_REASONS = {
    "disabled": "together-key-refused",
    "out_of_credits": "together-key-out-of-credits",
    "removed": "together-key-removed",
}


RESUMED_RETRY_S = 1.0  # seconds before an item whose job was resumed meanwhile runs again


def own_key_for(item: JobItemModel, user_id: str, started: float) -> together_keys.OwnKey | Done | Later:
    """The user's own key for an own-key item, or :class:`Done` after pausing its job when
    there is none, or it is refused or out of credits (the item stays queued; the user
    resumes with ``POST /v1/jobs/{id}/retry`` after saving a usable key). Never the
    shared pool: an own-key job does not fall back to it. ``started``: epoch seconds this
    handling began (see :func:`pause_for`)."""
    own = together_keys.active_key(user_id)
    if own is None:
        return pause_for(user_id, item.job_id, "removed", started)
    health = own_keys.health(user_id, own.key)
    if health.terminal:
        return pause_for(user_id, item.job_id, health.state, started)
    return own


def pause_for(user_id: str, job_id: str, key_state: str, started: float) -> Done | Later:
    """Pause the job because its own key is in ``key_state`` (a terminal state, or
    ``removed``). When the job was resumed after ``started`` (epoch seconds this handling
    began: the user saved a key and retried meanwhile), it is not paused again: the item
    comes back in :data:`RESUMED_RETRY_S` and runs with the key saved now."""
    code = PAUSE_REASONS.get(key_state, "together-key-refused")
    if key_state == "removed":
        message = "your Together key was removed; save one, then retry the job"
    else:
        message = together_keys.unusable_message(key_state)
    if state.pause_job(user_id, job_id, code, message, not_resumed_since=started):
        return Done("paused")
    job = JobModel.get(user_id, job_id, consistent_read=True)
    if job.paused_code or job.finished_at is not None or job.cancelled:
        return Done("paused")
    return Later(RESUMED_RETRY_S, "resumed")


def run_item(
    item: JobItemModel,
    deadline: float,
    *,
    user_id: str | None = None,
    optimistic: bool = False,
    own_key: bool = False,
) -> Done | Later:
    """Lease, generate, store and complete one item (``deadline``: ``time.monotonic()``
    by which the invocation must be done; ``user_id``/``optimistic``: see :func:`lease_item`;
    ``own_key``: the message says the item runs on the user's own key; the leased item's
    ``key_source`` decides)."""
    settings = get_settings()
    started = time.time()
    own: together_keys.OwnKey | None = None
    if own_key and user_id:
        found = own_key_for(item, user_id, started)
        if isinstance(found, Done | Later):
            return found
        own = found
    pool = own_keys.own_pool(user_id, own.key) if own is not None and user_id else None
    waiting = keys_unavailable(pool)
    if waiting is not None:  # every key cooling: do not even lease, come back at the cooldown
        return waiting
    leased = state.lease_item(item, user_id=user_id, optimistic=optimistic)
    if not isinstance(leased, ItemLease):
        return leased
    lease = leased
    if lease.item.kind == video_items.KIND:  # a message without the kind hint
        return video_items.run_video_item(lease)
    if (lease.item.key_source == "own") != (own is not None):  # a message without the right hint
        found = own_key_for(lease.item, lease.item.user_id, started) if lease.item.key_source == "own" else None
        if isinstance(found, Done | Later):
            state.release(lease, give_back_attempt=True)
            return found
        own = found
    client = own_keys.own_client(lease.item.user_id, own.key) if own is not None else None
    attempt = int(lease.item.attempts)
    existing = stored_image(lease.item) if attempt > 1 else None  # the first attempt cannot find one
    if existing is not None:  # an earlier attempt stored it and died before completing
        state.complete_item(lease, existing)
        return Done("stored-earlier")
    try:
        params_for(lease.item)
    except ValidationError as exc:
        state.fail_item(lease, state.REASON_INVALID, exc.message)
        return Done("invalid")
    try:
        prepared = inputs_for(lease.item)
    except DomainError as exc:  # an input deleted or rejected since submit: permanent
        state.fail_item(lease, state.REASON_INVALID, f"{exc.field or 'input'}: {exc.message}")
        return Done("invalid")
    except Exception as exc:  # noqa: BLE001 - S3 / DynamoDB: retried like a storage failure
        return _storage_failed(lease, attempt, exc)
    budget = min(settings.flux_deadline_seconds, deadline - time.monotonic() - STORE_MARGIN_S)
    if budget < MIN_FLUX_BUDGET_S:
        state.release(lease, give_back_attempt=True)
        return Later(0, "no-time-left")
    try:
        generated = generate_image(lease, deadline_s=budget, prepared=prepared, client=client)
    except AllKeysCoolingError as exc:
        state.release(lease, give_back_attempt=True)
        return Later(max(1.0, exc.retry_after) + random.uniform(0.0, 1.0), "keys-cooling")
    except NoUsableKeysError:
        state.release(lease, give_back_attempt=True)
        if own is not None:  # the user's key was refused (401/403) or is out of credits (402)
            key_state = own_keys.health(lease.item.user_id, own.key).state
            return pause_for(lease.item.user_id, lease.item.job_id, key_state, started)
        return Later(NO_KEYS_RETRY_S, "no-usable-keys")
    except UpstreamRejectedError as exc:
        state.fail_item(lease, state.REASON_REJECTED, exc.message)
        return Done("rejected")
    except UpstreamFailedError as exc:
        if exc.last_kind is FailureKind.CORRUPT_IMAGE:  # still corrupt after the client's retries: permanent
            state.fail_item(lease, state.REASON_CORRUPT, exc.last_error or exc.message)
            return Done("corrupt")
        if attempt >= settings.max_item_attempts:
            state.fail_item(lease, state.REASON_UPSTREAM, exc.last_error or exc.message)
            return Done("upstream-failed")
        state.release(lease, give_back_attempt=False)
        return Later(retry_delay_s(attempt), "upstream-failed")
    try:
        staged = upload_objects(lease, generated, prepared)
        image = write_metadata(lease, staged)
    except ValueError as exc:
        state.fail_item(lease, state.REASON_CORRUPT, f"image does not decode: {exc}")
        return Done("corrupt")
    except Exception as exc:  # noqa: BLE001 - S3 / DynamoDB: retried like an upstream failure
        return _storage_failed(lease, attempt, exc)
    state.complete_item(lease, image)
    return Done("succeeded")


def _storage_failed(lease: ItemLease, attempt: int, exc: Exception) -> Done | Later:
    """An S3 / DynamoDB failure of an item: retried after a back-off, failed with
    ``storage-failed`` once ``MAX_ITEM_ATTEMPTS`` are spent."""
    item = lease.item
    logger.warning("storing failed job_id=%s item_id=%s (%s)", item.job_id, item.item_id, type(exc).__name__)
    if attempt >= get_settings().max_item_attempts:
        state.fail_item(lease, state.REASON_STORAGE, f"storing the image failed ({type(exc).__name__})")
        return Done("storage-failed")
    state.release(lease, give_back_attempt=False)
    return Later(retry_delay_s(attempt), "storage-failed")


# --- messages --------------------------------------------------------------------------------


#: ``handler(body, deadline) -> Done | Later``: ``deadline`` is ``time.monotonic()`` by which to be done.
MessageHandler = Callable[[dict[str, Any], float], Done | Later]


def handle_item(body: dict[str, Any], deadline: float) -> Done | Later:
    """``{"type": "item", "user_id", "job_id", "item_id", "round", "key_source"?, "kind"?}``:
    generate the item's image (``key_source: "own"``: on the user's own key), or start its
    video (``kind: "video"``, :mod:`chalicelib.jobs.video_items`)."""
    job_id, item_id, user_id = (str(body.get(k) or "") for k in ("job_id", "item_id", "user_id"))
    if not (job_id and item_id and user_id):
        return Done("bad-message")
    if body.get("kind") == video_items.KIND:  # no key is needed to start a video
        leased = state.lease_item(JobItemModel(job_id, item_id), user_id=user_id, optimistic=True)
        return video_items.run_video_item(leased) if isinstance(leased, ItemLease) else leased
    own_key = body.get("key_source") == "own"
    return run_item(JobItemModel(job_id, item_id), deadline, user_id=user_id, optimistic=True, own_key=own_key)


def handle_archive(body: dict[str, Any], deadline: float) -> Done | Later:
    """``{"type": "archive", "user_id", "archive_id"}``: build the ZIP (Later while another worker builds it)."""
    return Done() if archives.process_message(body) else Later(30, "archive-busy")


def forward_webhook(body: dict[str, Any], deadline: float) -> Done | Later:
    """``{"type": "webhook", ...}`` on the jobs queue (sent there before webhooks had their own
    queue): forwarded to the webhooks queue, never delivered here."""
    webhook_queue.enqueue(str(body.get("user_id")), str(body.get("job_id")))
    return Done("webhook-forwarded")


#: The registry of message types: ``{"type": handler}``. A new message type is one entry here.
MESSAGE_HANDLERS: dict[str, MessageHandler] = {
    "item": handle_item,
    "archive": handle_archive,
    "webhook": forward_webhook,
    "video": handle_video,
    "recount": recovery.recount,
}


def process_message(body: dict[str, Any], deadline: float) -> Done | Later:
    """Dispatch one decoded message by ``type`` through :data:`MESSAGE_HANDLERS`; an
    unknown type is dropped (logged)."""
    handler = MESSAGE_HANDLERS.get(str(body.get("type")))
    if handler is None:
        logger.warning("unknown message type %r dropped", body.get("type"))
        return Done("unknown-type")
    return handler(body, deadline)


def defer(record: dict[str, Any], delay_s: float) -> bool:
    """The batch's defer hook: make the message visible again in ``delay_s`` seconds.

    Returns:
        True when the message may be deleted (a fresh delayed copy was sent, because
        one more receive would move it to the DLQ); False to report it as a batch item
        failure (its visibility was changed).
    """
    settings = get_settings()
    delay = max(0, min(queue.MAX_VISIBILITY_S, math.ceil(delay_s)))
    receives = int((record.get("attributes") or {}).get("ApproximateReceiveCount") or 1)
    if receives >= settings.jobs_max_receive_count - 1:
        try:
            queue.send_messages([json.loads(record.get("body") or "")], delay_s=min(queue.MAX_DELAY_S, delay))
            return True
        except Exception:  # noqa: BLE001 - fall back to the visibility timeout
            logger.warning("could not re-send a deferred message")
            return False
    try:
        queue.change_visibility(record["receiptHandle"], delay)
    except Exception as exc:  # noqa: BLE001 - the message comes back after the queue's timeout
        logger.warning("ChangeMessageVisibility failed (%s)", type(exc).__name__)
    return False


def handle_record(record: dict[str, Any], deadline: float) -> str:
    """The record handler: the message's outcome note when it is done.

    Raises:
        Deferred: see the message again later (a :class:`~chalicelib.jobs.state.Later`,
            or :data:`ERROR_RETRY_S` after an exception such as DynamoDB throttling, so
            it comes back soon rather than after the queue's long visibility timeout).
    """
    try:
        body = json.loads(record.get("body") or "")
        if not isinstance(body, dict):
            raise ValueError("not an object")
    except ValueError:
        logger.warning("undecodable message %s dropped", record.get("messageId"))
        return "undecodable"
    try:
        result = process_message(body, deadline)
    except Exception:
        logger.exception("message %s failed; it will be retried", record.get("messageId"))
        raise Deferred(ERROR_RETRY_S, "error") from None
    if isinstance(result, Later):
        logger.info("message %s deferred %.0f s (%s)", record.get("messageId"), result.delay_s, result.note)
        raise Deferred(result.delay_s, result.note)
    return result.note


def handle_event(event: dict[str, Any], context: Any = None) -> dict[str, list[dict[str, str]]]:
    """The jobs-queue handler: every record through :func:`handle_record`, deferrals
    through :func:`defer`; answers a partial batch response.

    Args:
        event: the Lambda SQS event (``{"Records": [...]}``).
        context: the Lambda context (``get_remaining_time_in_millis``), or None.

    Returns:
        ``{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}``.
    """
    deadline = invocation_deadline(context, margin_s=1.0)
    threads = max(1, min(len(event.get("Records") or []), get_settings().worker_threads))
    with usage.batched_costs():  # the batch's image costs: one write per spend item, not three per image
        return process_batch(event, lambda record: handle_record(record, deadline), threads=threads, defer=defer)
