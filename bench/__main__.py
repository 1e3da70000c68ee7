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
SERVICE_VARS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
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
    from devstack.stack import PORT_VARS, DevStack

    console = Console()
    only = os.environ.get("BENCH_ONLY", "").strip()  # "coldstart" | "overhead" | "batch": run just that part
    logging.basicConfig(level=logging.ERROR)  # the in-process pollers' warnings would break the live display
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
    env.update(dict.fromkeys(PORT_VARS, "0"))
    limits = {"RATE_LIMIT_PER_MINUTE": "100000", "MUTATION_RATE_LIMIT_PER_MINUTE": "100000"}
    limits["MONTHLY_IMAGE_QUOTA"] = "1000000"  # the bench measures the API, not the limits
    env.update(limits)
    os.environ.update(limits)
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
                from bench.package import DEFAULT_ZIP

                idp = stack.parts.get("idp")
                results["cold_start"] = coldstart.run(
                    info,
                    mint,
                    n=10,
                    package_zip=DEFAULT_ZIP if DEFAULT_ZIP.exists() else None,
                    jwt_key=idp.public_pem() if idp else None,
                )
                os.environ.clear()
                os.environ.update(child_env)
                progress.update(task, total=1, completed=1)
            if only in ("", "overhead"):
                calls = int(os.environ.get("BENCH_OVERHEAD_CALLS", "200"))
                task = progress.add_task("POST /v1/images overhead", total=calls)
                results["api_overhead"] = overhead.run(
                    info["api_url"], mint, calls, progress=lambda: progress.advance(task)
                )
                results["pillow"] = overhead.pillow_costs()
            try:
                from bench import batch
            except ImportError:
                batch = None
            if batch is not None and only in ("", "batch"):
                procs = (("moto", stack.moto_proc), ("moto-dynamodb", stack.dynamodb_proc), ("api", stack.api_proc))
                pids = {name: proc.pid for name, proc in procs if proc}
                results.update(batch.run(info, mint, progress, console, pids))
    finally:
        stack.stop()

    from bench import package

    if package.DEFAULT_ZIP.exists():  # cheap only when `make package` has built it
        with console.status("deployment.zip: size and cold start, bundled vs runtime boto3…"):
            results["package"] = package.run(n=5)
    if only and RESULTS.exists():  # a partial run keeps the other parts' last figures, and their date
        results[f"{only}_started_at"] = results.pop("started_at")
        results = {**json.loads(RESULTS.read_text()), **results}
    table = Table(title="PromptCanvas benchmarks (ratios within this run, beside their goals)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("goal", justify="right")
    for row in goal_rows(results):
        table.add_row(*row)
    for row in results.get("table_rows", []):
        table.add_row(*row, "")
    console.print(table)
    results.pop("table_rows", None)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    from bench import scale

    scale.write()  # docs/scale.md from the figures just written
    console.print(f"written to {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")
    return 0


def goal_rows(results: dict) -> list[tuple[str, str, str]]:
    """The table's rows with a goal: ``(measure, value, goal)`` (what is missing says how to get it)."""
    rows = [("stack ready", f"{results.get('stack_ready_s', '?')} s", "")]
    cold = results.get("cold_start")
    if cold and "import_app_over_boto3_cpu" in cold:
        rows += cold_rows(cold)
    else:
        rows.append(("cold start", "not measured: BENCH_ONLY=coldstart", "≤ 1.2× / 1.3×"))
    ov = results.get("api_overhead")
    if ov and "aws_calls_by_kind" in ov:
        p50, p99 = ov["overhead_p50_ms"], ov["overhead_p99_ms"]
        rows += [
            (
                f"POST /v1/images overhead p50 ({ov['calls']} calls; Flux p50 {ov['flux_p50_ms']} ms)",
                f"{p50} ms ({p50 / 60:.2f} of goal)",
                "≤ 60 ms",
            ),
            ("POST /v1/images overhead p99", f"{p99} ms ({p99 / 120:.2f} of goal)", "≤ 120 ms"),
            (
                "AWS calls per image (median; mean)",
                f"{ov['aws_calls_per_image']}; {ov['aws_calls_per_image_mean']}",
                "1 usage write",
            ),
        ]
        rows += [(f"  {kind}", f"{n}", "") for kind, n in ov["aws_calls_by_kind"].items()]
    else:
        rows.append(("POST /v1/images overhead", "not measured: BENCH_ONLY=overhead", "≤ 60 / 120 ms"))
    pil = results.get("pillow")
    if pil:
        rows.append(
            (
                "Pillow strip + thumbnail, JPEG 512 / 1024 px (CPU)",
                f"{pil['jpeg_512_cpu_ms']} / {pil['jpeg_1024_cpu_ms']} ms",
                "",
            )
        )
        rows.append(
            (
                "Pillow strip + thumbnail, PNG 512 / 1024 px (CPU)",
                f"{pil['png_512_cpu_ms']} / {pil['png_1024_cpu_ms']} ms",
                "",
            )
        )
    pkg = results.get("package")
    if pkg:
        rows.append(
            (
                "deployment.zip",
                f"{pkg['zip_mb']} MB ({pkg['zip_mb'] / pkg['goal_mb']:.2f} of goal)",
                f"≤ {pkg['goal_mb']:.0f} MB",
            )
        )
        rows.append(
            (
                "  init CPU, boto3 bundled / runtime's (median)",
                f"{pkg['init_bundled_cpu_ms']} / {pkg['init_runtime_sdk_cpu_ms']} ms",
                "",
            )
        )
    else:
        rows.append(("deployment.zip", "run `make package` first", "≤ 25 MB"))
    return rows


def _ratio(cold: dict, key: str, ms_key: str) -> str:
    """``"1.23× (456 ms); 1.2×"``: CPU ratio, CPU milliseconds, wall ratio."""
    return f"{cold[key + '_cpu']}× ({cold[ms_key]} ms CPU); {cold[key]}× wall"


def cold_rows(cold: dict) -> list[tuple[str, str, str]]:
    """Cold-start rows: the deployment package's beside the goals, then the local venv's."""
    goal_import, goal_first = f"≤ {cold['goal_import_over_boto3']}×", f"≤ {cold['goal_first_response_over_boto3']}×"
    # (sample name, label, goal); a ratio the run did not measure is left out
    package_rows = (
        ("import_app", "  import app / import boto3", goal_import),
        (
            "minimal_first_response",
            "  floor: the libraries' least for that response (import, verify, one GetItem) / import boto3",
            "",
        ),
        (
            "first_response_networkless",
            "  first verified GET /v1/models / import boto3, CLERK_JWT_KEY (networkless)",
            goal_first,
        ),
        ("first_response", "  the same, keys fetched from the JWKS URL", goal_first),
        (
            "restored_first_response_networkless",
            "  first verified GET /v1/models after a SnapStart restore (hooks run; timed from the restore)",
            "",
        ),
        (
            "restored_first_image_networkless",
            "  first POST /v1/images after a SnapStart restore (Flux's wait not in CPU)",
            "",
        ),
    )
    venv_rows = (
        ("import_app", "  import app / import boto3", ""),
        ("first_response", "  first verified GET /v1/models (JWKS URL) / import boto3", ""),
        ("first_image", "  first POST /v1/images / import boto3", ""),
    )
    pkg = cold.get("package")
    rows = []
    for figures, title, measures in (
        (pkg, "cold, deployment package", package_rows),
        (cold, "cold, local venv (every service's botocore data)", venv_rows),
    ):
        if not figures:
            rows.append((title, "run `make package` first", f"{goal_import} / {goal_first}"))
            continue
        rows.append(
            (
                f"{title}: import boto3 alone, CPU (wall), median of {figures['samples']}",
                f"{figures['import_boto3_cpu_ms']} ms ({figures['import_boto3_ms']} ms)",
                "",
            )
        )
        for name, label, goal in measures:
            over = "import_app_over_boto3" if name == "import_app" else f"{name}_over_boto3"
            if f"{over}_cpu" in figures:
                rows.append((label, _ratio(figures, over, f"{name}_cpu_ms"), goal))
    return rows


if __name__ == "__main__":
    sys.exit(main())
