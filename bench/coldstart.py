"""Cold start: import time of ``app`` against ``import boto3`` alone, and time to first response.

Each sample is a fresh Python process (median of N), with the app's bytecode compiled as
boto3's is (compiling from source is the packaged zip's case: see docs/deploy.md). "Time to
first response" imports the app and answers one authenticated ``GET /v1/models`` through the
Lambda entry point with an API Gateway proxy event, JWKS fetch included: what a user waits for
on a cold Lambda, minus the Lambda runtime's own start.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_TIMED = (
    "import time; t, c = time.perf_counter(), time.process_time(); import {0}; "
    "print((time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000)"
)
IMPORT_BOTO3 = _TIMED.format("boto3")
IMPORT_APP = _TIMED.format("app")
_FIRST = """
import json, sys, time
t, c = time.perf_counter(), time.process_time()
import app
event = {{"resource": "{path}", "path": "{path}", "httpMethod": "{method}",
         "headers": {{"Authorization": "Bearer " + sys.argv[1], "Origin": "http://localhost",
                     "Content-Type": "application/json"}},
         "multiValueHeaders": {{}}, "queryStringParameters": None, "multiValueQueryStringParameters": None,
         "pathParameters": None, "stageVariables": None, "body": {body}, "isBase64Encoded": False,
         "requestContext": {{"resourcePath": "{path}", "httpMethod": "{method}", "requestId": "bench",
                            "stage": "api", "identity": {{"sourceIp": "127.0.0.1"}}}}}}
class Ctx:
    aws_request_id = "bench"; function_name = "bench"; memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:bench"
    def get_remaining_time_in_millis(self): return 30000
reply = app.app(event, Ctx())
assert reply["statusCode"] == {status}, reply
print((time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000)
"""
FIRST_RESPONSE = _FIRST.format(path="/v1/models", method="GET", body="None", status=200)
# the first image of a fresh process: every client and table connection of the image path is made
FIRST_IMAGE = _FIRST.format(
    path="/v1/images",
    method="POST",
    body=repr('{"prompt": "a red fox in the snow at dawn", "width": 512, "height": 512}'),
    status=201,
)


def _samples(code: str, n: int, env: dict[str, str], args: tuple[str, ...] = ()) -> list[tuple[float, float]]:
    """``n`` fresh processes: (wall, CPU) milliseconds each."""
    out = []
    for _ in range(n):
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        )
        wall, cpu = proc.stdout.strip().splitlines()[-1].split()
        out.append((float(wall), float(cpu)))
    return out


def _median(samples: list[tuple[float, float]], which: int) -> float:
    return statistics.median(s[which] for s in samples)


def run(stack_info: dict, mint_token, n: int = 10) -> dict:
    """Medians in milliseconds, wall-clock and CPU time: ``import boto3`` alone, ``import app``,
    the first verified ``GET /v1/models`` and the first ``POST /v1/images`` (Flux's wait
    included in the wall time only) in a fresh process; their ratios to
    ``import boto3`` (goals: import 1.2, first response 1.3). The three kinds of sample are
    interleaved, so a burst of load on this shared machine hits all three alike; CPU time is
    the steadier figure."""
    # Both sides with their bytecode compiled: boto3's was written when it was installed, the
    # app's is written by one warm-up import (any non-empty PYTHONDONTWRITEBYTECODE, even "0",
    # would stop that, and every sample would compile the app from source).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    _samples(IMPORT_APP, 1, env)
    boto3_s: list[tuple[float, float]] = []
    app_s: list[tuple[float, float]] = []
    first_s: list[tuple[float, float]] = []
    image_s: list[tuple[float, float]] = []
    for _ in range(n):
        boto3_s += _samples(IMPORT_BOTO3, 1, env)
        app_s += _samples(IMPORT_APP, 1, env)
        first_s += _samples(FIRST_RESPONSE, 1, env, (mint_token("bench-cold"),))  # tokens live 60 s
        image_s += _samples(FIRST_IMAGE, 1, env, (mint_token("bench-cold"),))
    result: dict = {"samples": n}
    for which, suffix in ((0, "ms"), (1, "cpu_ms")):
        boto3_ms, app_ms, first_ms, image_ms = (_median(s, which) for s in (boto3_s, app_s, first_s, image_s))
        result[f"import_boto3_{suffix}"] = round(boto3_ms, 1)
        result[f"import_app_{suffix}"] = round(app_ms, 1)
        result[f"first_response_{suffix}"] = round(first_ms, 1)
        result[f"first_image_{suffix}"] = round(image_ms, 1)
        tag = "" if which == 0 else "_cpu"
        result[f"import_app_over_boto3{tag}"] = round(app_ms / boto3_ms, 2)
        result[f"first_response_over_boto3{tag}"] = round(first_ms / boto3_ms, 2)
        result[f"first_image_over_boto3{tag}"] = round(image_ms / boto3_ms, 2)
    result["goal_import_over_boto3"] = 1.2
    result["goal_first_response_over_boto3"] = 1.3
    return result


if __name__ == "__main__":
    print(json.dumps(run({}, lambda _u: "", 3), indent=2))
