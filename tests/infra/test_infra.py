"""infra/resources.json: fresh, consistent with the PynamoDB models, the app's handlers,
``.chalice/config.json`` and the IAM policies, and cfn-lint clean on its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra import names, template
from infra.build import RESOURCES_PATH, generate

ROOT = Path(__file__).resolve().parents[2]
CONFIG = json.loads((ROOT / ".chalice" / "config.json").read_text())


@pytest.fixture(scope="module")
def tpl() -> dict[str, Any]:
    return json.loads(RESOURCES_PATH.read_text())


def resources_of(tpl: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in tpl["Resources"].items() if r.get("Type") == kind}


def resolve(value: Any, stage: str) -> str:
    """A ``Fn::Sub`` string with ``${Stage}`` filled in (other variables left as is)."""
    text = value["Fn::Sub"] if isinstance(value, dict) else value
    return text.replace("${Stage}", stage)


def test_committed_files_equal_a_fresh_generation() -> None:
    files = generate()
    for path, text in files.items():
        assert path.read_text() == text, f"{path.relative_to(ROOT)} is stale: run `python -m infra.build`"


def test_cfn_lint_infra_is_clean() -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), str(RESOURCES_PATH)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- tables ---------------------------------------------------------------------------------------


def _keys(elements: list[dict[str, str]]) -> list[tuple[str, str]]:
    return sorted((e["KeyType"], e["AttributeName"]) for e in elements)


def _indexes(items: list[dict[str, Any]], name_key: str) -> dict[str, tuple[list[tuple[str, str]], str]]:
    out = {}
    for index in items:
        projection = index.get("projection") or index.get("Projection")
        out[index[name_key]] = (_keys(index.get("key_schema") or index.get("KeySchema")), projection["ProjectionType"])
    return out


def test_every_model_has_its_table(tpl: dict[str, Any]) -> None:
    from chalicelib.db import ALL_MODELS
    from chalicelib.settings import get_settings

    tables = resources_of(tpl, "AWS::DynamoDB::Table")
    by_name = {resolve(t["Properties"]["TableName"], "dev"): t for t in tables.values()}
    prefix = get_settings().table_prefix
    expected = {names.table_prefix("dev") + m.Meta.table_name[len(prefix) :]: m for m in ALL_MODELS}
    assert set(by_name) == set(expected), "tables and ALL_MODELS differ: run `python -m infra.build`"
    for table_name, model in expected.items():
        props = by_name[table_name]["Properties"]
        schema = model._get_schema()
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert _keys(props["KeySchema"]) == _keys(schema["key_schema"]), table_name
        assert props["KeySchema"][0]["KeyType"] == "HASH"
        defined = {(d["AttributeName"], d["AttributeType"]) for d in props["AttributeDefinitions"]}
        wanted = {(d["AttributeName"], d["AttributeType"]) for d in schema["attribute_definitions"]}
        for index in schema["global_secondary_indexes"] + schema["local_secondary_indexes"]:
            wanted |= {(d["AttributeName"], d["AttributeType"]) for d in index["attribute_definitions"]}
        assert defined == wanted, table_name
        assert _indexes(props.get("GlobalSecondaryIndexes", []), "IndexName") == _indexes(
            schema["global_secondary_indexes"], "index_name"
        ), table_name
        assert _indexes(props.get("LocalSecondaryIndexes", []), "IndexName") == _indexes(
            schema["local_secondary_indexes"], "index_name"
        ), table_name
        ttl = model._ttl_attribute()
        assert props["TimeToLiveSpecification"] == {
            "AttributeName": ttl.attr_name if ttl else template.TTL_CONVENTION,
            "Enabled": True,
        }
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert by_name[table_name]["DeletionPolicy"] == "Retain"


# -- buckets and web ------------------------------------------------------------------------------

PUBLIC_ACCESS_BLOCKED = {
    "BlockPublicAcls": True,
    "BlockPublicPolicy": True,
    "IgnorePublicAcls": True,
    "RestrictPublicBuckets": True,
}


def test_images_bucket(tpl: dict[str, Any]) -> None:
    bucket = tpl["Resources"]["ImagesBucket"]
    props = bucket["Properties"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert props["PublicAccessBlockConfiguration"] == PUBLIC_ACCESS_BLOCKED
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert resolve(props["BucketName"], "prod").startswith(names.images_bucket_prefix("prod"))
    get_rule, post_rule = props["CorsConfiguration"]["CorsRules"]
    assert set(get_rule["AllowedMethods"]) == {"GET", "HEAD"}
    assert set(post_rule["AllowedMethods"]) == {"POST"}, "presigned POST uploads from the browser"
    for rule in (get_rule, post_rule):
        assert "https://${WebDistribution.DomainName}" in json.dumps(rule["AllowedOrigins"])
        assert "*" not in rule["AllowedOrigins"]
    rules = props["LifecycleConfiguration"]["Rules"]
    archives = [r for r in rules if r.get("Prefix") == "archives/"]
    assert archives and archives[0]["ExpirationInDays"] >= 1 and archives[0]["Status"] == "Enabled"
    multipart = [r for r in rules if "AbortIncompleteMultipartUpload" in r and not r.get("Prefix")]
    assert multipart and multipart[0]["Status"] == "Enabled"


def test_web_distribution(tpl: dict[str, Any]) -> None:
    res = tpl["Resources"]
    config = res["WebDistribution"]["Properties"]["DistributionConfig"]
    assert config["DefaultRootObject"] == "index.html"
    origin, api_origin = config["Origins"]
    assert api_origin["Fn::If"][0] == "HasApiOrigin"
    assert origin["OriginAccessControlId"] == {"Fn::GetAtt": ["WebOriginAccessControl", "Id"]}
    assert origin["S3OriginConfig"] == {"OriginAccessIdentity": ""}
    assert res["WebOriginAccessControl"]["Properties"]["OriginAccessControlConfig"]["SigningBehavior"] == "always"
    behavior = config["DefaultCacheBehavior"]
    assert behavior["ViewerProtocolPolicy"] == "https-only"
    assert behavior["ResponseHeadersPolicyId"] == {"Ref": "WebSecurityHeadersPolicy"}
    fallback = {(e["ErrorCode"], e["ResponseCode"], e["ResponsePagePath"]) for e in config["CustomErrorResponses"]}
    assert fallback == {(403, 200, "/index.html")}  # a 404 (revoked share link) stays a 404
    headers = res["WebSecurityHeadersPolicy"]["Properties"]["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
    csp = headers["ContentSecurityPolicy"]["ContentSecurityPolicy"]["Fn::Sub"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "${ClerkIssuer}" in csp
    assert headers["StrictTransportSecurity"]["AccessControlMaxAgeSec"] >= 31536000
    assert headers["ContentTypeOptions"] == {"Override": True}
    web = res["WebBucket"]["Properties"]
    assert web["PublicAccessBlockConfiguration"] == PUBLIC_ACCESS_BLOCKED
    statements = res["WebBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    allow = [s for s in statements if s["Effect"] == "Allow"]
    assert allow == [
        {
            "Sid": "AllowCloudFrontOriginAccessControl",
            "Effect": "Allow",
            "Principal": {"Service": "cloudfront.amazonaws.com"},
            "Action": "s3:GetObject",
            "Resource": {"Fn::Sub": "${WebBucket.Arn}/*"},
            "Condition": {
                "StringEquals": {
                    "AWS:SourceArn": {
                        "Fn::Sub": "arn:${AWS::Partition}:cloudfront::${AWS::AccountId}:distribution/${WebDistribution}"
                    }
                }
            },
        }
    ]


# -- queues, secret, environment, alarms, outputs -------------------------------------------------


def test_queues(tpl: dict[str, Any]) -> None:
    from chalicelib.settings import Settings

    res = tpl["Resources"]
    queue = res["JobsQueue"]["Properties"]
    assert resolve(queue["QueueName"], "dev") == names.jobs_queue("dev")
    assert resolve(res["JobsDeadLetterQueue"]["Properties"]["QueueName"], "dev") == names.jobs_dlq("dev")
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]},
        "maxReceiveCount": getattr(Settings(), "jobs_max_receive_count", 5),
    }
    worker = template.worker_handler()
    worker_name = worker.name if worker else "process_jobs"
    for stage in names.STAGES:
        timeout = template.lambda_timeout(CONFIG, worker_name, stage)
        assert queue["VisibilityTimeout"] >= 6 * timeout, stage


def test_uploads_queue_and_bucket_notification(tpl: dict[str, Any]) -> None:
    """Objects created under uploads/ notify the uploads queue; only the images bucket may send;
    the uploads worker reads that queue with partial batch responses."""
    res = tpl["Resources"]
    bucket = res["ImagesBucket"]
    assert "UploadsQueuePolicy" in bucket["DependsOn"], "S3 checks the queue policy when the notification is made"
    (notification,) = bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert notification["Event"] == "s3:ObjectCreated:*"
    assert notification["Queue"] == {"Fn::GetAtt": ["UploadsQueue", "Arn"]}
    assert notification["Filter"] == {"S3Key": {"Rules": [{"Name": "prefix", "Value": "uploads/"}]}}
    queue = res["UploadsQueue"]["Properties"]
    assert resolve(queue["QueueName"], "prod") == names.uploads_queue("prod")
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["UploadsDeadLetterQueue", "Arn"]}
    (statement,) = res["UploadsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"} and statement["Action"] == "sqs:SendMessage"
    source_arn = resolve(statement["Condition"]["ArnEquals"]["aws:SourceArn"], "prod")
    assert source_arn.endswith(resolve(bucket["Properties"]["BucketName"], "prod"))
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    assert any(r.get("Prefix") == "uploads/" and r["ExpirationInDays"] >= 1 for r in rules)
    uploader = template.uploads_handler()
    assert uploader is not None and uploader.function == "process_uploads_queue"
    event = res[uploader.resource]["Properties"]["Events"][f"{uploader.resource}SqsEventSource"]
    assert event["Properties"]["Queue"] == {"Fn::Sub": "${UploadsQueue.Arn}"}
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    for stage in names.STAGES:
        assert queue["VisibilityTimeout"] >= 6 * template.lambda_timeout(CONFIG, uploader.name, stage)
    env = tpl["Globals"]["Function"]["Environment"]["Variables"]
    assert env["UPLOADS_QUEUE_NAME"] == {"Fn::GetAtt": ["UploadsQueue", "QueueName"]}


def test_worker_event_source_override(tpl: dict[str, Any]) -> None:
    worker = template.worker_handler()
    if worker is None:
        pytest.skip("no @app.on_sqs_message handler in app.py yet")
    override = tpl["Resources"][worker.resource]
    event = override["Properties"]["Events"][f"{worker.resource}SqsEventSource"]
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert event["Properties"]["Queue"] == {"Fn::Sub": "${JobsQueue.Arn}"}
    assert override["Properties"]["Handler"] == f"app.{worker.function}"


def test_api_gateway_invokes_the_api_alias(tpl: dict[str, Any]) -> None:
    """Every operation Chalice writes into the REST API's swagger is overridden to the alias."""
    paths = tpl["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]["paths"]
    operations = template.api_operations()
    assert {p: sorted(m) for p, m in paths.items()} == operations
    assert ("/v1/images", ["get", "options", "post"]) in operations.items()
    alias = template.alias_id("APIHandler")
    for methods in paths.values():
        for operation in methods.values():
            assert "${" + alias + "}" in operation["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
    workers = [h.resource for h in template.app_handlers() if h.kind == "on_sqs_message"]
    for name in ["APIHandler", *workers]:
        assert tpl["Resources"][name]["Properties"]["SnapStart"] == {"ApplyOn": "PublishedVersions"}


def test_webhooks_queue_and_its_worker(tpl: dict[str, Any]) -> None:
    res = tpl["Resources"]
    queue = res["WebhooksQueue"]["Properties"]
    assert resolve(queue["QueueName"], "dev") == names.webhooks_queue("dev")
    webhook_worker = template.webhook_worker_handler()
    jobs_worker = template.worker_handler()
    assert webhook_worker is not None and jobs_worker is not None and webhook_worker != jobs_worker
    for stage in names.STAGES:
        assert queue["VisibilityTimeout"] >= 6 * template.lambda_timeout(CONFIG, webhook_worker.name, stage)
    event = res[webhook_worker.resource]["Properties"]["Events"][f"{webhook_worker.resource}SqsEventSource"]
    assert event["Properties"]["Queue"] == {"Fn::Sub": "${WebhooksQueue.Arn}"}
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    env = tpl["Globals"]["Function"]["Environment"]["Variables"]
    assert env["WEBHOOKS_QUEUE_NAME"] == {"Fn::GetAtt": ["WebhooksQueue", "QueueName"]}
    assert env["WEBHOOK_SECRET_KMS_KEY_ID"] == {"Ref": "WebhookSecretsKeyAlias"}
    alias = res["WebhookSecretsKeyAlias"]["Properties"]
    assert resolve(alias["AliasName"], "prod") == names.webhook_secrets_key_alias("prod")
    assert alias["TargetKeyId"] == {"Ref": "WebhookSecretsKey"}
    key = res["WebhookSecretsKey"]
    assert key["Type"] == "AWS::KMS::Key" and key["DeletionPolicy"] == "Retain"
    assert key["Properties"]["EnableKeyRotation"] is True


def test_function_environment(tpl: dict[str, Any]) -> None:
    """Every variable the stack sets is one Settings reads, and the resource ones point at the stack."""
    from chalicelib.settings import Settings

    env = tpl["Globals"]["Function"]["Environment"]["Variables"]
    assert env["IMAGES_BUCKET"] == {"Ref": "ImagesBucket"}
    assert env["TOGETHER_KEYS_SECRET_ID"] == {"Ref": "TogetherKeysSecret"}
    assert env["JOBS_QUEUE_NAME"] == {"Fn::GetAtt": ["JobsQueue", "QueueName"]}
    assert env["JOBS_DLQ_NAME"] == {"Fn::GetAtt": ["JobsDeadLetterQueue", "QueueName"]}
    assert resolve(env["TABLE_PREFIX"], "prod") == names.table_prefix("prod")
    for required in ("CLERK_ISSUER", "CLERK_AUTHORIZED_PARTIES", "CORS_ALLOWED_ORIGINS", "IMAGE_RETENTION_DAYS"):
        assert required in env
    # Settings really reads each of them (a renamed variable would silently fall back to a default)
    sample = {name: "7" if name == "IMAGE_RETENTION_DAYS" else f"x-{name.lower()}" for name in env}
    sample["CLERK_ISSUER"] = "https://clerk.example.com"
    read = Settings.from_env(sample)
    default = Settings.from_env({})
    app_vars = [n for n in env if not n.startswith("POWERTOOLS_")]
    for name in app_vars:
        changed = read != Settings.from_env({k: v for k, v in sample.items() if k != name})
        assert changed, f"Settings does not read {name}"
    assert read.images_bucket == "x-images_bucket" and default.images_bucket != read.images_bucket
    # config.json must not set them too: a function-level value would override the stack's
    for stage in names.STAGES:
        overlap = set(CONFIG["stages"][stage].get("environment_variables", {})) & set(env)
        assert not overlap, f"{stage}: {overlap} set in both config.json and infra"


def test_alarms_watch_what_the_code_emits(tpl: dict[str, Any]) -> None:
    from chalicelib import observability

    res = tpl["Resources"]
    dlq = res["JobsDeadLetterQueueAlarm"]["Properties"]
    assert dlq["Namespace"] == "AWS/SQS" and dlq["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert dlq["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["JobsDeadLetterQueue", "QueueName"]}}]
    keys = res["AllKeysUnhealthyAlarm"]["Properties"]
    env = tpl["Globals"]["Function"]["Environment"]["Variables"]
    assert keys["Namespace"] == env["POWERTOOLS_METRICS_NAMESPACE"] == observability.DEFAULT_NAMESPACE
    assert keys["MetricName"] == observability.KEY_STATE_METRICS["healthy"]
    assert keys["Dimensions"] == [{"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]}]
    assert keys["ComparisonOperator"] == "LessThanOrEqualToThreshold" and keys["Threshold"] == 0


def test_outputs(tpl: dict[str, Any]) -> None:
    outputs = tpl["Outputs"]
    assert outputs["WebUrl"]["Value"] == {"Fn::Sub": "https://${WebDistribution.DomainName}"}
    for name in ("WebBucketName", "WebDistributionId", "TogetherKeysSecretArn", "ImagesBucketName"):
        assert name in outputs
    # the API URL is Chalice's EndpointURL output (tests/infra/test_packaging.py checks the merged template)


def test_secret(tpl: dict[str, Any]) -> None:
    secret = tpl["Resources"]["TogetherKeysSecret"]["Properties"]
    assert resolve(secret["Name"], "prod") == names.keys_secret("prod")
    assert json.loads(secret["SecretString"]) == []


# -- names across template, policy and config -----------------------------------------------------


# (the IAM policies name these resources: tests/infra/test_policy.py::test_stack_resources_are_covered)


def test_chalice_config() -> None:
    stages = CONFIG["stages"]
    assert stages["local"] == {"api_gateway_stage": "api"}, "the dev stack's stage must stay as it was"
    assert not {"environment_variables", "lambda_functions", "autogen_policy"} & set(CONFIG), (
        "top-level keys reach local"
    )
    handlers = [h.name for h in template.app_handlers()] + ["api_handler"]
    for stage in names.STAGES:
        cfg = stages[stage]
        assert cfg["autogen_policy"] is False
        for function in cfg["lambda_functions"].values():  # each its own role (tests/infra/test_policy.py)
            assert (ROOT / ".chalice" / function["iam_policy_file"]).exists()
        assert cfg["log_retention_in_days"] > 0
        functions = cfg["lambda_functions"]
        for name in handlers:
            assert name in functions, f"{stage}: lambda_functions has no entry for {name}"
            assert {"lambda_memory_size", "lambda_timeout"} <= set(functions[name]), name
            assert 1 <= functions[name]["lambda_timeout"] <= 900
        assert functions["api_handler"]["lambda_timeout"] <= 30, "API Gateway stops waiting at 29 s"
        assert not set(functions) - set(handlers), f"{stage}: lambda_functions names unknown handlers"


def test_slim_leaves_out_only_what_lambda_never_runs() -> None:
    from infra import slim

    services = {"s3", "dynamodb"}
    for name in (
        "botocore/data/ec2/2016-11-15/service-2.json.gz",
        "botocore/data/s3/2006-03-01/examples-1.json",
        "boto3/data/ec2/2016-11-15/resources-1.json",
        "PIL/_imaging.pyi",
        "certifi/tests/test_certify.py",
        "chalicelib/__pycache__/aws.cpython-312.pyc",
    ):
        assert slim.excluded(name, services), name
    for name in (
        "botocore/data/s3/2006-03-01/service-2.json.gz",
        "botocore/data/dynamodb/2012-08-10/endpoint-rule-set-1.json.gz",
        "botocore/data/endpoints.json",
        "botocore/data/partitions.json",
        "botocore/docs/docstring.py",  # imported by botocore.client
        "pillow-13.0.0.dist-info/RECORD",
        "app.py",
        "chalicelib/services/jobs.py",
    ):
        assert not slim.excluded(name, services), name
    assert {"s3", "sqs", "dynamodb", "secretsmanager", "kms"} <= slim.used_services()


def test_share_links_are_served_from_the_api_origin(tpl: dict[str, Any]) -> None:
    config = tpl["Resources"]["WebDistribution"]["Properties"]["DistributionConfig"]
    condition, api_origin, absent = config["Origins"][1]["Fn::If"]
    assert condition == "HasApiOrigin" and absent == {"Ref": "AWS::NoValue"}
    assert api_origin["Id"] == "api"
    assert api_origin["DomainName"] == {"Ref": "ApiOriginDomain"}
    assert api_origin["OriginPath"] == {"Ref": "ApiOriginPath"}
    assert api_origin["CustomOriginConfig"]["OriginProtocolPolicy"] == "https-only"
    condition, behaviors, absent = config["CacheBehaviors"]["Fn::If"]
    assert condition == "HasApiOrigin" and absent == {"Ref": "AWS::NoValue"}
    (share,) = behaviors
    assert share["PathPattern"] == "/s/*" and share["TargetOriginId"] == "api"
    assert share["ViewerProtocolPolicy"] == "https-only"
    assert set(share["AllowedMethods"]) == {"GET", "HEAD"}
    assert share["CachePolicyId"] == "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"  # CachingDisabled: revokes are immediate
    assert "ResponseHeadersPolicyId" not in share  # the page sets its own CSP
    params = tpl["Parameters"]
    assert params["ApiOriginDomain"]["Default"] == "" and params["ApiOriginPath"]["Default"] == "/api"
    assert tpl["Conditions"]["HasApiOrigin"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "ApiOriginDomain"}, ""]}]}
    env = tpl["Globals"]["Function"]["Environment"]["Variables"]
    assert env["SHARE_BASE_URL"] == {
        "Fn::If": ["HasApiOrigin", {"Fn::Sub": "https://${WebDistribution.DomainName}"}, ""]
    }


def test_share_tables_come_from_the_models(tpl: dict[str, Any]) -> None:
    res = tpl["Resources"]
    shares = res["SharesTable"]["Properties"]
    assert shares["KeySchema"] == [{"AttributeName": "code_hash", "KeyType": "HASH"}]
    (by_user,) = shares["GlobalSecondaryIndexes"]
    assert by_user["IndexName"] == "by_user"
    assert shares["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    hits = res["ShareHitsTable"]["Properties"]
    assert hits["KeySchema"] == [{"AttributeName": "bucket", "KeyType": "HASH"}]
    assert hits["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
