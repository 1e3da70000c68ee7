"""The one shape of every SQS event handler: Powertools' batch processor with a record handler.

Every ``@app.on_sqs_message`` function calls :func:`process_batch` with a record
handler. The handler returns normally when the message is finished with (Lambda deletes
it), raises :class:`Deferred` to see the message again after a delay, and raises
anything else to leave it to SQS's redelivery. The answer is a *partial batch
response*: ``{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}`` lists the
messages to see again; every other message of the batch is deleted by Lambda.

A deferral goes through the ``defer`` hook given to :func:`process_batch` (the jobs
worker's moves the message's visibility, or sends a fresh delayed copy). When the hook
returns True the record counts as done; otherwise it is reported as a batch item
failure.

Records are processed in up to ``threads`` parallel threads (each record handler is
bounded by its own deadline). Unlike Powertools' default, a batch whose every record
failed is answered with a partial batch response too, not with an exception.

Sources: Powertools for AWS Lambda (Python), "Batch Processing" (``BatchProcessor``,
``process_partial_response``, ``raise_on_entire_batch_failure``); AWS Lambda developer
guide, "Handling errors for an SQS event source in Lambda" (ReportBatchItemFailures).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

#: ``defer(record, delay_s) -> bool``: True when the message may be deleted.
DeferHook = Callable[[dict[str, Any], float], bool]


#: Seconds a Lambda SQS invocation may run when there is no context (the Lambda maximum).
MAX_INVOCATION_S = 900.0


def invocation_deadline(context: Any, margin_s: float) -> float:
    """The ``time.monotonic()`` by which record handlers must be done: the invocation's
    remaining time (``context.get_remaining_time_in_millis()``; 900 s without a context)
    minus ``margin_s`` seconds."""
    remaining_s = MAX_INVOCATION_S
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        remaining_s = context.get_remaining_time_in_millis() / 1000.0
    return time.monotonic() + remaining_s - margin_s


class Deferred(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a record handler: see this message again in ``delay_s`` seconds.

    Attributes:
        delay_s: seconds until the message should be visible again (>= 0).
        note: why (``keys-cooling``, ``leased-elsewhere``, ...), for the log.
    """

    def __init__(self, delay_s: float, note: str = "later") -> None:
        super().__init__(note)
        self.delay_s = delay_s
        self.note = note


class _DeferralNotApplied(Exception):  # noqa: N818
    """The defer hook could not make the message deletable: report it as failed."""


@cache
def threaded_batch_processor() -> type:
    """The class ``ThreadedBatchProcessor``: Powertools' SQS ``BatchProcessor``, processing
    records in parallel threads and answering an all-failed batch with a partial batch response.
    ``ThreadedBatchProcessor(threads)``, ``threads`` >= 1 records processed at once.

    Built on first use: Powertools' batch utilities (and asyncio, which they import) cost the
    API's cold start and only the SQS handlers need them.
    """
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType

    class ThreadedBatchProcessor(BatchProcessor):
        def __init__(self, threads: int = 1) -> None:
            super().__init__(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
            self.threads = max(1, threads)

        def process(self) -> list[tuple]:
            """Process every record; the results in record order."""
            records = list(self.records)
            if self.threads == 1 or len(records) <= 1:
                return [self._process_record(record) for record in records]
            with ThreadPoolExecutor(max_workers=min(self.threads, len(records))) as pool:
                return list(pool.map(self._process_record, records))

    return ThreadedBatchProcessor


def process_batch(
    event: dict[str, Any],
    record_handler: Callable[[dict[str, Any]], Any],
    *,
    threads: int = 1,
    defer: DeferHook | None = None,
) -> dict[str, list[dict[str, str]]]:
    """Run ``record_handler`` on every record of a Lambda SQS event.

    Args:
        event: the Lambda SQS event (``{"Records": [...]}``).
        record_handler: called with each raw record (``{"messageId", "receiptHandle",
            "body", "attributes", ...}``); see the module docstring for its outcomes.
        threads: records processed at once.
        defer: the hook for :class:`Deferred` (without one, a deferred record is
            reported as failed and comes back after the queue's visibility timeout).

    Returns:
        ``{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}``.
    """
    if not event.get("Records"):
        return {"batchItemFailures": []}

    def handle(record: SQSRecord) -> Any:
        raw = record.raw_event
        try:
            return record_handler(raw)
        except Deferred as later:
            if defer is not None and defer(raw, later.delay_s):
                return later.note
            raise _DeferralNotApplied(later.note) from None

    from aws_lambda_powertools.utilities.batch import process_partial_response

    processor = threaded_batch_processor()(threads)
    response = process_partial_response(event=event, record_handler=handle, processor=processor)
    return {"batchItemFailures": list(response.get("batchItemFailures", []))}
