"""The pacer alone against the Flux emulator's sliding window: no pipeline, no CPU, as many
workers as it takes. Shows what the pacing rule itself reaches of the rate-limit bound, apart
from the machine (``make bench`` measures the whole stack).

Each key's sends go when :class:`~chalicelib.flux.pacing.Pacer` gives them a slot; the
emulator's own window (``devstack.flux_emulator._SlidingWindow``, header formatting included)
answers after ``latency`` seconds; a 429 cools the key for its ``Retry-After`` and the image is
sent again. Virtual time: a 500-image run takes milliseconds.

Usage: ``python -m bench.pacing_sim`` (prints the bound ratio and 429s per time scale and latency).
"""

from __future__ import annotations

import heapq

from chalicelib.flux.pacing import Pacer, RateInfo
from devstack.flux_emulator import _fmt_reset, _fmt_seconds, _SlidingWindow

MODEL = "m"


def simulate(
    n: int = 500, rate: int = 60, scale: float = 1.0, latency: float = 0.3, keys: int = 4, tighten: int = 5
) -> dict[str, float]:
    """One job of ``n`` images on ``keys`` keys of ``rate`` images per emulated minute.

    Returns:
        ``{"bound_ratio", "share_429", "requests"}`` (bound: ``n / (keys * rate)`` minutes).
    """
    window_s = 60.0 / scale
    emulator, pacer = _SlidingWindow(), Pacer()
    names = [f"k{i}" for i in range(keys)]
    cooling = dict.fromkeys(names, 0.0)
    answers: list[tuple[float, str, bool, dict[str, str]]] = []
    now = finish = 0.0
    pending, done, sent, rejected = n, 0, 0, 0
    while done < n:
        key = min(names, key=lambda k: max(cooling[k], pacer.slot(k, MODEL, now)))
        slot = max(cooling[key], pacer.slot(key, MODEL, now))
        if answers and (answers[0][0] <= slot or pending == 0):
            at, kid, ok, headers = heapq.heappop(answers)
            now = max(now, at)
            pacer.observe(kid, MODEL, RateInfo.from_headers(headers), at)
            if ok:
                done, finish = done + 1, at
            else:
                pending += 1
                cooling[kid] = at + float(headers["Retry-After"])
            continue
        now = slot
        pacer.book(key, MODEL, slot)
        pending, sent = pending - 1, sent + 1
        arrive = slot + latency  # the emulator waits its latency, then takes a unit
        limit = emulator.limit_for(key, rate, 0.5, arrive)
        ok, remaining, retry_after = emulator.acquire(key, 1, limit, window_s, arrive)
        _, reset = emulator.peek(key, limit, window_s, arrive)
        headers = {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(remaining),
            "x-ratelimit-reset": _fmt_reset(reset, scale),
        }
        if not ok:
            rejected += 1
            emulator.rejected(key, window_s, tighten, arrive)
            headers["Retry-After"] = _fmt_seconds(retry_after, scale)
        heapq.heappush(answers, (arrive + 0.01, key, ok, headers))
    bound = n / (keys * rate) * 60 / scale
    return {"bound_ratio": round(bound / finish, 3), "share_429": round(rejected / sent, 4), "requests": sent}


if __name__ == "__main__":
    for scale in (1.0, 6.0):
        for latency in (0.05, 0.3, 1.0):
            print(f"time x{scale:g}, latency {latency} s:", simulate(scale=scale, latency=latency))
