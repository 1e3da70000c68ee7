"""The API's own overhead on ``POST /v1/images``: total latency minus the time spent in Flux.

Calls go over HTTP to the dev stack's API. The route reports its Flux time in the standard
``Server-Timing`` header (``flux;dur=<ms>``); overhead = client-observed latency − that.
It covers auth, validation, quota and rate-limit writes, Pillow processing, S3 uploads,
the DynamoDB write and presigning.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable

import requests

from devstack.prompts import first


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def run(api_url: str, mint_token: Callable[[str], str], calls: int = 200,
        progress: Callable[[], None] | None = None) -> dict:
    """p50/p99 in milliseconds of total, Flux and overhead time over ``calls`` requests."""
    session = requests.Session()
    prompts = first(calls)
    totals, flux, overhead = [], [], []
    token, token_at = mint_token("bench-overhead"), time.monotonic()
    for i in range(calls):
        if time.monotonic() - token_at > 40:
            token, token_at = mint_token("bench-overhead"), time.monotonic()
        started = time.perf_counter()
        reply = session.post(api_url + "/v1/images", json={"prompt": prompts[i % len(prompts)],
                                                            "width": 512, "height": 512},
                             headers={"Authorization": f"Bearer {token}"}, timeout=60)
        total = (time.perf_counter() - started) * 1000
        if reply.status_code != 201:
            raise RuntimeError(f"POST /v1/images answered {reply.status_code}: {reply.text[:200]}")
        match = re.search(r"flux;dur=([0-9.]+)", reply.headers.get("Server-Timing", ""))
        flux_ms = float(match.group(1)) if match else 0.0
        totals.append(total)
        flux.append(flux_ms)
        overhead.append(total - flux_ms)
        if progress:
            progress()
    return {
        "calls": calls,
        "total_p50_ms": round(statistics.median(totals), 1),
        "total_p99_ms": round(percentile(totals, 99), 1),
        "flux_p50_ms": round(statistics.median(flux), 1),
        "overhead_p50_ms": round(statistics.median(overhead), 1),
        "overhead_p99_ms": round(percentile(overhead, 99), 1),
    }
