"""Deployment package: zip size against the 25 MB goal, and the cold start with boto3 bundled
in the zip (slimmed by ``infra.slim``) against boto3 taken from outside it (what using the
Lambda runtime's boto3 means).

``python -m bench.package [ZIP] [N]`` (default ``build/package/deployment.zip``, 7 samples).
Each sample is a fresh ``python -S`` process that sees only the unzipped package (and, for
"runtime boto3", a directory holding boto3, botocore, s3transfer and jmespath, as
``/var/runtime`` does on Lambda). It measures what the function's init does: unpack the zip
(Lambda extracts it before init), ``import app``, and the first client of every service the
code calls (PynamoDB's too). Medians, milliseconds, wall-clock and CPU time (on a shared,
loaded machine the CPU time is the comparable figure).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ZIP = ROOT / "build" / "package" / "deployment.zip"
SDK = ("boto3", "botocore", "s3transfer", "jmespath")
INIT = """
import sys, time
sys.path[:0] = sys.argv[3].split(":")
t, c = time.perf_counter(), time.process_time()
import app
from chalicelib.aws import client
from chalicelib.db import ALL_MODELS
for service in sys.argv[1].split(","):
    client(service)
for model in ALL_MODELS:
    model._get_connection().connection.client
print((time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000)
"""


def _is_sdk(name: str) -> bool:
    top = name.split("/")[0]
    return top in SDK or any(top.startswith(f"{p}-") and top.endswith(".dist-info") for p in SDK)


def _unzip_ms(zip_path: Path, into: Path) -> tuple[float, float]:
    """(wall, CPU) milliseconds to extract ``zip_path``."""
    started, cpu = time.perf_counter(), time.process_time()
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(into)
    return (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000


def _init_ms(paths: list[Path], services: str) -> tuple[float, float]:
    """(wall, CPU) milliseconds of the init in a fresh process."""
    env = {"AWS_DEFAULT_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    proc = subprocess.run(
        [sys.executable, "-S", "-c", INIT, services, "", ":".join(str(p) for p in paths)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    wall, cpu = proc.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def run(zip_path: Path = DEFAULT_ZIP, n: int = 7) -> dict[str, float | str]:
    """Size and cold-start figures (see the module docstring).

    Raises:
        FileNotFoundError: no zip (run ``make package``).
        subprocess.CalledProcessError: the app does not import from the zip.
    """
    from infra.slim import GOAL_BYTES, used_services

    services = ",".join(sorted(used_services()))
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        bundled, without, runtime = base / "bundled", base / "without", base / "runtime"
        runtime.mkdir()
        with zipfile.ZipFile(zip_path) as archive:  # the SDK as the runtime holds it: outside the zip
            for info in archive.infolist():
                if _is_sdk(info.filename):
                    archive.extract(info, runtime)
        slim_zip = base / "without-sdk.zip"
        with zipfile.ZipFile(zip_path) as source, zipfile.ZipFile(slim_zip, "w", zipfile.ZIP_DEFLATED) as target:
            for info in source.infolist():
                if not _is_sdk(info.filename):
                    target.writestr(info, source.read(info))
        samples: dict[str, list[tuple[float, float]]] = {
            "unzip_bundled": [],
            "unzip_without_sdk": [],
            "init_bundled": [],
            "init_runtime_sdk": [],
        }
        for _ in range(n):
            for d in (bundled, without):
                shutil.rmtree(d, ignore_errors=True)
            samples["unzip_bundled"].append(_unzip_ms(zip_path, bundled))
            samples["unzip_without_sdk"].append(_unzip_ms(slim_zip, without))
            samples["init_bundled"].append(_init_ms([bundled], services))
            samples["init_runtime_sdk"].append(_init_ms([without, runtime], services))
        result: dict[str, float | str] = {
            "zip_mb": round(zip_path.stat().st_size / 1e6, 1),
            "zip_without_sdk_mb": round(slim_zip.stat().st_size / 1e6, 1),
            "goal_mb": GOAL_BYTES / 1e6,
        }
        for name, values in samples.items():
            result[f"{name}_ms"] = round(statistics.median(wall for wall, _ in values), 1)
            result[f"{name}_cpu_ms"] = round(statistics.median(cpu for _, cpu in values), 1)
        result["samples"] = str(n)
        return result


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: print the figures."""
    argv = sys.argv[1:] if argv is None else argv
    zip_path = Path(argv[0]) if argv else DEFAULT_ZIP
    result = run(zip_path, int(argv[1]) if len(argv) > 1 else 7)
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
