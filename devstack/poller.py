"""Stand-in for Lambda's SQS event source mapping, for the dev stack and tests.

For every ``@app.on_sqs_message`` handler in a Chalice app it long-polls that
queue and invokes the same handler function with Lambda-shaped SQS events,
running up to the handler's ``maximum_concurrency`` invocations at once, each with
up to ``batch_size`` records. Each record carries its own real ``messageId``.
After an invocation it deletes the messages that succeeded: all of them, unless
the handler returned a partial batch response (``{"batchItemFailures":
[{"itemIdentifier": messageId}]}``), in which case the failed ones stay and
reappear after their visibility timeout. An invocation that raises deletes none.

Source: AWS Lambda developer guide, "Using Lambda with Amazon SQS" and
"Handling errors for an SQS event source" (ReportBatchItemFailures).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3

logger = logging.getLogger("devstack.poller")


@dataclass
class FakeLambdaContext:
    """The attributes of a Lambda context object that handlers use."""

    function_name: str
    timeout_s: float = 60.0
    memory_limit_in_mb: int = 1024
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:local"
    _started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self._started)) * 1000))


def to_lambda_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """One SQS ``ReceiveMessage`` message as a Lambda SQS event record."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {
            name: {
                "stringValue": value.get("StringValue"),
                "binaryValue": value.get("BinaryValue"),
                "dataType": value.get("DataType"),
                "stringListValues": [],
                "binaryListValues": [],
            }
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


class QueuePoller:
    """Polls one queue and feeds one handler with ``concurrency`` threads.

    Args:
        queue_name: the SQS queue's name.
        handler: ``handler(event: dict, context) -> dict | None`` (a Chalice
            event handler is exactly that).
        batch_size: records per invocation (1-10).
        concurrency: invocations at once (Lambda's ``MaximumConcurrency``).
        timeout_s: the fake Lambda timeout, for ``get_remaining_time_in_millis``.
    """

    def __init__(
        self,
        queue_name: str,
        handler: Callable[[dict[str, Any], Any], Any],
        *,
        batch_size: int = 10,
        concurrency: int = 2,
        timeout_s: float = 60.0,
        wait_time_s: int = 1,
    ) -> None:
        self.queue_name = queue_name
        self.handler = handler
        self.batch_size = max(1, min(10, batch_size))
        self.concurrency = max(1, concurrency)
        self.timeout_s = timeout_s
        self.wait_time_s = wait_time_s
        self.invocations = 0
        self.deleted = 0
        self.failed_records = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._sqs = boto3.session.Session().client("sqs")
        self._queue_url = ""
        self._queue_arn = ""

    def start(self) -> QueuePoller:
        """Start the polling threads (the queue must exist)."""
        self._queue_url = self._sqs.get_queue_url(QueueName=self.queue_name)["QueueUrl"]
        self._queue_arn = self._sqs.get_queue_attributes(QueueUrl=self._queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        for i in range(self.concurrency):
            thread = threading.Thread(target=self._run, name=f"poller-{self.queue_name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop polling and wait for in-flight invocations to end."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        region = self._sqs.meta.region_name
        while not self._stop.is_set():
            try:
                messages = self._sqs.receive_message(
                    QueueUrl=self._queue_url,
                    MaxNumberOfMessages=self.batch_size,
                    WaitTimeSeconds=self.wait_time_s,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            except Exception:  # the endpoint went away (shutdown) or hiccuped
                if self._stop.wait(0.5):
                    return
                continue
            if messages:
                self._invoke(messages, region)

    def _invoke(self, messages: list[dict[str, Any]], region: str) -> None:
        event = {"Records": [to_lambda_record(m, self._queue_arn, region) for m in messages]}
        context = FakeLambdaContext(function_name=self.queue_name, timeout_s=self.timeout_s)
        with self._lock:
            self.invocations += 1
        try:
            result = self.handler(event, context)
        except Exception:
            logger.exception("handler raised; the whole batch will be retried")
            with self._lock:
                self.failed_records += len(messages)
            return
        failed_ids = {
            f.get("itemIdentifier") for f in ((result or {}).get("batchItemFailures") or []) if isinstance(f, dict)
        }
        done = [m for m in messages if m["MessageId"] not in failed_ids]
        if done:
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)]
            self._sqs.delete_message_batch(QueueUrl=self._queue_url, Entries=entries)
        with self._lock:
            self.deleted += len(done)
            self.failed_records += len(messages) - len(done)


def pollers_for_app(app_module: Any) -> list[QueuePoller]:
    """One poller per ``@app.on_sqs_message`` handler of a Chalice app module.

    ``batch_size`` and ``maximum_concurrency`` come from the decorator, so local
    batches scale as deployed ones do. The queue must be given by name.
    """
    from chalice.app import SQSEventConfig

    pollers = []
    for source in app_module.app.event_sources:
        if isinstance(source, SQSEventConfig) and source.queue:
            handler = getattr(app_module, source.handler_string.rsplit(".", 1)[-1])
            pollers.append(
                QueuePoller(
                    source.queue,
                    handler,
                    batch_size=source.batch_size,
                    concurrency=source.maximum_concurrency or 2,
                )
            )
    return pollers
