"""The gauges the alarms and dashboards watch, read every 5 minutes by ``emit_gauges``.

This service reads the numbers (key pool, jobs queue, jobs table) and hands them to
:mod:`chalicelib.observability`, which only records them as EMF metrics
(:func:`~chalicelib.observability.record_key_states`, :func:`~chalicelib.observability.record_queue`).
"""

from __future__ import annotations

import time
from typing import Any

from chalicelib import observability, queue
from chalicelib.db.jobs import ACTIVE_SHARD, FINISHED_JOB_STATUSES, JobModel
from chalicelib.flux.keypool import get_key_pool
from chalicelib.settings import get_settings


def oldest_active_job_age(now: float, max_items: int = 1000) -> float:
    """Seconds since the oldest unfinished job was created (0 when none), read from the
    jobs table's sparse ``by_active`` GSI, oldest first (job ids are ULIDs); at most
    ``max_items`` index entries are read."""
    for job in JobModel.by_active.query(ACTIVE_SHARD, scan_index_forward=True, limit=max_items, page_size=100):
        if job.status not in FINISHED_JOB_STATUSES:
            return max(0.0, now - float(job.created_at))
    return 0.0


def collect(now: float | None = None) -> dict[str, Any]:
    """Read and record the gauges; the observability middleware flushes them.

    - key states from the key pool (:meth:`~chalicelib.flux.keypool.KeyPool.health_report`);
      an unreadable keys secret counts as no keys (``HealthyKeys = 0``, so the alarm fires);
    - the jobs queue depth / in-flight count (SQS) and the oldest unfinished job's age.

    Args:
        now: epoch seconds (default: the current time).

    Returns:
        ``{"keys": {metric: n}, "queue": {"depth", "in_flight", "oldest_age_s"}, "errors": [...]}``.
        Never raises: a part that cannot be read is listed in ``errors`` and not recorded.
    """
    now = time.time() if now is None else now
    log = observability.get_logger()
    errors: list[str] = []
    states: list[str] = []
    try:
        states = [str(row["state"]) for row in get_key_pool().health_report()]
    except Exception as exc:  # noqa: BLE001 - no readable keys is "no healthy keys"
        errors.append(f"keys: {type(exc).__name__}")
        log.warning("gauges: key pool unreadable (%s)", type(exc).__name__)
    keys = observability.record_key_states(states)
    depth: dict[str, Any] = {}
    try:
        waiting, in_flight = queue.depth(get_settings().jobs_queue_name)
        oldest = oldest_active_job_age(now)
        observability.record_queue(waiting, in_flight, oldest)
        depth = {"depth": waiting, "in_flight": in_flight, "oldest_age_s": round(oldest, 3)}
    except Exception as exc:  # noqa: BLE001
        errors.append(f"queue: {type(exc).__name__}")
        log.warning("gauges: jobs queue unreadable (%s)", type(exc).__name__)
    log.info("gauges recorded", extra={"gauges": {"keys": keys, "queue": depth}})
    return {"keys": keys, "queue": depth, "errors": errors}
