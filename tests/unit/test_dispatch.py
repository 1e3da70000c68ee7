"""The jobs worker's message registry: every type has one handler, found without a lookup
by name or a function-level import."""

from __future__ import annotations

from chalicelib.jobs import recovery, worker
from chalicelib.jobs.state import Done


def test_the_registry_names_every_message_type() -> None:
    expected = {
        "item": worker.handle_item,
        "archive": worker.handle_archive,
        "webhook": worker.forward_webhook,
        "video": worker.handle_video,
        "recount": recovery.recount,
    }
    assert expected == worker.MESSAGE_HANDLERS


def test_unknown_types_and_incomplete_items_are_dropped() -> None:
    assert worker.process_message({"type": "spam"}, deadline=0.0) == Done("unknown-type")
    assert worker.process_message({}, deadline=0.0) == Done("unknown-type")
    assert worker.process_message({"type": "item", "job_id": "01JOB"}, deadline=0.0) == Done("bad-message")


def test_retry_delays_grow_and_are_capped() -> None:
    delays = [worker.retry_delay_s(attempt) for attempt in range(1, 7)]
    assert delays == sorted(delays) and delays[0] == worker.BACKOFF_BASE_S
    assert max(delays) == worker.BACKOFF_CAP_S
