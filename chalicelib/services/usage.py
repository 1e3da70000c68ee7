"""The monthly image quota and the per-user request rate limit, in DynamoDB.

Both are counters in ``UsageModel`` changed with a conditional atomic ADD
(UpdateItem with a ConditionExpression), so concurrent Lambdas never overshoot.
Source: Amazon DynamoDB developer guide, "Atomic counters" and "Condition expressions".

- Quota: item ``(user_id, "YYYY-MM")``; ``charge`` adds n only while count + n <= quota;
  ``refund`` subtracts what a failed generation charged.
- Rate limit: a fixed one-minute window, item ``(user_id, "rate#YYYY-MM-DDTHH:MM")``,
  expiring through TTL.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from pynamodb.exceptions import UpdateError

from chalicelib.db import UsageModel
from chalicelib.errors import ApiError
from chalicelib.settings import get_settings

logger = logging.getLogger("promptcanvas.usage")


def _month(now: float | None = None) -> str:
    return datetime.fromtimestamp(now or time.time(), UTC).strftime("%Y-%m")


def _conditional_failed(exc: UpdateError) -> bool:
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"


def charge(user_id: str, n: int) -> None:
    """Charge ``n`` images to this month's quota.

    Raises:
        ApiError: 429 ``quota-exceeded`` when it would exceed ``MONTHLY_IMAGE_QUOTA``.
    """
    quota = get_settings().monthly_image_quota
    item = UsageModel(user_id, _month())
    try:
        item.update(
            actions=[UsageModel.count.add(n)],
            condition=UsageModel.count.does_not_exist() | (UsageModel.count <= quota - n),
        )
    except UpdateError as exc:
        if _conditional_failed(exc) or quota - n < 0:
            raise ApiError(429, "quota-exceeded", f"monthly quota of {quota} images is used up", headers={}) from None
        raise


def refund(user_id: str, n: int) -> None:
    """Give back ``n`` images charged by :func:`charge` (a failed generation). Never raises."""
    if n <= 0:
        return
    try:
        UsageModel(user_id, _month()).update(actions=[UsageModel.count.add(-n)], condition=UsageModel.count >= n)
    except UpdateError:
        pass


def add_cost(user_id: str, usd: float) -> None:
    """Add ``usd`` (an image's upstream cost) to this month's cost. Best effort: never raises.

    An atomic ADD on the month's usage item, next to the quota counter.
    """
    if usd <= 0:
        return
    try:
        UsageModel(user_id, _month()).update(actions=[UsageModel.cost_usd.add(round(usd, 6))])
    except Exception:  # noqa: BLE001 - the image is stored; its own item keeps its cost
        logger.warning("could not add an image's cost to the month's usage")


def hit_rate_limit(user_id: str) -> None:
    """Count one request in the user's current one-minute window.

    Raises:
        ApiError: 429 ``rate-limited`` with ``Retry-After`` (seconds to the next
            window) past ``RATE_LIMIT_PER_MINUTE``.
    """
    limit = get_settings().rate_limit_per_minute
    if limit <= 0:
        return
    now = time.time()
    window = datetime.fromtimestamp(now, UTC).strftime("rate#%Y-%m-%dT%H:%M")
    item = UsageModel(user_id, window)
    try:
        item.update(
            actions=[UsageModel.count.add(1), UsageModel.expires_at.set(timedelta(seconds=120))],
            condition=UsageModel.count.does_not_exist() | (UsageModel.count < limit),
        )
    except UpdateError as exc:
        if not _conditional_failed(exc):
            raise
        retry_after = max(1, 60 - int(now) % 60)
        raise ApiError(
            429,
            "rate-limited",
            f"at most {limit} requests a minute; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        ) from None


def current(user_id: str) -> dict[str, object]:
    """``{"period", "used", "quota", "remaining", "cost_usd"}`` for this month.

    ``cost_usd`` is what the month's stored images cost upstream (catalog prices,
    Together's per-megapixel formula), rounded to 6 decimals.
    """
    quota = get_settings().monthly_image_quota
    period = _month()
    try:
        item = UsageModel.get(user_id, period)
        used, cost = int(item.count or 0), float(item.cost_usd or 0)
    except UsageModel.DoesNotExist:
        used, cost = 0, 0.0
    return {
        "period": period,
        "used": used,
        "quota": quota,
        "remaining": max(0, quota - used),
        "cost_usd": round(cost, 6),
    }
