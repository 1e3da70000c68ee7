"""``make package``: the merged template and deployment.zip, built once per session.

The zip must hold nothing compiled on this machine (every shared object comes from a
manylinux wheel; no bytecode), the template must lint clean and carry the worker's
event source settings, the schedules, the log retention and the stage's IAM policy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra import names, template
from infra.build import policy_path

ROOT = Path(__file__).resolve().parents[2]
STAGE = "dev"
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024  # Lambda quota for a function and its layers, unzipped
MANYLINUX_PLATFORMS = ("manylinux", "musllinux")


@dataclass
class Package:
    dir: Path
    template: dict[str, Any]
    zip_path: Path
    seconds: float


@pytest.fixture(scope="session")
def package() -> Iterator[Package]:
    """Run ``make package`` once into a private directory (other sessions may package at once)."""
    out = ROOT / "build" / f"test-package-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_ENDPOINT", "TOGETHER_", "CLERK_"))}
    started = time.monotonic()
    proc = subprocess.run(
        ["make", "-o", "install", "package", f"STAGE={STAGE}", f"PACKAGE_DIR={out.relative_to(ROOT)}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    size_line = [line for line in proc.stdout.splitlines() if line.startswith("deployment.zip:")]
    print(f"\nmake package: {seconds:.1f} s; {size_line[-1] if size_line else ''}", file=sys.stderr)
    try:
        yield Package(out, json.loads((out / "sam.json").read_text()), out / "deployment.zip", seconds)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def functions(tpl: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in tpl["Resources"].items() if v["Type"] == "AWS::Serverless::Function"}


def test_runtime_and_code(package: Package) -> None:
    fns = functions(package.template)
    assert "APIHandler" in fns
    for name, fn in fns.items():
        assert fn["Properties"]["Runtime"] == "python3.12", name
        assert fn["Properties"]["CodeUri"] == "./deployment.zip", name
    assert package.zip_path.exists()


def test_zip_holds_nothing_compiled_here(package: Package) -> None:
    with zipfile.ZipFile(package.zip_path) as archive:
        names_ = archive.namelist()
        total = sum(info.file_size for info in archive.infolist())
        owners: dict[str, str] = {}
        wheel_tags: dict[str, list[str]] = {}
        for name in names_:
            if name.endswith(".dist-info/RECORD"):
                dist = name.split("/")[0]
                for line in archive.read(name).decode().splitlines():
                    owners[line.split(",")[0]] = dist
            if name.endswith(".dist-info/WHEEL"):
                dist = name.split("/")[0]
                wheel_tags[dist] = [
                    line.split(":", 1)[1].strip()
                    for line in archive.read(name).decode().splitlines()
                    if line.startswith("Tag:")
                ]
    assert not [n for n in names_ if n.endswith(".pyc") or "/__pycache__/" in n], "bytecode compiled here"
    shared = [n for n in names_ if n.endswith(".so") or ".so." in n.rsplit("/", 1)[-1]]
    assert shared, "expected the binary wheels' shared objects (Pillow, cryptography)"
    for name in shared:
        dist = owners.get(name)
        assert dist, f"{name} comes from no wheel"
        tags = wheel_tags[dist]
        assert any(platform in tag for tag in tags for platform in MANYLINUX_PLATFORMS), (name, tags)
        assert all("x86_64" in tag for tag in tags), (name, tags)
    for dist, tags in wheel_tags.items():  # every wheel: pure Python, or built for manylinux x86_64
        pure = all(tag.endswith("-none-any") for tag in tags)
        linux = all(any(p in tag for p in MANYLINUX_PLATFORMS) and tag.endswith("x86_64") for tag in tags)
        assert pure or linux, (dist, tags)
    assert "app.py" in names_ and "chalicelib/observability.py" in names_ and "chalicelib/openapi.json" in names_
    assert not [n for n in names_ if n.startswith(("tests/", "devstack/", "infra/", ".chalice/"))]
    assert total < LAMBDA_UNZIPPED_LIMIT, f"{total / 2**20:.0f} MiB unzipped"
    print(
        f"\ndeployment.zip: {package.zip_path.stat().st_size / 2**20:.1f} MiB zipped, "
        f"{total / 2**20:.1f} MiB unzipped, {len(names_)} files",
        file=sys.stderr,
    )


def test_zip_is_slim_and_keeps_the_pinned_versions(package: Package) -> None:
    from infra import slim

    size = package.zip_path.stat().st_size
    assert size <= slim.GOAL_BYTES, (
        f"deployment.zip is {size / 1e6:.1f} MB, over the {slim.GOAL_BYTES / 1e6:.0f} MB goal"
    )
    services = slim.used_services()
    assert {"s3", "sqs", "dynamodb", "secretsmanager"} <= services
    with zipfile.ZipFile(package.zip_path) as archive:
        entries = archive.namelist()
    assert not [n for n in entries if slim.excluded(n, services)], "the zip holds what infra.slim leaves out"
    data_services = {n.split("/")[2] for n in entries if n.startswith("botocore/data/") and n.count("/") > 2}
    assert data_services == set(services), "botocore data for exactly the services the code calls"
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.split("[")[0].lower().replace("-", "_")] = version
    dists = {n.split("/")[0] for n in entries if n.split("/")[0].endswith(".dist-info")}
    for name, version in pins.items():
        assert any(d.lower() == f"{name}-{version}.dist-info" for d in dists), f"{name}=={version} not in the zip"


#: Prints ``{service: endpoint URL}`` for the services in ``sys.argv[2]`` (boto3 from ``sys.path``).
ENDPOINTS_SCRIPT = (
    "import boto3, json\n"
    "print(json.dumps({s: boto3.session.Session().client(s).meta.endpoint_url for s in sys.argv[2].split(',')}))\n"
)


def test_the_slim_zip_runs(package: Package, tmp_path: Path) -> None:
    """Import the app from the unzipped package alone (no site-packages) and build a client
    for every service it calls, PynamoDB's included: nothing it needs was left out."""
    from infra import slim

    with zipfile.ZipFile(package.zip_path) as archive:
        archive.extractall(tmp_path)
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import app, boto3\n"
        "from chalicelib.aws import client\n"
        "from chalicelib.db import ALL_MODELS\n"
        "for service in sys.argv[2].split(','): client(service)\n"
        "for model in ALL_MODELS: model._get_connection().connection.client\n"
        "assert boto3.__file__.startswith(sys.argv[1]), boto3.__file__\n" + ENDPOINTS_SCRIPT
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    services = ",".join(sorted(slim.used_services()))
    proc = subprocess.run(
        [sys.executable, "-S", "-c", script, str(tmp_path), services],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the trimmed endpoints.json resolves every called service as botocore's whole one does
    full = subprocess.run(
        [sys.executable, "-c", "import sys\n" + ENDPOINTS_SCRIPT, "", services],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert full.returncode == 0, full.stderr[-3000:]
    assert json.loads(proc.stdout) == json.loads(full.stdout)
    assert all(url.startswith("https://") for url in json.loads(proc.stdout).values())


def test_cfn_lint_packaged_template(package: Package) -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), str(package.dir / "sam.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_worker_event_source_mapping(package: Package) -> None:
    worker = template.worker_handler()
    if worker is None:
        pytest.skip("no @app.on_sqs_message handler in app.py yet")
    fn = package.template["Resources"][worker.resource]
    event = fn["Properties"]["Events"][f"{worker.resource}SqsEventSource"]
    props = event["Properties"]
    assert event["Type"] == "SQS"
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["ScalingConfig"]["MaximumConcurrency"] >= 2
    assert props["Queue"] == {"Fn::Sub": "${JobsQueue.Arn}"}, "the mapping must read the stack's queue"
    assert 1 <= props["BatchSize"] <= 10
    timeout = fn["Properties"]["Timeout"]
    visibility = package.template["Resources"]["JobsQueue"]["Properties"]["VisibilityTimeout"]
    assert visibility >= 6 * timeout


def test_uploads_worker_event_source_mapping(package: Package) -> None:
    """The uploads worker reads the stack's uploads queue (S3 events) with partial batch responses."""
    uploader = template.uploads_handler()
    assert uploader is not None
    fn = package.template["Resources"][uploader.resource]
    event = fn["Properties"]["Events"][f"{uploader.resource}SqsEventSource"]
    props = event["Properties"]
    assert props["Queue"] == {"Fn::Sub": "${UploadsQueue.Arn}"}
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["ScalingConfig"]["MaximumConcurrency"] >= 2
    visibility = package.template["Resources"]["UploadsQueue"]["Properties"]["VisibilityTimeout"]
    assert visibility >= 6 * fn["Properties"]["Timeout"]
    notification = package.template["Resources"]["ImagesBucket"]["Properties"]["NotificationConfiguration"]
    assert notification["QueueConfigurations"][0]["Queue"] == {"Fn::GetAtt": ["UploadsQueue", "Arn"]}


def test_webhook_worker_event_source_mapping(package: Package) -> None:
    worker = template.webhook_worker_handler()
    assert worker is not None and worker != template.worker_handler()
    fn = package.template["Resources"][worker.resource]
    props = fn["Properties"]["Events"][f"{worker.resource}SqsEventSource"]["Properties"]
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["ScalingConfig"]["MaximumConcurrency"] >= 2
    assert props["Queue"] == {"Fn::Sub": "${WebhooksQueue.Arn}"}, "webhooks have their own queue"
    assert 1 <= props["BatchSize"] <= 10
    visibility = package.template["Resources"]["WebhooksQueue"]["Properties"]["VisibilityTimeout"]
    assert visibility >= 6 * fn["Properties"]["Timeout"]


def test_schedules(package: Package) -> None:
    fns = functions(package.template)
    schedules = {}
    for name, fn in fns.items():
        for event in fn["Properties"].get("Events", {}).values():
            if event["Type"] == "Schedule":
                schedules[name] = event["Properties"]["Schedule"]
    assert schedules["CleanupRetention"] == "rate(1 hour)"
    assert schedules["CleanupOrphans"] == "rate(1 day)"
    assert schedules["CleanupArchives"] == "rate(1 hour)"
    assert schedules["EmitGauges"] == "rate(5 minutes)"


def test_functions_config_logs_and_roles(package: Package) -> None:
    res = package.template["Resources"]
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"][STAGE]
    log_groups = {k: v for k, v in res.items() if v["Type"] == "AWS::Logs::LogGroup"}
    roles: dict[str, str] = {}
    for name, fn in functions(package.template).items():
        props = fn["Properties"]
        by_resource = {h.resource: h.name for h in template.app_handlers()}
        handler_name = "api_handler" if name == "APIHandler" else by_resource[name]
        wanted = config["lambda_functions"][handler_name]
        assert props["Timeout"] == wanted["lambda_timeout"], name
        assert props["MemorySize"] == wanted["lambda_memory_size"], name
        role_id = props["Role"]["Fn::GetAtt"][0]
        assert role_id not in roles, f"{name} shares {role_id} with {roles.get(role_id)}: one role per function"
        roles[role_id] = name
        expected_policy = json.loads(policy_path(STAGE, handler_name).read_text())
        assert res[role_id]["Properties"]["Policies"][0]["PolicyDocument"] == expected_policy, name
        group = log_groups.get("ApiHandlerLogGroup" if name == "APIHandler" else f"{name}LogGroup")
        assert group and group["Properties"]["RetentionInDays"] == config["log_retention_in_days"], name
        log_name = group["Properties"]["LogGroupName"]["Fn::Sub"]
        if name == "APIHandler":
            assert log_name == "/aws/lambda/" + props["FunctionName"]["Fn::Sub"]
        else:
            assert log_name == "/aws/lambda/${" + name + "}"
    for group in log_groups.values():
        refs = [
            part[2:-1] for part in group["Properties"]["LogGroupName"]["Fn::Sub"].split("/") if part.startswith("${")
        ]
        for target in refs:
            assert target.startswith("AWS::") or target in res, f"log group names a missing resource {target}"


def test_environment_and_outputs(package: Package) -> None:
    tpl = package.template
    env = tpl["Globals"]["Function"]["Environment"]["Variables"]
    for name in ("TABLE_PREFIX", "IMAGES_BUCKET", "JOBS_QUEUE_NAME", "JOBS_DLQ_NAME", "TOGETHER_KEYS_SECRET_ID"):
        assert name in env
    for name, fn in functions(tpl).items():
        own = fn["Properties"].get("Environment", {}).get("Variables", {})
        assert not set(own) & set(env), f"{name} overrides the stack's {set(own) & set(env)}"
    assert "EndpointURL" in tpl["Outputs"] and "WebUrl" in tpl["Outputs"]
    assert tpl["Parameters"]["Stage"]["AllowedPattern"] == f"^{names.STAGE_PATTERN}$"


def test_snapstart_on_the_api_and_the_worker_through_their_alias(package: Package) -> None:
    """SnapStart serves published versions only: SAM publishes one per change and the callers
    invoke the alias (SAM points the SQS mapping at it; the merge template API Gateway)."""
    res = package.template["Resources"]
    workers = [h.resource for h in template.app_handlers() if h.kind == "on_sqs_message"]
    snap = ["APIHandler", *workers]
    for name in snap:
        props = res[name]["Properties"]
        assert props["SnapStart"] == {"ApplyOn": "PublishedVersions"}, name
        assert props["AutoPublishAlias"] == template.ALIAS and props["AutoPublishAliasAllProperties"] is True, name
    for worker in workers:  # SAM connects a function's event sources to its alias when AutoPublishAlias is set
        assert any(e["Type"] == "SQS" for e in res[worker]["Properties"]["Events"].values())
    alias = template.alias_id("APIHandler")
    rest = json.dumps(res["RestAPI"])
    assert "${APIHandler.Arn}" not in rest, "an API Gateway integration still invokes $LATEST"
    paths = res["RestAPI"]["Properties"]["DefinitionBody"]["paths"]
    for path, methods in paths.items():
        for method, operation in methods.items():
            integration = operation["x-amazon-apigateway-integration"]
            assert "${" + alias + "}" in integration["uri"]["Fn::Sub"], (path, method)
            assert integration["type"] == "aws_proxy" and "responses" in operation, (path, method)
    assert res["APIHandlerInvokePermission"]["Properties"]["FunctionName"] == {"Ref": alias}
    for name, fn in functions(package.template).items():
        if name not in snap:
            assert "SnapStart" not in fn["Properties"], f"{name}: scheduled sweeps gain nothing from SnapStart"


def test_any_stage_packages_with_its_own_roles(package: Package) -> None:
    """``make package STAGE=pr-42``: a stage config.json does not list still packages, each
    function with its own role naming that stage's resources (``package`` is a dependency so
    the build cache is warm)."""
    out = ROOT / "build" / f"test-package-stage-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_ENDPOINT", "TOGETHER_", "CLERK_"))}
    try:
        proc = subprocess.run(
            ["make", "-o", "install", "package", "STAGE=pr-42", f"PACKAGE_DIR={out.relative_to(ROOT)}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        tpl = json.loads((out / "sam.json").read_text())
        res = tpl["Resources"]
        roles = set()
        for name, fn in functions(tpl).items():
            role = fn["Properties"]["Role"]["Fn::GetAtt"][0]
            roles.add(role)
            text = json.dumps(res[role]["Properties"]["Policies"][0]["PolicyDocument"])
            assert "promptcanvas-pr-42" in text and "promptcanvas-dev" not in text, name
        assert len(roles) == len(functions(tpl))
    finally:
        shutil.rmtree(out, ignore_errors=True)


# -- scripts/deploy.py: the parts that run without an AWS account ----------------------------------


def test_deploy_parameters(deploy_script: Any) -> None:
    first = deploy_script.parameters("prod", {"CLERK_ISSUER": "https://clerk.example.com", "ALARM_EMAIL": ""})
    assert first == [
        {"ParameterKey": "Stage", "ParameterValue": "prod"},
        {"ParameterKey": "ClerkIssuer", "ParameterValue": "https://clerk.example.com"},
    ]
    update = deploy_script.parameters("prod", {}, previous=["ClerkIssuer", "AlarmEmail"])
    assert {"ParameterKey": "ClerkIssuer", "UsePreviousValue": True} in update
    with pytest.raises(deploy_script.DeployError):
        deploy_script.parameters("dev", {})
    tpl = json.loads((ROOT / "infra" / "resources.json").read_text())
    assert set(deploy_script.PARAMETER_ENV) | {"Stage"} == set(tpl["Parameters"])


def test_deploy_points_code_at_s3(deploy_script: Any, package: Package) -> None:
    tpl = json.loads(json.dumps(package.template))
    count = deploy_script.point_code_at(tpl, "s3://artifacts/promptcanvas-dev/deployment-x.zip")
    assert count == len(functions(tpl))
    assert "./deployment.zip" not in json.dumps(tpl)


def test_web_config_and_sync(deploy_script: Any, aws: str, tmp_path: Path) -> None:
    js = deploy_script.config_js("https://abc.execute-api.eu-west-1.amazonaws.com/api/", "pk_test_x")
    assert 'window.PROMPTCANVAS_CONFIG = {"apiBaseUrl": "https://abc.execute-api.eu-west-1.amazonaws.com/api"' in js
    assert '"clerkPublishableKey": "pk_test_x"' in js
    (tmp_path / "js").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / "config.js").write_text(js)
    (tmp_path / "config.local.js").write_text("// dev only")
    (tmp_path / "js" / "app.js").write_text("export {}")
    from chalicelib.aws import client

    s3 = client("s3")
    s3.create_bucket(Bucket="web-test")
    s3.put_object(Bucket="web-test", Key="old.js", Body=b"gone")
    assert deploy_script.sync_web(s3, "web-test", tmp_path) == {"uploaded": 3, "deleted": 1}
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="web-test")["Contents"]}
    assert keys == {"index.html", "config.js", "js/app.js"}
    head = s3.head_object(Bucket="web-test", Key="js/app.js")
    assert head["ContentType"].startswith("text/javascript") and head["CacheControl"] == "public, max-age=300"
    assert s3.head_object(Bucket="web-test", Key="index.html")["CacheControl"] == "no-cache"
