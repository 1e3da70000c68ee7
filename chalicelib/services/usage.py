"""The monthly image quota and the per-user request rate limits, in DynamoDB.

Both are counters in ``UsageModel`` changed with a conditional atomic ADD
(UpdateItem with a ConditionExpression), so concurrent Lambdas never overshoot.
Source: Amazon DynamoDB developer guide, "Atomic counters" and "Condition expressions".

- Quota: item ``(user_id, "YYYY-MM")``; ``charge`` adds n only while count + n <= quota
  and returns the month it charged; ``refund`` subtracts what a failed generation charged
  from that same month (a job charged in March and failing in April refunds March).
- Rate limits: fixed one-minute UTC windows kept on the month's item: ``window`` (the
  minute), ``writes`` (every state-changing request) and ``generations`` (image generation
  requests). :func:`admit` counts a request and charges its images in one conditional
  UpdateItem, so ``POST /v1/images`` pays one write for its rate limits and quota.
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
    admit(user_id, write=False, generation=True)


def hit_mutation_rate_limit(user_id: str) -> None:
    """Count one state-changing request (POST/PUT/PATCH/DELETE under ``/v1``) for the user.

    Counted in the month's item (``writes`` in the current ``window``); only this user's
    counter changes. Applied by ``chalicelib.http.Api`` to every mutating route.

    Raises:
        DomainError: 429 ``rate-limited`` with ``Retry-After`` (seconds to the next window)
            past ``MUTATION_RATE_LIMIT_PER_MINUTE`` (0 disables the limit).
    """
    admit(user_id, write=True)


#: user id -> the last minute this process saw the user's window in (a hint that picks which
#: update to send first; a wrong hint costs one more read, never a wrong count).
_window_hint: dict[str, str] = {}
_HINT_MAX_USERS = 10_000


def _rate_limited(limit: int, what: str, now: float) -> DomainError:
    retry_after = max(1, 60 - int(now) % 60)
    return DomainError(
        ErrorCode.RATE_LIMITED,
        f"at most {limit} {what} a minute; retry in {retry_after} s",
        retry_after_s=retry_after,
    )


def _admit_update(
    item: UsageModel, window: str, same: bool, limits: tuple[int, int, int], counts: tuple[int, int, int]
) -> None:
    """One conditional UpdateItem on the month's item: add ``counts`` (writes, generations,
    images) while each stays within ``limits`` (writes and generations per minute, 0: no
    limit; images per month). ``same``: the stored ``window`` is ``window`` (counters add up);
    otherwise the window starts over at ``window`` (counters set).

    Raises:
        UpdateError: a limit is reached, the window is not as assumed, or DynamoDB failed.
    """
    writes, generations, images = counts
    write_limit, generation_limit, quota = limits
    model = UsageModel
    if same:
        condition = model.window == window
        actions = [model.writes.add(writes), model.generations.add(generations)]
        if writes and write_limit > 0:
            condition &= model.writes.does_not_exist() | (model.writes < write_limit)
        if generations and generation_limit > 0:
            condition &= model.generations.does_not_exist() | (model.generations < generation_limit)
    else:
        condition = model.window.does_not_exist() | (model.window != window)
        actions = [model.window.set(window), model.writes.set(writes), model.generations.set(generations)]
    if images:
        actions.append(model.count.add(images))
        condition &= model.count.does_not_exist() | (model.count <= quota - images)
    item.update(actions=actions, condition=condition)


def admit(user_id: str, *, write: bool = True, generation: bool = False, images: int = 0) -> str:
    """Count one request against the user's per-minute rate limits and charge ``images`` to the
    month's quota, all in one conditional UpdateItem on the month's item ``(user_id, "YYYY-MM")``
    (atomic: either everything is counted or nothing). Source: Amazon DynamoDB developer
    guide, "Condition expressions" and "Update expressions" (ADD, SET).

    Args:
        write: count a state-changing request (``MUTATION_RATE_LIMIT_PER_MINUTE``).
        generation: count a generation request (``RATE_LIMIT_PER_MINUTE``).
        images: images to charge (``MONTHLY_IMAGE_QUOTA``); 0 charges nothing.

    The limits are checked in this order, and a refused request counts only what came before
    the limit that refused it (as separate checks would): the write limit (nothing counted),
    the generation limit (the write counted), the quota (both requests counted, no image).
    The windows are fixed UTC minutes. The usual call is one UpdateItem; the first request in
    a new minute (on this instance) or a refusal costs a consistent GetItem and one more update.

    Returns:
        The period charged (``"YYYY-MM"``): pass it to :func:`refund`.

    Raises:
        DomainError: 429 ``rate-limited`` (``Retry-After``: seconds to the next minute) or
            429 ``quota-exceeded``.
        UpdateError / GetError: DynamoDB failed.
    """
    settings = get_settings()
    now = time.time()
    stamp = datetime.fromtimestamp(now, UTC)
    period, window = stamp.strftime("%Y-%m"), stamp.strftime("%Y-%m-%dT%H:%M")
    limits = (
        settings.mutation_rate_limit_per_minute if write else 0,
        settings.rate_limit_per_minute if generation else 0,
        settings.monthly_image_quota,
    )
    if images > limits[2]:  # more than a whole month's quota: refused whatever is stored
        if write or generation:
            admit(user_id, write=write, generation=generation)
        raise DomainError(ErrorCode.QUOTA_EXCEEDED, f"monthly quota of {limits[2]} images is used up")
    counts = (int(write), int(generation), images)
    item = UsageModel(user_id, period)
    same = _window_hint.get(user_id) == window
    for _ in range(4):  # a concurrent request may move the window or a counter in between
        try:
            _admit_update(item, window, same, limits, counts)
        except UpdateError as exc:
            if not is_condition_failure(exc):
                raise
        else:
            if len(_window_hint) >= _HINT_MAX_USERS:
                _window_hint.clear()
            _window_hint[user_id] = window
            return period
        try:
            stored = UsageModel.get(user_id, period, consistent_read=True)
        except UsageModel.DoesNotExist:
            stored = None
        same = stored is not None and stored.window == window
        used_writes = int(stored.writes or 0) if same and stored else 0
        used_generations = int(stored.generations or 0) if same and stored else 0
        used_images = int(stored.count or 0) if stored else 0
        if write and limits[0] > 0 and used_writes >= limits[0]:
            raise _rate_limited(limits[0], "write requests", now)
        if generation and limits[1] > 0 and used_generations >= limits[1]:
            if write:
                admit(user_id, write=True)
            raise _rate_limited(limits[1], "generation requests", now)
        if images and used_images + images > limits[2]:
            if write or generation:
                admit(user_id, write=write, generation=generation)
            raise DomainError(ErrorCode.QUOTA_EXCEEDED, f"monthly quota of {limits[2]} images is used up")
    raise DomainError(ErrorCode.INTERNAL_ERROR, "the usage counters kept changing; try again")


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
