"""The dev stack runs the app's scheduled handlers as EventBridge would."""

from __future__ import annotations

from chalice import Rate

import app as app_module
from devstack.scheduler import period_seconds, schedules_for_app
from tests.polling import wait_for


def test_rate_expressions():
    assert period_seconds(Rate(5, unit=Rate.MINUTES)) == 300
    assert period_seconds(Rate(1, unit=Rate.HOURS)) == 3600
    assert period_seconds("rate(1 day)") == 86400
    assert period_seconds("cron(0 12 * * ? *)") is None


def test_every_scheduled_handler_of_the_app_runs(aws, app_env):
    names = {s.name for s in schedules_for_app(app_module)}
    assert {"sweep_stuck_jobs", "cleanup_retention", "cleanup_orphans", "cleanup_archives"} <= names
    # 5 minutes pass in 50 ms: each handler runs against the real (moto) stack without error
    schedules = [s for s in schedules_for_app(app_module, scale=6000) if s.period_s <= 1]
    assert any(s.name == "sweep_stuck_jobs" for s in schedules)
    for schedule in schedules:
        schedule.start()
    try:
        wait_for(lambda: all(s.runs >= 2 for s in schedules), timeout_s=60)
    finally:
        for schedule in schedules:
            schedule.stop()
    assert all(s.errors == 0 for s in schedules), [(s.name, s.errors) for s in schedules]
