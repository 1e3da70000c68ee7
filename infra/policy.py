"""Least-privilege IAM policies for the Lambda functions, derived from the code.

:func:`scan` reads every module under ``chalicelib`` (AST, nothing imported) and
finds the AWS calls it makes:

- boto3 client calls, ``client("s3").put_object(...)`` or ``sqs = client("sqs")``
  (or ``self._s3 = client("s3")``) then ``sqs.send_message_batch(...)``, including ``get_paginator("op")`` and
  ``generate_presigned_url("op")`` (a presigned URL is signed with the function's
  credentials, so the function needs the operation's permission);
- PynamoDB model operations (``Model.get``/``query``/``scan``/``batch_get``/
  ``batch_write``/``describe_table``/``exists``/``count``, ``item.save``/``update``/
  ``delete``/``refresh``, ``Model.index.query``).

Each call maps to IAM actions (:data:`ACTION_OVERRIDES` where the action is not the
operation's name, e.g. HeadObject -> ``s3:GetObject``, ListObjectsV2 ->
``s3:ListBucket``, SendMessageBatch -> ``sqs:SendMessage``). :func:`policy_document`
grants exactly those actions plus :data:`RUNTIME_ACTIONS` (what Lambda itself does
with the role: write logs, poll the jobs queue), each on the stage's own resources
only (:mod:`infra.names`), never ``"*"``.

Sources: Service Authorization Reference ("Actions, resources, and condition keys" for
Amazon S3, Amazon SQS, Amazon DynamoDB, AWS Secrets Manager, CloudWatch Logs); Amazon
S3 user guide, "Required permissions for Amazon S3 API operations" (HeadObject and
presigned GET need s3:GetObject, ListObjectsV2 needs s3:ListBucket); AWS Lambda
developer guide, "Using Lambda with Amazon SQS" (the execution role needs
ReceiveMessage, DeleteMessage, GetQueueAttributes) and "Lambda execution role"
(CreateLogStream, PutLogEvents); Chalice docs, "Configuration file"
(``autogen_policy: false`` reads ``.chalice/policy-<stage>.json``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from infra import names

ROOT = Path(__file__).resolve().parent.parent
CODE_DIR = ROOT / "chalicelib"

#: IAM prefix per boto3 service name (those the code may use).
IAM_PREFIX = {"s3": "s3", "sqs": "sqs", "secretsmanager": "secretsmanager", "dynamodb": "dynamodb", "logs": "logs"}

#: API operation -> IAM actions, where the action is not ``prefix:Operation``.
ACTION_OVERRIDES: dict[str, tuple[str, ...]] = {
    "s3:HeadObject": ("s3:GetObject",),
    "s3:HeadBucket": ("s3:ListBucket",),
    "s3:ListObjects": ("s3:ListBucket",),
    "s3:ListObjectsV2": ("s3:ListBucket",),
    "s3:DeleteObjects": ("s3:DeleteObject",),
    "s3:CreateMultipartUpload": ("s3:PutObject",),
    "s3:UploadPart": ("s3:PutObject",),
    "s3:CompleteMultipartUpload": ("s3:PutObject",),
    "s3:UploadPartCopy": ("s3:GetObject", "s3:PutObject"),
    "s3:CopyObject": ("s3:GetObject", "s3:PutObject"),
    "s3:ListParts": ("s3:ListMultipartUploadParts",),
    "s3:GetObjectAttributes": ("s3:GetObject", "s3:GetObjectAttributes"),
    "sqs:SendMessageBatch": ("sqs:SendMessage",),
    "sqs:DeleteMessageBatch": ("sqs:DeleteMessage",),
    "sqs:ChangeMessageVisibilityBatch": ("sqs:ChangeMessageVisibility",),
    "dynamodb:TransactWriteItems": (
        "dynamodb:ConditionCheckItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    ),
    "dynamodb:TransactGetItems": ("dynamodb:GetItem",),
}

#: boto3 helpers that are not API operations.
S3_TRANSFER_METHODS: dict[str, tuple[str, ...]] = {
    "upload_file": ("s3:PutObject",),
    "upload_fileobj": ("s3:PutObject",),
    "download_file": ("s3:GetObject",),
    "download_fileobj": ("s3:GetObject",),
    "generate_presigned_post": ("s3:PutObject",),
}
NOT_CALLS = frozenset({"can_paginate", "close", "get_waiter"})

#: PynamoDB method -> DynamoDB actions. ``get``/``exists`` only count on a model class.
PYNAMODB_ACTIONS: dict[str, tuple[str, ...]] = {
    "get": ("dynamodb:GetItem",),
    "refresh": ("dynamodb:GetItem",),
    "save": ("dynamodb:PutItem",),
    "update": ("dynamodb:UpdateItem",),
    "delete": ("dynamodb:DeleteItem",),
    "query": ("dynamodb:Query",),
    "scan": ("dynamodb:Scan",),
    "count": ("dynamodb:Query", "dynamodb:DescribeTable"),
    "batch_get": ("dynamodb:BatchGetItem",),
    "batch_write": ("dynamodb:BatchWriteItem",),
    "describe_table": ("dynamodb:DescribeTable",),
    "exists": ("dynamodb:DescribeTable",),
    "create_table": ("dynamodb:CreateTable", "dynamodb:DescribeTable"),
    "delete_table": ("dynamodb:DeleteTable",),
    "update_ttl": ("dynamodb:UpdateTimeToLive",),
}
PYNAMODB_TRANSACTIONS: dict[str, tuple[str, ...]] = {
    "TransactWrite": ACTION_OVERRIDES["dynamodb:TransactWriteItems"],
    "TransactGet": ("dynamodb:GetItem",),
}
CLASS_ONLY_METHODS = frozenset({"get", "exists"})

#: What Lambda does with the role besides our code. Sources: Lambda developer guide,
#: "Lambda execution role" (logs) and "Using Lambda with Amazon SQS" (event source mapping).
RUNTIME_ACTIONS: dict[str, str] = {
    "logs:CreateLogStream": "the Lambda runtime writes each function's logs",
    "logs:PutLogEvents": "the Lambda runtime writes each function's logs",
    "sqs:ReceiveMessage": "the workers' SQS event source mappings poll the jobs and uploads queues",
    "sqs:DeleteMessage": "the event source mapping deletes processed messages",
    "sqs:GetQueueAttributes": "the event source mapping reads the queue's attributes",
}

#: S3 actions on the bucket itself (resource ``arn:aws:s3:::bucket``); the others act on objects.
S3_BUCKET_ACTIONS = frozenset({"s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetBucketLocation"})
#: DynamoDB actions that may target an index (resource ``table/name/index/*``).
DYNAMODB_INDEX_ACTIONS = frozenset({"dynamodb:Query", "dynamodb:Scan"})


class ScanError(Exception):
    """An AWS call the scanner cannot map to IAM actions (add it to the tables above)."""


@dataclass(frozen=True)
class AwsCall:
    """One AWS call site: ``path:line``, the API (``service:Operation`` or
    ``pynamodb:method``) and the IAM actions it needs."""

    path: str
    line: int
    api: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.path}:{self.line} {self.api} -> {', '.join(self.actions)}"


@cache
def _operations(service: str) -> dict[str, str]:
    """boto3 method name -> API operation name for ``service`` (botocore's model)."""
    import botocore.session
    from botocore import xform_name

    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(op): op for op in model.operation_names}


def boto3_actions(service: str, method: str) -> tuple[str, tuple[str, ...]]:
    """``(api, actions)`` for a boto3 client method.

    Raises:
        ScanError: unknown service or method.
    """
    prefix = IAM_PREFIX.get(service)
    if prefix is None:
        raise ScanError(f"service {service!r} has no IAM prefix in infra.policy.IAM_PREFIX")
    if service == "s3" and method in S3_TRANSFER_METHODS:
        return f"s3:{method}", S3_TRANSFER_METHODS[method]
    operation = _operations(service).get(method)
    if operation is None:
        raise ScanError(f"{service} client has no operation {method!r}")
    api = f"{prefix}:{operation}"
    return api, ACTION_OVERRIDES.get(api, (api,))


def _client_service(node: ast.AST, bound: dict[str, str]) -> str | None:
    """The service of a boto3 client expression: ``client("s3")`` or a name bound to one."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute):
        func_name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
        if func_name == "client" and node.args and isinstance(node.args[0], ast.Constant):
            value = node.args[0].value
            return value if isinstance(value, str) else None
    if isinstance(node, ast.Name | ast.Attribute):
        return bound.get(ast.unparse(node))
    return None


def _is_model_class(node: ast.AST) -> bool:
    """A PynamoDB model class expression: ``ImageModel`` or ``_model()``."""
    if isinstance(node, ast.Name):
        return node.id.endswith("Model") or node.id == "model"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return "model" in node.func.id.lower()
    return False


def _uses_pynamodb(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and (node.module.startswith("pynamodb") or node.module.startswith("chalicelib.db"))
        ):
            return True
        if isinstance(node, ast.Import) and any(a.name.startswith("pynamodb") for a in node.names):
            return True
    return False


def scan_source(source: str, path: str = "<string>") -> list[AwsCall]:
    """The AWS calls in one module's source.

    Raises:
        ScanError: a boto3 call that cannot be mapped.
        SyntaxError: ``source`` does not parse.
    """
    tree = ast.parse(source, filename=path)
    bound: dict[str, str] = {}
    for node in ast.walk(tree):  # names and attributes bound to a client: ``sqs = client("sqs")``, ``self._s3 = ...``
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            service = _client_service(node.value, {})
            for target in targets:
                if service and isinstance(target, ast.Name | ast.Attribute):
                    bound[ast.unparse(target)] = service
    pynamodb = _uses_pynamodb(tree)
    calls: list[AwsCall] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and pynamodb and node.id in PYNAMODB_TRANSACTIONS:
            calls.append(AwsCall(path, node.lineno, f"pynamodb:{node.id}", PYNAMODB_TRANSACTIONS[node.id]))
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        method = node.func.attr
        receiver = node.func.value
        service = _client_service(receiver, bound)
        if service:
            if method in NOT_CALLS:
                continue
            if method in ("get_paginator", "generate_presigned_url"):
                if not (node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                    raise ScanError(f"{path}:{node.lineno}: {method} needs a literal operation name")
                method = node.args[0].value
            try:
                api, actions = boto3_actions(service, method)
            except ScanError as exc:
                raise ScanError(f"{path}:{node.lineno}: {exc}") from None
            calls.append(AwsCall(path, node.lineno, api, actions))
            continue
        if pynamodb and method in PYNAMODB_ACTIONS:
            if method in CLASS_ONLY_METHODS and not _is_model_class(receiver):
                continue
            if method == "update" and isinstance(receiver, ast.Attribute) and receiver.attr == "headers":
                continue
            calls.append(AwsCall(path, node.lineno, f"pynamodb:{method}", PYNAMODB_ACTIONS[method]))
    return calls


def scan(code_dir: Path = CODE_DIR) -> list[AwsCall]:
    """Every AWS call in the Python modules under ``code_dir`` (default ``chalicelib``).

    Raises:
        ScanError: a boto3 call that cannot be mapped.
    """
    calls: list[AwsCall] = []
    for path in sorted(code_dir.rglob("*.py")):
        rel = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        calls.extend(scan_source(path.read_text(encoding="utf-8"), rel))
    return calls


def required_actions(calls: Iterable[AwsCall] | None = None) -> set[str]:
    """The IAM actions the code needs (from :func:`scan`), without :data:`RUNTIME_ACTIONS`."""
    calls = scan() if calls is None else calls
    return {action for call in calls for action in call.actions}


# -- the policy document --------------------------------------------------------------------------


def resources(stage: str) -> dict[str, list[str]]:
    """The stage's resource ARNs per statement id (partition ``aws``; any account and
    region, since the names carry app and stage)."""
    table = names.table_prefix(stage)
    bucket = names.images_bucket_prefix(stage)
    return {
        "Logs": [f"arn:aws:logs:*:*:log-group:/aws/lambda/{names.stack_name(stage)}-*:*"],
        "Tables": [f"arn:aws:dynamodb:*:*:table/{table}*"],
        "TableIndexes": [f"arn:aws:dynamodb:*:*:table/{table}*/index/*"],
        "ImagesBucket": [f"arn:aws:s3:::{bucket}*"],
        "ImageObjects": [f"arn:aws:s3:::{bucket}*/*"],
        "JobsQueues": [
            f"arn:aws:sqs:*:*:{names.jobs_queue(stage)}",
            f"arn:aws:sqs:*:*:{names.jobs_dlq(stage)}",
            f"arn:aws:sqs:*:*:{names.uploads_queue(stage)}",
            f"arn:aws:sqs:*:*:{names.uploads_dlq(stage)}",
        ],
        "TogetherKeysSecret": [f"arn:aws:secretsmanager:*:*:secret:{names.keys_secret(stage)}-??????"],
    }


def _statement_ids(action: str) -> list[str]:
    """Which statements grant ``action``.

    Raises:
        ScanError: an action of a service without resources here.
    """
    prefix = action.split(":", 1)[0]
    if prefix == "logs":
        return ["Logs"]
    if prefix == "dynamodb":
        return ["Tables", "TableIndexes"] if action in DYNAMODB_INDEX_ACTIONS else ["Tables"]
    if prefix == "s3":
        return ["ImagesBucket"] if action in S3_BUCKET_ACTIONS else ["ImageObjects"]
    if prefix == "sqs":
        return ["JobsQueues"]
    if prefix == "secretsmanager":
        return ["TogetherKeysSecret"]
    raise ScanError(f"no resources for {action}: add them to infra.policy.resources")


def policy_document(stage: str, actions: Iterable[str] | None = None) -> dict[str, object]:
    """The IAM policy for ``stage``: ``actions`` (default: :func:`required_actions`) plus
    :data:`RUNTIME_ACTIONS`, one statement per resource group, sorted (deterministic).

    Raises:
        ScanError: see :func:`scan` and :func:`_statement_ids`.
    """
    wanted = set(required_actions() if actions is None else actions) | set(RUNTIME_ACTIONS)
    grouped: dict[str, set[str]] = {}
    for action in wanted:
        for sid in _statement_ids(action):
            grouped.setdefault(sid, set()).add(action)
    arns = resources(stage)
    statements = [
        {"Sid": sid, "Effect": "Allow", "Action": sorted(grouped[sid]), "Resource": arns[sid]}
        for sid in arns
        if sid in grouped
    ]
    return {"Version": "2012-10-17", "Statement": statements}
