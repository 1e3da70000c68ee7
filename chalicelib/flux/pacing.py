"""Pacing: when each key may next send a request to a model, so work waits before sending
rather than after a 429.

One concern: turn the upstream's rate-limit answers into send times. Together's limits are
dynamic, per organization and model (https://docs.together.ai/docs/rate-limits); every answer
carries ``x-ratelimit-limit``, ``x-ratelimit-remaining`` and ``x-ratelimit-reset`` (seconds until
the rate limit frees up, "the suggested retry interval"). A 429 means *we* are over our rate;
a 503 means the platform has no capacity (not our rate, not the key).

The rule, per (key, model), after each answer that has the headers:

* the sends booked on the key and not answered yet are taken off ``remaining`` (the answer's
  window did not count them, and each will take a unit);
* ``remaining > 0``: ``remaining`` units now and the next one at ``reset``: the next send is
  ``reset / remaining`` after the previous one (a ``reset`` written in whole seconds counts as
  one second less: it is rounded, so the unit may free that much sooner);
* ``remaining <= 0``: nothing is sent before ``now + reset`` plus one spacing per send in flight
  beyond the window, and the spacing becomes ``reset`` (a saturated window's turn-over);
* never faster than the sustained rate, ``limit`` units per window, the window being at least
  the longest ``reset`` seen in the last :data:`WINDOW_MEMORY` windows (so a shorter window or a
  raised limit is picked up): in a full sliding window ``reset`` only says when the *oldest*
  unit frees, so a short one alone would pace a burst. An answer that leaves ``limit - 1``
  units was alone in its window, so its ``reset`` is the window's length: it replaces the
  remembered one at once (a window that shrank is picked up on the first send into it);
* no headers: ``Retry-After`` of a 429 is the fallback (the key's cooldown, see the key pool).

Every spacing and saturated wait gets :data:`PACE_MARGIN` on top, and :data:`PACE_JITTER_S`
divided by the limit (:func:`_padded`).
Before the first answer for a model, one send
probes the key (its slot is ``math.inf`` to everyone else until the answer comes), and a key
whose answers carry no headers keeps :data:`FIRST_SEND_GAP_S` between sends: a cold start must
not burst (Together throttles spikes above recent usage, https://docs.together.ai/docs/rate-limits).
A send books its slot at once (``next_at`` moves on by one spacing), so the threads of one
process queue up behind each other instead of sending together. Other instances see each
other through the answers' headers (the window counts everybody's requests) and, cheaply,
through the key-health table: when a key runs dry its ``next_at`` is written with the success
counters and read with the periodic snapshot.

503 backs off the whole platform for that model (every key): ``Retry-After`` when given, else
full-jitter exponential back-off from :data:`BUSY_BASE_S` to :data:`BUSY_CAP_S` (AWS
Architecture Blog, "Exponential Backoff and Jitter"); a success ends the streak.

Not thread-safe: :class:`~chalicelib.flux.keypool.KeyPool` calls it under its lock.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PACE_MARGIN = 0.005  # fraction added to every spacing (clock drift between us and upstream)
#: Seconds of arrival jitter a full window must absorb (a send that reaches upstream late moves
#: its unit's expiry, and the window's count, by as much): spread over the window's ``limit``
#: sends, so a small limit (2 per 3 s) gets a few percent more spacing and 60 a minute 0.2 %.
PACE_JITTER_S = 0.1
# Seconds a send waits for its slot in process; later slots are deferred (the batch worker
# moves the message's visibility). Short, because a worker invocation ends with its slowest
# record: long in-process waits hold whole batches (measured with `make bench`: 10 s halved
# the throughput at time scale 1 against 2 s).
MAX_PACE_WAIT_S = 2.0
FIRST_SEND_GAP_S = 0.5  # seconds between sends on a (key, model) no answer has paced yet
# Seconds a booked send counts as in flight without an answer (a timeout, a lost connection):
# longer than any request's deadline, so it is forgotten only when no answer can still come.
IN_FLIGHT_TTL_S = 60.0
#: Windows (of the longest reset seen) after which that reset is forgotten unless seen again.
WINDOW_MEMORY = 3.0
MAX_PACE_S = 120.0  # seconds; a longer reset (an odd answer) is capped: rate windows are a minute or less
BUSY_BASE_S = 0.5  # seconds; first back-off after a 503 without Retry-After
BUSY_CAP_S = 8.0  # seconds; longest back-off after 503s without Retry-After


@dataclass(frozen=True)
class RateInfo:
    """The rate-limit headers of one answer; None where absent or unreadable.

    Attributes:
        limit: ``x-ratelimit-limit`` (requests or images per window, as upstream counts).
        remaining: ``x-ratelimit-remaining`` (>= 0).
        reset_s: ``x-ratelimit-reset`` in seconds (>= 0, at most :data:`MAX_PACE_S`).
        reset_rounded: the reset was written in whole seconds (``"2"``, not ``"2.00"``), so
            it is rounded and the unit may free up to a second sooner.
    """

    limit: int | None
    remaining: int | None
    reset_s: float | None
    reset_rounded: bool = False

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateInfo | None:
        """Parse the three headers (case-insensitive mapping, e.g. ``requests``' headers).

        Returns None when ``remaining`` or ``reset`` is missing or not a finite number.
        """
        remaining = _number(headers.get("x-ratelimit-remaining"))
        raw_reset = headers.get("x-ratelimit-reset")
        reset = _number(raw_reset)
        if remaining is None or reset is None:
            return None
        limit = _number(headers.get("x-ratelimit-limit"))
        return cls(
            limit=None if limit is None else int(limit),
            remaining=max(0, int(remaining)),
            reset_s=min(max(0.0, reset), MAX_PACE_S),
            reset_rounded=str(raw_reset).strip().isdigit(),
        )


def _padded(seconds: float, limit: int | None) -> float:
    """A wait derived from the headers with its safety room: :data:`PACE_MARGIN` of it, plus
    :data:`PACE_JITTER_S` spread over the window's ``limit`` units (none when unknown)."""
    return seconds * (1 + PACE_MARGIN) + (PACE_JITTER_S / limit if limit else 0.0)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


@dataclass
class Pace:
    """One (key, model): ``next_at`` (epoch s) is the earliest next send, ``interval`` (s) the
    spacing between sends; ``seen``: an answer (or another instance) has told us the rate.
    Until then sends are :data:`FIRST_SEND_GAP_S` apart, so a cold start does not burst."""

    next_at: float = 0.0
    interval: float = 0.0
    seen: bool = False
    window: float = 0.0  # seconds: the longest reset seen lately, a lower bound of the rate window's length
    window_at: float = 0.0  # epoch s: when an answer last showed a reset as long as ``window``
    booked: deque[float] = field(default_factory=deque)  # slots (epoch s) of sends not yet answered

    def answered(self, now: float) -> int:
        """One booked send was answered (the oldest: answers come back about in send order);
        forget sends older than :data:`IN_FLIGHT_TTL_S`. Returns the booked sends still
        unanswered (in flight, or waiting for their slot): the answer's headers did not count
        them, and each will take a unit of the window."""
        if self.booked:
            self.booked.popleft()
        while self.booked and self.booked[0] < now - IN_FLIGHT_TTL_S:
            self.booked.popleft()
        return len(self.booked)


class Pacer:
    """Send times per (key id, model) and the platform back-off per model."""

    def __init__(self) -> None:
        self._pace: dict[tuple[str, str], Pace] = {}
        self._busy_until: dict[str, float] = {}  # model -> epoch s
        self._busy_streak: dict[str, int] = {}  # model -> 503s in a row
        self.dirty: set[str] = set()  # key ids whose pacing is worth sharing
        self._defer_tail = 0.0  # epoch s: end of the virtual queue of deferred callers

    def slot(self, kid: str, model: str | None, now: float) -> float:
        """The earliest epoch second ``kid`` may send to ``model`` (``now`` or later;
        ``math.inf`` while the key's first send to ``model`` awaits its answer: nothing is
        known of its rate yet, so one send probes it and the others wait or take another key).

        ``model=None``: the earliest over the models this key has paced (any model will do).
        """
        if model is None:
            paces = [self._next(p) for (k, _), p in self._pace.items() if k == kid]
            busy = min(self._busy_until.values(), default=0.0)
            return max(now, min(paces, default=0.0), busy)
        pace = self._pace.get((kid, model))
        return max(now, self._next(pace) if pace else 0.0, self._busy_until.get(model, 0.0))

    @staticmethod
    def _next(pace: Pace) -> float:
        return math.inf if pace.booked and not pace.seen else pace.next_at

    def observe_no_rate(self, kid: str, model: str, now: float) -> None:
        """An answer without rate-limit headers: the send is no longer in flight; a key never
        paced keeps :data:`FIRST_SEND_GAP_S` between its sends."""
        pace = self._pace.setdefault((kid, model), Pace())
        pace.answered(now)
        if not pace.seen:
            pace.interval = FIRST_SEND_GAP_S
            pace.seen = True

    def unanswered(self, kid: str, model: str) -> None:
        """A booked send got no answer (timeout, connection error): it is no longer in flight."""
        pace = self._pace.get((kid, model))
        if pace is not None and pace.booked:
            pace.booked.popleft()

    def book(self, kid: str, model: str, slot: float) -> None:
        """Take ``slot`` for one send: the next one is a spacing later."""
        pace = self._pace.setdefault((kid, model), Pace())
        pace.next_at = max(pace.next_at, slot + (pace.interval if pace.seen else FIRST_SEND_GAP_S))
        pace.booked.append(slot)

    def observe(self, kid: str, model: str, info: RateInfo, now: float) -> None:
        """Adjust ``kid``'s pace for ``model`` to an answer's rate-limit headers (see the module
        docstring; ``remaining`` is first lowered by the sends still in flight)."""
        pace = self._pace.setdefault((kid, model), Pace())
        in_flight = pace.answered(now)
        reset = info.reset_s or 0.0
        remaining = (info.remaining or 0) - in_flight
        # ``remaining`` units now, the next one at ``reset``: send number remaining + 1 must not
        # come sooner. remaining < 0: the next -remaining units to free are taken by sends in flight.
        # A whole-second reset is rounded (as Retry-After is): the oldest unit may free up to a
        # second sooner, so spreading the units left over the whole of it would pace a nearly
        # full window a second slower at every rounding; the sustained rate below still holds.
        soonest = reset - 1.0 if info.reset_rounded and reset >= 1.0 else reset
        spacing = soonest / remaining if remaining > 0 else reset
        # A short reset only says when the *oldest* unit frees, not how fast the next ones do:
        # never faster than the sustained rate, limit units per window (at least the longest
        # reset seen), else a sliding window answers bursts with 429s.
        # an answer that left limit - 1 units was the window's only send: its reset is the window's
        # whole length, a measurement to take even when it is shorter than the one remembered
        alone = bool(info.limit) and info.remaining == info.limit - 1 and reset > 0
        if alone or reset >= pace.window or now - pace.window_at > WINDOW_MEMORY * pace.window:
            # the longest reset stands for WINDOW_MEMORY windows: a saturated sliding window shows
            # resets near its length about once a window, and a limit whose window shrank (or that
            # Together raised) is not held to the old pace for ever
            pace.window, pace.window_at = reset, now
        if info.limit:
            spacing = max(spacing, pace.window / info.limit)
        pace.interval = _padded(spacing, info.limit)
        pace.seen = True
        if remaining <= 0 and reset > 0:
            until = now + _padded(reset + -remaining * spacing, info.limit)
            if until > pace.next_at:
                pace.next_at = until
                self.dirty.add(kid)

    def spacing(self, kids: list[str]) -> float:
        """Seconds between sends over all of ``kids`` together (0 if none is paced)."""
        rates = [1.0 / p.interval for (k, _), p in self._pace.items() if k in kids and p.interval > 0]
        return 1.0 / sum(rates) if rates else 0.0

    def defer(self, kids: list[str], slot: float, now: float) -> float:
        """When to come back for a caller that will not wait for ``slot``: after the callers
        sent away before it, one combined spacing apart (a virtual queue, nothing booked),
        so deferred work does not return all at once."""
        tail = max(slot, self._defer_tail if self._defer_tail > now else 0.0)
        self._defer_tail = tail + self.spacing(kids)
        return tail

    def busy(self, model: str, retry_after_s: float | None, now: float) -> float:
        """Back the platform off for ``model`` after a 503; returns the epoch s it ends."""
        streak = self._busy_streak.get(model, 0) + 1
        self._busy_streak[model] = streak
        if retry_after_s is None:
            wait = random.uniform(BUSY_BASE_S / 2, min(BUSY_CAP_S, BUSY_BASE_S * 2 ** (streak - 1)))
        else:
            wait = min(max(0.0, retry_after_s), MAX_PACE_S)
        until = max(self._busy_until.get(model, 0.0), now + wait)
        self._busy_until[model] = until
        return until

    def calm(self, model: str) -> None:
        """A success for ``model``: the next 503 starts a new back-off streak."""
        self._busy_streak.pop(model, None)

    def busy_until(self, model: str) -> float:
        """Epoch s when the platform back-off for ``model`` ends (0 if none)."""
        return self._busy_until.get(model, 0.0)

    def export(self, kid: str) -> dict[str, dict[str, float]]:
        """``kid``'s paces to share: ``{model: {"next_at": epoch s, "interval": s}}``."""
        return {
            model: {"next_at": round(p.next_at, 3), "interval": round(p.interval, 4)}
            for (k, model), p in self._pace.items()
            if k == kid
        }

    def merge(self, kid: str, shared: Mapping[str, Any] | None) -> None:
        """Take what other instances shared for ``kid`` (see :meth:`export`): a later
        ``next_at`` wins; their spacing is used where this process has none."""
        for model, entry in (shared or {}).items():
            if not isinstance(entry, Mapping):
                continue
            next_at = _number(entry.get("next_at"))
            interval = _number(entry.get("interval"))
            pace = self._pace.setdefault((kid, str(model)), Pace())
            if next_at is not None and next_at > pace.next_at:
                pace.next_at = next_at
            if interval is not None and not pace.seen:
                pace.interval = min(max(0.0, interval), MAX_PACE_S)
                pace.seen = True
