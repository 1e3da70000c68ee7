"""Batch throughput against the keys' combined rate limit, and a naive client beside it.

Setup: the Flux emulator accepts 4 keys, each limited to ``R`` images per minute, with a time
scale so a minute of limits passes in ``60 / scale`` real seconds and a fixed generation latency.
The rate-limit bound for N images is ``N / (4 R)`` emulated minutes: no client can finish sooner.

1. PromptCanvas: one ``POST /v1/jobs`` of the first N PartiPrompts; poll until it ends. Run
   once per time scale in ``BENCH_TIME_SCALES`` (default ``1,6``), with the emulator's dynamic
   limit on (a key that meets ``BENCH_TIGHTEN_AFTER`` 429s in a window gets half its limit
   until a quiet window), so bursts cost throughput as they do upstream.
   Reported: wall time to the job's end, its ratio to the bound (bound / wall; 1.0 = the
   physical limit), the time its last image was stored and that ratio (apart when the job's
   counters drifted and it ended only when the stuck-work sweep recounted them), images lost
   (items neither succeeded nor failed, or succeeded without an image) and duplicated
   (more than one image for an item, or objects without metadata), upstream 429s
   and their share of upstream requests (goals: ratio >= 0.95 at scale 1 and >= 0.90 at
   scale 6, 429 share <= 5%), and what limited the run (:mod:`bench.cpu`): CPU seconds of the
   stack's processes per wall second, CPU seconds per image, how busy the whole machine was,
   and the bound ratio the stack's CPU need would allow on all of the machine's cores.
2. A typical single-process client: a sequential loop over the prompts, round-robin over the
   keys, a fixed delay between calls sized to the combined limit (60 / (4 R) emulated seconds),
   retrying a 429 after that delay. It runs on the first ``BENCH_NAIVE_N`` prompts; its
   throughput is compared with ours.
3. The ZIP of the job's images: peak memory of the archive builder (tracemalloc, in a fresh
   process) and the ZIP's size.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import requests

from bench.cpu import CpuMeter
from devstack.prompts import first

ROOT = Path(__file__).resolve().parent.parent


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _share(value: float | None) -> str:
    return "?" if value is None else f"{value:.0%}"


def _admin(flux_base: str) -> str:
    return flux_base.rstrip("/").removesuffix("/v1")


def run_job(info: dict, mint, n: int, progress, task, user: str = "bench-batch") -> dict[str, Any]:
    api = info["api_url"]

    def headers() -> dict[str, str]:
        return {"Authorization": f"Bearer {mint(user)}"}

    prompts = first(n)
    # the API's own cold start is measured apart (bench/coldstart.py): warm it as the overhead part does
    requests.get(api + "/v1/jobs", headers=headers(), timeout=60).raise_for_status()
    started, started_epoch = time.monotonic(), time.time()
    reply = requests.post(
        api + "/v1/jobs",
        json={"prompts": prompts, "collection": "bench", "width": 512, "height": 512},
        headers=headers(),
        timeout=120,
    )
    if reply.status_code != 202:
        raise RuntimeError(f"POST /v1/jobs answered {reply.status_code}: {reply.text[:300]}")
    job_id = reply.json()["job_id"]
    job: dict[str, Any] = {}
    while True:
        job = requests.get(f"{api}/v1/jobs/{job_id}", headers=headers(), timeout=30).json()
        done = job["counts"]["succeeded"] + job["counts"]["failed"]
        progress.update(task, completed=done)
        if job["status"] in ("completed", "completed_with_errors", "failed", "cancelled"):
            break
        time.sleep(0.25)
    wall = time.monotonic() - started
    return {"job_id": job_id, "user": user, "wall_s": wall, "started_epoch": started_epoch, "job": job}


def audit(info: dict, user: str, job_id: str) -> dict[str, Any]:
    """Count lost and duplicated images straight from DynamoDB and S3; ``last_stored_epoch``:
    when the job's last image item was written (epoch seconds, None without images)."""
    from chalicelib.db import ImageModel
    from chalicelib.db.jobs import JobItemModel
    from chalicelib.settings import get_settings

    items = list(JobItemModel.query(job_id))
    images = [i for i in ImageModel.query(user) if i.job_id == job_id]
    per_item = Counter(i.item_id for i in images)
    succeeded = [it for it in items if it.status == "succeeded"]
    unfinished = [it for it in items if it.status not in ("succeeded", "failed")]
    lost = len(unfinished) + sum(1 for it in succeeded if per_item.get(it.item_id, 0) == 0)
    duplicated = sum(count - 1 for count in per_item.values() if count > 1)
    s3 = boto3.client("s3")
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=get_settings().images_bucket, Prefix=f"users/{user}/images/"
    ):
        keys.update(o["Key"] for o in page.get("Contents", []))
    known = {i.s3_key for i in images} | {i.thumb_key for i in images}
    orphans = len(keys - known)
    return {
        "items": len(items),
        "succeeded": len(succeeded),
        "failed": sum(1 for it in items if it.status == "failed"),
        "lost": lost,
        "duplicated": duplicated + orphans,
        "last_stored_epoch": max((i.created_at.timestamp() for i in images), default=None),
    }


def naive_client(flux_base: str, keys: list[str], n: int, rate: int, scale: float, progress, task) -> dict:
    """The sequential loop a typical script would write."""
    delay = 60.0 / (len(keys) * rate) / scale  # real seconds between calls
    session = requests.Session()
    made, rate_limited, started = 0, 0, time.monotonic()
    for i, prompt in enumerate(first(n)):
        key = keys[i % len(keys)]
        while True:
            reply = session.post(
                flux_base.rstrip("/") + "/images/generations",
                timeout=60,
                headers={"Authorization": f"Bearer {key}"},
                json={
                    "model": "black-forest-labs/FLUX.1-schnell",
                    "prompt": prompt,
                    "width": 512,
                    "height": 512,
                    "steps": 4,
                    "response_format": "base64",
                },
            )
            time.sleep(delay)
            if reply.status_code == 429:
                rate_limited += 1
                continue
            break
        made += reply.status_code == 200
        progress.update(task, completed=i + 1)
    wall = time.monotonic() - started
    return {
        "images": made,
        "wall_s": round(wall, 2),
        "images_per_s": round(made / wall, 3),
        "rate_limited": rate_limited,
        "delay_s": round(delay, 4),
    }


ZIP_PROBE = """
import json, sys, time, tracemalloc
from chalicelib.db import ImageModel
from chalicelib.services import archives
from chalicelib.settings import get_settings
user, job_id = sys.argv[1], sys.argv[2]
images = sorted((i for i in ImageModel.query(user) if i.job_id == job_id), key=lambda i: i.image_id)
settings = get_settings()
tracemalloc.start()
started = time.perf_counter()
sink = archives.MultipartZipSink(settings.images_bucket, f"archives/{user}/bench.zip", settings.archive_part_bytes)
count = archives.write_zip(sink, images)
size = sink.complete()
current, peak = tracemalloc.get_traced_memory()
print(json.dumps({"peak_bytes": peak, "images": count, "zip_bytes": size,
                  "seconds": round(time.perf_counter() - started, 2)}))
"""


def zip_peak_memory(user: str, job_id: str, env: dict[str, str]) -> dict[str, Any]:
    """Build the job's ZIP with the production builder in a fresh process; its traced peak memory."""
    proc = subprocess.run(
        [sys.executable, "-c", ZIP_PROBE, user, job_id], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    import json

    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_batch(
    info: dict,
    mint,
    progress,
    n: int,
    rate: int,
    scale: float,
    latency_ms: int,
    tighten: int,
    pids: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One job of ``n`` images at time scale ``scale``; its figures (see the module docstring)."""
    admin = _admin(info["flux_base_url"])
    keys = requests.get(admin + "/admin/config", timeout=5).json()["keys"]
    assert len(keys) == 4, keys
    requests.post(
        admin + "/admin/reset",
        json={
            "rate_limit_per_minute": rate,
            "time_scale": scale,
            "latency_ms": latency_ms,
            "tighten_after_429s": tighten,
        },
        timeout=5,
    ).raise_for_status()
    bound_s = n / (len(keys) * rate) * 60 / scale
    task = progress.add_task(f"batch job of {n} PartiPrompts (time ×{scale:g})", total=n)
    meter = CpuMeter(pids or {})
    meter.start()
    ours = run_job(info, mint, n, progress, task, user=f"bench-batch-x{scale:g}")
    cpu = meter.stop(n, n / bound_s)
    stats = requests.get(admin + "/admin/stats", timeout=5).json()
    counts: dict[str, Any] = {}
    for _ in range(3):  # moto on a loaded machine may time out a read
        try:
            counts = audit(info, ours["user"], ours["job_id"])
            break
        except Exception as exc:  # noqa: BLE001 - retried, then reported in the results
            counts = {
                "succeeded": ours["job"]["counts"]["succeeded"],
                "failed": ours["job"]["counts"]["failed"],
                "lost": None,
                "duplicated": None,
                "audit_error": f"{type(exc).__name__}: {str(exc)[:120]}",
            }
            time.sleep(5)
    rate_limited = stats["by_status"].get("429", 0)
    # the job ends when its counters say so; a drifted counter waits for the sweep to recount
    last = counts.get("last_stored_epoch")
    stored_s = round(last - ours["started_epoch"], 2) if last else None
    return {
        "images": n,
        "keys": len(keys),
        "rate_per_key_per_min": rate,
        "time_scale": scale,
        "emulator_latency_ms": latency_ms,
        "tighten_after_429s": tighten,
        "bound_s": round(bound_s, 2),
        "wall_s": round(ours["wall_s"], 2),
        "bound_ratio": round(bound_s / ours["wall_s"], 3),
        "all_stored_s": stored_s,
        "stored_bound_ratio": round(bound_s / stored_s, 3) if stored_s else None,
        "images_per_s": round(counts["succeeded"] / ours["wall_s"], 3),
        "succeeded": counts["succeeded"],
        "failed": counts["failed"],
        "lost": counts["lost"],
        "duplicated": counts["duplicated"],
        "upstream_429s": rate_limited,
        "upstream_503s": stats["by_status"].get("503", 0),
        "upstream_requests": stats["requests"],
        "share_429": round(rate_limited / stats["requests"], 4) if stats["requests"] else 0.0,
        "status": ours["job"]["status"],
        "audit_error": counts.get("audit_error"),
        "cpu": cpu,
        "job_id": ours["job_id"],
        "user": ours["user"],
    }


def run(info: dict, mint, progress, console, pids: dict[str, int] | None = None) -> dict[str, Any]:
    """The batch part: one job per time scale, the naive client, the ZIP (see the module
    docstring). ``pids``: the stack's other processes (``moto``, ``api``) for the CPU figures."""
    n = _env_int("BENCH_BATCH_N", 500)
    rate = _env_int("BENCH_RATE_PER_MIN", 60)  # R: images per minute per key
    scales = [float(x) for x in os.environ.get("BENCH_TIME_SCALES", "1,6").split(",") if x.strip()]
    latency_ms = _env_int("BENCH_LATENCY_MS", 300)
    tighten = _env_int("BENCH_TIGHTEN_AFTER", 5)
    naive_n = _env_int("BENCH_NAIVE_N", 40)
    admin = _admin(info["flux_base_url"])
    runs = [run_batch(info, mint, progress, n, rate, scale, latency_ms, tighten, pids) for scale in scales]
    first_run = runs[0]
    keys = requests.get(admin + "/admin/config", timeout=5).json()["keys"]

    requests.post(
        admin + "/admin/reset",
        json={"rate_limit_per_minute": rate, "time_scale": scales[0], "latency_ms": latency_ms},
        timeout=5,
    ).raise_for_status()
    task = progress.add_task(f"naive sequential client, {naive_n} prompts", total=naive_n)
    naive = naive_client(info["flux_base_url"], keys, naive_n, rate, scales[0], progress, task)

    task = progress.add_task("ZIP of the job's images", total=None)
    zip_result = zip_peak_memory(
        first_run["user"], first_run["job_id"], {**os.environ, "AWS_ENDPOINT_URL": info["aws_endpoint_url"]}
    )
    progress.update(task, total=1, completed=1)

    result = {
        "batch": first_run,
        "batch_runs": runs,
        "naive_client": {**naive, "prompts": naive_n},
        "speedup_vs_naive": (
            round(first_run["images_per_s"] / naive["images_per_s"], 2) if naive["images_per_s"] else None
        ),
        "zip": zip_result,
    }
    rows = []
    for b in runs:
        goal = 0.95 if b["time_scale"] <= 1 else 0.90
        rows += [
            (
                f"batch: {n} images, 4 keys × {rate}/min (time ×{b['time_scale']:g})",
                f"{b['wall_s']} s vs bound {b['bound_s']} s",
            ),
            (f"  ratio to the rate-limit bound (goal ≥ {goal})", f"{b['bound_ratio']}"),
            (
                "  last image stored after; its ratio (the job ends when its counters add up)",
                f"{b.get('all_stored_s')} s; {b.get('stored_bound_ratio')}",
            ),
            (
                "  upstream 429s (goal ≤ 5%)",
                f"{b['upstream_429s']} of {b['upstream_requests']} requests ({b['share_429']:.1%})",
            ),
            ("  succeeded / failed", f"{b['succeeded']} / {b['failed']}"),
            (
                "  CPU: stack cores (bench = emulator + workers) / machine busy / load",
                ", ".join(f"{k} {v}" for k, v in b["cpu"]["cores"].items())
                + f" / {_share(b['cpu']['machine_busy'])} of {b['cpu']['cpus']} / {b['cpu']['load_avg_1m']}",
            ),
            (
                "  CPU s per image; bound ratio the CPU need allows",
                f"{b['cpu']['cpu_s_per_image']} s; {b['cpu']['cpu_ceiling_ratio']}",
            ),
            ("  limited by", b["cpu"]["limit"]),
            ("  images lost / duplicated", f"{b['lost']} / {b['duplicated']}"),
        ]
    rows += [
        (f"naive sequential client ({naive_n} prompts)", f"{naive['images_per_s']} images/s"),
        ("  our speed-up over it (time ×1 run)", f"{result['speedup_vs_naive']}×"),
    ]
    if zip_result and "peak_bytes" in zip_result:
        peak_mib = zip_result["peak_bytes"] / 1048576
        zip_mib = zip_result.get("zip_bytes", 0) / 1048576
        rows.append(
            (
                f"ZIP of {zip_result.get('images', '?')} images: peak memory",
                f"{peak_mib:.1f} MiB (zip {zip_mib:.1f} MiB)",
            )
        )
    elif zip_result:
        rows.append(("ZIP peak memory", str(zip_result.get("error"))))
    result["table_rows"] = rows
    return result
