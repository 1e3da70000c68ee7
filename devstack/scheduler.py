"""Stand-in for EventBridge schedules in the dev stack: runs the app's ``@app.schedule`` handlers.

Each ``Rate(...)`` handler (or a ``rate(...)`` string) is invoked on its period with a
CloudWatch scheduled-event payload, as Lambda would be, so cleanup and the stuck-work sweep
run locally too. ``DEVSTACK_SCHEDULE_SCALE`` (default 1) divides every period: 60 makes a
5-minute sweep run every 5 seconds. Cron expressions are not emulated (none is used).

Source: Amazon EventBridge user guide, "Schedule expressions" (rate units) and the
scheduled event shape in the Lambda developer guide.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from devstack.poller import FakeLambdaContext

logger = logging.getLogger("devstack.scheduler")

UNIT_SECONDS = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}


def period_seconds(expression: Any) -> float | None:
    """Seconds between runs of a Chalice ``Rate`` or a ``rate(N unit)`` string; None for cron."""
    text = expression.to_string() if hasattr(expression, "to_string") else str(expression)
    match = re.fullmatch(r"\s*rate\((\d+)\s+(\w+)\)\s*", text)
    if not match:
        return None
    return int(match.group(1)) * UNIT_SECONDS[match.group(2).lower()]


def scheduled_event(name: str) -> dict[str, Any]:
    """A scheduled-event payload like EventBridge's."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": "us-east-1",
        "resources": [f"arn:aws:events:us-east-1:000000000000:rule/{name}"],
        "detail": {},
    }


class Schedule:
    """Invokes ``handler`` every ``period_s`` seconds in a daemon thread (first run after one period)."""

    def __init__(self, name: str, handler: Callable[[dict[str, Any], Any], Any], period_s: float) -> None:
        self.name = name
        self.handler = handler
        self.period_s = period_s
        self.runs = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"schedule-{name}", daemon=True)

    def start(self) -> Schedule:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.handler(scheduled_event(self.name), FakeLambdaContext(function_name=self.name, timeout_s=300))
                self.runs += 1
            except Exception:  # a failed run is logged, as Lambda would; the next one still comes
                self.errors += 1
                logger.exception("scheduled handler %s failed", self.name)


def schedules_for_app(app_module: Any, scale: float = 1.0) -> list[Schedule]:
    """One :class:`Schedule` per ``@app.schedule`` handler with a rate expression."""
    from chalice.app import ScheduledEventConfig

    schedules = []
    for source in app_module.app.event_sources:
        if not isinstance(source, ScheduledEventConfig):
            continue
        period = period_seconds(source.schedule_expression)
        if period is None:
            continue
        handler = getattr(app_module, source.handler_string.rsplit(".", 1)[-1])
        schedules.append(Schedule(source.name, handler, period / max(scale, 1e-6)))
    return schedules
