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
``s3:ListBucket``, SendMessageBatch -> ``sqs:SendMessage``).

Each Lambda function (:func:`functions`) gets its own policy (:func:`policies`): the
actions of the calls its code path can reach (:mod:`infra.callgraph`), plus what the
Lambda service does with its role (its own log group; an SQS handler's event source
mapping on its queue), on the resources its code path names (:func:`needs`): the tables
of the PynamoDB models it reaches, and the resource of each settings field in
:data:`SETTINGS_RESOURCES` it reads. ARNs are ``Fn::Sub`` templates with the stack's
partition, region and account, exact names except a log group's streams, the bucket's
objects and the secret's random suffix; never ``"*"``.

Sources: Service Authorization Reference ("Actions, resources, and condition keys" for
Amazon S3, Amazon SQS, Amazon DynamoDB, AWS Secrets Manager, CloudWatch Logs); Amazon
S3 user guide, "Required permissions for Amazon S3 API operations" (HeadObject and
presigned GET need s3:GetObject, ListObjectsV2 needs s3:ListBucket); AWS Lambda
developer guide, "Using Lambda with Amazon SQS" (the execution role needs
ReceiveMessage, DeleteMessage, GetQueueAttributes) and "Lambda execution role"
(CreateLogStream, PutLogEvents); Secrets Manager user guide, "Permissions policy
examples" (``-??????`` for the ARN's random suffix); Chalice docs, "Configuration file"
(``autogen_policy: false``; ``iam_policy_file`` per function under ``lambda_functions``,
which gives each function its own role; Chalice 1.34 ``deploy/appgraph.py`` copies the
file into the role's ``PolicyDocument`` as is).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

from infra import callgraph, names

ROOT = Path(__file__).resolve().parent.parent
CODE_DIR = ROOT / "chalicelib"

#: IAM prefix per boto3 service name (those the code may use).
IAM_PREFIX = {
    "s3": "s3",
    "sqs": "sqs",
    "secretsmanager": "secretsmanager",
    "dynamodb": "dynamodb",
    "logs": "logs",
    "kms": "kms",
}

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
    scope: str = ""  # the definition it is in (infra.callgraph), filled by scan()

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
    graph = callgraph.graph() if code_dir == CODE_DIR else None
    for path in sorted(code_dir.rglob("*.py")):
        rel = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        found = scan_source(path.read_text(encoding="utf-8"), rel)
        if graph is not None:
            module = callgraph.module_of(rel)
            found = [replace(call, scope=graph.scope_of(module, call.line)) for call in found]
        calls.extend(found)
    return calls


def required_actions(calls: Iterable[AwsCall] | None = None) -> set[str]:
    """The IAM actions of ``calls`` (default: every call :func:`scan` finds)."""
    calls = scan() if calls is None else calls
    return {action for call in calls for action in call.actions}


# -- what each function needs ---------------------------------------------------------------------


def arn(service: str, resource: str, regional: bool = True) -> str:
    """An ARN template for ``Fn::Sub``: partition, region and account from the stack
    (``${AWS::Partition}``, ``${AWS::Region}``, ``${AWS::AccountId}``), so it names the
    resource in the deploying account only. S3 ARNs carry neither region nor account."""
    if not regional:
        return f"arn:${{AWS::Partition}}:{service}:::{resource}"
    return f"arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}:{resource}"


@dataclass(frozen=True)
class Target:
    """A statement's resources: ``sid``, the IAM ``service`` prefix, the ARN templates
    (``Fn::Sub`` strings) and, if set, the only actions it takes (else every action of
    the service not taken by a more specific target of the same resource)."""

    sid: str
    service: str
    arns: tuple[str, ...]
    only: frozenset[str] | None = None
    excludes: frozenset[str] = frozenset()

    def takes(self, action: str) -> bool:
        """Whether ``action`` is granted on this target."""
        if action.split(":", 1)[0] != self.service or action in self.excludes:
            return False
        return self.only is None or action in self.only


def _queue(name: str) -> str:
    return arn("sqs", name)


#: Settings fields that name a resource -> ``stage -> targets``. A function whose code path
#: reads the field (``get_settings().images_bucket``) gets its actions of that service on
#: the resource. A new queue, bucket or key is one entry here (and its name in infra.names).
SETTINGS_RESOURCES: dict[str, Callable[[str], tuple[Target, ...]]] = {
    "images_bucket": lambda stage: (
        Target("ImagesBucket", "s3", (arn("s3", names.images_bucket(stage), regional=False),), S3_BUCKET_ACTIONS),
        Target(
            "ImageObjects",
            "s3",
            (arn("s3", names.images_bucket(stage) + "/*", regional=False),),
            excludes=S3_BUCKET_ACTIONS,
        ),
    ),
    "jobs_queue_name": lambda stage: (Target("JobsQueue", "sqs", (_queue(names.jobs_queue(stage)),)),),
    "jobs_dlq_name": lambda stage: (Target("JobsDeadLetterQueue", "sqs", (_queue(names.jobs_dlq(stage)),)),),
    "uploads_queue_name": lambda stage: (Target("UploadsQueue", "sqs", (_queue(names.uploads_queue(stage)),)),),
    "uploads_dlq_name": lambda stage: (Target("UploadsDeadLetterQueue", "sqs", (_queue(names.uploads_dlq(stage)),)),),
    "webhooks_queue_name": lambda stage: (Target("WebhooksQueue", "sqs", (_queue(names.webhooks_queue(stage)),)),),
    # KMS authorizes on the key's ARN, never its alias: the stack's key by its id (``Ref``).
    "webhook_secret_kms_key_id": lambda stage: (
        Target("WebhookSecretsKey", "kms", (arn("kms", "key/${WebhookSecretsKey}"),)),
    ),
    "together_keys_secret_id": lambda stage: (
        Target(
            "TogetherKeysSecret",
            "secretsmanager",
            # Secrets Manager appends 6 random characters to a secret's ARN (Secrets Manager user guide,
            # "Permissions policy examples": "?????? matches the random characters").
            (arn("secretsmanager", f"secret:{names.keys_secret(stage)}-??????"),),
        ),
    ),
}

#: Actions the Lambda service takes with a role, per event source. Sources: Lambda developer
#: guide, "Lambda execution role" (logs) and "Using Lambda with Amazon SQS" (event source mapping).
LOG_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents")
SQS_EVENT_SOURCE_ACTIONS = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
#: Code an operator runs from a workstation with their own credentials, never a Lambda
#: function (so no role grants its calls): qualified name -> where it is documented.
OPERATOR_ENTRY_POINTS: dict[str, str] = {
    "chalicelib.services.cleanup.rebuild_collection_counts": "docs/deploy.md: once, for a stage with older images",
}
API_HANDLER = "api_handler"
SETTINGS_MODULE = "chalicelib.settings"  # defines and reads every field: that is not a use


@dataclass(frozen=True)
class Function:
    """One Lambda function of the app: its Chalice ``name`` (``api_handler``, or the event
    handler's name), its ``logical_id`` in the packaged template, the call-graph ``roots``
    it runs, and for an ``@app.on_sqs_message`` handler the settings field naming its queue."""

    name: str
    logical_id: str
    roots: tuple[str, ...]
    event_queue_field: str | None = None


def _decorator_queue_field(app_tree: ast.Module, function: str) -> str | None:
    """The settings field in ``@app.on_sqs_message(queue=get_settings().<field>)``."""
    for node in app_tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            for decorator in node.decorator_list:
                if not isinstance(decorator, ast.Call):
                    continue
                for keyword in decorator.keywords:
                    if keyword.arg == "queue" and isinstance(keyword.value, ast.Attribute):
                        return keyword.value.attr
    return None


def functions(app_path: Path | None = None) -> list[Function]:
    """The app's Lambda functions: ``api_handler`` (every ``@api.route``/``@app.route``
    function plus ``chalicelib.http.Api``, which wraps them) and one per event handler
    (:func:`infra.template.app_handlers`).

    Raises:
        ScanError: an SQS handler whose ``queue=`` is not a settings field in
            :data:`SETTINGS_RESOURCES`.
    """
    from infra import template

    app_path = app_path or template.APP_PATH
    tree = ast.parse(app_path.read_text(encoding="utf-8"))
    routes = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                func = decorator.func if isinstance(decorator, ast.Call) else decorator
                if isinstance(func, ast.Attribute) and func.attr == "route":
                    routes.append(f"app.{node.name}")
    out = [Function(API_HANDLER, "APIHandler", tuple(routes) + ("chalicelib.http.Api",))]
    for handler in template.app_handlers(app_path):
        field = None
        if handler.kind == "on_sqs_message":
            field = _decorator_queue_field(tree, handler.function)
            if field not in SETTINGS_RESOURCES:
                raise ScanError(f"{handler.function}: queue={field!r} names no queue in SETTINGS_RESOURCES")
        out.append(Function(handler.name, handler.resource, (f"app.{handler.function}",), field))
    return out


@dataclass(frozen=True)
class Needs:
    """What one function's code path uses: the AWS ``calls`` it can reach, the settings
    ``fields`` naming resources it reads, and the PynamoDB ``models`` (classes) it names."""

    function: Function
    calls: tuple[AwsCall, ...]
    fields: frozenset[str]
    models: tuple[type, ...]

    @property
    def actions(self) -> set[str]:
        """The IAM actions of :attr:`calls` plus the Lambda service's (logs; an SQS handler's
        event source mapping)."""
        actions = {action for call in self.calls for action in call.actions} | set(LOG_ACTIONS)
        if self.function.event_queue_field:
            actions |= set(SQS_EVENT_SOURCE_ACTIONS)
        return actions


def _model_names() -> dict[str, type]:
    """Qualified class name -> PynamoDB model, for every table of the app."""
    from chalicelib.db import ALL_MODELS

    return {f"{model.__module__}.{model.__qualname__}": model for model in ALL_MODELS}


def needs(function: Function, calls: Iterable[AwsCall] | None = None) -> Needs:
    """What ``function`` uses (see :class:`Needs`), from the call graph (:mod:`infra.callgraph`).

    Raises:
        ScanError: see :func:`scan`.
    """
    graph = callgraph.graph()
    calls = scan() if calls is None else list(calls)
    reached = graph.reachable(function.roots + tuple(sorted(graph.import_time())))
    own = tuple(c for c in calls if c.scope in reached or c.scope.startswith("<module>:"))
    used = graph.attributes(d for d in reached if graph.defs[d].module != SETTINGS_MODULE)
    fields = frozenset(used & set(SETTINGS_RESOURCES))
    if function.event_queue_field:
        fields |= {function.event_queue_field}
    models = tuple(model for name, model in sorted(_model_names().items()) if name in reached)
    return Needs(function, own, fields, models)


def targets(needs_: Needs, stage: str) -> list[Target]:
    """The resources ``needs_`` may act on in ``stage``: its log group, its tables (and
    their indexes, for Query/Scan), and the resources of the settings fields it reads."""
    from infra.template import logical_table_name

    if needs_.function.name == API_HANDLER:
        log_group = f"/aws/lambda/{names.API_FUNCTION_NAME}"
    else:  # CloudFormation names a function <stack>-<logical id>-<random suffix>
        log_group = f"/aws/lambda/${{AWS::StackName}}-{needs_.function.logical_id}-*"
    out = [Target("Logs", "logs", (arn("logs", f"log-group:{log_group}:*"),))]
    tables, indexes = [], []
    for model in needs_.models:
        table = names.table_prefix(stage) + logical_table_name(model)
        tables.append(arn("dynamodb", f"table/{table}"))
        schema = model._get_schema()  # type: ignore[attr-defined]
        for index in schema["global_secondary_indexes"] + schema["local_secondary_indexes"]:
            indexes.append(arn("dynamodb", f"table/{table}/index/{index['index_name']}"))
    if tables:
        out.append(Target("Tables", "dynamodb", tuple(tables)))
    if indexes:
        out.append(Target("TableIndexes", "dynamodb", tuple(indexes), DYNAMODB_INDEX_ACTIONS))
    code_actions = {action for call in needs_.calls for action in call.actions}
    mapping_only = frozenset(SQS_EVENT_SOURCE_ACTIONS) - code_actions
    for field in sorted(needs_.fields):
        for target in SETTINGS_RESOURCES[field](stage):
            if target.service == "sqs" and field != needs_.function.event_queue_field:
                # the event source mapping's actions on its own queue only
                target = replace(target, excludes=target.excludes | mapping_only)
            out.append(target)
    return out


def policy_document(needs_: Needs, stage: str) -> dict[str, object]:
    """The IAM policy of one function in ``stage``: each of its actions on each of its
    resources of that service (:func:`targets`), one statement per resource, ARNs as
    ``Fn::Sub`` templates (CloudFormation resolves them; Chalice embeds the document in
    the role verbatim). Deterministic order.

    Raises:
        ScanError: an action with no resource on the function's code path (a call whose
            resource the code reaches some other way than a settings field or a model).
    """
    actions = needs_.actions
    statements = []
    covered: set[str] = set()
    for target in targets(needs_, stage):
        granted = sorted(a for a in actions if target.takes(a))
        if granted:
            covered.update(granted)
            resources = [{"Fn::Sub": text} for text in target.arns]
            statements.append({"Sid": target.sid, "Effect": "Allow", "Action": granted, "Resource": resources})
    missing = actions - covered
    if missing:
        raise ScanError(f"{needs_.function.name}: no resource on its code path for {sorted(missing)}")
    return {"Version": "2012-10-17", "Statement": statements}


def policy_file(stage: str, function: str) -> str:
    """The policy's file name in ``.chalice/``: ``policy-<stage>-<function>.json``."""
    return f"policy-{stage}-{function}.json"


def policies(stage: str, calls: Iterable[AwsCall] | None = None) -> dict[str, dict[str, object]]:
    """Every function's policy document in ``stage``, by Chalice function name.

    Raises:
        ScanError: see :func:`scan`, :func:`functions` and :func:`policy_document`.
    """
    calls = scan() if calls is None else list(calls)
    return {fn.name: policy_document(needs(fn, calls), stage) for fn in functions()}
