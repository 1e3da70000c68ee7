"""The pool of Together API keys, with health shared by every Lambda instance.

One concern: choose a key for the next upstream call, and remember what each key
answered. The health of each key is a :class:`~chalicelib.db.keys.KeyHealthModel`
row (DynamoDB), so an instance that meets a 429 or a 401 tells every other
instance, which sees it on its next refresh.

Cost on the healthy path: none per request. The process keeps a snapshot of all
rows, re-read with one BatchGetItem (up to 100 keys per call) at most every
``settings.key_health_refresh_seconds``. Success counters are added up locally and
written with one UpdateItem ``ADD`` per key at most every ``flush_interval_s``
(or on :meth:`KeyPool.flush`). What the client reports is written at once with
UpdateItem (the client decides what an answer means, see :mod:`chalicelib.flux.client`):

===========================  =====================================================
report                       shared effect
===========================  =====================================================
``report_rate_limited``      ``cooldown_until = now + Retry-After`` (or
                             ``settings.flux_default_cooldown_seconds``, at most
                             :data:`MAX_COOLDOWN_S`), ``rate_limited`` +1; ``state``
                             is not written
``report_disabled``          ``state=disabled`` (auth failure confirmed for the key)
                             or ``state=out_of_credits`` (402), with ``reason``
``report_error``             ``errors`` +1 and ``last_error``; no state change
``report_answer``            nothing at once: the answer's ``x-ratelimit-*``
                             headers pace the key (:mod:`chalicelib.flux.pacing`);
                             a key that ran dry is shared as ``pace`` with the
                             next success flush, and read with the snapshot
``report_busy``              nothing: a 503 backs the model off for every key in
                             this process
===========================  =====================================================

:meth:`KeyPool.reserve` books a send: the usable key whose pacing slot comes first.
:meth:`KeyPool.acquire` only checks that a key is free now (the batch worker asks it
before leasing work).

The stored ``state`` is ``healthy``, ``disabled`` or ``out_of_credits``; "cooling" is
derived from ``cooldown_until`` and the clock (a legacy stored ``cooling`` reads as
``healthy``), so a key is usable again once its cooldown has passed and nothing is
written. ``disabled`` and ``out_of_credits`` keys stay out until an operator calls
:meth:`KeyPool.reset_key` (or sets ``state`` back to ``healthy`` in the table); a bad key
or an empty account does not heal by itself.

Terminal states fail closed:

* an instance that has never read the table uses no key: :meth:`KeyPool.acquire` raises
  :class:`KeyHealthUnavailableError` (503, retry in about a second) until a read succeeds,
  so a cold instance cannot pick a key the table says is disabled;
* a later failed read keeps the last snapshot (cooldowns included);
* a key this instance took out stays out when writing that failed: the next successful
  read keeps it out and writes the terminal state again;
* a stored ``state`` the pool does not know is treated as unusable.

Secrets: a key is named everywhere by :func:`key_id` (first 12 hex digits of its
sha256). The key itself never reaches a log, an exception, a report or DynamoDB.

Sources: DynamoDB BatchGetItem (100 keys per call, ``ConsistentRead``) and
UpdateItem ``ADD``/``SET`` and condition expressions, Amazon DynamoDB API
Reference; Together status codes, https://docs.together.ai/docs/error-codes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chalicelib.db.base import is_condition_failure
from chalicelib.flux.exceptions import (
    AllKeysCoolingError,
    KeyHealthUnavailableError,
    NoUsableKeysError,
    UpstreamBusyError,
)
from chalicelib.flux.pacing import FIRST_SEND_GAP_S, MAX_PACE_WAIT_S, Pacer, RateInfo
from chalicelib.settings import Settings, get_settings

logger = logging.getLogger(__name__)

HEALTHY = "healthy"
COOLING = "cooling"
DISABLED = "disabled"
OUT_OF_CREDITS = "out_of_credits"
TERMINAL_STATES = frozenset({DISABLED, OUT_OF_CREDITS})
MAX_COOLDOWN_S = 3600.0  # a Retry-After longer than an hour is capped
MAX_ERROR_CHARS = 300  # last_error / reason are truncated to this many characters
DEFAULT_FLUSH_INTERVAL_S = 5.0
RESERVE_TRIES = 8  # a reserve that loses its slot to other threads this often asks the caller to come back
COLD_RETRY_S = 1.0  # seconds between table reads while this instance has never read it


def key_id(key: str) -> str:
    """The public name of a key: the first 12 hex digits of its sha256."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class KeyLease:
    """A key handed out for one upstream call. ``repr`` hides the key."""

    key: str = field(repr=False)
    key_id: str


@dataclass
class KeyHealth:
    """This process's view of one key's row (counters include unflushed successes)."""

    state: str = HEALTHY
    cooldown_until: float = 0.0  # epoch seconds
    last_error: str | None = None
    reason: str | None = None
    requests: int = 0
    successes: int = 0
    rate_limited: int = 0
    errors: int = 0
    updated_at: float = 0.0  # epoch seconds

    def usable(self, now: float) -> bool:
        """Healthy with no cooldown running. A terminal or unknown ``state`` is never usable."""
        if self.state not in (HEALTHY, COOLING):
            return False
        return self.cooldown_until <= now

    def effective_state(self, now: float) -> str:
        """The state as the pool acts on it: ``cooling`` while ``cooldown_until`` is ahead,
        else the stored state (``healthy``, a terminal state, or an unknown value as is)."""
        if self.state not in (HEALTHY, COOLING):
            return self.state
        return COOLING if self.cooldown_until > now else HEALTHY


# -- loading keys -------------------------------------------------------------------------------

_secret_cache: dict[str, tuple[str, ...]] = {}
_secret_lock = threading.Lock()


def _parse_secret(raw: str) -> tuple[str, ...]:
    """Keys from a secret string: a JSON list, ``{"keys": [...]}``, or comma-separated text."""
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw.split(",")
    if isinstance(value, dict):
        value = value.get("keys")
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise ValueError('the keys secret must be a JSON list of strings or {"keys": [...]}')
    return tuple(k.strip() for k in value if k.strip())


def load_keys(settings: Settings) -> tuple[str, ...]:
    """The configured keys, de-duplicated in order.

    ``settings.together_api_keys`` wins; otherwise the Secrets Manager secret
    ``settings.together_keys_secret_id`` (GetSecretValue via
    ``chalicelib.aws.client("secretsmanager")``), cached for the life of the process.

    Raises:
        NoUsableKeysError: the secret cannot be read or parsed (logged without its value).
    """
    keys: Sequence[str] = settings.together_api_keys
    secret_id = settings.together_keys_secret_id
    if not keys and secret_id:
        with _secret_lock:
            cached = _secret_cache.get(secret_id)
            if cached is None:
                from chalicelib.aws import client

                try:
                    raw = client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
                    cached = _parse_secret(raw)
                except Exception as exc:  # noqa: BLE001 - any failure means "no keys"
                    logger.error("cannot load Together keys from secret %s: %s", secret_id, type(exc).__name__)
                    raise NoUsableKeysError("image generation is unavailable; keys cannot be loaded") from None
                _secret_cache[secret_id] = cached
            keys = cached
    return tuple(dict.fromkeys(k.strip() for k in keys if k and k.strip()))


def clear_secret_cache() -> None:
    """Forget keys read from Secrets Manager (tests; a rotated secret on a warm instance)."""
    with _secret_lock:
        _secret_cache.clear()


# -- the pool -------------------------------------------------------------------------------------


def _model() -> Any:
    """KeyHealthModel, imported late so importing this module costs no PynamoDB set-up."""
    from chalicelib.db.keys import KeyHealthModel

    return KeyHealthModel


def _from_row(row: Any) -> KeyHealth:
    state = row.state or HEALTHY
    return KeyHealth(
        state=HEALTHY if state == COOLING else state,
        cooldown_until=float(row.cooldown_until or 0),
        last_error=row.last_error,
        reason=row.reason,
        requests=int(row.requests or 0),
        successes=int(row.successes or 0),
        rate_limited=int(row.rate_limited or 0),
        errors=int(row.errors or 0),
        updated_at=float(row.updated_at or 0),
    )


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


class KeyPool:
    """Round-robin over usable keys, with health shared through DynamoDB.

    Args:
        settings: defaults to :func:`get_settings`.
        keys: the API keys; defaults to :func:`load_keys` (settings or Secrets Manager).
        flush_interval_s: seconds between writes of the success counters.
        clock: epoch-seconds clock (tests).
        id_prefix: put before every :func:`key_id` (the health rows' keys, leases, logs). A
            user's own key is a pool of one under ``"own#{user_id}#"``: its health, cooldowns
            and pacing live in rows of its own, never in the shared pool's
            (:mod:`chalicelib.flux.own_keys`).

    Raises:
        NoUsableKeysError: from :func:`load_keys` when the secret cannot be read.

    Thread-safe; DynamoDB calls are made outside the lock.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        keys: Iterable[str] | None = None,
        *,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        clock: Callable[[], float] = time.time,
        id_prefix: str = "",
    ) -> None:
        self.settings = settings or get_settings()
        raw = load_keys(self.settings) if keys is None else tuple(dict.fromkeys(k for k in keys if k))
        self._keys: dict[str, str] = {id_prefix + key_id(k): k for k in raw}
        self._ids: list[str] = list(self._keys)
        self._health: dict[str, KeyHealth] = {kid: KeyHealth() for kid in self._ids}
        self._pending: dict[str, list[int]] = {}  # key_id -> [requests, successes] not yet written
        self._latency_ms: dict[str, float] = {}  # key_id -> EWMA of successful call latency
        self._clock = clock
        self._flush_interval_s = flush_interval_s
        self._last_refresh = -math.inf
        self._loaded = False  # True once the table has been read successfully
        self._unsynced: dict[str, str] = {}  # key_id -> terminal state whose write failed
        self._pacer = Pacer()
        self._last_flush = clock()
        self._cursor = random.randrange(len(self._ids)) if self._ids else 0  # spread instances
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"KeyPool(key_ids={self._ids!r})"

    # -- introspection --------------------------------------------------------------------------

    @property
    def key_ids(self) -> list[str]:
        """The ids of the configured keys, in configuration order."""
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def redact(self, text: str) -> str:
        """``text`` with every configured key replaced by ``[key <key_id>]``.

        For text that came from outside (upstream messages); callers redact it
        before handing it to ``report_*``, whose own messages never hold a key.
        """
        for kid, key in self._keys.items():
            if key in text:
                text = text.replace(key, f"[key {kid}]")
        return text

    def healthy_count(self) -> int:
        """How many keys are usable now (from the snapshot; refreshes it if stale).
        0 while the table has never been read (fail closed)."""
        self.refresh()
        now = self._clock()
        with self._lock:
            if not self._loaded:
                return 0
            return sum(1 for kid in self._ids if self._health[kid].usable(now))

    def health_report(self) -> list[dict[str, Any]]:
        """One dict per key, in configuration order (never the key itself).

        Keys: ``key_id``, ``state`` (effective: an expired cooldown reads ``healthy``),
        ``usable``, ``cooldown_until`` (epoch s), ``cooldown_remaining_s``,
        ``last_error``, ``reason``, ``requests``, ``successes``, ``rate_limited``,
        ``errors``, ``updated_at`` (epoch s), ``latency_ms`` (this process's EWMA or None).
        """
        self.refresh()
        now = self._clock()
        out = []
        with self._lock:
            for kid in self._ids:
                h = self._health[kid]
                pending = self._pending.get(kid, [0, 0])
                out.append(
                    {
                        "key_id": kid,
                        "state": h.effective_state(now),
                        "usable": h.usable(now),
                        "cooldown_until": h.cooldown_until,
                        "cooldown_remaining_s": round(max(0.0, h.cooldown_until - now), 3),
                        "last_error": h.last_error,
                        "reason": h.reason,
                        "requests": h.requests + pending[0],
                        "successes": h.successes + pending[1],
                        "rate_limited": h.rate_limited,
                        "errors": h.errors,
                        "updated_at": h.updated_at,
                        "latency_ms": round(self._latency_ms[kid], 1) if kid in self._latency_ms else None,
                    }
                )
        return out

    # -- choosing a key -------------------------------------------------------------------------

    def acquire(self, exclude: Collection[str] = ()) -> KeyLease:
        """The key that would serve next, round-robin from a per-process random start,
        without booking a send (a check: "is a key free now, or within the pacing horizon
        :data:`~chalicelib.flux.pacing.MAX_PACE_WAIT_S` a caller waits for in process?").

        Args:
            exclude: key ids not to hand out (the ones one call has already ruled out).

        Raises:
            KeyHealthUnavailableError: the table has never been read by this instance
                (fail closed); ``retry_at`` is about :data:`COLD_RETRY_S` away.
            AllKeysCoolingError: every usable key is cooling (``retry_at``: the earliest
                cooldown end), or paced beyond the horizon (``retry_at``: the earliest free
                slot, later for each caller sent away before it, see ``Pacer.defer``).
            NoUsableKeysError: none configured, or all disabled / out of credits / excluded.
        """
        lease, slot, now = self._choose(None, exclude)
        if slot - now > MAX_PACE_WAIT_S:
            with self._lock:
                retry_at = self._pacer.defer(self._ids, slot, now)
            raise AllKeysCoolingError(retry_at=retry_at, now=now)
        return lease

    def lease_for(self, key_id: str) -> KeyLease | None:
        """The lease of the key with id ``key_id`` whatever its health (a video job is polled
        with the key that submitted it, as the job belongs to its account), or None when this
        pool does not hold that key."""
        key = self._keys.get(key_id)
        return KeyLease(key=key, key_id=key_id) if key is not None else None

    def reserve(self, model: str, exclude: Collection[str] = (), max_wait_s: float = 0.0) -> tuple[KeyLease, float]:
        """Book the next send to ``model``: the key free soonest (round-robin among equals).

        Args:
            model: the Together model id (limits are per model).
            exclude: key ids not to hand out.
            max_wait_s: seconds the caller is willing to wait for the slot.

        Returns:
            ``(lease, wait_s)``: send after ``wait_s`` seconds (the slot is taken: a second
            caller gets the following one).

        Raises:
            UpstreamBusyError: the platform back-off (503s) for ``model`` ends later than
                ``max_wait_s`` from now.
            AllKeysCoolingError: the earliest slot is later than ``max_wait_s`` from now.
            KeyHealthUnavailableError, NoUsableKeysError: as :meth:`acquire`.
        """
        for _ in range(RESERVE_TRIES):
            lease, slot, now = self._choose(model, exclude)
            if slot - now > max_wait_s:
                if self._pacer.busy_until(model) >= slot:
                    raise UpstreamBusyError(retry_at=slot, now=now)
                raise AllKeysCoolingError(retry_at=slot, now=now)
            with self._lock:  # another thread may have taken this slot since: then choose again
                if self._pacer.slot(lease.key_id, model, now) <= slot:
                    self._pacer.book(lease.key_id, model, slot)
                    return lease, max(0.0, slot - now)
        raise AllKeysCoolingError(retry_at=now + FIRST_SEND_GAP_S, now=now)

    def _choose(self, model: str | None, exclude: Collection[str]) -> tuple[KeyLease, float, float]:
        """``(lease, slot, now)``: the usable key whose pacing slot comes first (ties go
        round-robin); advances the cursor past it."""
        self.refresh()
        self._maybe_flush()
        now = self._clock()
        with self._lock:
            if not self._ids:
                raise NoUsableKeysError("image generation is unavailable; no upstream key is configured")
            if not self._loaded:
                raise KeyHealthUnavailableError(retry_at=now + COLD_RETRY_S, now=now)
            count = len(self._ids)
            best: tuple[float, int] | None = None
            for step in range(count):
                idx = (self._cursor + step) % count
                kid = self._ids[idx]
                if kid not in exclude and self._health[kid].usable(now):
                    slot = self._pacer.slot(kid, model, now)
                    if best is None or slot < best[0]:
                        best = (slot, idx)
            if best is not None:
                slot, idx = best
                if math.isinf(slot):  # every usable key is probing its rate: ask again shortly
                    raise AllKeysCoolingError(retry_at=now + FIRST_SEND_GAP_S, now=now)
                self._cursor = (idx + 1) % count
                kid = self._ids[idx]
                return KeyLease(key=self._keys[kid], key_id=kid), slot, now
            cooling = [
                h.cooldown_until
                for kid, h in self._health.items()
                if kid not in exclude and h.state in (HEALTHY, COOLING) and h.cooldown_until > now
            ]
        if cooling:
            raise AllKeysCoolingError(retry_at=min(cooling), now=now)
        raise NoUsableKeysError()

    # -- shared snapshot ------------------------------------------------------------------------

    def refresh(self, force: bool = False) -> bool:
        """Re-read every key's row with BatchGetItem if the snapshot is older than
        ``settings.key_health_refresh_seconds`` (or ``force``); seed missing rows.

        Returns:
            True if DynamoDB was read. A DynamoDB failure is logged and the old
            snapshot kept; it is retried after the refresh interval (after
            :data:`COLD_RETRY_S` while the table has never been read, when
            :meth:`acquire` hands out no key).
        """
        now = self._clock()
        with self._lock:
            if not self._ids:
                return False
            interval = self.settings.key_health_refresh_seconds
            if not self._loaded:
                interval = min(interval, COLD_RETRY_S)
            if not force and now - self._last_refresh < interval:
                return False
            self._last_refresh = now
        model = _model()
        try:
            rows = {row.key_id: row for row in model.batch_get(self._ids, consistent_read=True)}
        except Exception as exc:  # noqa: BLE001 - keep the snapshot on any DynamoDB problem
            logger.warning("key health refresh failed: %s", type(exc).__name__)
            return False
        with self._lock:
            for kid, row in rows.items():
                if kid in self._health:
                    fresh = _from_row(row)
                    old = self._health[kid]
                    # a terminal state set here stands against a row that does not have it yet:
                    # our write failed (unsynced), or the row was read before our write landed
                    kept = kid in self._unsynced or old.updated_at > fresh.updated_at
                    if kept and old.state in TERMINAL_STATES and fresh.state not in TERMINAL_STATES:
                        fresh.state, fresh.reason, fresh.updated_at = old.state, old.reason, old.updated_at
                    self._health[kid] = fresh
                    if row.pace is not None:
                        self._pacer.merge(kid, row.pace.as_dict())
            self._loaded = True
            unsynced = [(kid, self._health[kid]) for kid in self._unsynced]
        for kid, h in unsynced:
            self._write_terminal(kid, h.state, h.reason or h.state, h.updated_at)
        for kid in self._ids:
            if kid not in rows:
                self._seed(kid)
        return True

    def _seed(self, kid: str) -> None:
        """Create a healthy row for ``kid`` unless one exists (conditional PutItem)."""
        model = _model()
        try:
            model(kid, state=HEALTHY, updated_at=int(self._clock())).save(condition=model.key_id.does_not_exist())
        except Exception as exc:  # noqa: BLE001 - ConditionalCheckFailed means someone else seeded it
            if not is_condition_failure(exc):
                logger.warning("seeding key health failed key_id=%s: %s", kid, type(exc).__name__)

    def _update(self, kid: str, actions: list[Any], condition: Any = None) -> bool:
        """One UpdateItem on ``kid``'s row; False (and logged) on failure."""
        try:
            _model()(kid).update(actions=actions, condition=condition)
            return True
        except Exception as exc:  # noqa: BLE001 - health writes must never break a request
            if is_condition_failure(exc):
                with self._lock:
                    self._last_refresh = -math.inf  # another instance moved it: re-read
            else:
                logger.warning("key health write failed key_id=%s: %s", kid, type(exc).__name__)
            return False

    # -- reports --------------------------------------------------------------------------------

    def report_success(self, key_id: str, latency_s: float, model: str | None = None) -> None:
        """Count a success locally (no DynamoDB call; flushed later). ``latency_s`` seconds;
        ``model`` ends its platform back-off streak."""
        with self._lock:
            if model is not None:
                self._pacer.calm(model)
            if key_id not in self._health:
                return
            counts = self._pending.setdefault(key_id, [0, 0])
            counts[0] += 1
            counts[1] += 1
            ms = latency_s * 1000.0
            prev = self._latency_ms.get(key_id)
            self._latency_ms[key_id] = ms if prev is None else 0.8 * prev + 0.2 * ms
        self._maybe_flush()

    def report_answer(self, key_id: str, model: str, headers: Any) -> None:
        """Pace ``key_id`` for ``model`` from an answer's ``x-ratelimit-*`` headers (any
        status; no DynamoDB call: a key that ran dry is shared with the next flush)."""
        if key_id not in self._health:
            return
        info = RateInfo.from_headers(headers)
        with self._lock:
            if info is None:
                self._pacer.observe_no_rate(key_id, model, self._clock())
            else:
                self._pacer.observe(key_id, model, info, self._clock())

    def report_unanswered(self, key_id: str, model: str) -> None:
        """A send booked with :meth:`reserve` got no answer (timeout, connection error): it no
        longer counts as in flight for the key's pacing. No DynamoDB call."""
        with self._lock:
            self._pacer.unanswered(key_id, model)

    def report_busy(self, model: str, retry_after_s: float | None = None) -> float:
        """The platform answered 503 for ``model``: hold every key's sends to it back
        (``Retry-After``, else jittered exponential back-off). No key is blamed and nothing
        is written. Returns the epoch second the back-off ends."""
        with self._lock:
            until = self._pacer.busy(model, retry_after_s, self._clock())
        logger.warning("flux upstream busy (503) model=%s backing off %.2f s", model, until - self._clock())
        return until

    def report_rate_limited(self, key_id: str, retry_after_s: float | None = None) -> float:
        """Cool a key after a 429 and share it at once: ``cooldown_until`` is set, the
        stored ``state`` is not touched (a terminal key stays terminal).

        Args:
            retry_after_s: the answer's Retry-After in seconds; None means
                ``settings.flux_default_cooldown_seconds``. Capped at one hour.

        Returns:
            The new ``cooldown_until`` (epoch seconds).
        """
        if key_id not in self._health:
            return 0.0
        seconds = self.settings.flux_default_cooldown_seconds if retry_after_s is None else retry_after_s
        now = self._clock()
        until = now + min(max(0.0, float(seconds)), MAX_COOLDOWN_S)
        message = f"429 rate limited; cooling {until - now:.1f} s"
        with self._lock:
            h = self._health[key_id]
            h.cooldown_until = until
            h.rate_limited += 1
            h.requests += 1
            h.last_error = message
            h.updated_at = now
        m = _model()
        self._update(
            key_id,
            [
                m.cooldown_until.set(until),
                m.rate_limited.add(1),
                m.requests.add(1),
                m.last_error.set(message),
                m.updated_at.set(now),
            ],
        )
        logger.warning("flux key cooling key_id=%s seconds=%.1f", key_id, until - now)
        return until

    def report_disabled(self, key_id: str, reason: str, state: str = DISABLED) -> None:
        """Take a key out until an operator resets it (``disabled``: an auth failure
        confirmed for this key; ``out_of_credits``: its 402), shared at once. ``reason``
        (already redacted by the caller) is truncated to :data:`MAX_ERROR_CHARS`.

        Raises:
            ValueError: ``state`` is not a terminal state.
        """
        if state not in TERMINAL_STATES:
            raise ValueError(f"state must be one of {sorted(TERMINAL_STATES)}")
        if key_id not in self._health:
            return
        reason = _short(reason)
        now = self._clock()
        with self._lock:
            h = self._health[key_id]
            h.state, h.reason, h.last_error, h.updated_at = state, reason, reason, now
            h.requests += 1
            h.errors += 1
        self._write_terminal(key_id, state, reason, now, count=True)
        logger.error("flux key %s key_id=%s reason=%s", state, key_id, reason)

    def _write_terminal(self, kid: str, state: str, reason: str, now: float, *, count: bool = False) -> None:
        """Write a terminal state; remember it in ``_unsynced`` until a write succeeds."""
        m = _model()
        actions = [m.state.set(state), m.reason.set(reason), m.last_error.set(reason), m.updated_at.set(now)]
        if count:
            actions += [m.requests.add(1), m.errors.add(1)]
        ok = self._update(kid, actions)
        with self._lock:
            if ok:
                self._unsynced.pop(kid, None)
            else:
                self._unsynced[kid] = state

    def report_error(self, key_id: str, message: str) -> None:
        """Count a transient failure (5xx, timeout, connection error, corrupt image):
        ``errors`` +1 and ``last_error``, written at once. No state change."""
        if key_id not in self._health:
            return
        message = _short(message)
        now = self._clock()
        with self._lock:
            h = self._health[key_id]
            h.errors += 1
            h.requests += 1
            h.last_error, h.updated_at = message, now
        m = _model()
        self._update(
            key_id,
            [m.errors.add(1), m.requests.add(1), m.last_error.set(message), m.updated_at.set(now)],
        )
        logger.warning("flux upstream error key_id=%s error=%s", key_id, message)

    def reset_key(self, key_id: str) -> None:
        """Operator action: make a key ``healthy`` again (clears cooldown and reason).

        Raises:
            KeyError: unknown ``key_id``.
        """
        if key_id not in self._health:
            raise KeyError(key_id)
        now = self._clock()
        with self._lock:
            h = self._health[key_id]
            h.state, h.cooldown_until, h.reason, h.updated_at = HEALTHY, 0.0, None, now
            self._unsynced.pop(key_id, None)
        m = _model()
        self._update(key_id, [m.state.set(HEALTHY), m.cooldown_until.set(0), m.reason.remove(), m.updated_at.set(now)])
        logger.info("flux key reset key_id=%s", key_id)

    # -- counters -------------------------------------------------------------------------------

    def _maybe_flush(self) -> None:
        if (self._pending or self._pacer.dirty) and self._clock() - self._last_flush >= self._flush_interval_s:
            self.flush()

    def flush(self) -> None:
        """Write the locally counted successes, and the pacing of keys that ran dry: one
        UpdateItem per key with either.

        Counts that fail to write are kept for the next flush. Counts still pending
        when a Lambda instance is recycled are lost (they are statistics only).
        """
        with self._lock:
            pending, self._pending = self._pending, {}
            dirty, self._pacer.dirty = self._pacer.dirty, set()
            paces = {kid: self._pacer.export(kid) for kid in dirty}
            self._last_flush = self._clock()
        now = self._clock()
        m = _model()
        for kid in sorted(set(pending) | set(paces)):
            requests, successes = pending.get(kid, (0, 0))
            actions = [m.updated_at.set(now)]
            if requests or successes:
                actions += [m.requests.add(requests), m.successes.add(successes)]
            if kid in paces:
                actions.append(m.pace.set(paces[kid]))
            ok = self._update(kid, actions)
            with self._lock:
                h = self._health[kid]
                if ok:
                    h.requests += requests
                    h.successes += successes
                elif requests or successes:
                    counts = self._pending.setdefault(kid, [0, 0])
                    counts[0] += requests
                    counts[1] += successes


_pool: KeyPool | None = None
_pool_lock = threading.Lock()


def get_key_pool() -> KeyPool:
    """The process-wide pool built from :func:`get_settings` (created on first use).

    Raises:
        NoUsableKeysError: the keys secret cannot be read (not cached; retried next call).
    """
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = KeyPool(get_settings())
    return _pool


def reset_key_pool() -> None:
    """Forget the process-wide pool and the cached secret (tests)."""
    global _pool
    with _pool_lock:
        _pool = None
    clear_secret_cache()
