"""Physical names of the stack's resources, per stage: one place for the template
(:mod:`infra.template`), the IAM policies (:mod:`infra.policy`) and the deploy script.

Names carry the stage so ``dev`` and ``prod`` can share an account, and so each
stage's IAM policies (``.chalice/policy-<stage>-<function>.json``) can name its own
resources exactly. Chalice copies those files into the roles verbatim, so they use
``Fn::Sub`` for the account, region and partition.
"""

from __future__ import annotations

APP = "promptcanvas"
STAGES = ("dev", "prod")  # the stages with committed config and policies; any STAGE_PATTERN name deploys
STAGE_PATTERN = r"[a-z][a-z0-9-]{0,15}"
RUNTIME = "python3.12"  # Lambda runtime; Chalice takes it from the Python that packages


def stack_name(stage: str) -> str:
    """The CloudFormation stack, e.g. ``promptcanvas-dev``. Lambda functions get
    CloudFormation's generated names, which start with it (the log policy relies on that)."""
    return f"{APP}-{stage}"


#: The API function's explicit name (an ``Fn::Sub`` template; see infra.template.api_handler_overrides).
API_FUNCTION_NAME = "${AWS::StackName}-api"


def table_prefix(stage: str) -> str:
    """``TABLE_PREFIX``: tables are ``promptcanvas-<stage>-<name>``."""
    return f"{APP}-{stage}-"


def images_bucket_prefix(stage: str) -> str:
    """The images bucket is ``promptcanvas-<stage>-images-<account>-<region>`` (S3 names are global)."""
    return f"{APP}-{stage}-images-"


def images_bucket(stage: str) -> str:
    """The images bucket's name as an ``Fn::Sub`` template: account and region from the stack."""
    return images_bucket_prefix(stage) + "${AWS::AccountId}-${AWS::Region}"


def jobs_queue(stage: str) -> str:
    """``JOBS_QUEUE_NAME``."""
    return f"{APP}-{stage}-jobs"


def jobs_dlq(stage: str) -> str:
    """``JOBS_DLQ_NAME``."""
    return f"{APP}-{stage}-jobs-dlq"


def uploads_queue(stage: str) -> str:
    """``UPLOADS_QUEUE_NAME``: S3 ObjectCreated events of ``uploads/``."""
    return f"{APP}-{stage}-uploads"


def uploads_dlq(stage: str) -> str:
    """``UPLOADS_DLQ_NAME``."""
    return f"{APP}-{stage}-uploads-dlq"


def webhooks_queue(stage: str) -> str:
    """``WEBHOOKS_QUEUE_NAME``: webhook deliveries, polled by their own function."""
    return f"{APP}-{stage}-webhooks"


def webhook_secrets_key_alias(stage: str) -> str:
    """``WEBHOOK_SECRET_KMS_KEY_ID``: the alias of the KMS key that seals webhook signing secrets."""
    return f"alias/{APP}-{stage}-webhook-secrets"


def keys_secret(stage: str) -> str:
    """The Secrets Manager secret holding the Together keys (a JSON list)."""
    return f"{APP}/{stage}/together-keys"


def service_name(stage: str) -> str:
    """``POWERTOOLS_SERVICE_NAME``: the ``service`` dimension of every metric."""
    return f"{APP}-{stage}"


METRICS_NAMESPACE = "PromptCanvas"
