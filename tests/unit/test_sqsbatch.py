"""The one shape of the SQS handlers: Powertools' batch processor, a record handler and
the defer hook (no queue needed: the hook and the handler are plain functions here)."""

from __future__ import annotations

from typing import Any

from chalicelib.sqsbatch import Deferred, process_batch


def event(*bodies: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m{i}",
                "receiptHandle": f"r{i}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:jobs",
                "awsRegion": "us-east-1",
            }
            for i, body in enumerate(bodies)
        ]
    }


def handler(record: dict[str, Any]) -> str:
    body = record["body"]
    if body == "later":
        raise Deferred(7, "keys-cooling")
    if body == "boom":
        raise RuntimeError("DynamoDB throttled")
    return "done"


def test_done_deferred_and_failed_records() -> None:
    deferred: list[tuple[str, float]] = []

    def defer(record: dict[str, Any], delay_s: float) -> bool:
        deferred.append((record["messageId"], delay_s))
        return False  # visibility moved: report it

    answer = process_batch(event("ok", "later", "boom"), handler, threads=3, defer=defer)
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m2"}]}
    assert deferred == [("m1", 7)]


def test_a_defer_hook_that_resent_the_message_lets_it_go() -> None:
    answer = process_batch(event("later", "ok"), handler, defer=lambda record, delay_s: True)
    assert answer == {"batchItemFailures": []}


def test_an_all_failed_batch_is_a_partial_response_not_an_exception() -> None:
    answer = process_batch(event("boom", "boom"), handler, threads=2)
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m0"}, {"itemIdentifier": "m1"}]}


def test_an_empty_event() -> None:
    assert process_batch({"Records": []}, handler) == {"batchItemFailures": []}
