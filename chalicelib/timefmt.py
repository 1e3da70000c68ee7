"""The one timestamp format of the API, the manifests and the webhooks.

Every time a client sees is ISO 8601 in UTC with millisecond precision and a ``Z``
suffix, e.g. ``2026-11-30T16:50:14.123Z`` (RFC 3339 "date-time"; fixed width, so the
strings sort like the times they name). Source: RFC 3339, section 5.6.
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso8601(value: float | int | datetime | None) -> str | None:
    """``value`` as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC); None stays None.

    Args:
        value: epoch seconds, or a datetime (an aware one is converted to UTC; a naive
            one is taken as UTC).
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    else:
        moment = datetime.fromtimestamp(float(value), UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
