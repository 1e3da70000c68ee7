"""Cold start: import time of ``app`` against ``import boto3`` alone, and time to first response.

Each sample is a fresh Python process (median of N). "Time to first response" imports the app
and answers one authenticated ``GET /v1/models`` through the Lambda entry point with an API
Gateway proxy event: what a user waits for on a cold Lambda, minus the Lambda runtime's own start.

Two sets, interleaved:

* **the deployment package** (``build/package/deployment.zip``, unzipped, seen alone through
  ``python -S``): what Lambda runs, with its own bundled boto3 and only the botocore data of the
  services the code calls (``infra.slim``). The goals are judged here. The first response is
  measured with the keys fetched from the JWKS URL and with ``CLERK_JWT_KEY`` set (Clerk's
  networkless verification, the configuration docs/deploy.md recommends), beside the floor
  (:data:`MINIMAL_FIRST_RESPONSE`: the same response on the same libraries with none of our
  code) and, in a process that ran the SnapStart hooks, the first ``GET /v1/models`` and
  ``POST /v1/images`` timed from the restore.
* **the local venv**, as ``make dev`` runs the app: its botocore ships the data of every AWS
  service (about 400 directories, which a client's first creation lists, and a 1.2 MB
  ``endpoints.json``), so its first response is slower than Lambda's. Also the first
  ``POST /v1/images``.

Both sides of each ratio import compiled bytecode (boto3's was compiled when it was installed;
the app's, and the unzipped package's, are compiled once before sampling). A Lambda cold start
without SnapStart compiles both from source, the zip carrying no bytecode (docs/deploy.md).
"""

from __future__ import annotations

import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_TIMED = (
    "import time; t, c = time.perf_counter(), time.process_time(); import {0}; "
    "print((time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000)"
)
IMPORT_BOTO3 = _TIMED.format("boto3")
IMPORT_APP = _TIMED.format("app")
#: The libraries a first GET /v1/models cannot do without: botocore (the catalog status read),
#: PynamoDB (the table model), PyJWT with cryptography (RS256 verification), Chalice (routing)
#: and Powertools (the JSON logs).
LIBRARY_FLOOR_MODULES = ("botocore.session", "pynamodb.models", "jwt", "chalice.app", "aws_lambda_powertools")
#: The floor: the least any app on these libraries does for that response, and nothing of ours.
#: It imports them, verifies the token with the PEM key (argv 2), and reads the catalog status
#: item (table argv 3) with a plain botocore client. No change to the app's own code can take
#: its share of the ratio off.
MINIMAL_FIRST_RESPONSE = """
import sys, time
t, c = time.perf_counter(), time.process_time()
import {modules}
claims = jwt.decode(sys.argv[1], sys.argv[2], algorithms=["RS256"], options={{"verify_aud": False}})
client = botocore.session.get_session().create_client("dynamodb")
client.get_item(TableName=sys.argv[3], Key={{"name": {{"S": "upstream"}}}})
print((time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000)
""".format(modules=", ".join(LIBRARY_FLOOR_MODULES))
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
# the first response of a process restored from a SnapStart snapshot: the runtime's hooks run
# as Lambda runs them (before_snapshot at init, after_restore at restore); timed from the restore
_TIMER = "t, c = time.perf_counter(), time.process_time()\n"
_HOOKS = "import app\nfrom chalicelib import snapstart\nsnapstart.before_snapshot()\nsnapstart.after_restore()\n"
RESTORED_FIRST_RESPONSE = FIRST_RESPONSE.replace(_TIMER + "import app\n", _HOOKS + _TIMER)
# the first image of a fresh process: every client and table connection of the image path is made
FIRST_IMAGE = _FIRST.format(
    path="/v1/images",
    method="POST",
    body=repr('{"prompt": "a red fox in the snow at dawn", "width": 512, "height": 512}'),
    status=201,
)
RESTORED_FIRST_IMAGE = FIRST_IMAGE.replace(_TIMER + "import app\n", _HOOKS + _TIMER)
assert RESTORED_FIRST_RESPONSE != FIRST_RESPONSE and RESTORED_FIRST_IMAGE != FIRST_IMAGE


def _samples(
    code: str,
    n: int,
    env: dict[str, str],
    args: tuple[str, ...] = (),
    *,
    cwd: Path = ROOT,
    isolated: bool = False,
) -> list[tuple[float, float]]:
    """``n`` fresh processes: (wall, CPU) milliseconds each. ``isolated``: ``python -S``, so the
    process sees no site-packages, only ``cwd`` (the unzipped deployment package) and the stdlib."""
    out = []
    for _ in range(n):
        proc = subprocess.run(
            [sys.executable, *(("-S",) if isolated else ()), "-c", code, *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        wall, cpu = proc.stdout.strip().splitlines()[-1].split()
        out.append((float(wall), float(cpu)))
    return out


def _median(samples: list[tuple[float, float]], which: int) -> float:
    return statistics.median(s[which] for s in samples)


def unpack(zip_path: Path, into: Path) -> Path:
    """Extract the deployment package into ``into`` and compile its bytecode once, as pip
    compiles an installed boto3's, so both sides of the ratio import compiled code (a Lambda
    cold start without SnapStart compiles both from source: the zip carries no bytecode).

    Returns:
        ``into``.
    """
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(into)
    compileall.compile_dir(into, quiet=1, workers=0)
    return into


def _ratios(result: dict, samples: dict[str, list[tuple[float, float]]]) -> None:
    """Medians (ms) into ``result``, and ratios to ``import boto3``, wall and CPU. Each ratio
    is the median of the rounds' own ratios (a sample over the ``import boto3`` of its round:
    the rounds are taken in turn, so the machine's speed, which drifts on this shared host,
    is about the same within one)."""
    for which, suffix in ((0, "ms"), (1, "cpu_ms")):
        boto3 = [s[which] for s in samples["import_boto3"]]
        tag = "" if which == 0 else "_cpu"
        for name, values in samples.items():
            result[f"{name}_{suffix}"] = round(_median(values, which), 1)
            if name != "import_boto3":
                over = "import_app_over_boto3" if name == "import_app" else f"{name}_over_boto3"
                ratios = [s[which] / b for s, b in zip(values, boto3, strict=True)]
                result[f"{over}{tag}"] = round(statistics.median(ratios), 2)


def run(stack_info: dict, mint_token, n: int = 10, package_zip: Path | None = None, jwt_key: str | None = None) -> dict:
    """Medians in milliseconds, wall-clock and CPU time, and their ratios to ``import boto3``
    alone (goals: import 1.2, first response 1.3), each from fresh processes:

    * from the local venv: ``import boto3``, ``import app``, the first verified
      ``GET /v1/models`` and the first ``POST /v1/images`` (Flux's wait included in the wall
      time only), keys without a prefix;
    * from ``package_zip`` (what Lambda runs: the slimmed ``deployment.zip``, its own boto3,
      ``python -S``), keys under ``"package"``: ``import boto3``, ``import app``, the floor
      :data:`MINIMAL_FIRST_RESPONSE` (``minimal_first_response``), the first
      verified ``GET /v1/models`` with the keys from the JWKS URL (``first_response``) and with
      the PEM key ``jwt_key`` set as ``CLERK_JWT_KEY``, Clerk's networkless verification
      (``first_response_networkless``), and the latter in a process that ran the SnapStart
      hooks first, timed from the restore (``restored_first_response_networkless``), and the
      first ``POST /v1/images`` of such a process (``restored_first_image_networkless``).

    The kinds of sample are interleaved, so a burst of load on this shared machine hits all of
    them alike; CPU time is the steadier figure.
    """
    # Both sides with their bytecode compiled: boto3's was written when it was installed, the
    # app's is written by one warm-up import (any non-empty PYTHONDONTWRITEBYTECODE, even "0",
    # would stop that, and every sample would compile the app from source).
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    _samples(IMPORT_APP, 1, env)
    from chalicelib.db import CatalogStatusModel

    status_table = CatalogStatusModel.Meta.table_name
    names = ("import_boto3", "import_app", "first_response", "first_image")
    venv: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    pkg: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pkg_dir = unpack(package_zip, Path(tmp)) if package_zip else None
        networkless_env = {k: v for k, v in env.items() if k != "CLERK_JWKS_URL"}
        networkless_env["CLERK_JWT_KEY"] = jwt_key or ""
        if pkg_dir:
            pkg = {name: [] for name in ("import_boto3", "import_app", "first_response")}
            if jwt_key:
                pkg["minimal_first_response"] = []
                pkg["first_response_networkless"] = []
                pkg["restored_first_response_networkless"] = []
                pkg["restored_first_image_networkless"] = []
        for _ in range(n):
            venv["import_boto3"] += _samples(IMPORT_BOTO3, 1, env)
            venv["import_app"] += _samples(IMPORT_APP, 1, env)
            venv["first_response"] += _samples(FIRST_RESPONSE, 1, env, (mint_token("bench-cold"),))  # tokens live 60 s
            venv["first_image"] += _samples(FIRST_IMAGE, 1, env, (mint_token("bench-cold"),))
            if pkg_dir:
                kw = {"cwd": pkg_dir, "isolated": True}
                pkg["import_boto3"] += _samples(IMPORT_BOTO3, 1, env, **kw)
                pkg["import_app"] += _samples(IMPORT_APP, 1, env, **kw)
                pkg["first_response"] += _samples(FIRST_RESPONSE, 1, env, (mint_token("bench-cold"),), **kw)
                if jwt_key:
                    pkg["minimal_first_response"] += _samples(
                        MINIMAL_FIRST_RESPONSE, 1, env, (mint_token("bench-cold"), jwt_key, status_table), **kw
                    )
                    pkg["first_response_networkless"] += _samples(
                        FIRST_RESPONSE, 1, networkless_env, (mint_token("bench-cold"),), **kw
                    )
                    pkg["restored_first_response_networkless"] += _samples(
                        RESTORED_FIRST_RESPONSE, 1, networkless_env, (mint_token("bench-cold"),), **kw
                    )
                    pkg["restored_first_image_networkless"] += _samples(
                        RESTORED_FIRST_IMAGE, 1, networkless_env, (mint_token("bench-cold"),), **kw
                    )
    result: dict = {"samples": n}
    _ratios(result, venv)
    if pkg:
        result["package"] = {"samples": n}
        _ratios(result["package"], pkg)
    result["goal_import_over_boto3"] = 1.2
    result["goal_first_response_over_boto3"] = 1.3
    return result


if __name__ == "__main__":
    print(json.dumps(run({}, lambda _u: "", 3), indent=2))
