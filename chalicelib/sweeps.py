"""The shared shape of every scheduled sweep: a time budget and one report type.

Each sweep (the cleanup sweeps, the recovery sweep) gets its budget from
:func:`time_budget`, checks a :class:`Deadline` between units of work, and returns a
:class:`SweepReport`; the scheduled handler logs it and returns ``report.as_dict()``.
Work left over when the budget runs out waits for the next run.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chalicelib.timefmt import iso8601

#: Seconds kept back from the invoking Lambda's remaining time (logging, the EMF flush, the return).
LAMBDA_SAFETY_MARGIN_S = 15.0
#: The smallest budget handed out, seconds (a sweep always makes some progress).
MIN_BUDGET_S = 1.0


class Deadline:
    """A time budget measured on a monotonic clock.

    Args:
        budget_s: seconds from now; ``None`` means no limit.
        clock: seconds, monotonic (injectable for tests).
    """

    def __init__(self, budget_s: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._end = None if budget_s is None else clock() + max(0.0, budget_s)

    def expired(self) -> bool:
        """True once the budget is used up."""
        return self._end is not None and self._clock() >= self._end

    def remaining(self) -> float | None:
        """Seconds left (0 when used up), or None when there is no limit."""
        return None if self._end is None else max(0.0, self._end - self._clock())


def time_budget(configured_s: float, lambda_context: Any = None) -> float:
    """Seconds a sweep may run: ``configured_s``, capped at the invoking Lambda's remaining
    time minus :data:`LAMBDA_SAFETY_MARGIN_S` (15 s), never below :data:`MIN_BUDGET_S` (1 s).

    Args:
        configured_s: the sweep's configured budget, seconds (e.g. ``CLEANUP_TIME_BUDGET_SECONDS``).
        lambda_context: the Lambda context (``get_remaining_time_in_millis()``), or None
            outside Lambda.
    """
    budget = configured_s
    remaining_ms = getattr(lambda_context, "get_remaining_time_in_millis", None)
    if callable(remaining_ms):
        budget = min(budget, remaining_ms() / 1000.0 - LAMBDA_SAFETY_MARGIN_S)
    return max(MIN_BUDGET_S, budget)


@dataclass
class SweepReport:
    """What one sweep run did (or, in dry-run mode, would have done), as counts.

    Attributes:
        sweep: the sweep's name, e.g. ``retention``, ``orphan_objects``, ``archives``, ``recovery``.
        dry_run: True when nothing was changed.
        now: the reference time (aware UTC) ages and leases were measured against.
        complete: False when the time budget ran out before the end.
        counts: e.g. ``images_deleted``, ``items_requeued``, ``errors``.
        seconds: wall time of the run.
    """

    sweep: str
    dry_run: bool
    now: datetime
    complete: bool = True
    counts: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the count ``name`` (zero adds nothing)."""
        if n:
            self.counts[name] += n

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: ``{"sweep", "dry_run", "now", "complete", "seconds", "counts"}``."""
        return {
            "sweep": self.sweep,
            "dry_run": self.dry_run,
            "now": iso8601(self.now),
            "complete": self.complete,
            "seconds": round(self.seconds, 3),
            "counts": dict(sorted(self.counts.items())),
        }
