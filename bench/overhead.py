"""The API's own overhead on ``POST /v1/images``: total latency minus the time spent in Flux.

Calls go over HTTP to the dev stack's API. The route reports its Flux time in the standard
``Server-Timing`` header (``flux;dur=<ms>``); overhead = client-observed latency − that.
It covers auth, validation, quota and rate-limit writes, Pillow processing, S3 uploads,
the DynamoDB write and presigning.

The route also reports its AWS calls in ``Server-Timing`` (``aws;desc="7 calls: s3.PutObject=2
..."``, counted by the SDK clients): per image, of each kind. The bytes stored per image are
read back from the responses (the original's ``bytes``) and the thumbnails' presigned URLs.
:func:`pillow_costs` times the strip-and-thumbnail step alone, in this process.
"""

from __future__ import annotations

import re
import statistics
import time
from collections import Counter
from collections.abc import Callable

import requests

from devstack.prompts import first


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def aws_calls(server_timing: str) -> Counter[str]:
    """The ``aws`` metric of a ``Server-Timing`` header: ``Counter`` of ``"service.Operation"``."""
    match = re.search(r'aws;desc="[0-9]+ calls:?([^"]*)"', server_timing)
    found: Counter[str] = Counter()
    for part in match.group(1).split() if match else []:
        name, _, count = part.partition("=")
        found[name] = int(count)
    return found


def pillow_costs(samples: int = 15) -> dict[str, float]:
    """Median CPU milliseconds of :func:`chalicelib.storage.imaging.process` (strip metadata,
    WebP thumbnail) on the Flux emulator's JPEG and PNG at 512 and 1024 pixels square."""
    from chalicelib.storage import imaging
    from devstack.flux_emulator import render_image

    result = {}
    for fmt in ("jpeg", "png"):
        for side in (512, 1024):
            data = render_image("a red fox in the snow", width=side, height=side, seed=1, output_format=fmt)
            cpu = []
            for _ in range(samples):
                started = time.process_time()
                imaging.process(data)
                cpu.append((time.process_time() - started) * 1000)
            result[f"{fmt}_{side}_cpu_ms"] = round(statistics.median(cpu), 1)
    return result


def run(
    api_url: str, mint_token: Callable[[str], str], calls: int = 200, progress: Callable[[], None] | None = None
) -> dict:
    """p50/p99 in milliseconds of total, Flux and overhead time over ``calls`` requests."""
    session = requests.Session()
    prompts = first(calls)
    totals, flux, overhead = [], [], []
    per_request: list[Counter[str]] = []
    originals: list[int] = []
    thumbs: list[str] = []
    token, token_at = mint_token("bench-overhead"), time.monotonic()
    for i in range(calls):
        if time.monotonic() - token_at > 40:
            token, token_at = mint_token("bench-overhead"), time.monotonic()
        started = time.perf_counter()
        reply = session.post(
            api_url + "/v1/images",
            json={"prompt": prompts[i % len(prompts)], "width": 512, "height": 512},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        total = (time.perf_counter() - started) * 1000
        if reply.status_code != 201:
            raise RuntimeError(f"POST /v1/images answered {reply.status_code}: {reply.text[:200]}")
        match = re.search(r"flux;dur=([0-9.]+)", reply.headers.get("Server-Timing", ""))
        flux_ms = float(match.group(1)) if match else 0.0
        per_request.append(aws_calls(reply.headers.get("Server-Timing", "")))
        image = reply.json()["images"][0]
        originals.append(int(image["bytes"]))
        if len(thumbs) < 20:
            thumbs.append(image["thumbnail_url"])
        totals.append(total)
        flux.append(flux_ms)
        overhead.append(total - flux_ms)
        if progress:
            progress()
    kinds = sorted({k for c in per_request for k in c})
    thumb_bytes = [len(session.get(url, timeout=30).content) for url in thumbs]
    return {
        "calls": len(totals),
        "aws_calls_per_image": statistics.median(sum(c.values()) for c in per_request),
        "aws_calls_per_image_mean": round(statistics.mean(sum(c.values()) for c in per_request), 3),
        "aws_calls_by_kind": {k: round(statistics.mean(c.get(k, 0) for c in per_request), 3) for k in kinds},
        "original_bytes": round(statistics.median(originals)),
        "thumbnail_bytes": round(statistics.median(thumb_bytes)) if thumb_bytes else None,
        "width": 512,
        "height": 512,
        "total_p50_ms": round(statistics.median(totals), 1),
        "total_p99_ms": round(percentile(totals, 99), 1),
        "flux_p50_ms": round(statistics.median(flux), 1),
        "overhead_p50_ms": round(statistics.median(overhead), 1),
        "overhead_p99_ms": round(percentile(overhead, 99), 1),
    }
