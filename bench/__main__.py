"""`make bench`: run every benchmark on a fresh local stack, print a table, write bench/results.json."""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import requests

RESULTS = Path(__file__).resolve().parent / "results.json"
PORT_VARS = ("PORT", "WEB_PORT", "FLUX_PORT", "IDP_PORT", "AWS_PORT")
SERVICE_VARS = (
    "AWS_ENDPOINT_URL",
    "TOGETHER_BASE_URL",
    "TOGETHER_API_KEYS",
    "CLERK_ISSUER",
    "CLERK_JWKS_URL",
    "CLERK_JWT_KEY",
)


def main() -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from bench import coldstart, overhead
    from devstack.stack import DevStack

    console = Console()
    only = os.environ.get("BENCH_ONLY", "").strip()  # "coldstart" | "overhead" | "batch": run just that part
    logging.basicConfig(level=logging.ERROR)  # the in-process pollers' warnings would break the live display
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
    env.update({k: "0" for k in PORT_VARS})
    env.update({"RATE_LIMIT_PER_MINUTE": "100000", "MONTHLY_IMAGE_QUOTA": "1000000"})
    os.environ.update({"RATE_LIMIT_PER_MINUTE": "100000", "MONTHLY_IMAGE_QUOTA": "1000000"})
    results: dict = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    stack = DevStack(env=env, state_dir=Path(__file__).resolve().parent.parent / ".local" / "bench")
    with console.status("starting the local stack…"):
        t0 = time.monotonic()
        info = stack.start()
        results["stack_ready_s"] = round(time.monotonic() - t0, 2)
    try:

        def mint(user: str) -> str:
            return requests.post(info["auth"]["token_url"], json={"user_id": user}, timeout=5).json()["token"]

        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as progress:
            if only in ("", "coldstart"):
                task = progress.add_task("cold start (fresh processes)", total=None)
                child_env = {**os.environ}
                os.environ.update({"AWS_ENDPOINT_URL": info["aws_endpoint_url"]})
                results["cold_start"] = coldstart.run(info, mint, n=10)
                os.environ.clear()
                os.environ.update(child_env)
                progress.update(task, total=1, completed=1)
            if only in ("", "overhead"):
                calls = int(os.environ.get("BENCH_OVERHEAD_CALLS", "200"))
                task = progress.add_task("POST /v1/images overhead", total=calls)
                results["api_overhead"] = overhead.run(
                    info["api_url"], mint, calls, progress=lambda: progress.advance(task)
                )
            try:
                from bench import batch
            except ImportError:
                batch = None
            if batch is not None and only in ("", "batch"):
                pids = {name: proc.pid for name, proc in (("moto", stack.moto_proc), ("api", stack.api_proc)) if proc}
                results.update(batch.run(info, mint, progress, console, pids))
    finally:
        stack.stop()

    from bench import package

    if package.DEFAULT_ZIP.exists():  # cheap only when `make package` has built it
        with console.status("deployment.zip: size and cold start, bundled vs runtime boto3…"):
            results["package"] = package.run(n=5)
    table = Table(title="PromptCanvas benchmarks")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("stack ready", f"{results['stack_ready_s']} s")
    cold = results.get("cold_start")
    if cold:
        table.add_row("import boto3 (median of 10)", f"{cold['import_boto3_ms']} ms")
        table.add_row(
            "import app (median of 10)", f"{cold['import_app_ms']} ms ({cold['import_app_over_boto3']}× boto3)"
        )
        table.add_row("cold time to first response", f"{cold['first_response_ms']} ms")
    ov = results.get("api_overhead")
    if ov:
        table.add_row(
            f"POST /v1/images total p50 / p99 ({ov['calls']} calls)", f"{ov['total_p50_ms']} / {ov['total_p99_ms']} ms"
        )
        table.add_row("  of which Flux p50", f"{ov['flux_p50_ms']} ms")
        table.add_row("  API overhead p50 / p99", f"{ov['overhead_p50_ms']} / {ov['overhead_p99_ms']} ms")
    pkg = results.get("package")
    if pkg:
        table.add_row("deployment.zip vs goal", f"{pkg['zip_mb']} MB / {pkg['goal_mb']:.0f} MB")
        table.add_row(
            "  init CPU, boto3 bundled / runtime's (median of 5)",
            f"{pkg['init_bundled_cpu_ms']} / {pkg['init_runtime_sdk_cpu_ms']} ms",
        )
    else:
        table.add_row("deployment.zip vs goal", "run `make package` first")
    for row in results.get("table_rows", []):
        table.add_row(*row)
    console.print(table)
    results.pop("table_rows", None)
    if only and RESULTS.exists():  # a partial run keeps the other parts' last figures
        results = {**json.loads(RESULTS.read_text()), **results}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"written to {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
