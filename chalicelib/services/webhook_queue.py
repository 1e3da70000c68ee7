"""The webhooks queue: enqueueing deliveries and the webhook worker's SQS handler.

Webhook deliveries never run in the workers that generate images: a finished job, the
recovery sweep and a legacy ``webhook`` message on the jobs queue all *enqueue*
``{"type": "webhook", "user_id", "job_id"}`` on ``WEBHOOKS_QUEUE_NAME``, and only
:func:`handle_event` (its own Lambda function, ``@app.on_sqs_message`` with its own
batch size and maximum concurrency) calls :func:`chalicelib.services.webhooks.deliver_due`.

Per record: delivered, not due or failed are done (the job records the outcome; a retry
is re-enqueued with the backoff as ``DelaySeconds`` when that fits SQS's 15 minutes,
and the sweep enqueues later ones when due); a user over the delivery rate is deferred
by a fresh delayed copy of the message (never dropped); an exception leaves the record
in the partial batch response (SQS redelivers it after the visibility timeout).

Sources: AWS Lambda developer guide, "Using Lambda with Amazon SQS" (partial batch
responses, ``batchItemFailures``); Amazon SQS developer guide, "Delay queues"
(``DelaySeconds`` at most 900).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from typing import Any

from chalicelib import queue
from chalicelib.db import JobModel
from chalicelib.services import usage, webhooks
from chalicelib.settings import get_settings
from chalicelib.sqsbatch import process_batch

logger = logging.getLogger("promptcanvas.webhooks")


def message(user_id: str, job_id: str) -> dict[str, str]:
    """The webhooks-queue message body for one job."""
    return {"type": "webhook", "user_id": user_id, "job_id": job_id}


def enqueue(user_id: str, job_id: str, *, delay_s: float = 0) -> None:
    """Queue the job's webhook delivery on the webhooks queue.

    Args:
        delay_s: seconds before the message is visible (capped at 900).

    Raises:
        chalicelib.queue.QueueError: the message could not be sent.
    """
    delay = max(0, min(queue.MAX_DELAY_S, math.ceil(delay_s)))
    queue.send_messages([message(user_id, job_id)], delay_s=delay, queue=get_settings().webhooks_queue_name)


def _deferral_s() -> float:
    """Seconds to defer a rate-limited delivery: to the next window, plus jitter so
    deferred messages do not all arrive at the window's first second."""
    window = get_settings().webhook_rate_window_seconds
    return usage.webhook_window_left_s() + random.uniform(0, min(window, 30) / 2)


def handle_record(record: dict[str, Any]) -> str:
    """The record handler: deliver (or defer) one webhook message.

    Returns:
        The outcome (``delivered``, ``not-due``, ``rate-limited``, ``retry``, ...) or
        ``undecodable`` for a message that is dropped.

    Raises:
        Exception: DynamoDB / KMS / SQS failed; the record stays in the partial batch
            response and SQS redelivers it after the visibility timeout.
    """
    try:
        body = json.loads(record.get("body") or "")
        user_id, job_id = str(body["user_id"]), str(body["job_id"])
    except (ValueError, KeyError, TypeError):
        logger.warning("undecodable webhook message %s dropped", record.get("messageId"))
        return "undecodable"
    try:
        outcome = webhooks.deliver_due(user_id, job_id)
        if outcome == "rate-limited":
            enqueue(user_id, job_id, delay_s=_deferral_s())
            logger.info("webhook deferred (user over the delivery rate) job_id=%s", job_id)
        elif outcome == "retry":
            job = JobModel.get(user_id, job_id, consistent_read=True)
            wait_s = float(job.webhook_next_at or 0) - time.time()
            if wait_s <= queue.MAX_DELAY_S:
                enqueue(user_id, job_id, delay_s=max(0.0, wait_s))
    except Exception:
        logger.exception("webhook message %s failed; it will be retried", record.get("messageId"))
        raise
    return str(outcome)


def handle_event(event: dict[str, Any], context: Any = None) -> dict[str, list[dict[str, str]]]:
    """The webhooks-queue handler: every record delivered in parallel through
    :func:`chalicelib.sqsbatch.process_batch`; answers a partial batch response.

    Each delivery is bounded by ``WEBHOOK_TIMEOUT_SECONDS``, so an invocation takes about
    that long whatever the receivers do.

    Args:
        event: the Lambda SQS event (``{"Records": [...]}``).
        context: the Lambda context (unused; deliveries carry their own deadline).

    Returns:
        ``{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}``.
    """
    return process_batch(event, handle_record, threads=len(event.get("Records") or []))
