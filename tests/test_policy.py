"""The per-stage IAM policies (.chalice/policy-<stage>.json) cover every AWS call in
chalicelib, grant nothing else, and never use a ``*`` action or resource."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest

from infra import names, policy
from infra.build import generate, policy_path

ROOT = Path(__file__).resolve().parent.parent


def load(stage: str) -> dict[str, Any]:
    return json.loads(policy_path(stage).read_text())


def granted(document: dict[str, Any]) -> dict[str, list[str]]:
    """action -> resources, over the Allow statements."""
    out: dict[str, list[str]] = {}
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in actions:
            out.setdefault(action, []).extend(resources)
    return out


@pytest.fixture(scope="module")
def calls() -> list[policy.AwsCall]:
    return policy.scan()


def test_policy_files_are_fresh() -> None:
    files = generate()
    for stage in names.STAGES:
        path = policy_path(stage)
        assert path.read_text() == files[path], f"{path.name} is stale: run `python -m infra.build`"


def test_the_scan_finds_the_code_s_calls(calls: list[policy.AwsCall]) -> None:
    apis = {call.api for call in calls}
    # a few calls known to exist; if one moves, the scanner must still see it
    for expected in ("s3:PutObject", "s3:DeleteObjects", "s3:GetObject", "pynamodb:query", "pynamodb:save"):
        assert expected in apis, f"scanner lost {expected}"
    assert any(c.api == "secretsmanager:GetSecretValue" for c in calls)


@pytest.mark.parametrize("stage", names.STAGES)
def test_every_aws_call_is_allowed(stage: str, calls: list[policy.AwsCall]) -> None:
    allowed = granted(load(stage))
    missing = [f"{call} ({action})" for call in calls for action in call.actions if action not in allowed]
    assert not missing, "not in the policy (run `python -m infra.build`):\n" + "\n".join(missing)
    # each action on a resource of its own service
    for action, resources in allowed.items():
        service = action.split(":")[0]
        for arn in resources:
            assert arn.startswith(f"arn:aws:{service}:"), (action, arn)


@pytest.mark.parametrize("stage", names.STAGES)
def test_least_privilege(stage: str, calls: list[policy.AwsCall]) -> None:
    document = load(stage)
    allowed = granted(document)
    used = policy.required_actions(calls) | set(policy.RUNTIME_ACTIONS)
    assert set(allowed) <= used, f"granted but unused: {sorted(set(allowed) - used)}"
    for action, resources in allowed.items():
        assert action != "*" and "*" not in action and "?" not in action, action
        for arn in resources:
            assert arn != "*" and not arn.endswith(":*:*:*"), (action, arn)
            if action.startswith("kms:"):  # key ARNs carry no name: the alias condition scopes them
                continue
            assert f"{names.APP}-{stage}" in arn or f"{names.APP}/{stage}/" in arn, (action, arn)
    for statement in document["Statement"]:
        if any(a.startswith("kms:") for a in statement["Action"]):
            aliases = statement["Condition"]["ForAnyValue:StringEquals"]["kms:ResourceAliases"]
            assert aliases == names.webhook_secrets_key_alias(stage)
    # S3: object actions on objects, bucket actions on the bucket
    for action, resources in allowed.items():
        if action.startswith("s3:"):
            on_objects = all(arn.endswith("/*") for arn in resources)
            assert on_objects == (action not in policy.S3_BUCKET_ACTIONS), action
    other = "prod" if stage == "dev" else "dev"
    text = json.dumps(document)
    assert f"{names.APP}-{other}" not in text and f"{names.APP}/{other}/" not in text


def test_config_uses_the_policy_files() -> None:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    for stage in names.STAGES:
        assert config["stages"][stage]["autogen_policy"] is False
        assert config["stages"][stage]["iam_policy_file"] == policy_path(stage).name


def test_runtime_actions_cover_the_lambda_service_needs() -> None:
    allowed = granted(load("prod"))
    for action in ("logs:CreateLogStream", "logs:PutLogEvents", "sqs:ReceiveMessage", "sqs:DeleteMessage"):
        assert action in allowed
    assert any(
        fnmatch.fnmatchcase("arn:aws:logs:eu-west-1:1:log-group:/aws/lambda/promptcanvas-prod-x-1:*", r)
        for r in allowed["logs:PutLogEvents"]
    )


# -- the scanner itself ---------------------------------------------------------------------------

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
