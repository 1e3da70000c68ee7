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
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
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


def charge(
    user_id: str, n: int, usd: float = 0.0, estimate: Mapping[str, Any] | None = None, *, spend_usd: float = 0.0
) -> str:
    """Charge ``n`` images to this month's quota and hold ``usd`` (their estimated cost)
    against the month's budget, in one conditional UpdateItem (all or nothing). ``spend_usd``
    (USD, default none) is added to the month's cost in the same write: the caller then leaves
    the month's item out of its :func:`cost_writes` and gives back what is not stored with
    :func:`refund`'s ``spend_usd``.

    The budget (``MONTHLY_BUDGET_USD``, 0 = off) holds estimates, not final costs: what a
    request may still spend counts from the moment it is accepted, so concurrent requests
    cannot overshoot it together. :func:`refund` gives back what did not end stored.

    Args:
        n: images. usd: their estimated cost in USD (0: nothing held).
        estimate: the request's estimate, quoted in a ``budget-exceeded`` error.
        spend_usd: USD added to the month's ``cost_usd`` (the images' cost, charged ahead).

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
    if spend_usd > 0:
        actions.append(UsageModel.cost_usd.add(round(spend_usd, 6)))
    condition = UsageModel.count.does_not_exist() | (UsageModel.count <= quota - n)
    held = budget > 0 and usd > 0
    if held and usd > budget:  # never fits, whatever the month holds (the condition below cannot say so)
        raise BudgetExceeded(estimate, budget, _read_month(user_id, period)[1])
    if held:
        actions.append(UsageModel.committed_usd.add(usd))
        condition &= UsageModel.committed_usd.does_not_exist() | (UsageModel.committed_usd <= budget - usd)
    try:
        item.update_no_return(actions, condition)
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


def refund(user_id: str, n: int, period: str | None, usd: float = 0.0, *, spend_usd: float = 0.0) -> None:
    """Give back ``n`` images charged by :func:`charge` or :func:`admit` (a failed generation)
    to ``period``, the month they returned (None, for a charge recorded before periods were
    kept: the current month), release ``usd`` held against that month's budget, and take
    ``spend_usd`` (USD) off the month's cost when the charge added it ahead. Never raises."""
    if n <= 0:
        return
    actions = [UsageModel.count.add(-n)]
    usd = round(max(0.0, usd), 6)
    if usd > 0 and get_settings().monthly_budget_usd > 0:
        actions.append(UsageModel.committed_usd.add(-usd))
    spend_usd = round(max(0.0, spend_usd), 6)
    if spend_usd > 0:
        actions.append(UsageModel.cost_usd.add(-spend_usd))
    try:
        UsageModel(user_id, period or _month()).update_no_return(actions, UsageModel.count >= n)
    except UpdateError:
        pass


@dataclass(frozen=True)
class Cost:
    """One stored result's upstream cost: ``usd`` (USD), ``model``, ``key_id`` (a shared key's
    id or ``"own:<key id>"``, None when unknown) and ``own`` (billed to the user's own key)."""

    usd: float
    model: str | None = None
    key_id: str | None = None
    own: bool = False


def cost_writes(user_id: str, costs: list[Cost], *, month: bool = True, undo: bool = False) -> list[Callable[[], None]]:
    """The writes that add ``costs`` to this month's spend, one per item touched (the costs of
    several images to the same item are summed into one ADD). Each write is best effort: it
    never raises. The caller may run them at once (they touch different items).

    Items (atomic ADDs): the month's usage item (``cost_usd``; shared keys only, since own-key
    usage is billed to the user's own Together account), the user's per-model spend item
    ``(user_id, "spend#YYYY-MM#<shared|own>#<model>")`` and the admin's per-key item
    ``("@spend#YYYY-MM", key_id)``; the last two also count the images (``count``).

    Args:
        month: include the month's usage item (False: :func:`admit` or :func:`charge` added
            it ahead with ``spend_usd``).
        undo: take the costs and image counts off instead (results written ahead whose
            image was then not stored).

    Example::

        writes = usage.cost_writes("user_1", [usage.Cost(0.0027, "black-forest-labs/FLUX.1-schnell", "k1")])
        for write in writes:
            write()
    """
    return _spend_writes([(user_id, cost) for cost in costs], month=month, sign=-1 if undo else 1)


def _spend_writes(entries: list[tuple[str, Cost]], *, month: bool = True, sign: int = 1) -> list[Callable[[], None]]:
    """:func:`cost_writes` for ``(user_id, cost)`` pairs of any users: one write per item
    touched; ``sign`` -1 takes them off."""
    period = _month()
    totals: dict[tuple[str, str], list[float]] = {}  # (hash, range) -> [usd, images counted]

    def add(hash_key: str, range_key: str, usd: float, counted: bool) -> None:
        entry = totals.setdefault((hash_key, range_key), [0.0, 0])
        entry[0] += usd
        entry[1] += int(counted)

    for user_id, cost in entries:
        if cost.usd < 0:
            continue
        usd = round(cost.usd, 6)
        if month and not cost.own and usd > 0:
            add(user_id, period, usd, False)
        if cost.model:
            add(user_id, f"{MODEL_SPEND_PREFIX}{period}#{'own' if cost.own else 'shared'}#{cost.model}", usd, True)
        if cost.key_id:
            add(f"{KEY_SPEND_PREFIX}{period}", cost.key_id, usd, True)
    return [partial(_add_spend, h, r, sign * round(usd, 6), sign * int(n)) for (h, r), (usd, n) in totals.items()]


#: While :func:`batched_costs` is open: the ``(user_id, cost)`` pairs :func:`add_cost` collected.
_collected: list[tuple[str, Cost]] | None = None
_collected_lock = threading.Lock()


@contextmanager
def batched_costs() -> Iterator[None]:
    """Within the block, :func:`add_cost` collects costs instead of writing them; on leaving,
    they are written summed per item (:func:`cost_writes`), so a worker's batch of ten images
    on one job costs three writes instead of thirty. Process-wide (the batch's threads add to
    it); a block opened inside another adds to the outer one. Never raises on the writes.

    Example::

        with usage.batched_costs():
            process_batch(event, handler, threads=4)
    """
    global _collected
    with _collected_lock:
        outer = _collected is None
        if outer:
            _collected = []
    try:
        yield
    finally:
        if outer:
            with _collected_lock:
                entries, _collected = _collected or [], None
            for write in _spend_writes(entries):
                write()


def _add_spend(hash_key: str, range_key: str, usd: float, images: int) -> None:
    actions = [UsageModel.cost_usd.add(usd)]
    if images:
        actions.append(UsageModel.count.add(images))
    try:
        UsageModel(hash_key, range_key).update_no_return(actions)
    except Exception:  # noqa: BLE001 - the result is stored; its own item keeps its cost
        logger.warning("could not add a cost to the month's spend")


def add_month_cost(user_id: str, usd: float, period: str | None = None) -> None:
    """Add ``usd`` (USD, may be negative: a correction) to the month's cost of ``period``
    (``"YYYY-MM"``; None: the current month), as charged ahead by :func:`admit` or
    :func:`charge`. Best effort: never raises."""
    _add_spend(user_id, period or _month(), round(usd, 6), 0)


def add_cost(
    user_id: str, usd: float, *, model: str | None = None, key_id: str | None = None, own: bool = False
) -> None:
    """Record one result's upstream cost (``usd``, USD) for this month, one write after the
    other (see :func:`cost_writes`), or at the end of the open :func:`batched_costs` block.
    Best effort: never raises."""
    cost = Cost(usd, model, key_id, own)
    with _collected_lock:
        if _collected is not None:
            _collected.append((user_id, cost))
            return
    for write in cost_writes(user_id, [cost]):
        write()


def key_spend(period: str | None = None) -> list[dict[str, Any]]:
    """The month's spend per upstream key (admin page), most expensive first:
    ``[{"key_id", "images", "usd"}]``; ``key_id`` is a shared key's id or ``"own:<key id>"``,
    never a key. One Query of ``"@spend#YYYY-MM"``."""
    rows = UsageModel.query(f"{KEY_SPEND_PREFIX}{period or _month()}")
    out = [
        {"key_id": r.period, "images": int(r.count or 0), "usd": round(float(r.cost_usd or 0), 6)}
        for r in rows
        if int(r.count or 0) > 0  # a row whose only images were not stored (cost_writes' undo) is empty
    ]
    return sorted(out, key=lambda r: (-r["usd"], r["key_id"]))


def model_spend(user_id: str, period: str | None = None) -> list[dict[str, Any]]:
    """The user's spend this month by model and key source, most expensive first:
    ``[{"model", "source": "shared" | "own", "images", "usd"}]``. One Query."""
    prefix = f"{MODEL_SPEND_PREFIX}{period or _month()}#"
    rows = UsageModel.query(user_id, UsageModel.period.startswith(prefix))
    out = []
    for r in rows:
        if int(r.count or 0) <= 0:  # its only images were not stored (cost_writes' undo)
            continue
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
    item: UsageModel,
    window: str,
    same: bool,
    limits: tuple[int, int, int],
    counts: tuple[int, int, int],
    spend_usd: float = 0.0,
) -> None:
    """One conditional UpdateItem on the month's item: add ``counts`` (writes, generations,
    images) while each stays within ``limits`` (writes and generations per minute, 0: no
    limit; images per month), and ``spend_usd`` to the month's cost with the images.
    ``same``: the stored ``window`` is ``window`` (counters add up); otherwise the window
    starts over at ``window`` (counters set).

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
        if spend_usd > 0:
            actions.append(model.cost_usd.add(round(spend_usd, 6)))
    item.update_no_return(actions, condition)


def admit(
    user_id: str, *, write: bool = True, generation: bool = False, images: int = 0, spend_usd: float = 0.0
) -> str:
    """Count one request against the user's per-minute rate limits and charge ``images`` to the
    month's quota, all in one conditional UpdateItem on the month's item ``(user_id, "YYYY-MM")``
    (atomic: either everything is counted or nothing). Source: Amazon DynamoDB developer
    guide, "Condition expressions" and "Update expressions" (ADD, SET).

    Args:
        write: count a state-changing request (``MUTATION_RATE_LIMIT_PER_MINUTE``).
        generation: count a generation request (``RATE_LIMIT_PER_MINUTE``).
        images: images to charge (``MONTHLY_IMAGE_QUOTA``); 0 charges nothing.
        spend_usd: USD added to the month's cost with the images (their cost, charged ahead;
            see :func:`charge`); nothing when no image is charged.

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
            _admit_update(item, window, same, limits, counts, spend_usd)
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
        item.update_no_return(
            [UsageModel.count.add(1), UsageModel.expires_at.set(timedelta(seconds=2 * window + 60))],
            UsageModel.count.does_not_exist() | (UsageModel.count < settings.webhook_user_rate_limit),
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
