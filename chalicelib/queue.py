"""The SQS adapter: every call to SQS goes through this module.

- :func:`send_messages`: JSON bodies with SendMessageBatch (10 entries a call, failed
  entries retried);
- :func:`change_visibility`: make a received message visible again after a delay;
- :func:`receive` / :func:`delete`: read and remove messages (the dead-letter queue);
- :func:`depth`: approximate waiting and in-flight counts (the gauges).

Queues are named by their SQS queue *name* (``JOBS_QUEUE_NAME`` by default); URLs are
looked up once per SQS client. Source: Amazon SQS API reference (SendMessageBatch,
ChangeMessageVisibility, ReceiveMessage, DeleteMessageBatch, GetQueueAttributes).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chalicelib.aws import client
from chalicelib.settings import get_settings

logger = logging.getLogger(__name__)

SEND_ATTEMPTS = 5  # SendMessageBatch rounds for entries that failed
SQS_BATCH = 10  # SendMessageBatch / ReceiveMessage / DeleteMessageBatch maximum entries
SEND_PARALLEL = 4  # SendMessageBatch calls in flight at once
MAX_DELAY_S = 900  # DelaySeconds maximum (15 minutes)
MAX_VISIBILITY_S = 43_200  # VisibilityTimeout maximum (12 hours)

_queue_urls: dict[tuple[int, str], str] = {}
_queue_lock = threading.Lock()


class QueueError(Exception):
    """Some messages could not be sent after every attempt."""


def parallel[T](fn: Callable[[T], Any], items: Iterable[T], workers: int) -> list[Any]:
    """``[fn(x) for x in items]`` with up to ``workers`` threads (order kept)."""
    items = list(items)
    if len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def queue_url(name: str | None = None) -> str:
    """The URL of the jobs queue (or of queue ``name``), looked up once per SQS client.

    Raises:
        botocore.exceptions.ClientError: the queue does not exist.
    """
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


def send_messages(bodies: list[dict[str, Any]], *, delay_s: int = 0, queue: str | None = None) -> None:
    """Send JSON message bodies with SendMessageBatch, 10 entries a call.

    Entries listed in a response's ``Failed`` (and whole calls that raise) are sent
    again, up to :data:`SEND_ATTEMPTS` rounds with a short exponential pause. Up to
    :data:`SEND_PARALLEL` calls run at once (a 500-item job is 50 calls).

    Args:
        bodies: JSON-serialisable message bodies.
        delay_s: DelaySeconds for every message, clamped to 0..900 (SQS maximum: 15 minutes).
        queue: the queue name (default: the jobs queue).

    Raises:
        QueueError: entries still unsent after the last round.
    """
    url = queue_url(queue)
    sqs = client("sqs")
    delay = max(0, min(MAX_DELAY_S, int(delay_s)))
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


def change_visibility(receipt_handle: str, timeout_s: int, queue: str | None = None) -> None:
    """Make a received message visible again in ``timeout_s`` seconds (clamped to 0..43,200).

    Raises:
        botocore.exceptions.ClientError / BotoCoreError: the call failed.
    """
    client("sqs").change_message_visibility(
        QueueUrl=queue_url(queue),
        ReceiptHandle=receipt_handle,
        VisibilityTimeout=max(0, min(MAX_VISIBILITY_S, int(timeout_s))),
    )


def receive(queue: str, *, visibility_s: int, max_messages: int = SQS_BATCH) -> list[dict[str, Any]]:
    """Up to ``max_messages`` (1..10) messages of ``queue`` without waiting (short polling),
    hidden for ``visibility_s`` seconds. Each is SQS's ``{"MessageId", "ReceiptHandle", "Body", ...}``.

    Raises:
        botocore.exceptions.ClientError / BotoCoreError: the call failed.
    """
    return (
        client("sqs")
        .receive_message(
            QueueUrl=queue_url(queue),
            MaxNumberOfMessages=max(1, min(SQS_BATCH, max_messages)),
            WaitTimeSeconds=0,
            VisibilityTimeout=visibility_s,
        )
        .get("Messages", [])
    )


def delete(queue: str, receipt_handles: list[str]) -> None:
    """Delete received messages (DeleteMessageBatch, 10 a call).

    Raises:
        botocore.exceptions.ClientError / BotoCoreError: a call failed.
    """
    url = queue_url(queue)
    for start in range(0, len(receipt_handles), SQS_BATCH):
        chunk = receipt_handles[start : start + SQS_BATCH]
        client("sqs").delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)]
        )


def depth(queue: str | None = None) -> tuple[int, int]:
    """``(waiting, in_flight)`` messages of a queue (default: the jobs queue):
    ApproximateNumberOfMessages + ...Delayed, and ApproximateNumberOfMessagesNotVisible.

    Raises:
        botocore.exceptions.ClientError / BotoCoreError: the queue cannot be read.
    """
    attrs = client("sqs").get_queue_attributes(
        QueueUrl=queue_url(queue),
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesDelayed",
            "ApproximateNumberOfMessagesNotVisible",
        ],
    )["Attributes"]
    waiting = int(attrs.get("ApproximateNumberOfMessages", 0)) + int(attrs.get("ApproximateNumberOfMessagesDelayed", 0))
    return waiting, int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))
