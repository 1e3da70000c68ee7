"""The CloudFormation resources merged into Chalice's packaged (SAM) template.

``chalice package --merge-template infra/resources.json`` deep-merges this template
into the one Chalice generates (Chalice docs, "AWS CloudFormation Support" ->
"Merging templates": keys of the merged file win, dicts merge recursively), so the
whole application is one stack. This module builds that file; ``python -m infra.build``
writes it. Nothing here is hand-maintained JSON:

- **DynamoDB tables** come from ``chalicelib.db.ALL_MODELS``: key schema, attribute
  definitions, GSIs and LSIs from each model's ``_get_schema()``; PAY_PER_REQUEST;
  TTL on the model's ``TTLAttribute`` (else on ``expires_at``, the convention, so a
  model can add one without an infra change); point-in-time recovery; deletion
  protection in prod; ``DeletionPolicy: Retain`` (no live data is deleted with the stack).
- **Images bucket**: private (all public access blocked, bucket-owner-enforced),
  SSE-S3, TLS only; CORS allowing GET/HEAD from the web origins (presigned GETs);
  lifecycle rules: ``archives/`` expire after 1 day (the sweep deletes at 24 h; this is
  the backstop), incomplete multipart uploads are aborted after 1 day. Retained.
- **Web**: a private bucket served by CloudFront through Origin Access Control,
  ``index.html`` as default root object, SPA fallback (403 -> ``/index.html``; a 404 is
  left alone so a revoked share link stays a 404), HTTPS only, and a response-headers
  policy with CSP, HSTS, nosniff, frame and referrer policies. With ``ApiOriginDomain``
  set, ``/s/*`` (share pages) is served from the API origin, uncached, so share links
  live on the site's own domain; ``SHARE_BASE_URL`` then names the distribution. (The
  origin is a parameter, not a reference to the API: the functions' environment names the
  distribution and the API names the functions, so a reference would be a cycle.)
- **SQS**: the jobs queue and its DLQ (redrive after ``jobs_max_receive_count``
  receives); the webhooks queue (deliveries only, its own worker function); the uploads
  queue and its DLQ for the uploads worker, with a queue policy that lets only the images
  bucket (``aws:SourceArn``, ``aws:SourceAccount``) send to it; each queue's visibility
  timeout is 6x its worker's Lambda timeout.
- **Upload notifications**: the images bucket sends ``s3:ObjectCreated:*`` events for
  keys under ``uploads/`` to the uploads queue; CORS lets the web origins POST (presigned
  POST uploads); a lifecycle rule expires unverified sources under ``uploads/`` after 1 day.
- **KMS**: the key that seals webhook signing secrets (automatic rotation, retained) and
  its alias (``WEBHOOK_SECRET_KMS_KEY_ID``).
- **Secrets Manager**: the Together keys secret (value ``[]`` until the operator puts
  the keys; ``TOGETHER_KEYS_SECRET_ID`` points at it).
- **Alarms** (SNS topic, optional e-mail): the DLQ holds a message; no key is healthy.
- **Globals**: every function's environment (resource names via Ref/GetAtt/Sub, Clerk
  settings from parameters). SAM merges ``Globals.Function.Environment.Variables``
  with each function's own variables (SAM developer guide, "Globals section").
- **API handler**: an explicit function name, so its log group (retention) names it
  correctly (:func:`api_handler_overrides` works around a Chalice 1.34 bug).
- **SnapStart** on the API and the SQS worker functions: ``SnapStart.ApplyOn:
  PublishedVersions`` with ``AutoPublishAlias`` (and ``AutoPublishAliasAllProperties``),
  SAM's SQS mappings on the alias, and every API Gateway integration plus its invoke
  permission overridden to the alias (:func:`api_alias_overrides`, from Chalice's own
  swagger of ``app.py``).
- **Worker event sources**: each SQS handler in ``app.py`` (found by parsing it; its
  ``queue=get_settings().<name>`` picks the queue) gets
  ``FunctionResponseTypes: [ReportBatchItemFailures]`` and its ``Queue`` pointed at
  the ``JobsQueue`` / ``WebhooksQueue`` / ``UploadsQueue`` resource (Chalice writes an ARN
  built from the queue *name* the decorator saw at packaging time; the override makes the mapping follow the stack's
  queue whatever that name was). ``ScalingConfig.MaximumConcurrency`` and
  ``BatchSize`` come from the decorator.

Sources: AWS CloudFormation template reference for AWS::DynamoDB::Table
(TimeToLiveSpecification, PointInTimeRecoverySpecification), AWS::S3::Bucket
(LifecycleConfiguration Rule, CorsConfiguration, PublicAccessBlockConfiguration),
AWS::CloudFront::Distribution, AWS::CloudFront::OriginAccessControl,
AWS::CloudFront::ResponseHeadersPolicy, AWS::SQS::Queue (RedrivePolicy),
AWS::SecretsManager::Secret, AWS::KMS::Key (KeyPolicy, EnableKeyRotation), AWS::KMS::Alias,
AWS::CloudWatch::Alarm, AWS::SQS::QueuePolicy, AWS::S3::Bucket NotificationConfiguration
(QueueConfigurations; Amazon S3 user guide, "Granting permissions to publish event
notification messages to a destination"); AWS SAM "SQS" event
(FunctionResponseTypes, ScalingConfig); Amazon CloudFront developer guide,
"Restricting access to an Amazon S3 origin" (OAC bucket policy with AWS:SourceArn);
AWS Lambda developer guide, "Using Lambda with Amazon SQS" (visibility timeout at least
six times the function timeout); Clerk docs, "Content Security Policy".
"""

from __future__ import annotations

import ast
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra import names

ROOT = Path(__file__).resolve().parent.parent
APP_PATH = ROOT / "app.py"
CONFIG_PATH = ROOT / ".chalice" / "config.json"

VISIBILITY_TIMEOUT_FACTOR = 6  # Lambda developer guide: at least 6x the function timeout
DEFAULT_LAMBDA_TIMEOUT_S = 60  # Chalice's default lambda_timeout
DEFAULT_MAX_RECEIVE_COUNT = 5
JOBS_RETENTION_S = 4 * 24 * 3600  # SQS default message retention, 4 days
WEBHOOKS_RETENTION_S = 24 * 3600  # a delivery message older than a day is re-enqueued by the sweep if still due
DLQ_RETENTION_S = 14 * 24 * 3600  # SQS maximum, 14 days: time to inspect failures
ARCHIVE_EXPIRATION_DAYS = 1
UPLOAD_SOURCE_EXPIRATION_DAYS = 1  # a source is deleted once verified; this catches the rest
UPLOADS_PREFIX = "uploads/"
MULTIPART_ABORT_DAYS = 1
HSTS_MAX_AGE_S = 2 * 365 * 24 * 3600
#: CloudFront managed cache policy "CachingOptimized" (CloudFront developer guide, "Use managed cache policies").
CACHING_OPTIMIZED_POLICY_ID = "658327ea-f89d-4fab-a63d-7e88639e58f6"
#: Managed cache policy "CachingDisabled": share pages are never cached at the edge (a revoke is immediate).
CACHING_DISABLED_POLICY_ID = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
#: Managed origin request policy "AllViewerExceptHostHeader" (API Gateway needs its own Host).
ALL_VIEWER_EXCEPT_HOST_POLICY_ID = "b689b0a8-53d0-40ab-baf2-68738e2966ac"
#: The public share pages' path on the site's own domain, served from the API origin.
SHARE_PATH_PATTERN = "/s/*"
TTL_CONVENTION = "expires_at"


def cfn_name(name: str) -> str:
    """Chalice's CloudFormation logical id for a resource name (``chalice.utils.to_cfn_resource_name``:
    ``process_jobs`` -> ``ProcessJobs``)."""
    for separator in ("-", "_"):
        name = "".join(part[0].upper() + part[1:] for part in name.split(separator) if part)
    return re.sub(r"[^A-Za-z0-9]+", "", name)


def sub(text: str) -> dict[str, str]:
    """``{"Fn::Sub": text}``."""
    return {"Fn::Sub": text}


def ref(name: str) -> dict[str, str]:
    """``{"Ref": name}``."""
    return {"Ref": name}


def get_att(resource: str, attribute: str) -> dict[str, list[str]]:
    """``{"Fn::GetAtt": [resource, attribute]}``."""
    return {"Fn::GetAtt": [resource, attribute]}


STAGE = "${Stage}"  # the Stage parameter inside Fn::Sub


# -- the app's event handlers (app.py, parsed, not imported) ----------------------------------------


@dataclass(frozen=True)
class Handler:
    """A Chalice event handler: ``kind`` (``on_sqs_message``, ``schedule``, ...), the Python
    function, the Lambda ``name`` (decorator ``name=`` or the function name)."""

    kind: str
    function: str
    name: str
    queue_setting: str | None = None  # on_sqs_message: the Settings attribute naming its queue

    @property
    def resource(self) -> str:
        """The function's logical id in the packaged template."""
        return cfn_name(self.name)

    @property
    def handler(self) -> str:
        """The Lambda handler string Chalice writes (``app.<function>``)."""
        return f"app.{self.function}"


def app_handlers(app_path: Path = APP_PATH) -> list[Handler]:
    """Every ``@app.<event>(...)`` handler in ``app.py`` except routes (which all run in
    ``api_handler``), in file order.

    Raises:
        SyntaxError: ``app.py`` does not parse.
    """
    tree = ast.parse(app_path.read_text(encoding="utf-8"), filename=str(app_path))
    found: list[Handler] = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            func = call.func if call else decorator
            if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "app"):
                continue
            if func.attr in ("route", "middleware", "authorizer"):
                continue
            name = node.name
            queue_setting = None
            for keyword in call.keywords if call else []:
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                    name = str(keyword.value.value)
                if keyword.arg == "queue" and isinstance(keyword.value, ast.Attribute):
                    queue_setting = keyword.value.attr  # get_settings().<queue_setting>
            found.append(Handler(func.attr, node.name, name, queue_setting))
    return found


#: The queue resource an ``@app.on_sqs_message(queue=get_settings().<setting>)`` handler reads.
QUEUE_RESOURCES = {
    "jobs_queue_name": "JobsQueue",
    "webhooks_queue_name": "WebhooksQueue",
    "uploads_queue_name": "UploadsQueue",
}


def sqs_handlers(handlers: list[Handler] | None = None) -> dict[str, Handler]:
    """The ``@app.on_sqs_message`` handlers by queue resource (``JobsQueue``, ``WebhooksQueue``,
    ``UploadsQueue``).

    Raises:
        ValueError: a handler's queue is not ``get_settings().<one of QUEUE_RESOURCES>``, or
            two handlers read one queue.
    """
    found: dict[str, Handler] = {}
    for handler in app_handlers() if handlers is None else handlers:
        if handler.kind != "on_sqs_message":
            continue
        resource = QUEUE_RESOURCES.get(handler.queue_setting or "")
        if resource is None:
            raise ValueError(f"{handler.function}: queue must be get_settings().<{'|'.join(QUEUE_RESOURCES)}>")
        if resource in found:
            raise ValueError(f"two @app.on_sqs_message handlers read {resource}")
        found[resource] = handler
    return found


def worker_handler(handlers: list[Handler] | None = None) -> Handler | None:
    """The jobs-queue worker (the ``@app.on_sqs_message`` handler of the jobs queue), or None.

    Raises:
        ValueError: see :func:`sqs_handlers`.
    """
    return sqs_handlers(handlers).get("JobsQueue")


def webhook_worker_handler(handlers: list[Handler] | None = None) -> Handler | None:
    """The webhook worker (the ``@app.on_sqs_message`` handler of the webhooks queue), or None.

    Raises:
        ValueError: see :func:`sqs_handlers`.
    """
    return sqs_handlers(handlers).get("WebhooksQueue")


def uploads_handler(handlers: list[Handler] | None = None) -> Handler | None:
    """The uploads worker (the ``@app.on_sqs_message`` handler of the uploads queue), or None.

    Raises:
        ValueError: see :func:`sqs_handlers`.
    """
    return sqs_handlers(handlers).get("UploadsQueue")


def load_config(path: Path = CONFIG_PATH) -> dict[str, Any]:
    """``.chalice/config.json``."""
    return json.loads(path.read_text(encoding="utf-8"))


def lambda_timeout(config: dict[str, Any], function: str, stage: str) -> int:
    """A function's timeout (seconds) as Chalice resolves it: ``stages.<stage>.lambda_functions.
    <function>`` > ``stages.<stage>`` > ``lambda_functions.<function>`` > top level > 60."""
    stage_cfg = config.get("stages", {}).get(stage, {})
    for scope in (
        stage_cfg.get("lambda_functions", {}).get(function, {}),
        stage_cfg,
        config.get("lambda_functions", {}).get(function, {}),
        config,
    ):
        if "lambda_timeout" in scope:
            return int(scope["lambda_timeout"])
    return DEFAULT_LAMBDA_TIMEOUT_S


def max_receive_count() -> int:
    """The DLQ redrive ``maxReceiveCount``: ``Settings.jobs_max_receive_count`` when the
    settings define it (the worker reads the same value), else 5."""
    from chalicelib.settings import Settings

    return int(getattr(Settings(), "jobs_max_receive_count", DEFAULT_MAX_RECEIVE_COUNT))


# -- DynamoDB tables from the models --------------------------------------------------------------


def _key_schema(elements: list[dict[str, str]]) -> list[dict[str, str]]:
    """HASH first, then RANGE (CloudFormation and DynamoDB require that order)."""
    ordered = sorted(elements, key=lambda e: 0 if e["KeyType"] == "HASH" else 1)
    return [{"AttributeName": e["AttributeName"], "KeyType": e["KeyType"]} for e in ordered]


def _projection(projection: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"ProjectionType": projection["ProjectionType"]}
    if projection.get("NonKeyAttributes"):
        out["NonKeyAttributes"] = sorted(projection["NonKeyAttributes"])
    return out


def ttl_attribute(model: type) -> str:
    """The model's ``TTLAttribute`` name, else :data:`TTL_CONVENTION`."""
    attribute = model._ttl_attribute()  # type: ignore[attr-defined]
    return attribute.attr_name if attribute is not None else TTL_CONVENTION


def logical_table_name(model: type) -> str:
    """The table's name without ``TABLE_PREFIX`` (``images``, ``job_items``...).

    Raises:
        ValueError: the model's table name does not start with the settings' prefix.
    """
    from chalicelib.settings import get_settings

    prefix = get_settings().table_prefix
    full = model.Meta.table_name  # type: ignore[attr-defined]
    if not full.startswith(prefix):
        raise ValueError(f"{model.__name__}: table {full!r} does not start with TABLE_PREFIX {prefix!r}")
    return full[len(prefix) :]


def table_resource(model: type) -> tuple[str, dict[str, Any]]:
    """``(logical id, AWS::DynamoDB::Table)`` for one PynamoDB model."""
    schema = model._get_schema()  # type: ignore[attr-defined]
    short = logical_table_name(model)
    attributes: dict[str, str] = {}
    for definition in schema["attribute_definitions"]:
        attributes[definition["AttributeName"]] = definition["AttributeType"]
    for index in schema["global_secondary_indexes"] + schema["local_secondary_indexes"]:
        for definition in index.get("attribute_definitions", []):
            attributes[definition["AttributeName"]] = definition["AttributeType"]
    properties: dict[str, Any] = {
        "TableName": sub(names.table_prefix(STAGE) + short),
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": attributes[name]} for name in sorted(attributes)
        ],
        "KeySchema": _key_schema(schema["key_schema"]),
    }
    for schema_key, property_name in (
        ("global_secondary_indexes", "GlobalSecondaryIndexes"),
        ("local_secondary_indexes", "LocalSecondaryIndexes"),
    ):
        if schema[schema_key]:
            properties[property_name] = [
                {
                    "IndexName": index["index_name"],
                    "KeySchema": _key_schema(index["key_schema"]),
                    "Projection": _projection(index["projection"]),
                }
                for index in sorted(schema[schema_key], key=lambda i: i["index_name"])
            ]
    properties["TimeToLiveSpecification"] = {"AttributeName": ttl_attribute(model), "Enabled": True}
    properties["PointInTimeRecoverySpecification"] = {"PointInTimeRecoveryEnabled": True}
    properties["DeletionProtectionEnabled"] = {"Fn::If": ["IsProd", True, False]}
    properties["Tags"] = _tags()
    logical = cfn_name(short) + "Table"
    return logical, {
        "Type": "AWS::DynamoDB::Table",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": properties,
    }


def table_resources() -> dict[str, dict[str, Any]]:
    """One table per model in ``chalicelib.db.ALL_MODELS``.

    Raises:
        ValueError: two models map to the same table.
    """
    from chalicelib.db import ALL_MODELS

    out: dict[str, dict[str, Any]] = {}
    for model in ALL_MODELS:
        logical, resource = table_resource(model)
        if logical in out:
            raise ValueError(f"two models map to table resource {logical}")
        out[logical] = resource
    return out


# -- the rest of the stack ------------------------------------------------------------------------


def _tags() -> list[dict[str, Any]]:
    return [{"Key": "app", "Value": names.APP}, {"Key": "stage", "Value": ref("Stage")}]


def web_origins() -> dict[str, Any]:
    """The web origins, comma-separated: the CloudFront URL, plus ``ExtraWebOrigins``."""
    return {
        "Fn::If": [
            "HasExtraWebOrigins",
            sub("https://${WebDistribution.DomainName},${ExtraWebOrigins}"),
            sub("https://${WebDistribution.DomainName}"),
        ]
    }


def content_security_policy() -> dict[str, str]:
    """The CSP header: scripts from this origin and the Clerk Frontend API (the issuer's
    origin) and Cloudflare Turnstile (Clerk's bot protection); API calls to API Gateway
    in the stack's region; images and downloads from presigned S3 URLs (path- or
    virtual-hosted style); nothing framed by others."""
    s3 = (
        "https://s3.${AWS::Region}.amazonaws.com https://*.s3.${AWS::Region}.amazonaws.com "
        "https://s3.amazonaws.com https://*.s3.amazonaws.com"
    )
    directives = [
        "default-src 'self'",
        "script-src 'self' ${ClerkIssuer} https://challenges.cloudflare.com",
        "connect-src 'self' https://*.execute-api.${AWS::Region}.amazonaws.com ${ClerkIssuer} "
        f"https://clerk-telemetry.com {s3}",
        f"img-src 'self' data: blob: https://img.clerk.com {s3}",
        f"media-src 'self' blob: {s3}",
        "style-src 'self' 'unsafe-inline'",
        "font-src 'self' data:",
        "frame-src ${ClerkIssuer} https://challenges.cloudflare.com",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "upgrade-insecure-requests",
    ]
    return sub("; ".join(directives))


def parameters() -> dict[str, Any]:
    """Template parameters (``make deploy`` passes them; see docs/deploy.md)."""
    return {
        "Stage": {
            "Type": "String",
            "AllowedPattern": f"^{names.STAGE_PATTERN}$",
            "Description": "The Chalice stage this template was packaged for (dev, prod, or any [a-z][a-z0-9-]{0,15}).",
        },
        "ClerkIssuer": {
            "Type": "String",
            "AllowedPattern": "^https://[^/]+$",
            "Description": "The Clerk instance's issuer / Frontend API origin, e.g. https://clever-fox-12.clerk.accounts.dev",
        },
        "ClerkJwksUrl": {
            "Type": "String",
            "Default": "",
            "Description": "Optional JWKS URL (default: {issuer}/.well-known/jwks.json).",
        },
        "ClerkJwtKey": {
            "Type": "String",
            "Default": "",
            "Description": "Optional PEM public key (newlines as \\n) to verify tokens without fetching the JWKS.",
        },
        "ClerkAdminOrgId": {
            "Type": "String",
            "Default": "",
            "Description": "Optional Clerk organization id whose admins (o.rol admin) are the API's admins.",
        },
        "ClerkAdminUserIds": {
            "Type": "String",
            "Default": "",
            "Description": "Optional comma-separated Clerk user ids that are the API's admins.",
        },
        "ClerkPublishableKey": {
            "Type": "String",
            "Default": "",
            "Description": "The Clerk publishable key (pk_...) the web client uses; echoed in the outputs.",
        },
        "ExtraWebOrigins": {
            "Type": "String",
            "Default": "",
            "Description": "Comma-separated extra web origins (CORS, authorized parties), e.g. a custom domain.",
        },
        "ImageRetentionDays": {
            "Type": "Number",
            "Default": 30,
            "MinValue": 0,
            "Description": "Days an image is kept before the retention sweep deletes it; 0 keeps images forever.",
        },
        "AlarmEmail": {
            "Type": "String",
            "Default": "",
            "Description": "Optional e-mail address subscribed to the alarms topic.",
        },
        "ApiOriginDomain": {
            "Type": "String",
            "Default": "",
            "AllowedPattern": "^$|^[a-z0-9][a-z0-9.-]*[a-z0-9]$",
            "Description": "The API's host name (<rest-api-id>.execute-api.<region>.amazonaws.com, from the "
            "EndpointURL output) or a custom API domain; when set, CloudFront serves /s/* (share links) from it.",
        },
        "ApiOriginPath": {
            "Type": "String",
            "Default": "/api",
            "AllowedPattern": "^$|^/[A-Za-z0-9_-]+$",
            "Description": "The API Gateway stage path in front of the API's routes (Chalice's api_gateway_stage).",
        },
    }


def conditions() -> dict[str, Any]:
    """``IsProd``, ``HasExtraWebOrigins``, ``HasAlarmEmail``, ``HasClerkPublishableKey``, ``HasApiOrigin``."""

    def not_empty(parameter: str) -> dict[str, Any]:
        return {"Fn::Not": [{"Fn::Equals": [ref(parameter), ""]}]}

    return {
        "IsProd": {"Fn::Equals": [ref("Stage"), "prod"]},
        "HasExtraWebOrigins": not_empty("ExtraWebOrigins"),
        "HasAlarmEmail": not_empty("AlarmEmail"),
        "HasClerkPublishableKey": not_empty("ClerkPublishableKey"),
        "HasApiOrigin": not_empty("ApiOriginDomain"),
    }


def environment() -> dict[str, Any]:
    """Every function's environment variables (SAM Globals)."""
    return {
        "TABLE_PREFIX": sub(names.table_prefix(STAGE)),
        "IMAGES_BUCKET": ref("ImagesBucket"),
        "JOBS_QUEUE_NAME": get_att("JobsQueue", "QueueName"),
        "JOBS_DLQ_NAME": get_att("JobsDeadLetterQueue", "QueueName"),
        "UPLOADS_QUEUE_NAME": get_att("UploadsQueue", "QueueName"),
        "UPLOADS_DLQ_NAME": get_att("UploadsDeadLetterQueue", "QueueName"),
        "WEBHOOKS_QUEUE_NAME": get_att("WebhooksQueue", "QueueName"),
        "WEBHOOK_SECRET_KMS_KEY_ID": ref("WebhookSecretsKeyAlias"),
        "TOGETHER_KEYS_SECRET_ID": ref("TogetherKeysSecret"),
        "CLERK_ISSUER": ref("ClerkIssuer"),
        "CLERK_JWKS_URL": ref("ClerkJwksUrl"),
        "CLERK_JWT_KEY": ref("ClerkJwtKey"),
        "CLERK_ADMIN_ORG_ID": ref("ClerkAdminOrgId"),
        "CLERK_ADMIN_USER_IDS": ref("ClerkAdminUserIds"),
        "CLERK_AUTHORIZED_PARTIES": web_origins(),
        "CORS_ALLOWED_ORIGINS": web_origins(),
        "IMAGE_RETENTION_DAYS": ref("ImageRetentionDays"),
        "SHARE_BASE_URL": {"Fn::If": ["HasApiOrigin", sub("https://${WebDistribution.DomainName}"), ""]},
        "POWERTOOLS_SERVICE_NAME": sub(names.service_name(STAGE)),
        "POWERTOOLS_METRICS_NAMESPACE": names.METRICS_NAMESPACE,
    }


def _deny_insecure_transport(bucket: str) -> dict[str, Any]:
    return {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [get_att(bucket, "Arn"), sub("${" + bucket + ".Arn}/*")],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def _private_bucket_properties() -> dict[str, Any]:
    return {
        "BucketEncryption": {
            "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
        "PublicAccessBlockConfiguration": {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        },
        "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
    }


def _web_origins_list() -> dict[str, Any]:
    """The web origins as a list (CORS ``AllowedOrigins``)."""
    return {
        "Fn::If": [
            "HasExtraWebOrigins",
            {"Fn::Split": [",", sub("https://${WebDistribution.DomainName},${ExtraWebOrigins}")]},
            [sub("https://${WebDistribution.DomainName}")],
        ]
    }


def storage_resources() -> dict[str, Any]:
    """The images bucket (with its upload notifications) and its policy.

    The bucket's name is built with Fn::Sub, not referenced, so the uploads queue policy can
    name the bucket's ARN before the bucket exists: S3 checks that it may send to the queue
    when the notification is created (hence ``DependsOn``).
    """
    return {
        "ImagesBucket": {
            "Type": "AWS::S3::Bucket",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "DependsOn": ["UploadsQueuePolicy"],
            "Properties": {
                "BucketName": sub(names.images_bucket(STAGE)),
                **_private_bucket_properties(),
                "CorsConfiguration": {
                    "CorsRules": [
                        {
                            "Id": "presigned-get-from-web",
                            "AllowedMethods": ["GET", "HEAD"],
                            "AllowedOrigins": _web_origins_list(),
                            "ExposedHeaders": ["Content-Disposition", "Content-Length", "Content-Type", "ETag"],
                            "MaxAge": 3600,
                        },
                        {
                            "Id": "presigned-post-from-web",
                            "AllowedMethods": ["POST"],
                            "AllowedOrigins": _web_origins_list(),
                            "AllowedHeaders": ["*"],
                            "ExposedHeaders": ["ETag", "Location"],
                            "MaxAge": 3600,
                        },
                    ]
                },
                "NotificationConfiguration": {
                    "QueueConfigurations": [
                        {
                            "Event": "s3:ObjectCreated:*",
                            "Queue": get_att("UploadsQueue", "Arn"),
                            "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": UPLOADS_PREFIX}]}},
                        }
                    ]
                },
                "LifecycleConfiguration": {
                    "Rules": [
                        {
                            "Id": "expire-archives",
                            "Status": "Enabled",
                            "Prefix": "archives/",
                            "ExpirationInDays": ARCHIVE_EXPIRATION_DAYS,
                        },
                        {
                            "Id": "expire-unverified-upload-sources",
                            "Status": "Enabled",
                            "Prefix": UPLOADS_PREFIX,
                            "ExpirationInDays": UPLOAD_SOURCE_EXPIRATION_DAYS,
                        },
                        {
                            "Id": "abort-incomplete-multipart-uploads",
                            "Status": "Enabled",
                            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": MULTIPART_ABORT_DAYS},
                        },
                    ]
                },
                "Tags": _tags(),
            },
        },
        "ImagesBucketPolicy": {
            "Type": "AWS::S3::BucketPolicy",
            "Properties": {
                "Bucket": ref("ImagesBucket"),
                "PolicyDocument": {"Version": "2012-10-17", "Statement": [_deny_insecure_transport("ImagesBucket")]},
            },
        },
    }


def api_origin() -> dict[str, Any]:
    """The API as a CloudFront origin (``ApiOriginDomain`` + ``ApiOriginPath``), HTTPS only."""
    return {
        "Id": "api",
        "DomainName": ref("ApiOriginDomain"),
        "OriginPath": ref("ApiOriginPath"),
        "CustomOriginConfig": {
            "OriginProtocolPolicy": "https-only",
            "OriginSSLProtocols": ["TLSv1.2"],
            "HTTPSPort": 443,
        },
    }


def share_cache_behavior() -> dict[str, Any]:
    """``/s/*`` from the API origin: GET/HEAD only, never cached at the edge (each view is
    counted and mints fresh presigned URLs; a revoke takes effect at once), every viewer
    header but ``Host`` forwarded. The page sets its own CSP and security headers, so the
    web client's response-headers policy is not attached."""
    return {
        "PathPattern": SHARE_PATH_PATTERN,
        "TargetOriginId": "api",
        "ViewerProtocolPolicy": "https-only",
        "AllowedMethods": ["GET", "HEAD"],
        "CachedMethods": ["GET", "HEAD"],
        "Compress": True,
        "CachePolicyId": CACHING_DISABLED_POLICY_ID,
        "OriginRequestPolicyId": ALL_VIEWER_EXCEPT_HOST_POLICY_ID,
    }


def web_resources() -> dict[str, Any]:
    """The web bucket, Origin Access Control, security headers and the distribution."""
    return {
        "WebBucket": {
            "Type": "AWS::S3::Bucket",
            "DeletionPolicy": "Delete",
            "UpdateReplacePolicy": "Delete",
            "Properties": {**_private_bucket_properties(), "Tags": _tags()},
        },
        "WebBucketPolicy": {
            "Type": "AWS::S3::BucketPolicy",
            "Properties": {
                "Bucket": ref("WebBucket"),
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "AllowCloudFrontOriginAccessControl",
                            "Effect": "Allow",
                            "Principal": {"Service": "cloudfront.amazonaws.com"},
                            "Action": "s3:GetObject",
                            "Resource": sub("${WebBucket.Arn}/*"),
                            "Condition": {
                                "StringEquals": {
                                    "AWS:SourceArn": sub(
                                        "arn:${AWS::Partition}:cloudfront::${AWS::AccountId}:distribution/${WebDistribution}"
                                    )
                                }
                            },
                        },
                        _deny_insecure_transport("WebBucket"),
                    ],
                },
            },
        },
        "WebOriginAccessControl": {
            "Type": "AWS::CloudFront::OriginAccessControl",
            "Properties": {
                "OriginAccessControlConfig": {
                    "Name": sub("${AWS::StackName}-web"),
                    "Description": "PromptCanvas web client: CloudFront signs its requests to the web bucket.",
                    "OriginAccessControlOriginType": "s3",
                    "SigningBehavior": "always",
                    "SigningProtocol": "sigv4",
                }
            },
        },
        "WebSecurityHeadersPolicy": {
            "Type": "AWS::CloudFront::ResponseHeadersPolicy",
            "Properties": {
                "ResponseHeadersPolicyConfig": {
                    "Name": sub("${AWS::StackName}-security-headers"),
                    "Comment": "CSP, HSTS, nosniff, frame and referrer policies for the web client.",
                    "SecurityHeadersConfig": {
                        "ContentSecurityPolicy": {
                            "ContentSecurityPolicy": content_security_policy(),
                            "Override": True,
                        },
                        "StrictTransportSecurity": {
                            "AccessControlMaxAgeSec": HSTS_MAX_AGE_S,
                            "IncludeSubdomains": True,
                            "Preload": False,
                            "Override": True,
                        },
                        "ContentTypeOptions": {"Override": True},
                        "FrameOptions": {"FrameOption": "DENY", "Override": True},
                        "ReferrerPolicy": {"ReferrerPolicy": "strict-origin-when-cross-origin", "Override": True},
                    },
                }
            },
        },
        "WebDistribution": {
            "Type": "AWS::CloudFront::Distribution",
            "Properties": {
                "DistributionConfig": {
                    "Enabled": True,
                    "Comment": sub("PromptCanvas web client (${Stage})"),
                    "DefaultRootObject": "index.html",
                    "HttpVersion": "http2and3",
                    "IPV6Enabled": True,
                    "PriceClass": "PriceClass_100",
                    "Origins": [
                        {
                            "Id": "web-bucket",
                            "DomainName": get_att("WebBucket", "RegionalDomainName"),
                            "S3OriginConfig": {"OriginAccessIdentity": ""},
                            "OriginAccessControlId": get_att("WebOriginAccessControl", "Id"),
                        },
                        {"Fn::If": ["HasApiOrigin", api_origin(), ref("AWS::NoValue")]},
                    ],
                    "CacheBehaviors": {"Fn::If": ["HasApiOrigin", [share_cache_behavior()], ref("AWS::NoValue")]},
                    "DefaultCacheBehavior": {
                        "TargetOriginId": "web-bucket",
                        "ViewerProtocolPolicy": "https-only",
                        "AllowedMethods": ["GET", "HEAD"],
                        "CachedMethods": ["GET", "HEAD"],
                        "Compress": True,
                        "CachePolicyId": CACHING_OPTIMIZED_POLICY_ID,
                        "ResponseHeadersPolicyId": ref("WebSecurityHeadersPolicy"),
                    },
                    # 403 only: S3 through OAC answers 403 for a missing key; a 404 (a revoked
                    # share link from the API origin) must reach the browser as a 404.
                    "CustomErrorResponses": [
                        {
                            "ErrorCode": 403,
                            "ResponseCode": 200,
                            "ResponsePagePath": "/index.html",
                            "ErrorCachingMinTTL": 0,
                        }
                    ],
                },
                "Tags": _tags(),
            },
        },
    }


def _queue_with_dlq(queue: str, dlq: str, queue_name: str, dlq_name: str, visibility_timeout_s: int) -> dict[str, Any]:
    """A queue and its dead-letter queue (logical ids ``queue``/``dlq``, names for Fn::Sub)."""
    return {
        dlq: {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": sub(dlq_name),
                "MessageRetentionPeriod": DLQ_RETENTION_S,
                "SqsManagedSseEnabled": True,
                "Tags": _tags(),
            },
        },
        queue: {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": sub(queue_name),
                "VisibilityTimeout": visibility_timeout_s,
                "MessageRetentionPeriod": JOBS_RETENTION_S,
                "SqsManagedSseEnabled": True,
                "RedrivePolicy": {
                    "deadLetterTargetArn": get_att(dlq, "Arn"),
                    "maxReceiveCount": max_receive_count(),
                },
                "Tags": _tags(),
            },
        },
    }


def queue_resources(visibility_timeout_s: int, webhooks_visibility_timeout_s: int) -> dict[str, Any]:
    """The jobs queue and its dead-letter queue, and the webhooks queue (no DLQ: each job's
    webhook state drives retries and the sweep re-enqueues due deliveries)."""
    return {
        "WebhooksQueue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": sub(names.webhooks_queue(STAGE)),
                "VisibilityTimeout": webhooks_visibility_timeout_s,
                "MessageRetentionPeriod": WEBHOOKS_RETENTION_S,
                "SqsManagedSseEnabled": True,
                "Tags": _tags(),
            },
        },
        **_queue_with_dlq(
            "JobsQueue", "JobsDeadLetterQueue", names.jobs_queue(STAGE), names.jobs_dlq(STAGE), visibility_timeout_s
        ),
    }


def uploads_queue_resources(visibility_timeout_s: int) -> dict[str, Any]:
    """The uploads queue (S3 events), its dead-letter queue, and the policy letting the
    images bucket, and only it, send to it."""
    return {
        **_queue_with_dlq(
            "UploadsQueue",
            "UploadsDeadLetterQueue",
            names.uploads_queue(STAGE),
            names.uploads_dlq(STAGE),
            visibility_timeout_s,
        ),
        "UploadsQueuePolicy": {
            "Type": "AWS::SQS::QueuePolicy",
            "Properties": {
                "Queues": [ref("UploadsQueue")],
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "ImagesBucketNotifications",
                            "Effect": "Allow",
                            "Principal": {"Service": "s3.amazonaws.com"},
                            "Action": "sqs:SendMessage",
                            "Resource": get_att("UploadsQueue", "Arn"),
                            "Condition": {
                                "ArnEquals": {
                                    "aws:SourceArn": sub("arn:${AWS::Partition}:s3:::" + names.images_bucket(STAGE))
                                },
                                "StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")},
                            },
                        }
                    ],
                },
            },
        },
    }


def kms_resources() -> dict[str, Any]:
    """The KMS key that seals webhook signing secrets (yearly automatic rotation; retained:
    deleting it would make every stored secret unreadable) and its alias, which the app is
    given as ``WEBHOOK_SECRET_KMS_KEY_ID`` and the IAM policy matches on."""
    return {
        "WebhookSecretsKey": {
            "Type": "AWS::KMS::Key",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "Description": sub("PromptCanvas ${Stage}: seals per-user webhook signing secrets"),
                "EnableKeyRotation": True,
                "KeyPolicy": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "AccountIamPolicies",
                            "Effect": "Allow",
                            "Principal": {"AWS": sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")},
                            "Action": "kms:*",
                            "Resource": "*",
                        }
                    ],
                },
                "Tags": _tags(),
            },
        },
        "WebhookSecretsKeyAlias": {
            "Type": "AWS::KMS::Alias",
            "Properties": {
                "AliasName": sub(names.webhook_secrets_key_alias(STAGE)),
                "TargetKeyId": ref("WebhookSecretsKey"),
            },
        },
    }


def secret_resources() -> dict[str, Any]:
    """The Together keys secret."""
    return {
        "TogetherKeysSecret": {
            "Type": "AWS::SecretsManager::Secret",
            "Properties": {
                "Name": sub(names.keys_secret(STAGE)),
                "Description": "Together AI API keys for PromptCanvas: a JSON list of strings. "
                "Set it with put-secret-value (docs/deploy.md); the stack only creates it empty.",
                "SecretString": "[]",
                "Tags": _tags(),
            },
        }
    }


def _dlq_alarm(dlq: str, suffix: str, description: str, actions: dict[str, Any]) -> dict[str, Any]:
    """An alarm when the dead-letter queue ``dlq`` holds a message."""
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmName": sub("${AWS::StackName}-" + suffix),
            "AlarmDescription": description,
            "Namespace": "AWS/SQS",
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "Dimensions": [{"Name": "QueueName", "Value": get_att(dlq, "QueueName")}],
            "Statistic": "Maximum",
            "Period": 300,
            "EvaluationPeriods": 1,
            "Threshold": 0,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
            **actions,
        },
    }


def alarm_resources() -> dict[str, Any]:
    """The alarms topic (with an optional e-mail subscription) and the alarms."""
    actions = {"AlarmActions": [ref("AlarmTopic")], "OKActions": [ref("AlarmTopic")]}
    return {
        "AlarmTopic": {
            "Type": "AWS::SNS::Topic",
            "Properties": {"DisplayName": sub("PromptCanvas ${Stage} alarms"), "Tags": _tags()},
        },
        "AlarmEmailSubscription": {
            "Type": "AWS::SNS::Subscription",
            "Condition": "HasAlarmEmail",
            "Properties": {"TopicArn": ref("AlarmTopic"), "Protocol": "email", "Endpoint": ref("AlarmEmail")},
        },
        "UploadsDeadLetterQueueAlarm": _dlq_alarm(
            "UploadsDeadLetterQueue",
            "uploads-dlq-not-empty",
            "S3 upload events reached the dead-letter queue: an upload could not be "
            "verified in any delivery (it stays pending). See docs/deploy.md, 'Alarms'.",
            actions,
        ),
        "JobsDeadLetterQueueAlarm": _dlq_alarm(
            "JobsDeadLetterQueue",
            "jobs-dlq-not-empty",
            "Jobs messages reached the dead-letter queue: a job item failed "
            "every delivery. See docs/deploy.md, 'Alarms'.",
            actions,
        ),
        "AllKeysUnhealthyAlarm": {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmName": sub("${AWS::StackName}-no-healthy-together-key"),
                "AlarmDescription": "No Together API key is healthy (all cooling, disabled or out of "
                "credits, or the keys secret is unreadable). Gauge: emit_gauges, every 5 minutes.",
                "Namespace": names.METRICS_NAMESPACE,
                "MetricName": "HealthyKeys",
                "Dimensions": [{"Name": "service", "Value": sub(names.service_name(STAGE))}],
                "Statistic": "Maximum",
                "Period": 300,
                "EvaluationPeriods": 2,
                "Threshold": 0,
                "ComparisonOperator": "LessThanOrEqualToThreshold",
                "TreatMissingData": "breaching",
                **actions,
            },
        },
    }


def worker_override(worker: Handler, queue: str = "JobsQueue") -> dict[str, Any]:
    """An SQS worker function's merge: its SQS event reports partial batch failures and reads
    the stack's ``queue`` resource. ``Handler``/``Runtime`` repeat Chalice's values so this
    file is also a valid template on its own (cfn-lint)."""
    return {
        "Type": "AWS::Serverless::Function",
        "Properties": {
            "Handler": worker.handler,
            "Runtime": names.RUNTIME,
            **snapstart(),
            "Events": {
                f"{worker.resource}SqsEventSource": {
                    "Type": "SQS",
                    "Properties": {
                        "Queue": sub("${" + queue + ".Arn}"),
                        "FunctionResponseTypes": ["ReportBatchItemFailures"],
                    },
                }
            },
        },
    }


def api_handler_overrides() -> dict[str, Any]:
    """Fix Chalice 1.34's API handler log group: Chalice renames the function to ``APIHandler``
    but its ``ApiHandlerLogGroup`` still names ``/aws/lambda/${ApiHandler}``, a resource that
    does not exist. The function gets an explicit name (``<stack>-api``, inside the log
    policy's ``<stack>-*``) and the log group that literal name, so neither refers to the other."""
    function_name = names.API_FUNCTION_NAME
    return {
        "APIHandler": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "FunctionName": sub(function_name),
                "Handler": "app.app",
                "Runtime": names.RUNTIME,
                **snapstart(),
            },
        },
        "ApiHandlerLogGroup": {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {"LogGroupName": sub("/aws/lambda/" + function_name)},
        },
    }


#: The alias SAM publishes for the SnapStart functions (``AutoPublishAlias``); SAM names the
#: ``AWS::Lambda::Alias`` it creates ``<function logical id>Alias<alias>`` (SAM developer guide,
#: "CloudFormation resources generated when AWS::Serverless::Function is specified").
ALIAS = "live"


def alias_id(function_resource: str) -> str:
    """The logical id of a function's published alias (``APIHandlerAliaslive``)."""
    return f"{function_resource}Alias{ALIAS}"


def snapstart() -> dict[str, Any]:
    """Function properties for SnapStart: Lambda snapshots the initialized environment of each
    published version (``SnapStart.ApplyOn: PublishedVersions``), so SAM must publish one on
    every change: ``AutoPublishAlias`` with ``AutoPublishAliasAllProperties`` (a new version
    also when only memory, timeout or environment change, not only the code). Callers must
    invoke the alias: SAM points the function's event sources (the SQS mapping) at it;
    :func:`api_alias_overrides` points API Gateway at it.

    Sources: AWS Lambda developer guide, "Improving startup performance with Lambda SnapStart"
    (Python 3.12+; published versions only); AWS SAM, ``AWS::Serverless::Function``
    ``AutoPublishAlias``, ``AutoPublishAliasAllProperties``, ``SnapStart``.
    """
    return {
        "AutoPublishAlias": ALIAS,
        "AutoPublishAliasAllProperties": True,
        "SnapStart": {"ApplyOn": "PublishedVersions"},
    }


SWAGGER_PATHS = """
import json, sys
from chalice.deploy.swagger import CFNSwaggerGenerator
import app
paths = CFNSwaggerGenerator().generate_swagger(app.app)["paths"]
json.dump({path: sorted(methods) for path, methods in paths.items()}, sys.stdout)
"""


@functools.cache
def api_operations() -> dict[str, list[str]]:
    """The REST API's paths and their methods, as Chalice writes them into the ``RestAPI``
    swagger (``chalice.deploy.swagger.CFNSwaggerGenerator`` over ``app.app``). ``app.py`` is
    imported in a child process, so its import-time effects (settings, logging) stay out of
    the caller.

    Raises:
        subprocess.CalledProcessError: ``app.py`` does not import.
    """
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", SWAGGER_PATHS], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True
    )
    return dict(sorted(json.loads(proc.stdout).items()))


def api_alias_overrides(operations: dict[str, list[str]]) -> dict[str, Any]:
    """Point API Gateway at the API function's alias (a SnapStart snapshot serves only
    published versions): every swagger integration URI names ``APIHandlerAliaslive``
    instead of ``APIHandler.Arn``, and API Gateway's invoke permission is on the alias.
    ``StageName``, ``swagger`` and the permission's other fields repeat Chalice's values so
    this file is also a valid template on its own (cfn-lint)."""
    alias = alias_id("APIHandler")
    uri = sub(
        "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${" + alias + "}/invocations"
    )
    integration = {"x-amazon-apigateway-integration": {"uri": uri, "type": "aws_proxy", "httpMethod": "POST"}}
    paths = {path: {method: integration for method in methods} for path, methods in operations.items()}
    return {
        "RestAPI": {
            "Type": "AWS::Serverless::Api",
            "Properties": {
                "StageName": "api",
                "DefinitionBody": {"swagger": "2.0", "info": {"version": "1.0", "title": names.APP}, "paths": paths},
            },
        },
        "APIHandlerInvokePermission": {
            "Type": "AWS::Lambda::Permission",
            "Properties": {
                "FunctionName": ref(alias),
                "Action": "lambda:InvokeFunction",
                "Principal": "apigateway.amazonaws.com",
                "SourceArn": {
                    "Fn::Sub": [
                        "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${RestAPIId}/*",
                        {"RestAPIId": ref("RestAPI")},
                    ]
                },
            },
        },
    }


def outputs() -> dict[str, Any]:
    """Stack outputs (Chalice adds ``EndpointURL``, the API's base URL)."""
    return {
        "WebUrl": {
            "Description": "The web client (CloudFront).",
            "Value": sub("https://${WebDistribution.DomainName}"),
        },
        "WebDistributionId": {"Value": ref("WebDistribution")},
        "WebBucketName": {"Value": ref("WebBucket")},
        "ImagesBucketName": {"Value": ref("ImagesBucket")},
        "JobsQueueUrl": {"Value": ref("JobsQueue")},
        "JobsDeadLetterQueueUrl": {"Value": ref("JobsDeadLetterQueue")},
        "UploadsQueueUrl": {"Value": ref("UploadsQueue")},
        "UploadsDeadLetterQueueUrl": {"Value": ref("UploadsDeadLetterQueue")},
        "WebhooksQueueUrl": {"Value": ref("WebhooksQueue")},
        "WebhookSecretsKeyArn": {"Value": get_att("WebhookSecretsKey", "Arn")},
        "TogetherKeysSecretArn": {"Value": ref("TogetherKeysSecret")},
        "AlarmTopicArn": {"Value": ref("AlarmTopic")},
        "Stage": {"Value": ref("Stage")},
        "ClerkPublishableKey": {"Condition": "HasClerkPublishableKey", "Value": ref("ClerkPublishableKey")},
    }


def build_template(
    config: dict[str, Any] | None = None,
    handlers: list[Handler] | None = None,
    operations: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """The merge template (``infra/resources.json``).

    Args:
        config: ``.chalice/config.json`` (default: read it).
        handlers: the app's event handlers (default: :func:`app_handlers`).
        operations: the REST API's paths and methods (default: :func:`api_operations`).

    Raises:
        ValueError: see :func:`table_resources` and :func:`sqs_handlers`.
    """
    config = load_config() if config is None else config
    handlers = app_handlers() if handlers is None else handlers
    workers = sqs_handlers(handlers)
    fallback = {
        "JobsQueue": "process_jobs",
        "WebhooksQueue": "process_webhooks",
        "UploadsQueue": "process_uploads_queue",
    }
    timeouts = {  # a queue's visibility timeout follows its worker's longest Lambda timeout over the stages
        queue: max(
            lambda_timeout(config, workers[queue].name if queue in workers else name, stage) for stage in names.STAGES
        )
        for queue, name in fallback.items()
    }
    resources: dict[str, Any] = {}
    resources.update(table_resources())
    resources.update(storage_resources())
    resources.update(web_resources())
    resources.update(
        queue_resources(
            VISIBILITY_TIMEOUT_FACTOR * timeouts["JobsQueue"], VISIBILITY_TIMEOUT_FACTOR * timeouts["WebhooksQueue"]
        )
    )
    # SQS caps a queue's visibility timeout at 12 hours (43,200 s).
    resources.update(uploads_queue_resources(min(43200, VISIBILITY_TIMEOUT_FACTOR * timeouts["UploadsQueue"])))
    resources.update(kms_resources())
    resources.update(secret_resources())
    resources.update(alarm_resources())
    resources.update(api_handler_overrides())
    resources.update(api_alias_overrides(api_operations() if operations is None else operations))
    for queue, handler in workers.items():
        resources[handler.resource] = worker_override(handler, queue)
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Transform": "AWS::Serverless-2016-10-31",
        "Description": "PromptCanvas: API, workers and sweeps (Chalice) with their tables, buckets, "
        "queues, secret, web distribution and alarms. Generated by `python -m infra.build`.",
        "Parameters": parameters(),
        "Conditions": conditions(),
        "Globals": {"Function": {"Environment": {"Variables": environment()}}},
        "Resources": resources,
        "Outputs": outputs(),
    }
