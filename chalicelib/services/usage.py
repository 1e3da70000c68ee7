"""The monthly image quota and the per-user request rate limits, in DynamoDB.

Both are counters in ``UsageModel`` changed with a conditional atomic ADD
(UpdateItem with a ConditionExpression), so concurrent Lambdas never overshoot.
Source: Amazon DynamoDB developer guide, "Atomic counters" and "Condition expressions".

- Quota: item ``(user_id, "YYYY-MM")``; ``charge`` adds n only while count + n <= quota
  and returns the month it charged; ``refund`` subtracts what a failed generation charged
  from that same month (a job charged in March and failing in April refunds March).
- Rate limits: fixed one-minute windows, items ``(user_id, "rate#YYYY-MM-DDTHH:MM")``
  (image generation) and ``(user_id, "mut#YYYY-MM-DDTHH:MM")`` (every state-changing
  request), expiring through TTL.
- Webhook deliveries: a fixed ``WEBHOOK_RATE_WINDOW_SECONDS`` window, item
  ``(user_id, "webhook#<window number>")``, at most ``WEBHOOK_USER_RATE_LIMIT`` each,
  expiring through TTL.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from pynamodb.exceptions import UpdateError

from chalicelib.db import UsageModel, is_condition_failure
from chalicelib.errors import DomainError, ErrorCode
from chalicelib.settings import get_settings

logger = logging.getLogger("promptcanvas.usage")


def _month(now: float | None = None) -> str:
    return datetime.fromtimestamp(now or time.time(), UTC).strftime("%Y-%m")


def current_month() -> str:
    """The quota period now: ``"YYYY-MM"`` (UTC)."""
    return _month()


def charge(user_id: str, n: int) -> str:
    """Charge ``n`` images to this month's quota.

    Returns:
        The period charged (``"YYYY-MM"``): keep it with the charge and pass it to :func:`refund`.

    Raises:
        DomainError: 429 ``quota-exceeded`` when it would exceed ``MONTHLY_IMAGE_QUOTA``.
    """
    quota = get_settings().monthly_image_quota
    period = _month()
    item = UsageModel(user_id, period)
    try:
        item.update(
            actions=[UsageModel.count.add(n)],
            condition=UsageModel.count.does_not_exist() | (UsageModel.count <= quota - n),
        )
        return period
    except UpdateError as exc:
        if is_condition_failure(exc) or quota - n < 0:
            raise DomainError(ErrorCode.QUOTA_EXCEEDED, f"monthly quota of {quota} images is used up") from None
        raise


def refund(user_id: str, n: int, period: str | None) -> None:
    """Give back ``n`` images charged by :func:`charge` (a failed generation) to ``period``,
    the month :func:`charge` returned (None, for a charge recorded before periods were
    kept: the current month). Never raises."""
    if n <= 0:
        return
    try:
        UsageModel(user_id, period or _month()).update(
            actions=[UsageModel.count.add(-n)], condition=UsageModel.count >= n
        )
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
    """Count one generation request in the user's current one-minute window.

    Raises:
        DomainError: 429 ``rate-limited`` with ``Retry-After`` (seconds to the next
            window) past ``RATE_LIMIT_PER_MINUTE``.
    """
    _hit_window(user_id, "rate", get_settings().rate_limit_per_minute, "generation requests")


def hit_mutation_rate_limit(user_id: str) -> None:
    """Count one state-changing request (POST/PUT/PATCH/DELETE under ``/v1``) for the user.

    A separate fixed one-minute window, item ``(user_id, "mut#YYYY-MM-DDTHH:MM")``; only
    this user's counter changes. Applied by ``chalicelib.http.Api`` to every mutating route.

    Raises:
        DomainError: 429 ``rate-limited`` with ``Retry-After`` (seconds to the next window)
            past ``MUTATION_RATE_LIMIT_PER_MINUTE`` (0 disables the limit).
    """
    _hit_window(user_id, "mut", get_settings().mutation_rate_limit_per_minute, "write requests")


def _hit_window(user_id: str, prefix: str, limit: int, what: str) -> None:
    """Add one to ``(user_id, "{prefix}#YYYY-MM-DDTHH:MM")`` while it is below ``limit``.

    Raises:
        DomainError: 429 ``rate-limited`` with ``Retry-After`` in seconds (1-60).
    """
    if limit <= 0:
        return
    now = time.time()
    window = datetime.fromtimestamp(now, UTC).strftime(f"{prefix}#%Y-%m-%dT%H:%M")
    item = UsageModel(user_id, window)
    try:
        item.update(
            actions=[UsageModel.count.add(1), UsageModel.expires_at.set(timedelta(seconds=120))],
            condition=UsageModel.count.does_not_exist() | (UsageModel.count < limit),
        )
    except UpdateError as exc:
        if not is_condition_failure(exc):
            raise
        retry_after = max(1, 60 - int(now) % 60)
        raise DomainError(
            ErrorCode.RATE_LIMITED,
            f"at most {limit} {what} a minute; retry in {retry_after} s",
            retry_after_s=retry_after,
        ) from None


def webhook_window_left_s(now: float | None = None) -> float:
    """Seconds until the next webhook rate window starts."""
    window = get_settings().webhook_rate_window_seconds
    now = time.time() if now is None else now
    return window - (now % window)


def take_webhook_slot(user_id: str) -> bool:
    """Count one webhook delivery in the user's current window.

    Returns:
        True when the delivery may go now; False past ``WEBHOOK_USER_RATE_LIMIT`` in this
        ``WEBHOOK_RATE_WINDOW_SECONDS`` window (nothing counted; defer it).
    """
    settings = get_settings()
    now = time.time()
    window = settings.webhook_rate_window_seconds
    item = UsageModel(user_id, f"webhook#{int(now // window)}")
    try:
        item.update(
            actions=[UsageModel.count.add(1), UsageModel.expires_at.set(timedelta(seconds=2 * window + 60))],
            condition=UsageModel.count.does_not_exist() | (UsageModel.count < settings.webhook_user_rate_limit),
        )
    except UpdateError as exc:
        if not is_condition_failure(exc):
            raise
        return False
    return True


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
