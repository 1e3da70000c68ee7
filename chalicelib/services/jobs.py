"""Batch jobs: submitting, reading, cancelling and retrying; job counters; the jobs queue.

A job is up to ``JOBS_MAX_ITEMS`` (500) images, one *item* each. Submitting:

1. everything is validated first (400 naming the field; nothing is written);
2. an ``Idempotency-Key`` is claimed with a conditional put (same key and body: the same
   job is returned; same key, other body: 422 ``idempotency-key-reused``);
3. the quota is charged for all images at once (429 ``quota-exceeded``, nothing written);
4. the items, then the job, are written (the job with ``attribute_not_exists``);
5. the items go to SQS with SendMessageBatch, 10 entries a call; entries that fail are
   sent again (the response lists them in ``Failed``), so no item stays queued without
   a message. If SQS stays down, the job keeps ``enqueued_at`` unset and the
   stuck-work sweep (or a retried request with the same key) sends them later.
   Source: Amazon SQS API reference, SendMessageBatch (at most 10 entries; a partial
   failure is reported per entry, not as an error).

Counters: every item transition moves one unit between two of ``queued_count``,
``running_count``, ``succeeded_count``, ``failed_count`` in one UpdateItem with ADD,
so the counters always add up to ``total``. Source: Amazon DynamoDB developer guide,
"Atomic counters" (UpdateItem ADD is applied atomically, without a read).
The job's status is derived from the counters (:func:`derive_status`) and stored for
the list filter; ``started_at`` is set by the first lease, ``finished_at`` by
:func:`finish_if_done` once nothing is queued or running.

Quota: charged per image at submit (and for items a retry re-queues); refunded per
item that ends failed or cancelled (``chalicelib.services.usage``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pynamodb.exceptions import DeleteError, PutError, UpdateError
from ulid import ULID

from chalicelib.aws import client
from chalicelib.db import ImageModel, JobItemModel, JobModel, same_item
from chalicelib.db.images import collection_counts
from chalicelib.db.jobs import (
    ACTIVE_SHARD,
    FAILED,
    ITEM_STATES,
    JOB_CANCELLED,
    JOB_COMPLETED,
    JOB_COMPLETED_WITH_ERRORS,
    JOB_FAILED,
    JOB_QUEUED,
    JOB_RUNNING,
    JOB_STATUSES,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    IdempotencyModel,
)
from chalicelib.errors import ApiError, NotFound, ValidationError
from chalicelib.flux import availability
from chalicelib.flux.catalog import GENERATION_FIELDS, MAX_SEED, TEXT_PATTERN, as_integer, parse_generation_params
from chalicelib.jsonbody import parse_json_object, reject_nulls
from chalicelib.services import usage
from chalicelib.services.images import ULID_RE, check_unknown_fields, parse_collection
from chalicelib.services.pagination import ITEM_ID_PATTERN, decode_cursor, encode_cursor, matches, parse_limit
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

SUBMIT_FIELDS: frozenset[str] = GENERATION_FIELDS | {"prompts", "count", "name", "collection", "webhook_url"}
#: The generation fields a job stores once for all its items (the rest: prompt, seed, n per item).
JOB_PARAM_FIELDS = tuple(sorted(GENERATION_FIELDS - {"prompt", "seed", "n"}))
MAX_NAME_CHARS = 200
MAX_IDEMPOTENCY_KEY_CHARS = 255
IDEMPOTENCY_TTL = timedelta(hours=24)
IDEMPOTENCY_TAKEOVER_S = 60  # a claim whose job never appeared may be taken over after this, seconds
SEND_ATTEMPTS = 5  # SendMessageBatch rounds for entries that failed
PARALLEL_WRITES = 8  # conditional item writes in flight at once (cancel, retry)
SQS_BATCH = 10  # SendMessageBatch maximum entries
SEND_PARALLEL = 4  # SendMessageBatch calls in flight at once


# --- small helpers ----------------------------------------------------------------------------


def now_s() -> float:
    """Epoch seconds."""
    return time.time()


def iso(epoch: float | None) -> str | None:
    """Epoch seconds -> ``YYYY-MM-DDTHH:MM:SSZ`` (None stays None)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_conditional_failure(exc: Exception) -> bool:
    """True when a PynamoDB write failed on its ConditionExpression."""
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"


def parallel[T](fn: Callable[[T], Any], items: Iterable[T], workers: int = PARALLEL_WRITES) -> list[Any]:
    """``[fn(x) for x in items]`` with up to ``workers`` threads (order kept)."""
    items = list(items)
    if len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def item_id_for(index: int) -> str:
    """The item id of the 0-based ``index``: 4 digits, so ids sort in prompt order."""
    return f"{index:04d}"


# --- the jobs queue ---------------------------------------------------------------------------

_queue_urls: dict[tuple[int, str], str] = {}
_queue_lock = threading.Lock()


def queue_url(name: str | None = None) -> str:
    """The URL of the jobs queue (or queue ``name``), looked up once per SQS client."""
    name = name or get_settings().jobs_queue_name
    sqs = client("sqs")
    key = (id(sqs), name)
    found = _queue_urls.get(key)
    if found:
        return found
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    with _queue_lock:
        _queue_urls[key] = url
    return url


class QueueError(Exception):
    """Some messages could not be sent after every attempt."""


def send_messages(bodies: list[dict[str, Any]], *, delay_s: int = 0, queue: str | None = None) -> None:
    """Send JSON message bodies with SendMessageBatch, 10 entries a call.

    Entries listed in a response's ``Failed`` (and whole calls that raise) are sent
    again, up to :data:`SEND_ATTEMPTS` rounds with a short exponential pause. Up to
    :data:`SEND_PARALLEL` calls run at once (a 500-item job is 50 calls).

    Args:
        delay_s: DelaySeconds for every message, 0..900 (SQS maximum: 15 minutes).

    Raises:
        QueueError: entries still unsent after the last round.
    """
    url = queue_url(queue)
    sqs = client("sqs")
    delay = max(0, min(900, int(delay_s)))
    pending = {str(i): json.dumps(body, separators=(",", ":")) for i, body in enumerate(bodies)}

    def send(chunk: list[str]) -> list[str]:
        entries = [{"Id": i, "MessageBody": pending[i], "DelaySeconds": delay} for i in chunk]
        try:
            resp = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        except Exception as exc:  # noqa: BLE001 - the whole call failed: every entry stays pending
            logger.warning("SendMessageBatch failed (%s); will retry", type(exc).__name__)
            return []
        for bad in resp.get("Failed", []):
            logger.warning("SendMessageBatch entry failed code=%s", bad.get("Code"))
        return [ok["Id"] for ok in resp.get("Successful", [])]

    for attempt in range(SEND_ATTEMPTS):
        if not pending:
            return
        ids = list(pending)
        chunks = [ids[start : start + SQS_BATCH] for start in range(0, len(ids), SQS_BATCH)]
        for sent in parallel(send, chunks, workers=SEND_PARALLEL):
            for entry_id in sent:
                pending.pop(entry_id, None)
        if pending and attempt + 1 < SEND_ATTEMPTS:
            time.sleep(0.1 * 2**attempt)
    if pending:
        raise QueueError(f"{len(pending)} of {len(bodies)} messages could not be sent")


def item_message(item: JobItemModel) -> dict[str, Any]:
    """The jobs-queue message of one item: ``{"type": "item", user_id, job_id, item_id, round}``."""
    return {
        "type": "item",
        "user_id": item.user_id,
        "job_id": item.job_id,
        "item_id": item.item_id,
        "round": int(item.retry_round or 0),
    }


# --- counters and status ----------------------------------------------------------------------

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
    completed_with_errors | failed (nothing succeeded) | cancelled (cancel requested).
    """
    c = counts(job)
    if job.cancelled:
        return JOB_CANCELLED
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
    job.update(actions=actions, condition=JobModel.job_id.exists())
    return job


def move_item_count(
    user_id: str,
    job_id: str,
    deltas: Mapping[str, int],
    *,
    reason: str | None = None,
    started_at: float | None = None,
) -> None:
    """The worker's counter update for one item transition, then what follows from it.

    One atomic ADD whose deltas sum to 0. A transition into succeeded/failed may end
    the job, so it reads the job back (``ALL_NEW``) and calls :func:`finish_if_done`.
    Other transitions (lease, release) cannot, so they ask only for ``UPDATED_NEW``:
    with ``started_at`` (epoch seconds, on a lease) the job's ``started_at`` /
    ``progress_since`` are set if unset, and if this lease set them the job is marked
    running (:func:`mark_started`).

    Raises:
        UpdateError: the job does not exist (condition) or DynamoDB failed.
    """
    if any(deltas.get(state, 0) > 0 for state in (SUCCEEDED, FAILED)):
        job = apply_counts(user_id, job_id, deltas, reasons={reason: 1} if reason else None)
        finish_if_done(job)
        return
    actions: list[Any] = [COUNTER_ATTRS[state].add(n) for state, n in deltas.items() if n]
    actions.append(JobModel.counters_at.set(now_s()))
    if started_at is not None:
        actions += [
            JobModel.started_at.set(JobModel.started_at | started_at),
            JobModel.progress_since.set(JobModel.progress_since | started_at),
        ]
    data = JobModel._get_connection().update_item(
        user_id, range_key=job_id, actions=actions, condition=JobModel.job_id.exists(), return_values="UPDATED_NEW"
    )
    first = (data.get("Attributes") or {}).get("started_at", {}).get("N")
    if started_at is not None and first is not None and float(first) == started_at:
        mark_started(JobModel(user_id, job_id, status=JOB_QUEUED))


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
        if not is_conditional_failure(exc):
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
        if is_conditional_failure(exc):
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
        from chalicelib.services import webhook_queue

        try:
            webhook_queue.enqueue(job.user_id, job.job_id)
        except Exception:  # noqa: BLE001 - the sweep enqueues due webhooks too
            logger.warning("could not queue the webhook of job %s; the sweep will send it", job.job_id)
    return True


# --- JSON shapes ------------------------------------------------------------------------------


def eta_seconds(job: JobModel, now: float | None = None) -> int | None:
    """Seconds until the job ends at the throughput observed since it (re)started:
    ``remaining / ((done - progress_base) / elapsed)``; None until something finished."""
    c = counts(job)
    remaining = c[QUEUED] + c[RUNNING]
    if remaining == 0:
        return 0 if job.finished_at is not None else None
    since = job.progress_since or job.started_at
    if since is None or job.cancelled:
        return None
    done = c[SUCCEEDED] + c[FAILED] - int(job.progress_base or 0)
    elapsed = (now_s() if now is None else now) - float(since)
    if done <= 0 or elapsed <= 0:
        return None
    return int(round(remaining * elapsed / done))


def job_json(job: JobModel) -> dict[str, Any]:
    """The API shape of a job.

    ``counts`` by state, ``progress`` 0..1 (finished items / total), ``eta_seconds``
    (None while unknown), ``errors_by_reason`` ``{reason: n}`` (non-zero only), times as
    ISO 8601 UTC, ``webhook`` (None without a URL).
    """
    c = counts(job)
    total = int(job.total or 0)
    reasons = job.failure_reasons.as_dict() if job.failure_reasons else {}
    webhook = None
    if job.webhook_url:
        webhook = {
            "url": job.webhook_url,
            "state": job.webhook_state,
            "attempts": int(job.webhook_attempts or 0),
            "next_attempt_at": iso(job.webhook_next_at) if job.webhook_state == "pending" else None,
            "last_error": job.webhook_last_error,
            "delivered_at": iso(job.webhook_delivered_at),
        }
    return {
        "job_id": job.job_id,
        "name": job.name,
        "status": derive_status(job),
        "collection": job.collection,
        "source": job.source,
        "total": total,
        "counts": c,
        "progress": round((c[SUCCEEDED] + c[FAILED]) / total, 4) if total else 1.0,
        "eta_seconds": eta_seconds(job),
        "params": dict(job.params or {}),
        "errors_by_reason": {k: int(v) for k, v in sorted(reasons.items()) if v},
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "cancelled_at": iso(job.cancelled_at) if job.cancelled else None,
        "webhook": webhook,
    }


def image_ref(image: ImageModel) -> dict[str, Any]:
    """``{id, url, thumbnail_url, seed}`` of an item's stored image (fresh presigned URLs)."""
    return {
        "id": image.image_id,
        "url": objects.presign_get(image.s3_key),
        "thumbnail_url": objects.presign_get(image.thumb_key),
        "seed": int(image.seed),
    }


def item_json(item: JobItemModel, image: ImageModel | None) -> dict[str, Any]:
    """The API shape of an item: prompt, status, attempts, error ``{code, message}`` and image."""
    error = None
    if item.status == FAILED and item.error_code:
        error = {"code": item.error_code, "message": item.error_message or item.error_code}
    return {
        "item_id": item.item_id,
        "index": int(item.index),
        "prompt": item.prompt,
        "seed": int(item.seed),
        "status": item.status,
        "attempts": int(item.attempts or 0),
        "error": error,
        "image": image_ref(image) if image is not None and item.status == SUCCEEDED else None,
        "started_at": iso(item.started_at),
        "finished_at": iso(item.finished_at),
    }


# --- submission -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """A validated job request, before anything is written.

    ``prompts`` one entry per item (``n`` already expanded); ``seeds`` one per item;
    ``params`` the job's generation fields (``JOB_PARAM_FIELDS``); ``request_hash``
    sha256 of the normalised request (for the idempotency key).
    """

    prompts: list[str]
    seeds: list[int]
    params: dict[str, Any]
    name: str | None
    collection: str | None
    webhook_url: str | None
    source: str
    request_hash: str
    fields: dict[str, Any] = field(default_factory=dict)


def _name(value: Any) -> str | None:
    """The job's ``name``: at most ``MAX_NAME_CHARS`` characters as sent, no control
    characters but TAB/LF/CR (:data:`TEXT_PATTERN`); runs of white space become one space."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError("name must be a string", field="name")
    if len(value) > MAX_NAME_CHARS:
        raise ValidationError(f"name must be at most {MAX_NAME_CHARS} characters", field="name")
    if not matches(TEXT_PATTERN, value):
        raise ValidationError("name must not contain control characters", field="name")
    return " ".join(value.split()) or None


def _count(value: Any, maximum: int) -> int:
    if value is None:
        return 1
    value = as_integer(value)
    if value is None:
        raise ValidationError("count must be an integer", field="count")
    if not 1 <= value <= maximum:
        raise ValidationError(f"count must be between 1 and {maximum} (got {value})", field="count")
    return value


def _prompt_error(message: str, field: str) -> ApiError:
    """A bad prompt (or too many images) in a JSON body is 400 naming ``field``; in a
    prompt file it is 422 ``invalid-prompt-file`` (the form matched the schema, its file
    content did not make a job)."""
    if field == "file":
        from chalicelib.services.prompt_files import unusable_file

        return unusable_file(message)
    return ValidationError(message, field=field)


def build_submission(
    fields: Mapping[str, Any],
    prompts: list[tuple[str, str, Any]] | None,
    *,
    source: str,
    hash_extra: Any = None,
) -> Submission:
    """Validate a job request into a :class:`Submission`.

    Args:
        fields: the JSON body (or the multipart form fields, already typed). Either
            ``prompts`` (list of strings) or ``prompt`` + optional ``count``, unless
            ``prompts`` is given.
        prompts: prompts from a file as ``(field, label, text)`` (``label`` names the
            line in error messages, ``field`` is ``file``), or None for a JSON request.
        source: ``prompts`` | ``count`` | ``file``.
        hash_extra: anything else that identifies the request (the file's digest).

    Raises:
        ValidationError: 400 naming the field: ``prompts`` (empty, not a list, over the
            limit), ``prompts[i]`` (a bad prompt), ``count``, ``name``, ``collection``,
            ``webhook_url`` or a generation field.
        ApiError: 422 ``invalid-prompt-file`` for a bad line of a prompt file, or a file
            that makes too many images; 422 ``webhook-url-refused``.
    """
    from chalicelib.services.webhooks import validate_webhook_url

    settings = get_settings()
    maximum = settings.jobs_max_items
    if prompts is None:
        has_list = fields.get("prompts") is not None
        if has_list:
            if fields.get("prompt") is not None:
                raise ValidationError("send prompts, or prompt with count, not both", field="prompt")
            if fields.get("count") is not None:
                raise ValidationError("count goes with prompt, not with prompts", field="count")
            raw = fields["prompts"]
            if not isinstance(raw, list):
                raise ValidationError("prompts must be a list of strings", field="prompts")
            if not 1 <= len(raw) <= maximum:
                raise ValidationError(f"prompts must have 1 to {maximum} entries (got {len(raw)})", field="prompts")
            prompts = [(f"prompts[{i}]", f"prompts[{i}]", p) for i, p in enumerate(raw)]
            source = "prompts"
        else:
            if fields.get("prompt") is None:
                raise ValidationError("prompts (a list) or prompt (with count) is required", field="prompts")
            count = _count(fields.get("count"), maximum)
            prompts = [("prompt", "prompt", fields["prompt"])] * count
            source = "count"
    elif not prompts:
        raise ValidationError("the file has no prompts", field="file")
    # The job's generation parameters, validated once with the first prompt.
    base = {k: v for k, v in fields.items() if k in GENERATION_FIELDS and k != "prompt"}
    first_field, first_label, first_prompt = prompts[0]
    try:
        params = parse_generation_params({**base, "prompt": first_prompt})
    except ValidationError as exc:
        if exc.field == "prompt":
            raise _prompt_error(exc.message.replace("prompt", first_label, 1), first_field) from None
        raise
    availability.require_available(params.model)
    n = params.n
    if len(prompts) * n > maximum:
        where = "prompts" if source == "prompts" else ("count" if source == "count" else "file")
        message = f"a job makes at most {maximum} images; {len(prompts)} prompts x n={n} is {len(prompts) * n}"
        raise _prompt_error(message, where)
    job_params = {k: v for k, v in params.to_body().items() if k in JOB_PARAM_FIELDS}
    texts: list[str] = []
    checked: dict[str, str] = {}
    for where, label, text in prompts:
        if isinstance(text, str) and text in checked:
            texts.append(checked[text])
            continue
        try:
            one = parse_generation_params({**job_params, "prompt": text, "seed": 0})
        except ValidationError as exc:
            raise _prompt_error(exc.message.replace("prompt", label, 1), where) from None
        checked[text] = one.prompt
        texts.append(one.prompt)
    expanded = [t for t in texts for _ in range(n)]
    seed = fields.get("seed")
    if seed is not None:  # validated above: item i gets (seed + i) mod 2**32, reproducible
        seeds = [(int(seed) + i) % (MAX_SEED + 1) for i in range(len(expanded))]
    else:
        seeds = [secrets.randbelow(MAX_SEED + 1) for _ in expanded]
    name = _name(fields.get("name"))
    collection = parse_collection(fields.get("collection"))
    webhook_url = validate_webhook_url(fields.get("webhook_url"))
    digest = hashlib.sha256(
        json.dumps(
            {"fields": {k: v for k, v in fields.items()}, "extra": hash_extra, "source": source},
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        ).encode()
    ).hexdigest()
    return Submission(
        prompts=expanded,
        seeds=seeds,
        params=job_params,
        name=name,
        collection=collection,
        webhook_url=webhook_url,
        source=source,
        request_hash=digest,
        fields=dict(fields),
    )


def parse_request(content_type: str | None, raw: bytes) -> Submission:
    """Parse and validate a ``POST /v1/jobs`` body: JSON, or multipart with a prompt file.

    Raises:
        ApiError: 413 ``body-too-large`` over ``JOBS_MAX_BODY_BYTES``; 415
            ``unsupported-media-type``; 400 ``invalid-json`` / naming the field.
    """
    from chalicelib.services import prompt_files

    limit = get_settings().jobs_max_body_bytes
    if len(raw) > limit:
        raise ApiError(413, "body-too-large", f"request body exceeds {limit} bytes")
    ctype = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if ctype == "multipart/form-data":
        form = prompt_files.parse_form(content_type or "", raw)
        return build_submission(form.fields, form.prompts, source="file", hash_extra=form.digest)
    if ctype not in ("application/json", "text/json") and not ctype.endswith("+json"):
        raise ApiError(415, "unsupported-media-type", "send application/json or multipart/form-data")
    body = parse_json_object(raw)
    check_unknown_fields(body, SUBMIT_FIELDS)
    reject_nulls(body)
    return build_submission(body, None, source="prompts")


def parse_idempotency_key(value: str | None) -> str | None:
    """The ``Idempotency-Key`` header: 1-255 printable ASCII characters.

    Raises:
        ValidationError: 400 naming ``Idempotency-Key``.
    """
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_IDEMPOTENCY_KEY_CHARS or not all(33 <= ord(c) < 127 for c in value):
        raise ValidationError(
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters",
            field="Idempotency-Key",
        )
    return value


@dataclass
class _Claim:
    job_id: str
    charged: bool
    replay: JobModel | None = None
    period: str | None = None  # the quota month an earlier request charged


def _claim_key(user_id: str, key: str, request_hash: str) -> _Claim:
    """Claim ``key`` for this request, or find the job an earlier identical request made.

    Raises:
        ApiError: 422 ``idempotency-key-reused`` (other body); 409
            ``idempotency-key-in-progress`` (the first request is still running).
    """
    now = now_s()
    record = IdempotencyModel(
        user_id,
        key,
        request_hash=request_hash,
        job_id=str(ULID()),
        charged=False,
        claimed_at=now,
        expires_at=IDEMPOTENCY_TTL,
    )
    expired = datetime.fromtimestamp(now, UTC)
    try:
        record.save(condition=IdempotencyModel.key.does_not_exist() | (IdempotencyModel.expires_at < expired))
        return _Claim(record.job_id, False)
    except PutError as exc:
        if not is_conditional_failure(exc):
            raise
    existing = IdempotencyModel.get(user_id, key, consistent_read=True)
    if existing.request_hash != request_hash:
        raise ApiError(
            422,
            "idempotency-key-reused",
            "this Idempotency-Key was used with a different request body",
            field="Idempotency-Key",
        )
    try:
        return _Claim(existing.job_id, bool(existing.charged), JobModel.get(user_id, existing.job_id))
    except JobModel.DoesNotExist:
        pass
    if now - float(existing.claimed_at) < IDEMPOTENCY_TAKEOVER_S:
        raise ApiError(
            409,
            "idempotency-key-in-progress",
            "a request with this Idempotency-Key is still being processed; retry shortly",
            headers={"Retry-After": "1"},
        )
    try:  # the first request died before writing its job: take its claim over
        existing.update(
            actions=[IdempotencyModel.claimed_at.set(now)],
            condition=IdempotencyModel.claimed_at == existing.claimed_at,
        )
    except UpdateError as exc:
        if is_conditional_failure(exc):
            raise ApiError(
                409,
                "idempotency-key-in-progress",
                "a request with this Idempotency-Key is still being processed; retry shortly",
                headers={"Retry-After": "1"},
            ) from None
        raise
    return _Claim(existing.job_id, bool(existing.charged), period=existing.charged_period)


def _release_key(user_id: str, key: str, job_id: str) -> None:
    try:
        IdempotencyModel(user_id, key).delete(condition=IdempotencyModel.job_id == job_id)
    except DeleteError:
        logger.warning("could not release an idempotency key")


def _created(job: JobModel, replayed: bool = False) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Location": f"/v1/jobs/{job.job_id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return 202, {"job_id": job.job_id, "status": derive_status(job), "total": int(job.total)}, headers


def submit(
    user_id: str, content_type: str | None, raw: bytes | str | None, idempotency_key: str | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """``POST /v1/jobs``.

    Args:
        raw: the request body (Chalice gives ``str`` for text bodies, ``bytes`` for binary ones).

    Returns:
        ``(202, {"job_id", "status": "queued", "total"}, headers)``; with an
        ``Idempotency-Key`` seen before (same body): the same job, its current status
        and ``Idempotent-Replayed: true``.

    Raises:
        ValidationError: 400 naming the field (nothing written).
        ApiError: 413, 415, 409/422 (idempotency key), 429 ``rate-limited`` / ``quota-exceeded``.
    """
    from chalicelib.services.webhook_secrets import get_or_create_secret

    body = raw.encode("utf-8") if isinstance(raw, str) else (raw or b"")
    sub = parse_request(content_type, body)
    key = parse_idempotency_key(idempotency_key)
    usage.hit_rate_limit(user_id)
    claim = _claim_key(user_id, key, sub.request_hash) if key else _Claim(str(ULID()), False)
    if claim.replay is not None:
        ensure_enqueued(claim.replay)
        return _created(claim.replay, replayed=True)
    total = len(sub.prompts)
    charged_now = False
    period = claim.period
    if not claim.charged:
        try:
            period = usage.charge(user_id, total)
        except ApiError:
            if key:
                _release_key(user_id, key, claim.job_id)
            raise
        charged_now = True
        if key:
            try:
                IdempotencyModel(user_id, key).update(
                    actions=[IdempotencyModel.charged.set(True), IdempotencyModel.charged_period.set(period)]
                )
            except UpdateError:
                logger.warning("could not record the charge on an idempotency key")
    try:
        if sub.webhook_url:
            get_or_create_secret(user_id)
        job, items = _write_job(user_id, claim.job_id, sub, key, period)
    except Exception:
        if charged_now:
            usage.refund(user_id, total, period)
        if key:
            _release_key(user_id, key, claim.job_id)
        raise
    ensure_enqueued(job, items)
    logger.info("job submitted job_id=%s total=%d source=%s", job.job_id, total, sub.source)
    return _created(job)


#: Attributes of a new job set from the clock of the write (compared without them).
JOB_WRITE_CLOCK_ATTRS = ("created_at", "counters_at")


def _write_job(
    user_id: str, job_id: str, sub: Submission, key: str | None, period: str | None
) -> tuple[JobModel, list[JobItemModel]]:
    """Write the items (BatchWriteItem, 25 a call, retried by PynamoDB), then the job.
    ``period`` is the quota month the items were charged to (their refunds go there).

    Items come first: a crash in between leaves only unreachable items (no job, no
    messages); a retry with the same idempotency key rewrites them under the same job id.
    """
    now = now_s()
    items = [
        JobItemModel(
            job_id,
            item_id_for(i),
            user_id=user_id,
            index=i,
            prompt=prompt,
            seed=seed,
            params=sub.params,
            collection=sub.collection,
            image_id=str(ULID()),
            status=QUEUED,
            attempts=0,
            retry_round=0,
            charged_period=period,
            created_at=now,
        )
        for i, (prompt, seed) in enumerate(zip(sub.prompts, sub.seeds, strict=True))
    ]
    with JobItemModel.batch_write() as batch:
        for item in items:
            batch.save(item)
    job = JobModel(
        user_id,
        job_id,
        name=sub.name,
        collection=sub.collection,
        status=JOB_QUEUED,
        source=sub.source,
        params=sub.params,
        total=len(items),
        queued_count=len(items),
        running_count=0,
        succeeded_count=0,
        failed_count=0,
        failure_reasons=dict.fromkeys(REASONS, 0),
        cancelled=False,
        created_at=now,
        counters_at=now,
        progress_base=0,
        finish_seq=0,
        idempotency_key=key,
        webhook_url=sub.webhook_url,
        webhook_state="none",
        webhook_attempts=0,
        active_shard=ACTIVE_SHARD,
    )
    try:
        job.save(condition=JobModel.job_id.does_not_exist())
    except PutError as exc:
        if not is_conditional_failure(exc):
            raise
        # the job is there: ours, when an earlier attempt of this put committed (botocore
        # retried it after a lost answer), or one written by the same request (same
        # idempotency key and body) that was taken over; either way it is this job
        try:
            stored = JobModel.get(user_id, job_id, consistent_read=True)
        except JobModel.DoesNotExist:
            raise exc from None
        if not same_item(stored, job, ignore=JOB_WRITE_CLOCK_ATTRS):
            raise
        logger.info("job %s was written by an earlier attempt of the same put", job_id)
        return stored, items
    return job, items


def query_items(job_id: str, status: str | None = None) -> list[JobItemModel]:
    """Every item of a job (strongly consistent), optionally only those in ``status``
    (filtered here: a FilterExpression would read the same items anyway)."""
    items = JobItemModel.query(job_id, consistent_read=True)
    return [i for i in items if status is None or i.status == status]


def ensure_enqueued(job: JobModel, items: list[JobItemModel] | None = None) -> int:
    """Send the messages of a job whose enqueue never completed (``enqueued_at`` unset):
    one per queued item (a duplicate message is harmless, items are idempotent), then
    record ``enqueued_at``.

    Args:
        items: the job's items when the caller just wrote them (saves reading them).

    Returns:
        Messages sent (0 when the job was already enqueued or SQS failed; logged).
    """
    if job.enqueued_at is not None:
        return 0
    queued = [i for i in items if i.status == QUEUED] if items is not None else query_items(job.job_id, QUEUED)
    try:
        send_messages([item_message(i) for i in queued])
    except QueueError:
        logger.error("enqueue incomplete job_id=%s; the stuck-work sweep will retry", job.job_id)
        return 0
    try:
        job.update(actions=[JobModel.enqueued_at.set(now_s())], condition=JobModel.job_id.exists())
    except UpdateError:
        logger.warning("could not record enqueued_at job_id=%s", job.job_id)
    return len(queued)


# --- reading ----------------------------------------------------------------------------------


def get_owned(user_id: str, job_id: str) -> JobModel:
    """The caller's job (strongly consistent).

    Raises:
        NotFound: 404 when it does not exist or belongs to another user.
    """
    if not ULID_RE.match(job_id or ""):
        raise NotFound("job")
    try:
        return JobModel.get(user_id, job_id, consistent_read=True)
    except JobModel.DoesNotExist:
        raise NotFound("job") from None


def get_job(user_id: str, job_id: str) -> dict[str, Any]:
    """``GET /v1/jobs/{id}``: counters, progress, ETA, parameters, errors by reason."""
    return job_json(get_owned(user_id, job_id))


MAX_LIST_QUERIES = 10  # Query calls per filtered list page (bounds read cost)


def _filtered_page(
    run: Callable[[int, dict[str, Any] | None], Any], limit: int, start: dict[str, Any] | None
) -> tuple[list[Any], dict[str, Any] | None]:
    """Collect up to ``limit`` matches from a filtered Query, continuing from each page's
    LastEvaluatedKey; at most :data:`MAX_LIST_QUERIES` calls (a page may come back short,
    with a cursor)."""
    found: list[Any] = []
    key = start
    for _ in range(MAX_LIST_QUERIES):
        result = run(limit - len(found), key)
        found.extend(result)
        key = result.last_evaluated_key
        if not key or len(found) >= limit:
            break
    return found, key


def list_jobs(user_id: str, query: Mapping[str, str]) -> dict[str, Any]:
    """``GET /v1/jobs``: newest first, ``?status=&collection=&limit=&cursor=``.

    Returns:
        ``{"jobs": [job_json, ...], "next_cursor": str | None}``.

    Raises:
        ValidationError: 400 naming ``status``, ``collection``, ``limit`` or ``cursor``.
    """
    limit = parse_limit(query.get("limit"), default=20)
    status = query.get("status")
    if status is not None and status not in JOB_STATUSES:
        raise ValidationError(f"status must be one of: {', '.join(JOB_STATUSES)}", field="status")
    collection = parse_collection(query.get("collection"))
    start = decode_cursor(query.get("cursor"), {"user_id": user_id}, "job_id")
    condition = None
    if status:
        condition = JobModel.status == status
    if collection:
        match = JobModel.collection == collection
        condition = match if condition is None else condition & match

    def run(n: int, key: dict[str, Any] | None) -> Any:
        return JobModel.query(
            user_id, scan_index_forward=False, limit=n, last_evaluated_key=key, filter_condition=condition
        )

    jobs, last = _filtered_page(run, limit, start)
    return {"jobs": [job_json(j) for j in jobs], "next_cursor": encode_cursor(last, "job_id")}


def images_by_id(user_id: str, image_ids: list[str]) -> dict[str, ImageModel]:
    """The user's images among ``image_ids`` (BatchGetItem, 100 keys a call)."""
    found: dict[str, ImageModel] = {}
    ids = list(dict.fromkeys(i for i in image_ids if i))
    for start in range(0, len(ids), 100):
        for image in ImageModel.batch_get([(user_id, i) for i in ids[start : start + 100]]):
            found[image.image_id] = image
    return found


def list_items(user_id: str, job_id: str, query: Mapping[str, str]) -> dict[str, Any]:
    """``GET /v1/jobs/{id}/items``: in prompt order, ``?status=&limit=&cursor=``.

    Returns:
        ``{"items": [item_json, ...], "next_cursor": str | None}``.

    Raises:
        NotFound: 404 (not the caller's job). ValidationError: 400 naming the parameter.
    """
    get_owned(user_id, job_id)
    limit = parse_limit(query.get("limit"), default=50)
    status = query.get("status")
    if status is not None and status not in ITEM_STATES:
        raise ValidationError(f"status must be one of: {', '.join(ITEM_STATES)}", field="status")
    start = decode_cursor(query.get("cursor"), {"job_id": job_id}, "item_id", ITEM_ID_PATTERN)
    condition = (JobItemModel.status == status) if status else None

    def run(n: int, key: dict[str, Any] | None) -> Any:
        return JobItemModel.query(job_id, limit=n, last_evaluated_key=key, filter_condition=condition)

    items, last = _filtered_page(run, limit, start)
    images = images_by_id(user_id, [i.image_id for i in items if i.status == SUCCEEDED])
    return {
        "items": [item_json(i, images.get(i.image_id)) for i in items],
        "next_cursor": encode_cursor(last, "item_id"),
    }


# --- cancel and retry -------------------------------------------------------------------------


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
        if is_conditional_failure(exc):
            return False
        raise


def _cancel_one(item: JobItemModel) -> bool:
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
                if not is_conditional_failure(exc):
                    raise
        else:
            return False
        item.refresh(consistent_read=True)
    return False


def cancel_job(user_id: str, job_id: str) -> dict[str, Any]:
    """``POST /v1/jobs/{id}/cancel``: once it returns, no further item of the job starts.

    The job is flagged cancelled, then every queued item moves to failed (reason
    ``cancelled``) by a conditional write, and running items get ``cancel_requested``;
    a worker can only lease a queued item (or take over an expired lease without
    ``cancel_requested``), so nothing starts afterwards. Items already running finish.
    Cancelled items are refunded. Cancelling a cancelled job is a no-op.

    Raises:
        NotFound: 404. ApiError: 409 ``job-finished`` when the job already ended otherwise.
    """
    job = get_owned(user_id, job_id)
    if job.finished_at is not None and not job.cancelled:
        raise ApiError(409, "job-finished", "the job has already finished")
    job.update(
        actions=[
            JobModel.cancelled.set(True),
            JobModel.cancelled_at.set(now_s()),
            JobModel.status.set(JOB_CANCELLED),
        ],
        condition=JobModel.job_id.exists(),
    )
    open_items = [i for i in query_items(job_id) if i.status in (QUEUED, RUNNING)]
    cancelled = [item for item, ok in zip(open_items, parallel(_cancel_one, open_items), strict=True) if ok]
    moved = len(cancelled)
    if moved:
        job = apply_counts(user_id, job_id, {QUEUED: -moved, FAILED: moved}, reasons={REASON_CANCELLED: moved})
        refund_items(user_id, cancelled)
    else:
        job.refresh(consistent_read=True)
    finish_if_done(job)
    logger.info("job cancelled job_id=%s items_cancelled=%d", job_id, moved)
    return job_json(job)


def refund_items(user_id: str, items: list[JobItemModel]) -> None:
    """Refund one image per item to the quota month it was charged to (``charged_period``)."""
    by_period: dict[str | None, int] = {}
    for item in items:
        by_period[item.charged_period] = by_period.get(item.charged_period, 0) + 1
    for period, n in by_period.items():
        usage.refund(user_id, n, period)


def _requeue_failed(item: JobItemModel, period: str) -> str | None:
    """failed -> queued for a retry (attempts reset, error cleared, charged to ``period``).
    Returns the item's old failure reason when this call moved it, else None."""
    reason = item.error_code or REASON_UPSTREAM
    try:
        item.update(
            actions=[
                JobItemModel.status.set(QUEUED),
                JobItemModel.charged_period.set(period),
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
        if is_conditional_failure(exc):
            return None
        raise
    return reason


def _uncancel_running(item: JobItemModel) -> None:
    try:
        item.update(actions=[JobItemModel.cancel_requested.remove()], condition=JobItemModel.status == RUNNING)
    except UpdateError:
        pass


def retry_job(user_id: str, job_id: str) -> tuple[int, dict[str, Any]]:
    """``POST /v1/jobs/{id}/retry``: re-enqueue only the failed items, under their own ids.

    Order: charge the quota for them (all or nothing), move each failed -> queued
    (conditional), move the counters, reopen the job (un-cancel, clear ``finished_at``),
    then send their messages. The job cannot finish in between, since its queued
    counter is already non-zero when it reopens.

    Returns:
        ``(202, job_json)``.

    Raises:
        NotFound: 404. ApiError: 409 ``nothing-to-retry``; 429 ``quota-exceeded``.
    """
    job = get_owned(user_id, job_id)
    items = query_items(job_id)
    failed = [i for i in items if i.status == FAILED]
    if not failed:
        raise ApiError(409, "nothing-to-retry", "the job has no failed items")
    period = usage.charge(user_id, len(failed))
    results = parallel(lambda item: _requeue_failed(item, period), failed)
    moved = [item for item, reason in zip(failed, results, strict=True) if reason is not None]
    reasons: dict[str, int] = {}
    for reason in results:
        if reason is not None:
            reasons[reason] = reasons.get(reason, 0) - 1
    if len(moved) < len(failed):
        usage.refund(user_id, len(failed) - len(moved), period)
    if job.cancelled:
        parallel(_uncancel_running, [i for i in items if i.status == RUNNING])
    now = now_s()
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
        job = apply_counts(user_id, job_id, {FAILED: -len(moved), QUEUED: len(moved)}, reasons=reasons, extra=reopen)
        job.update(
            actions=[JobModel.progress_base.set(int(job.succeeded_count) + int(job.failed_count))],
            condition=JobModel.job_id.exists(),
        )
        try:
            send_messages([item_message(i) for i in moved])
        except QueueError:
            logger.error("retry enqueue incomplete job_id=%s; the stuck-work sweep will resend", job_id)
    else:
        job.refresh(consistent_read=True)
        finish_if_done(job)
    logger.info("job retried job_id=%s items=%d", job_id, len(moved))
    return 202, job_json(job)


# --- collections ------------------------------------------------------------------------------


def list_collections(user_id: str) -> dict[str, Any]:
    """``GET /v1/collections``: ``{"collections": [{"name", "image_count"}], "truncated"}``,
    sorted by name (case-insensitive).

    One Query of the user's collection counters, which change in the same transaction
    as the image items (``chalicelib.db.images``); empty collections are left out.
    ``truncated`` is always false (kept for clients of the earlier counting version).
    """
    ordered = sorted(collection_counts(user_id).items(), key=lambda x: x[0].lower())
    return {"collections": [{"name": name, "image_count": n} for name, n in ordered], "truncated": False}
