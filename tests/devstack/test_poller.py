"""The dev stack's SQS poller behaves like Lambda's event source mapping."""

from __future__ import annotations

import threading
import time

import boto3

from devstack.poller import QueuePoller
from tests.polling import wait_for


def test_partial_batch_response_deletes_only_successes(aws):
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="poller-test", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    seen: list[str] = []
    ids: set[str] = set()
    active = {"now": 0, "max": 0}
    lock = threading.Lock()

    def handler(event, context):
        with lock:
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
        try:
            assert context.get_remaining_time_in_millis() > 0
            failures = []
            for record in event["Records"]:
                assert record["eventSource"] == "aws:sqs"
                with lock:
                    seen.append(record["body"])
                    ids.add(record["messageId"])
                if record["body"].startswith("fail"):
                    failures.append({"itemIdentifier": record["messageId"]})
            time.sleep(0.05)
            return {"batchItemFailures": failures}
        finally:
            with lock:
                active["now"] -= 1

    for start in range(0, 20, 10):
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "MessageBody": ("fail-" if i % 5 == 0 else "ok-") + str(i)}
                for i in range(start, start + 10)
            ],
        )
    poller = QueuePoller("poller-test", handler, batch_size=3, concurrency=2).start()
    try:
        # every ok message handled once and deleted; failed ones come back after visibility
        wait_for(lambda: poller.deleted >= 16)
        wait_for(lambda: sum(1 for b in seen if b.startswith("fail")) >= 8)
    finally:
        poller.stop()
    ok_bodies = [b for b in seen if b.startswith("ok")]
    assert sorted(ok_bodies) == sorted({b for b in ok_bodies})  # none redelivered
    assert len(ok_bodies) == 16
    assert len(ids) == 20  # each message has its own real messageId
    assert 1 <= active["max"] <= 2
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )
    remaining = sum(int(v) for v in attrs["Attributes"].values())
    assert remaining == 4  # only the failed ones are left


def test_handler_exception_keeps_the_whole_batch(aws):
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="poller-raise", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="boom")
    calls = []

    def handler(event, context):
        calls.append(len(event["Records"]))
        raise RuntimeError("worker crashed")

    poller = QueuePoller("poller-raise", handler, batch_size=10, concurrency=1).start()
    try:
        wait_for(lambda: calls)
    finally:
        poller.stop()
    assert poller.deleted == 0
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    assert attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"
