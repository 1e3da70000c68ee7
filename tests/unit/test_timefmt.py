"""The one timestamp format."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from chalicelib.timefmt import iso8601


def test_one_format_for_epochs_and_datetimes() -> None:
    assert iso8601(0) == "1970-01-01T00:00:00.000Z"
    assert iso8601(1_796_054_400.5) == "2026-11-30T16:00:00.500Z"
    assert iso8601(datetime(2026, 11, 30, 16, 50, 14, 123456, tzinfo=UTC)) == "2026-11-30T16:50:14.123Z"
    assert iso8601(datetime(2026, 11, 30, 12, 0, tzinfo=timezone(timedelta(hours=-5)))) == "2026-11-30T17:00:00.000Z"
    assert iso8601(datetime(2026, 11, 30, 17, 0)) == "2026-11-30T17:00:00.000Z"  # naive: UTC
    assert iso8601(None) is None
