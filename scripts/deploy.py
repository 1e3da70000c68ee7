#!/usr/bin/env python3
"""Deploy PromptCanvas to an AWS account with boto3 (what ``aws cloudformation package``
and ``deploy`` do, without the AWS CLI). See docs/deploy.md for the whole procedure.

Commands (``python scripts/deploy.py <command> --stage <stage>``; a stage is
``[a-z][a-z0-9-]{0,15}``, e.g. ``dev``, ``prod`` or ``feature-x``):

``deploy``
    Uploads ``<package-dir>/deployment.zip`` and the packaged template to the artifacts
    bucket ``promptcanvas-artifacts-<account>-<region>`` (created if missing: private,
    encrypted, objects expire after 90 days), points every function's ``CodeUri`` at the
    uploaded zip, then creates and executes a change set on stack ``promptcanvas-<stage>``
    (capabilities CAPABILITY_IAM, CAPABILITY_AUTO_EXPAND for the SAM transform) and waits
    for it, from any state the stack is in (infra/stack.py: a failed first deploy is
    deleted and created again, a leftover review is created, no changes is success).
    Template parameters come from the environment: ``CLERK_ISSUER`` (required for
    the first deploy), ``CLERK_JWKS_URL``, ``CLERK_JWT_KEY``, ``CLERK_ADMIN_ORG_ID``,
    ``CLERK_ADMIN_USER_IDS``, ``CLERK_PUBLISHABLE_KEY``, ``EXTRA_WEB_ORIGINS``,
    ``IMAGE_RETENTION_DAYS``, ``ALARM_EMAIL``, ``API_ORIGIN_DOMAIN``, ``API_ORIGIN_PATH``; on an update, a
    parameter not set keeps its previous value.
``web``
    Writes ``frontend_dist/config.js`` (``window.PROMPTCANVAS_CONFIG = {apiBaseUrl,
    clerkPublishableKey}``) from the stack outputs, uploads ``frontend_dist/`` to the web
    bucket (content types; ``index.html`` and ``config.js`` with ``Cache-Control:
    no-cache``), deletes objects no longer present locally, and invalidates ``/*``.
``outputs``
    Prints the stack outputs as JSON.
``teardown``
    Empties the web bucket and deletes the stack, in whatever state it is (with or
    without outputs); succeeds only once the stack is gone. The tables and the images bucket are
    retained (``DeletionPolicy: Retain``); ``--delete-data --yes`` deletes them too,
    and the keys secret without a recovery window.

Sources: AWS CloudFormation user guide, "Update stacks using change sets" and "Quotas"
(a template body above 51,200 bytes must be passed by URL from S3); AWS SAM developer
guide, "AWS::Serverless::Function CodeUri" (an ``s3://`` URI); Amazon CloudFront
developer guide, "Invalidate files".

Exit status: 0 success, 1 failure (the error is printed on one line: AWS errors, a
response botocore cannot parse, a failed stack operation), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mimetypes
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra import names, stack  # noqa: E402 - the stack's names (shared with the template) and life cycle

WEB_DIR = ROOT / "frontend_dist"
APP = names.APP
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"]
#: template parameter <- environment variable
PARAMETER_ENV = {
    "ClerkIssuer": "CLERK_ISSUER",
    "ClerkJwksUrl": "CLERK_JWKS_URL",
    "ClerkJwtKey": "CLERK_JWT_KEY",
    "ClerkAdminOrgId": "CLERK_ADMIN_ORG_ID",
    "ClerkAdminUserIds": "CLERK_ADMIN_USER_IDS",
    "ClerkPublishableKey": "CLERK_PUBLISHABLE_KEY",
    "ExtraWebOrigins": "EXTRA_WEB_ORIGINS",
    "ImageRetentionDays": "IMAGE_RETENTION_DAYS",
    "AlarmEmail": "ALARM_EMAIL",
    "ApiOriginDomain": "API_ORIGIN_DOMAIN",
    "ApiOriginPath": "API_ORIGIN_PATH",
}
NO_CACHE = frozenset({"index.html", "config.js"})
SKIP_WEB_FILES = frozenset({"config.local.js"})  # the dev stack's own config, never deployed
ARTIFACT_EXPIRATION_DAYS = 90
STAGE_RE = re.compile(names.STAGE_PATTERN)
S3_BUCKET_NAME_MAX = 63  # Amazon S3 user guide, "Bucket naming rules"
ACCOUNT_ID_CHARS = 12
LAMBDA_NAME_MAX = 64  # Lambda function names (AWS Lambda quotas)
GENERATED_SUFFIX_CHARS = 12  # CloudFormation's random suffix of a generated physical name


class DeployError(Exception):
    """A deployment step failed; the message says which and why."""


def stage_name(value: str) -> str:
    """argparse type for ``--stage``: ``[a-z][a-z0-9-]{0,15}`` (it becomes part of the stack,
    table, queue and bucket names).

    Raises:
        argparse.ArgumentTypeError: any other value.
    """
    if not STAGE_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r}: a stage is [a-z][a-z0-9-]{{0,15}} (e.g. dev, prod, feature-x)")
    return value


def images_bucket(stage: str, account: str, region: str) -> str:
    """The images bucket's name in ``account``/``region`` (see infra.names.images_bucket)."""
    return names.images_bucket(stage).replace("${AWS::AccountId}", account).replace("${AWS::Region}", region)


def check_stage_fits(stage: str, region: str, handlers: list[str] | None = None) -> None:
    """The names that carry the stage must fit their limits: the images bucket (stage, account
    and region in it) S3's 63 characters, and each event handler's Lambda function, which
    CloudFormation names ``<stack>-<logical id>-<12 random characters>``, Lambda's 64 (a
    longer one is truncated and no longer matches its role's log-group ARN).

    Args:
        handlers: the functions' logical ids (default: the event handlers in ``app.py``).

    Raises:
        DeployError: a name would not fit.
    """
    length = len(images_bucket(stage, "0" * ACCOUNT_ID_CHARS, region))
    if length > S3_BUCKET_NAME_MAX:
        raise DeployError(
            f"stage {stage!r} is too long for region {region}: the images bucket name would have {length} "
            f"characters (S3 allows {S3_BUCKET_NAME_MAX}); use a shorter stage name"
        )
    if handlers is None:
        from infra.template import app_handlers

        handlers = [h.resource for h in app_handlers()]
    for logical_id in handlers:
        length = len(stack_name(stage)) + 1 + len(logical_id) + 1 + GENERATED_SUFFIX_CHARS
        if length > LAMBDA_NAME_MAX:
            raise DeployError(
                f"stage {stage!r} is too long for function {logical_id}: its generated name would have {length} "
                f"characters (Lambda allows {LAMBDA_NAME_MAX}); use a shorter stage name"
            )


def one_line(exc: BaseException) -> str:
    """An error as one readable line: AWS errors as ``<Code>: <message>`` with the operation."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        operation = getattr(exc, "operation_name", "")
        text = f"{operation}: {error.get('Code', '')}: {error.get('Message', '')}"
    elif type(exc).__name__ == "ResponseParserError":
        text = "AWS sent a response that could not be parsed (a proxy or a wrong AWS_ENDPOINT_URL?): " + str(exc)
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:1000]


def stack_name(stage: str) -> str:
    """``promptcanvas-<stage>`` (the IAM log policy expects function names under it)."""
    return names.stack_name(stage)


# -- pure helpers (tested) ------------------------------------------------------------------------


def parameters(
    stage: str, env: Mapping[str, str], previous: Iterable[str] = (), template_parameters: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """CloudFormation parameters: ``Stage``, then each of :data:`PARAMETER_ENV` set in ``env``;
    one not set keeps its previous value when the stack already has it (``previous``).

    Raises:
        DeployError: ``CLERK_ISSUER`` missing on the first deploy.
    """
    known = set(PARAMETER_ENV) if template_parameters is None else set(template_parameters)
    previous = set(previous)
    out: list[dict[str, Any]] = [{"ParameterKey": "Stage", "ParameterValue": stage}]
    for key, var in PARAMETER_ENV.items():
        if key not in known:
            continue
        value = env.get(var)
        if value is not None and value != "":
            out.append({"ParameterKey": key, "ParameterValue": value})
        elif key in previous:
            out.append({"ParameterKey": key, "UsePreviousValue": True})
        elif key == "ClerkIssuer":
            raise DeployError("CLERK_ISSUER is required for the first deploy (e.g. https://<slug>.clerk.accounts.dev)")
    return out


def point_code_at(template: dict[str, Any], code_uri: str, local: str = "./deployment.zip") -> int:
    """Replace the local ``CodeUri`` of every SAM function (and ``ContentUri`` of layers) with
    ``code_uri`` (``s3://bucket/key``). Returns how many were replaced."""
    count = 0
    for resource in template.get("Resources", {}).values():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if props.get(key) == local:
                props[key] = code_uri
                count += 1
    return count


def config_js(api_base_url: str, clerk_publishable_key: str) -> str:
    """The web client's ``config.js`` (the format ``frontend_dist/config.js`` documents)."""
    config = {"apiBaseUrl": api_base_url.rstrip("/"), "clerkPublishableKey": clerk_publishable_key}
    return (
        "// Written by `make deploy-web` from the stack outputs. Do not edit: redeploy instead.\n"
        f"window.PROMPTCANVAS_CONFIG = {json.dumps(config)};\n"
    )


def content_type(path: Path) -> str:
    """The Content-Type to serve ``path`` with."""
    explicit = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    if path.suffix in explicit:
        kind = explicit[path.suffix]
    else:
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return kind + "; charset=utf-8" if kind.startswith("text/") or kind.endswith(("json", "svg+xml")) else kind


def cache_control(key: str) -> str:
    """``no-cache`` for the entry points (always revalidated), 5 minutes for the rest
    (file names are not content-hashed, and each deploy invalidates ``/*``)."""
    return "no-cache" if key.rsplit("/", 1)[-1] in NO_CACHE else "public, max-age=300"


def web_files(web_dir: Path = WEB_DIR) -> dict[str, Path]:
    """``{object key: local path}`` for the web client."""
    return {
        path.relative_to(web_dir).as_posix(): path
        for path in sorted(web_dir.rglob("*"))
        if path.is_file() and path.name not in SKIP_WEB_FILES and not path.name.startswith(".")
    }


def sync_web(s3: Any, bucket: str, web_dir: Path = WEB_DIR) -> dict[str, int]:
    """Upload ``web_dir`` to ``bucket`` and delete objects not present locally.

    Returns:
        ``{"uploaded": n, "deleted": n}``.
    """
    files = web_files(web_dir)
    for key, path in files.items():
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=path.read_bytes(),
            ContentType=content_type(path),
            CacheControl=cache_control(key),
        )
    remote: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        remote.extend(obj["Key"] for obj in page.get("Contents", []))
    stale = [key for key in remote if key not in files]
    for start in range(0, len(stale), 1000):
        chunk = stale[start : start + 1000]
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
    return {"uploaded": len(files), "deleted": len(stale)}


# -- AWS steps ------------------------------------------------------------------------------------


def _session(region: str | None) -> Any:
    import boto3

    session = boto3.session.Session(region_name=region)
    if not session.region_name:
        raise DeployError("no region: set AWS_REGION / AWS_DEFAULT_REGION or pass --region")
    return session


def stack_outputs(session: Any, stage: str) -> dict[str, str]:
    """``{OutputKey: OutputValue}`` of the stage's stack.

    Raises:
        DeployError: the stack does not exist.
    """
    described = stack.describe(session.client("cloudformation"), stack_name(stage))
    if described is None:
        raise DeployError(f"stack {stack_name(stage)} does not exist: deploy it first (`make deploy STAGE={stage}`)")
    return stack.outputs(described)


def ensure_artifacts_bucket(session: Any, account: str) -> str:
    """The artifacts bucket (created private and encrypted if missing). Returns its name."""
    from botocore.exceptions import ClientError

    s3 = session.client("s3")
    region = session.region_name
    bucket = f"{APP}-artifacts-{account}-{region}"
    try:
        s3.head_bucket(Bucket=bucket)
        return bucket
    except ClientError:
        pass
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3.create_bucket(**kwargs)
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "expire-artifacts",
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "Expiration": {"Days": ARTIFACT_EXPIRATION_DAYS},
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                }
            ]
        },
    )
    print(f"created artifacts bucket {bucket}")
    return bucket


def _upload(s3: Any, bucket: str, key: str, path: Path | None = None, body: bytes | None = None) -> None:
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
        return  # content-addressed: already there
    except ClientError:
        pass
    if path is not None:
        s3.upload_file(str(path), bucket, key, ExtraArgs={"ServerSideEncryption": "AES256"})
    else:
        s3.put_object(Bucket=bucket, Key=key, Body=body or b"", ServerSideEncryption="AES256")


def deploy(stage: str, package_dir: Path, region: str | None, env: Mapping[str, str]) -> dict[str, str]:
    """Package upload + change set + wait. Returns the stack outputs.

    Raises:
        DeployError: a missing package or a stage whose names do not fit.
        infra.stack.StackError: a failed change set or stack operation.
    """
    zip_path = package_dir / "deployment.zip"
    template_path = package_dir / "sam.json"
    if not zip_path.exists() or not template_path.exists():
        raise DeployError(f"no package in {package_dir}: run `make package STAGE={stage}`")
    session = _session(region)
    check_stage_fits(stage, session.region_name)
    account = session.client("sts").get_caller_identity()["Account"]
    bucket = ensure_artifacts_bucket(session, account)
    s3 = session.client("s3")
    name = stack_name(stage)
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()[:20]
    code_key = f"{name}/deployment-{digest}.zip"
    print(f"uploading deployment.zip ({zip_path.stat().st_size / 2**20:.1f} MiB) to s3://{bucket}/{code_key}")
    _upload(s3, bucket, code_key, path=zip_path)
    template = json.loads(template_path.read_text())
    if point_code_at(template, f"s3://{bucket}/{code_key}") == 0:
        raise DeployError("the template has no ./deployment.zip CodeUri: was it packaged by `make package`?")
    body = json.dumps(template).encode()
    template_key = f"{name}/template-{hashlib.sha256(body).hexdigest()[:20]}.json"
    _upload(s3, bucket, template_key, body=body)
    template_url = f"https://{bucket}.s3.{session.region_name}.amazonaws.com/{template_key}"

    change = stack.ChangeSet(
        template_url=template_url,
        parameters=lambda previous: parameters(stage, env, previous, template.get("Parameters", {}).keys()),
        capabilities=CAPABILITIES,
        tags=[{"Key": "app", "Value": APP}, {"Key": "stage", "Value": stage}],
    )
    stack.deploy(session.client("cloudformation"), name, change, stack.Waiting())
    return stack_outputs(session, stage)


def deploy_web(stage: str, region: str | None, web_dir: Path = WEB_DIR) -> dict[str, Any]:
    """config.js from the outputs, sync to the web bucket, invalidate CloudFront.

    Raises:
        DeployError: the stack is missing or lacks the outputs.
    """
    session = _session(region)
    outputs = stack_outputs(session, stage)
    for key in ("EndpointURL", "WebBucketName", "WebDistributionId", "WebUrl"):
        if key not in outputs:
            raise DeployError(f"stack output {key} missing: deploy the stack first (`make deploy STAGE={stage}`)")
    publishable_key = outputs.get("ClerkPublishableKey", "")
    if not publishable_key:
        print("warning: no ClerkPublishableKey output (set CLERK_PUBLISHABLE_KEY and redeploy): sign-in is off")
    (web_dir / "config.js").write_text(config_js(outputs["EndpointURL"], publishable_key))
    counts = sync_web(session.client("s3"), outputs["WebBucketName"], web_dir)
    invalidation = session.client("cloudfront").create_invalidation(
        DistributionId=outputs["WebDistributionId"],
        InvalidationBatch={"Paths": {"Quantity": 1, "Items": ["/*"]}, "CallerReference": str(time.time_ns())},
    )
    return {**counts, "invalidation": invalidation["Invalidation"]["Id"], "url": outputs["WebUrl"]}


def _empty_bucket(s3: Any, bucket: str) -> int:
    deleted = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        keys = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            deleted += len(keys)
    return deleted


def remove_stack(cfn: Any, s3: Any, name: str, waiting: stack.Waiting) -> bool:
    """Delete stack ``name`` in whatever state it is (with outputs or without: a failed first
    deploy, a leftover review), after emptying its web bucket (CloudFormation cannot delete
    a bucket that holds objects). Returns False when there was no stack.

    Raises:
        infra.stack.StackError: the deletion failed.
        botocore.exceptions.ClientError: an AWS call failed.
    """
    from botocore.exceptions import ClientError

    if stack.describe(cfn, name) is None:
        return False
    web_bucket = stack.physical_id(cfn, name, "WebBucket")
    if web_bucket:
        try:
            print(f"emptied web bucket: {_empty_bucket(s3, web_bucket)} objects")
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "NoSuchBucket":  # rolled back: the bucket is gone already
                raise
    return stack.delete(cfn, name, waiting)


def teardown(stage: str, region: str | None, delete_data: bool) -> None:
    """Empty the web bucket, delete the stack; with ``delete_data``, the retained tables,
    images bucket and keys secret too.

    Raises:
        infra.stack.StackError: the stack deletion failed.
        botocore.exceptions.ClientError: an AWS call failed.
    """
    from botocore.exceptions import ClientError

    session = _session(region)
    name = stack_name(stage)
    s3 = session.client("s3")
    if not remove_stack(session.client("cloudformation"), s3, name, stack.Waiting()):
        print(f"no stack {name}")
    if not delete_data:
        print("kept: the tables and the images bucket (DeletionPolicy Retain); --delete-data removes them")
        return
    dynamodb = session.client("dynamodb")
    prefix = names.table_prefix(stage)
    for page in dynamodb.get_paginator("list_tables").paginate():
        for table in page["TableNames"]:
            if not table.startswith(prefix):
                continue
            if dynamodb.describe_table(TableName=table)["Table"].get("DeletionProtectionEnabled"):
                dynamodb.update_table(TableName=table, DeletionProtectionEnabled=False)
                dynamodb.get_waiter("table_exists").wait(TableName=table)  # ACTIVE again
            dynamodb.delete_table(TableName=table)
            print(f"deleted table {table}")
    account = session.client("sts").get_caller_identity()["Account"]
    bucket = images_bucket(stage, account, session.region_name)
    try:
        print(f"emptied images bucket: {_empty_bucket(s3, bucket)} objects")
        s3.delete_bucket(Bucket=bucket)
        print(f"deleted bucket {bucket}")
    except ClientError as exc:
        print(f"images bucket {bucket}: {exc.response['Error']['Code']}")
    try:
        session.client("secretsmanager").delete_secret(
            SecretId=names.keys_secret(stage), ForceDeleteWithoutRecovery=True
        )
        print("deleted the keys secret")
    except ClientError as exc:
        print(f"keys secret: {exc.response['Error']['Code']}")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["deploy", "web", "outputs", "teardown"])
    parser.add_argument("--stage", type=stage_name, required=True, help="[a-z][a-z0-9-]{0,15}, e.g. dev or prod")
    parser.add_argument("--region", default=None, help="default: AWS_REGION / AWS_DEFAULT_REGION")
    parser.add_argument("--package-dir", type=Path, default=ROOT / "build" / "package")
    parser.add_argument("--delete-data", action="store_true", help="teardown: also delete tables, images, keys")
    parser.add_argument("--yes", action="store_true", help="teardown --delete-data: do not ask")
    args = parser.parse_args(argv)
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    try:
        if args.command == "deploy":
            outputs = deploy(args.stage, args.package_dir, args.region, os.environ)
            print(json.dumps(outputs, indent=2))
        elif args.command == "web":
            print(json.dumps(deploy_web(args.stage, args.region), indent=2))
        elif args.command == "outputs":
            print(json.dumps(stack_outputs(_session(args.region), args.stage), indent=2))
        else:
            if args.delete_data and not args.yes:
                answer = input(f"Delete ALL data of stage {args.stage} (tables, images, keys)? Type the stage: ")
                if answer.strip() != args.stage:
                    print("aborted")
                    return 2
            teardown(args.stage, args.region, args.delete_data)
    except (DeployError, stack.StackError, BotoCoreError, ClientError, ResponseParserError, OSError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
