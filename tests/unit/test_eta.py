"""The ETA of a job: remaining items at the throughput observed since it (re)started."""

from __future__ import annotations

from chalicelib.db import JobModel
from chalicelib.jobs.views import eta_seconds


def job(**attrs) -> JobModel:
    base = dict(queued_count=0, running_count=0, succeeded_count=0, failed_count=0, cancelled=False)
    return JobModel("user", "01JOB", **{**base, **attrs})


def test_eta_from_the_observed_rate() -> None:
    # 10 done in 100 s since the start, 30 left: 300 s
    running = job(queued_count=28, running_count=2, succeeded_count=9, failed_count=1, started_at=1000.0)
    assert eta_seconds(running, now=1100.0) == 300


def test_eta_counts_only_progress_since_a_retry() -> None:
    # a retry at t=2000 re-queued 10 items; 20 were done before (progress_base), 5 since in 50 s
    retried = job(queued_count=5, succeeded_count=25, started_at=1000.0, progress_since=2000.0, progress_base=20)
    assert eta_seconds(retried, now=2050.0) == 50


def test_eta_unknown_until_something_finished() -> None:
    assert eta_seconds(job(queued_count=5, started_at=1000.0), now=1100.0) is None
    assert eta_seconds(job(queued_count=5), now=1100.0) is None  # not started


def test_eta_of_finished_and_cancelled_jobs() -> None:
    assert eta_seconds(job(succeeded_count=5, finished_at=1200.0), now=1300.0) == 0
    assert eta_seconds(job(succeeded_count=5), now=1300.0) is None  # counters done, not yet finished
    cancelled = job(queued_count=5, succeeded_count=5, started_at=1000.0, cancelled=True)
    assert eta_seconds(cancelled, now=1100.0) is None
