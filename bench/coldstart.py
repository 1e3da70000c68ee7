"""Cold start: import time of ``app`` against ``import boto3`` alone, and time to first response.

Each sample is a fresh Python process (median of N). "Time to first response" imports the app
and answers one authenticated ``GET /v1/models`` through the Lambda entry point with an API
Gateway proxy event, JWKS fetch included: what a user waits for on a cold Lambda, minus the
Lambda runtime's own start.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

IMPORT_BOTO3 = "import time; t=time.perf_counter(); import boto3; print((time.perf_counter()-t)*1000)"
IMPORT_APP = "import time; t=time.perf_counter(); import app; print((time.perf_counter()-t)*1000)"
FIRST_RESPONSE = """
import json, sys, time
t = time.perf_counter()
import app
event = {"resource": "/v1/models", "path": "/v1/models", "httpMethod": "GET",
         "headers": {"Authorization": "Bearer " + sys.argv[1], "Origin": "http://localhost"},
         "multiValueHeaders": {}, "queryStringParameters": None, "multiValueQueryStringParameters": None,
         "pathParameters": None, "stageVariables": None, "body": None, "isBase64Encoded": False,
         "requestContext": {"resourcePath": "/v1/models", "httpMethod": "GET", "requestId": "bench",
                            "stage": "api", "identity": {"sourceIp": "127.0.0.1"}}}
class Ctx:
    aws_request_id = "bench"; function_name = "bench"; memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:bench"
    def get_remaining_time_in_millis(self): return 30000
reply = app.app(event, Ctx())
assert reply["statusCode"] == 200, reply
print((time.perf_counter() - t) * 1000)
"""


def _samples(code: str, n: int, env: dict[str, str], args: tuple[str, ...] = ()) -> list[float]:
    out = []
    for _ in range(n):
        proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, check=True)
        out.append(float(proc.stdout.strip().splitlines()[-1]))
    return out


def run(stack_info: dict, mint_token, n: int = 10) -> dict:
    """Medians in milliseconds: ``import_boto3_ms``, ``import_app_ms``, ``first_response_ms``."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "0"}
    boto3_ms = _samples(IMPORT_BOTO3, n, env)
    app_ms = _samples(IMPORT_APP, n, env)
    first_ms = _samples(FIRST_RESPONSE, n, env, (mint_token("bench-cold"),))
    return {
        "samples": n,
        "import_boto3_ms": round(statistics.median(boto3_ms), 1),
        "import_app_ms": round(statistics.median(app_ms), 1),
        "first_response_ms": round(statistics.median(first_ms), 1),
        "import_app_over_boto3": round(statistics.median(app_ms) / statistics.median(boto3_ms), 2),
    }


if __name__ == "__main__":
    print(json.dumps(run({}, lambda _u: "", 3), indent=2))
