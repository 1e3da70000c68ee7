"""Job status and counters, derived from an in-memory job (no DynamoDB)."""

from __future__ import annotations

import pytest

from chalicelib.db import JobModel
from chalicelib.jobs.state import counts, derive_status


def job(queued=0, running=0, succeeded=0, failed=0, *, cancelled=False, started_at=None) -> JobModel:
    return JobModel(
        "user",
        "01JOB",
        total=queued + running + succeeded + failed,
        queued_count=queued,
        running_count=running,
        succeeded_count=succeeded,
        failed_count=failed,
        cancelled=cancelled,
        started_at=started_at,
    )


@pytest.mark.parametrize(
    ("counters", "extra", "status"),
    [
        ((3, 0, 0, 0), {}, "queued"),
        ((3, 0, 0, 0), {"started_at": 1.0}, "running"),  # re-queued after a start
        ((2, 1, 0, 0), {}, "running"),
        ((1, 0, 1, 0), {}, "running"),
        ((0, 0, 3, 0), {}, "completed"),
        ((0, 0, 2, 1), {}, "completed_with_errors"),
        ((0, 0, 0, 3), {}, "failed"),
        ((2, 0, 1, 0), {"cancelled": True}, "cancelled"),
        ((0, 0, 3, 0), {"cancelled": True}, "cancelled"),
    ],
)
def test_derive_status(counters, extra, status) -> None:
    assert derive_status(job(*counters, **extra)) == status


def test_counts_are_ints_and_missing_ones_are_zero() -> None:
    partial = JobModel("user", "01JOB", queued_count=2, succeeded_count=1)
    assert counts(partial) == {"queued": 2, "running": 0, "succeeded": 1, "failed": 0}
