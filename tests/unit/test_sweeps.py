"""The shared time budget of the scheduled sweeps and their one report type."""

from __future__ import annotations

from datetime import UTC, datetime

from chalicelib.sweeps import LAMBDA_SAFETY_MARGIN_S, Deadline, SweepReport, time_budget


class Context:
    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def test_deadline() -> None:
    ticks = iter([0.0, 5.0, 10.0, 10.0])
    deadline = Deadline(8.0, clock=lambda: next(ticks))
    assert not deadline.expired()
    assert deadline.expired()
    assert deadline.remaining() == 0.0
    assert not Deadline(None).expired() and Deadline(None).remaining() is None


def test_time_budget_keeps_one_margin_below_the_lambda_timeout() -> None:
    assert time_budget(240.0) == 240.0
    assert time_budget(240.0, Context(900_000)) == 240.0
    assert time_budget(240.0, Context(60_000)) == 60 - LAMBDA_SAFETY_MARGIN_S
    assert time_budget(240.0, Context(1_000)) == 1.0


def test_report() -> None:
    report = SweepReport("recovery", dry_run=False, now=datetime(2026, 11, 30, tzinfo=UTC))
    report.add("leases_requeued")
    report.add("leases_requeued", 2)
    report.add("nothing", 0)
    report.complete = False
    assert report.as_dict() == {
        "sweep": "recovery",
        "dry_run": False,
        "now": "2026-11-30T00:00:00.000Z",
        "complete": False,
        "seconds": 0.0,
        "counts": {"leases_requeued": 3},
    }
