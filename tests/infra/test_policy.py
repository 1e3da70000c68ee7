"""The per-function IAM policies (.chalice/policy-<stage>-<function>.json): each role
covers exactly the AWS calls its function's code path makes, on that stage's resources
in the deploying account only, and never uses a ``*`` action or resource."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import pytest

from infra import callgraph, names, policy
from infra.build import CONFIG_PATH, generate, leftovers, policy_path

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT, REGION, OTHER_ACCOUNT = "111122223333", "eu-west-1", "444455556666"
FUNCTIONS = [fn.name for fn in policy.functions()]
STACK_RESOURCES = set(json.loads((ROOT / "infra" / "resources.json").read_text())["Resources"])
CASES = [(stage, fn) for stage in names.STAGES for fn in FUNCTIONS]


def load(stage: str, function: str) -> dict[str, Any]:
    return json.loads(policy_path(stage, function).read_text())


def concrete(arn: Any, stage: str, account: str = ACCOUNT, region: str = REGION) -> str:
    """An ARN template (``{"Fn::Sub": ...}``) as CloudFormation resolves it in ``account``/``region``."""
    assert isinstance(arn, dict) and set(arn) == {"Fn::Sub"}, f"not an Fn::Sub ARN: {arn}"
    values = {
        "AWS::Partition": "aws",
        "AWS::Region": region,
        "AWS::AccountId": account,
        "AWS::StackName": names.stack_name(stage),
    }
    text = arn["Fn::Sub"]
    for name in set(re.findall(r"\$\{([^}]+)\}", text)) - set(values):
        assert name in STACK_RESOURCES, f"{text}: names {name}, neither a pseudo parameter nor a stack resource"
        values[name] = f"{name.lower()}-id"  # a Ref: the resource's generated id
    return re.sub(r"\$\{([^}]+)\}", lambda m: values[m.group(1)], text)


def granted(document: dict[str, Any], stage: str) -> dict[str, list[str]]:
    """action -> concrete resources, over the Allow statements."""
    out: dict[str, list[str]] = {}
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        for action in statement["Action"]:
            out.setdefault(action, []).extend(concrete(r, stage) for r in statement["Resource"])
    return out


def allows(document: dict[str, Any], stage: str, action: str, arn: str) -> bool:
    return any(fnmatch.fnmatchcase(arn, pattern) for pattern in granted(document, stage).get(action, []))


@pytest.fixture(scope="module")
def calls() -> list[policy.AwsCall]:
    return policy.scan()


@pytest.fixture(scope="module")
def needs(calls: list[policy.AwsCall]) -> dict[str, policy.Needs]:
    return {fn.name: policy.needs(fn, calls) for fn in policy.functions()}


# -- generated files ------------------------------------------------------------------------------


def test_policy_files_and_config_are_fresh() -> None:
    files = generate()
    for path, text in files.items():
        if path.parent.name == ".chalice":
            assert path.read_text() == text, f"{path.name} is stale: run `python -m infra.build`"
    assert not leftovers(files), "policy files of no function: run `python -m infra.build`"


def test_each_function_has_its_own_policy_file() -> None:
    config = json.loads(CONFIG_PATH.read_text())
    for stage in names.STAGES:
        stage_cfg = config["stages"][stage]
        assert stage_cfg["autogen_policy"] is False
        assert "iam_policy_file" not in stage_cfg, "a stage-wide policy would give unlisted functions a broad role"
        for function in FUNCTIONS:
            entry = stage_cfg["lambda_functions"][function]
            assert entry["iam_policy_file"] == policy_path(stage, function).name
            assert policy_path(stage, function).exists()
    assert "iam_policy_file" not in config["stages"]["local"]


# -- each role covers exactly its function's code path -------------------------------------------


def test_the_scan_finds_the_code_s_calls(calls: list[policy.AwsCall]) -> None:
    apis = {call.api for call in calls}
    for expected in ("s3:PutObject", "s3:DeleteObjects", "s3:GetObject", "pynamodb:query", "pynamodb:save"):
        assert expected in apis, f"scanner lost {expected}"
    assert any(c.api == "secretsmanager:GetSecretValue" for c in calls)
    assert all(c.scope for c in calls), "every call is attributed to the definition it is in"


def test_every_aws_call_is_on_some_function_s_path(calls: list[policy.AwsCall], needs: dict[str, policy.Needs]) -> None:
    reached = {call for n in needs.values() for call in n.calls}
    by_operators = callgraph.graph().reachable(policy.OPERATOR_ENTRY_POINTS)
    orphans = [str(call) for call in calls if call not in reached and call.scope not in by_operators]
    assert not orphans, "calls no function reaches (dead code, or the call graph lost an edge):\n" + "\n".join(orphans)


@pytest.mark.parametrize(("stage", "function"), CASES)
def test_role_covers_exactly_its_calls(stage: str, function: str, needs: dict[str, policy.Needs]) -> None:
    document = load(stage, function)
    allowed = granted(document, stage)
    own = needs[function]
    missing = [f"{call} ({a})" for call in own.calls for a in call.actions if a not in allowed]
    assert not missing, f"{function}: not in its policy (run `python -m infra.build`):\n" + "\n".join(missing)
    assert set(allowed) == own.actions, f"granted but not on {function}'s path: {sorted(set(allowed) - own.actions)}"
    for action, resources in allowed.items():
        service = action.split(":")[0]
        assert action != "*" and "*" not in action and "?" not in action, action
        for arn in resources:
            assert arn.startswith(f"arn:aws:{service}:"), (action, arn)


@pytest.mark.parametrize(("stage", "function"), CASES)
def test_arns_are_this_stack_s_resources(stage: str, function: str) -> None:
    """Account and region come from the stack; the only wildcards are a log group's streams,
    a bucket's objects and a secret's random suffix."""
    other = "prod" if stage == "dev" else "dev"
    document = load(stage, function)
    text = json.dumps(document)
    assert f"{names.APP}-{other}" not in text and f"{names.APP}/{other}/" not in text
    for statement in document["Statement"]:
        for resource in statement["Resource"]:
            template = resource["Fn::Sub"]
            assert template.startswith("arn:${AWS::Partition}:"), template
            if not template.startswith("arn:${AWS::Partition}:s3:::"):
                assert ":${AWS::Region}:${AWS::AccountId}:" in template, template
            else:
                assert "${AWS::AccountId}-${AWS::Region}" in template, (
                    "S3 names are global: the name carries the account"
                )
            arn = concrete(resource, stage)
            if re.search(r"\$\{[A-Za-z0-9]+\}", template):  # a stack resource's own id (the KMS key)
                continue
            assert f"{names.APP}-{stage}" in arn or f"{names.APP}/{stage}/" in arn, arn
            head, _, tail = template.partition("${AWS::AccountId}")
            wild = re.sub(r"\$\{[^}]+\}", "", tail)
            allowed_wildcards = ("-*:*", ":*", "/*", "-??????")
            stripped = wild
            for suffix in allowed_wildcards:
                if stripped.endswith(suffix):
                    stripped = stripped[: -len(suffix)]
                    break
            assert "*" not in stripped and "?" not in stripped, template


@pytest.mark.parametrize("stage", names.STAGES)
def test_api_handler_has_no_dlq_and_no_scan(stage: str) -> None:
    document = load(stage, "api_handler")
    allowed = granted(document, stage)
    assert "dynamodb:Scan" not in allowed, "the API reads by key and query only; Scan is the sweeps'"
    dlq = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{names.jobs_dlq(stage)}"
    assert not any(allows(document, stage, action, dlq) for action in allowed if action.startswith("sqs:"))
    assert not {"sqs:ReceiveMessage", "sqs:DeleteMessage"} & set(allowed), "only the worker's mapping polls"
    queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{names.jobs_queue(stage)}"
    assert allows(document, stage, "sqs:SendMessage", queue), "the API enqueues job items"


def test_sweeps_and_worker_get_what_they_use() -> None:
    stage = "prod"
    images = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{names.table_prefix(stage)}images"
    assert allows(load(stage, "cleanup_retention"), stage, "dynamodb:Scan", images)
    assert not any(a.startswith("dynamodb:") for a in granted(load(stage, "cleanup_archives"), stage))
    dlq = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{names.jobs_dlq(stage)}"
    assert allows(load(stage, "sweep_stuck_jobs"), stage, "sqs:ReceiveMessage", dlq)
    worker = load(stage, "process_jobs_queue")
    queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{names.jobs_queue(stage)}"
    for action in policy.SQS_EVENT_SOURCE_ACTIONS:
        assert allows(worker, stage, action, queue), action
    assert not allows(worker, stage, "sqs:ReceiveMessage", dlq)


def test_webhook_queue_and_key_only_where_used() -> None:
    stage = "dev"
    webhooks = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{names.webhooks_queue(stage)}"
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/webhooksecretskey-id"
    webhook_worker = load(stage, "process_webhooks_queue")
    for action in policy.SQS_EVENT_SOURCE_ACTIONS:
        assert allows(webhook_worker, stage, action, webhooks), action
    assert allows(webhook_worker, stage, "kms:Decrypt", key)
    assert not allows(webhook_worker, stage, "kms:Decrypt", f"arn:aws:kms:{REGION}:{ACCOUNT}:key/other-key")
    jobs_worker = load(stage, "process_jobs_queue")
    assert allows(jobs_worker, stage, "sqs:SendMessage", webhooks), "the jobs worker forwards deliveries"
    assert not allows(jobs_worker, stage, "sqs:ReceiveMessage", webhooks), "only the webhook worker's mapping polls"
    for sweep in ("cleanup_retention", "cleanup_orphans", "cleanup_archives", "emit_gauges"):
        assert not any(a.startswith("kms:") for a in granted(load(stage, sweep), stage)), sweep


def test_uploads_queue_only_where_used() -> None:
    """The uploads worker's mapping polls the uploads queue and the worker re-queues a ZIP's
    next turn there; S3 alone sends the events (queue policy), so the API never touches it."""
    stage = "prod"
    uploads = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{names.uploads_queue(stage)}"
    uploader = load(stage, "process_uploads_queue")
    for action in (*policy.SQS_EVENT_SOURCE_ACTIONS, "sqs:SendMessage"):
        assert allows(uploader, stage, action, uploads), action
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{names.table_prefix(stage)}uploads"
    assert allows(uploader, stage, "dynamodb:UpdateItem", table)
    api = load(stage, "api_handler")
    assert not any(allows(api, stage, action, uploads) for action in granted(api, stage) if action.startswith("sqs:"))
    assert not allows(load(stage, "process_jobs_queue"), stage, "sqs:ReceiveMessage", uploads)


def _bucket_matches_another_account(document: dict[str, Any], stage: str) -> bool:
    mine = names.images_bucket(stage).replace("${AWS::AccountId}", ACCOUNT).replace("${AWS::Region}", REGION)
    others = [
        names.images_bucket(stage).replace("${AWS::AccountId}", OTHER_ACCOUNT).replace("${AWS::Region}", REGION),
        mine + "-attacker",  # anyone can create a bucket with a longer name
    ]
    for action, resources in granted(document, stage).items():
        if action.startswith("s3:"):
            for bucket in others:
                for arn in (f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/users/u/images/x.png"):
                    if any(fnmatch.fnmatchcase(arn, pattern) for pattern in resources):
                        return True
    return False


@pytest.mark.parametrize(("stage", "function"), CASES)
def test_bucket_arns_match_no_other_account_s_bucket(stage: str, function: str) -> None:
    assert not _bucket_matches_another_account(load(stage, function), stage)


def test_the_bucket_check_catches_a_prefix_pattern() -> None:
    """The old stage-wide pattern ``promptcanvas-dev-images-*`` matched any account's bucket."""
    broad = {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [{"Fn::Sub": "arn:${AWS::Partition}:s3:::promptcanvas-dev-images-*/*"}],
            }
        ]
    }
    assert _bucket_matches_another_account(broad, "dev")


def test_stack_resources_are_covered() -> None:
    """Each template resource a role names exists under that name in infra/resources.json."""
    tpl = json.loads((ROOT / "infra" / "resources.json").read_text())
    res = tpl["Resources"]
    stage = "dev"

    def name(value: Any) -> str:
        return concrete({"Fn::Sub": value["Fn::Sub"].replace("${Stage}", stage)}, stage)

    api = load(stage, "api_handler")
    bucket = name(res["ImagesBucket"]["Properties"]["BucketName"])
    assert allows(api, stage, "s3:PutObject", f"arn:aws:s3:::{bucket}/users/u/images/x.png")
    assert allows(api, stage, "s3:ListBucket", f"arn:aws:s3:::{bucket}")
    for table in (r for r in res.values() if r["Type"] == "AWS::DynamoDB::Table"):
        table_name = name(table["Properties"]["TableName"])
        arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table_name}"
        assert any(allows(load(stage, fn), stage, "dynamodb:GetItem", arn) for fn in FUNCTIONS), table_name
        for index in table["Properties"].get("GlobalSecondaryIndexes", []):
            index_arn = f"{arn}/index/{index['IndexName']}"
            assert any(allows(load(stage, fn), stage, "dynamodb:Query", index_arn) for fn in FUNCTIONS), index_arn
    secret = name(res["TogetherKeysSecret"]["Properties"]["Name"])
    secret_arn = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{secret}-AbC123"
    assert allows(api, stage, "secretsmanager:GetSecretValue", secret_arn)
    log_group = name(res["ApiHandlerLogGroup"]["Properties"]["LogGroupName"])
    assert allows(
        api, stage, "logs:PutLogEvents", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{log_group}:log-stream:x"
    )
    sweep_log = f"/aws/lambda/{names.stack_name(stage)}-CleanupRetention-AbCdEf123"
    sweep = load(stage, "cleanup_retention")
    assert allows(
        sweep, stage, "logs:PutLogEvents", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{sweep_log}:log-stream:x"
    )
    assert not allows(sweep, stage, "logs:PutLogEvents", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{log_group}:*")


# -- the scanner and the call graph ---------------------------------------------------------------

SAMPLE = """
from chalicelib.aws import client
from chalicelib.db import ImageModel, JobModel

class Sink:
    def __init__(self):
        self._s3 = client("s3")

    def go(self):
        self._s3.upload_part(Bucket="b", Key="k", UploadId="u", PartNumber=1, Body=b"")

def f(item):
    sqs = client("sqs")
    sqs.send_message_batch(QueueUrl="u", Entries=[])
    client("s3").head_object(Bucket="b", Key="k")
    client("s3").get_paginator("list_objects_v2")
    client("s3").generate_presigned_url("get_object", Params={})
    ImageModel.get("u", "i")
    JobModel.by_active.query("active")
    item.save()
    item.update(actions=[])
    ImageModel.image_id.exists()
    headers = {}
    headers.get("x")
    with JobModel.batch_write() as batch:
        batch.save(item)
"""


def test_scanner_maps_calls_to_actions() -> None:
    calls = policy.scan_source(SAMPLE, "sample.py")
    actions = policy.required_actions(calls)
    assert actions == {
        "s3:PutObject",
        "sqs:SendMessage",
        "s3:GetObject",
        "s3:ListBucket",
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:BatchWriteItem",
    }
    assert "pynamodb:exists" not in {c.api for c in calls}, "attribute conditions are not table calls"


def test_scanner_rejects_unknown_calls() -> None:
    with pytest.raises(policy.ScanError):
        policy.scan_source('from chalicelib.aws import client\nclient("s3").put_objekt()\n')
    with pytest.raises(policy.ScanError):
        policy.scan_source('from chalicelib.aws import client\nclient("kinesis").put_record()\n')


GRAPH_SAMPLE = {
    "app": """
from chalicelib.services import jobs, sweep
from chalicelib import boot

boot.configure()

def handle_api(event):
    return jobs.submit(event)

def handle_sweep(event):
    from chalicelib.services.sweep import run
    return run()
""",
    "chalicelib.__init__": "",
    "chalicelib.boot": "def configure():\n    return 1\n",
    "chalicelib.services.__init__": "",
    "chalicelib.db.__init__": "from chalicelib.db.models import JobModel\n",
    "chalicelib.db.models": "class JobModel:\n    def helper(self):\n        return 1\n",
    "chalicelib.services.pool": """
class Pool:
    def __init__(self):
        self.n = 0

    def acquire(self):
        return self._fetch()

    def _fetch(self):
        return secret()

def secret():
    return 1

_POOL = Pool()

def get_pool():
    return _POOL
""",
    "chalicelib.services.jobs": """
from concurrent.futures import ThreadPoolExecutor
from chalicelib.db import JobModel
from chalicelib.services.pool import get_pool

def submit(event):
    get_pool().acquire()
    with ThreadPoolExecutor() as ex:
        ex.map(_write, [event])

def _write(item):
    def inner():
        return JobModel.get(item)
    return inner()

def unused():
    return 2
""",
    "chalicelib.services.sweep": """
def run():
    return scan_all()

def scan_all():
    return 3
""",
}


def test_call_graph_follows_imports_callbacks_classes_and_singletons() -> None:
    graph = callgraph.Graph(sources=GRAPH_SAMPLE)
    api = graph.reachable(["app.handle_api"])
    for expected in (
        "chalicelib.services.jobs.submit",
        "chalicelib.services.jobs._write",  # passed as a callback
        "chalicelib.services.pool.get_pool",
        "chalicelib.services.pool._POOL",  # a module-level singleton...
        "chalicelib.services.pool.Pool.acquire",  # ...whose class's methods are reachable
        "chalicelib.services.pool.Pool._fetch",
        "chalicelib.services.pool.secret",
        "chalicelib.db.models.JobModel",  # through the package's re-export
    ):
        assert expected in api, expected
    assert "chalicelib.services.jobs.unused" not in api
    assert "chalicelib.services.sweep.scan_all" not in api
    sweep = graph.reachable(["app.handle_sweep"])
    assert "chalicelib.services.sweep.scan_all" in sweep, "through a function-local import"
    assert "chalicelib.services.jobs.submit" not in sweep
    assert graph.import_time() == {"<module>:app"}
    assert "chalicelib.boot.configure" in graph.reachable(graph.import_time())
    # a call inside a nested function belongs to the function that contains it
    line = GRAPH_SAMPLE["chalicelib.services.jobs"].splitlines().index("        return JobModel.get(item)") + 1
    assert graph.scope_of("chalicelib.services.jobs", line) == "chalicelib.services.jobs._write"


def test_a_resource_is_granted_only_where_its_setting_is_read() -> None:
    """How a new queue or key gets into exactly the roles that use it: a settings field in
    SETTINGS_RESOURCES; a function reading it gets its service's actions on it."""
    fn = policy.Function("sample", "Sample", ("x",))
    call = policy.AwsCall("x.py", 1, "sqs:SendMessageBatch", ("sqs:SendMessage",), "x")
    with_queue = policy.Needs(fn, (call,), frozenset({"jobs_queue_name"}), ())
    document = policy.policy_document(with_queue, "dev")
    queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{names.jobs_queue('dev')}"
    assert allows(document, "dev", "sqs:SendMessage", queue)
    with pytest.raises(policy.ScanError, match="no resource"):
        policy.policy_document(policy.Needs(fn, (call,), frozenset(), ()), "dev")


def test_any_stage_gets_its_config_and_policies(tmp_path: Path) -> None:
    """``make package STAGE=feature-x`` packages with files written for that stage."""
    from infra.build import stage_files

    files = stage_files("feature-x", tmp_path)
    config = json.loads(files[tmp_path / "config.json"])
    stage_cfg = config["stages"]["feature-x"]
    assert stage_cfg["autogen_policy"] is False and "iam_policy_file" not in stage_cfg
    for function in FUNCTIONS:
        name = stage_cfg["lambda_functions"][function]["iam_policy_file"]
        document = json.loads(files[tmp_path / name])
        text = json.dumps(document)
        assert f"{names.APP}-feature-x" in text and f"{names.APP}-dev" not in text
    assert config["stages"]["dev"] == json.loads(CONFIG_PATH.read_text())["stages"]["dev"]
    with pytest.raises(ValueError):
        stage_files("../prod", tmp_path)
