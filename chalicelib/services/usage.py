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
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pynamodb.exceptions import UpdateError

from chalicelib.db import UsageModel, is_condition_failure
from chalicelib.errors import DomainError, ErrorCode
from chalicelib.settings import get_settings

logger = logging.getLogger("promptcanvas.usage")

MODEL_SPEND_PREFIX = "spend#"  # (user_id, "spend#YYYY-MM#<source>#<model>")
KEY_SPEND_PREFIX = "@spend#"  # ("@spend#YYYY-MM", key id): no user id starts with "@"


def _month(now: float | None = None) -> str:
    return datetime.fromtimestamp(now or time.time(), UTC).strftime("%Y-%m")


def current_month() -> str:
    """The quota period now: ``"YYYY-MM"`` (UTC)."""
    return _month()


class BudgetExceeded(DomainError):
    """429 ``budget-exceeded``: the request's estimate does not fit the month's
    ``MONTHLY_BUDGET_USD``. Its body adds ``"estimate"`` (the request's estimate, the
    ``POST /v1/estimates`` shape) and ``"budget"`` (``{"limit_usd", "committed_usd",
    "remaining_usd"}``) to the error object."""

    def __init__(self, estimate: Mapping[str, Any] | None, limit: float, committed: float) -> None:
        usd = float((estimate or {}).get("usd") or 0)
        remaining = max(0.0, limit - committed)
        super().__init__(
            ErrorCode.BUDGET_EXCEEDED,
            f"this request is estimated at ${usd:.4f}; ${remaining:.4f} of the monthly budget of ${limit:.2f} is left",
        )
        self.estimate = dict(estimate or {})
        self.budget = {
            "limit_usd": round(limit, 6),
            "committed_usd": round(committed, 6),
            "remaining_usd": round(remaining, 6),
        }

    def body(self) -> dict[str, Any]:
        """``{"error": {"code", "message", "estimate", "budget"}}``."""
        body = super().body()
        body["error"]["estimate"] = self.estimate
        body["error"]["budget"] = self.budget
        return body


def charge(user_id: str, n: int, usd: float = 0.0, estimate: Mapping[str, Any] | None = None) -> str:
    """Charge ``n`` images to this month's quota and hold ``usd`` (their estimated cost)
    against the month's budget, in one conditional UpdateItem (all or nothing).

    The budget (``MONTHLY_BUDGET_USD``, 0 = off) holds estimates, not final costs: what a
    request may still spend counts from the moment it is accepted, so concurrent requests
    cannot overshoot it together. :func:`refund` gives back what did not end stored.

    Args:
        n: images. usd: their estimated cost in USD (0: nothing held).
        estimate: the request's estimate, quoted in a ``budget-exceeded`` error.

    Returns:
        The period charged (``"YYYY-MM"``): keep it with the charge and pass it to :func:`refund`.

    Raises:
        DomainError: 429 ``quota-exceeded`` when it would exceed ``MONTHLY_IMAGE_QUOTA``.
        BudgetExceeded: 429 ``budget-exceeded`` when ``usd`` does not fit the month's budget.
    """
    settings = get_settings()
    quota, budget = settings.monthly_image_quota, settings.monthly_budget_usd
    usd = round(max(0.0, usd), 6)
    period = _month()
    item = UsageModel(user_id, period)
    actions = [UsageModel.count.add(n)]
    condition = UsageModel.count.does_not_exist() | (UsageModel.count <= quota - n)
    held = budget > 0 and usd > 0
    if held and usd > budget:  # never fits, whatever the month holds (the condition below cannot say so)
        raise BudgetExceeded(estimate, budget, _read_month(user_id, period)[1])
    if held:
        actions.append(UsageModel.committed_usd.add(usd))
        condition &= UsageModel.committed_usd.does_not_exist() | (UsageModel.committed_usd <= budget - usd)
    try:
        item.update(actions=actions, condition=condition)
        return period
    except UpdateError as exc:
        if not (is_condition_failure(exc) or quota - n < 0):
            raise
    used, committed = _read_month(user_id, period)
    if held and committed + usd > budget and used + n <= quota:
        raise BudgetExceeded(estimate, budget, committed)
    raise DomainError(ErrorCode.QUOTA_EXCEEDED, f"monthly quota of {quota} images is used up")


def _read_month(user_id: str, period: str) -> tuple[int, float]:
    """``(images charged, USD held)`` of the month's item (zeros when there is none)."""
    try:
        item = UsageModel.get(user_id, period, consistent_read=True)
    except UsageModel.DoesNotExist:
        return 0, 0.0
    return int(item.count or 0), float(item.committed_usd or 0)


def refund(user_id: str, n: int, period: str | None, usd: float = 0.0) -> None:
    """Give back ``n`` images charged by :func:`charge` (a failed generation) to ``period``,
    the month :func:`charge` returned (None, for a charge recorded before periods were
    kept: the current month), and release ``usd`` held against that month's budget.
    Never raises."""
    if n <= 0:
        return
    actions = [UsageModel.count.add(-n)]
    usd = round(max(0.0, usd), 6)
    if usd > 0 and get_settings().monthly_budget_usd > 0:
        actions.append(UsageModel.committed_usd.add(-usd))
    try:
        UsageModel(user_id, period or _month()).update(actions=actions, condition=UsageModel.count >= n)
    except UpdateError:
        pass


def add_cost(
    user_id: str, usd: float, *, model: str | None = None, key_id: str | None = None, own: bool = False
) -> None:
    """Record an image's upstream cost (``usd``) for this month. Best effort: never raises.

    Atomic ADDs: the month's usage item (``cost_usd``; shared keys only, since own-key
    usage is billed to the user's own Together account), the user's per-model spend item
    ``(user_id, "spend#YYYY-MM#<shared|own>#<model>")`` and the admin's per-key item
    ``("@spend#YYYY-MM", key_id)`` (``key_id`` a shared key's id or ``"own:<key id>"``).
    """
    if usd < 0:
        return
    usd = round(usd, 6)
    period = _month()
    writes: list[tuple[str, str, bool]] = []
    if not own and usd > 0:
        writes.append((user_id, period, False))
    if model:
        writes.append((user_id, f"{MODEL_SPEND_PREFIX}{period}#{'own' if own else 'shared'}#{model}", True))
    if key_id:
        writes.append((f"{KEY_SPEND_PREFIX}{period}", key_id, True))
    for hash_key, range_key, counted in writes:
        actions = [UsageModel.cost_usd.add(usd)]
        if counted:
            actions.append(UsageModel.count.add(1))
        try:
            UsageModel(hash_key, range_key).update(actions=actions)
        except Exception:  # noqa: BLE001 - the image is stored; its own item keeps its cost
            logger.warning("could not add an image's cost to the month's spend")


def key_spend(period: str | None = None) -> list[dict[str, Any]]:
    """The month's spend per upstream key (admin page), most expensive first:
    ``[{"key_id", "images", "usd"}]``; ``key_id`` is a shared key's id or ``"own:<key id>"``,
    never a key. One Query of ``"@spend#YYYY-MM"``."""
    rows = UsageModel.query(f"{KEY_SPEND_PREFIX}{period or _month()}")
    out = [{"key_id": r.period, "images": int(r.count or 0), "usd": round(float(r.cost_usd or 0), 6)} for r in rows]
    return sorted(out, key=lambda r: (-r["usd"], r["key_id"]))


def model_spend(user_id: str, period: str | None = None) -> list[dict[str, Any]]:
    """The user's spend this month by model and key source, most expensive first:
    ``[{"model", "source": "shared" | "own", "images", "usd"}]``. One Query."""
    prefix = f"{MODEL_SPEND_PREFIX}{period or _month()}#"
    rows = UsageModel.query(user_id, UsageModel.period.startswith(prefix))
    out = []
    for r in rows:
        source, _, model = r.period[len(prefix) :].partition("#")
        out.append(
            {"model": model, "source": source, "images": int(r.count or 0), "usd": round(float(r.cost_usd or 0), 6)}
        )
    return sorted(out, key=lambda r: (-r["usd"], r["model"], r["source"]))


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
    """``GET /v1/me/usage``: ``{"period", "used", "quota", "remaining", "cost_usd",
    "budget_usd", "committed_usd", "budget_remaining_usd", "spend_by_model"}`` for this month.

    ``cost_usd`` is what the month's images made with the platform's keys cost upstream
    (catalog prices, Together's per-megapixel formula), rounded to 6 decimals;
    ``budget_usd`` is ``MONTHLY_BUDGET_USD`` (None: off), ``committed_usd`` the estimates
    held against it, ``budget_remaining_usd`` what is left (None: off);
    ``spend_by_model`` is :func:`model_spend` (own-key images are listed with
    ``source: "own"`` and count against neither quota nor budget).
    """
    settings = get_settings()
    quota, budget = settings.monthly_image_quota, settings.monthly_budget_usd
    period = _month()
    try:
        item = UsageModel.get(user_id, period)
        used, cost, committed = int(item.count or 0), float(item.cost_usd or 0), float(item.committed_usd or 0)
    except UsageModel.DoesNotExist:
        used, cost, committed = 0, 0.0, 0.0
    return {
        "period": period,
        "used": used,
        "quota": quota,
        "remaining": max(0, quota - used),
        "cost_usd": round(cost, 6),
        "budget_usd": budget if budget > 0 else None,
        "committed_usd": round(max(0.0, committed), 6),
        "budget_remaining_usd": round(max(0.0, budget - committed), 6) if budget > 0 else None,
        "spend_by_model": model_spend(user_id, period),
    }
