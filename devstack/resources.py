"""Create the AWS resources the app needs, idempotently, on any endpoint.

Tables come from ``chalicelib.db.ALL_MODELS`` (the same definitions production
uses), so local and deployed schemas cannot drift.
"""

from __future__ import annotations

import json

import boto3
from botocore.exceptions import ClientError

from chalicelib.db import ALL_MODELS
from chalicelib.settings import Settings, get_settings

DLQ_MAX_RECEIVE_COUNT = 5


def ensure_tables() -> list[str]:
    """Create every model's table if missing. Returns the table names."""
    names = []
    for model in ALL_MODELS:
        model.create_table(wait=True, billing_mode="PAY_PER_REQUEST")
        names.append(model.Meta.table_name)
    return names


def ensure_bucket(s3, bucket: str) -> None:
    """Create the private images bucket if it does not exist."""
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        s3.create_bucket(Bucket=bucket)


def _ensure_queue_with_dlq(sqs, name: str, dlq_name: str, visibility_timeout: int) -> tuple[str, str]:
    """Create queue ``name`` and its DLQ (redrive after DLQ_MAX_RECEIVE_COUNT receives).

    Returns ``(queue url, dlq url)``.
    """
    dlq_url = sqs.create_queue(QueueName=dlq_name)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(DLQ_MAX_RECEIVE_COUNT)})
    attrs = {"VisibilityTimeout": str(visibility_timeout), "RedrivePolicy": redrive}
    try:
        url = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
    except ClientError:  # exists with other attributes: converge them
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attrs)
    return url, dlq_url


def ensure_queues(sqs, settings: Settings, visibility_timeout: int = 60) -> dict[str, str]:
    """Create the jobs queue and its DLQ, and the webhooks queue.

    Returns ``{"jobs": url, "dlq": url, "webhooks": url}``.
    """
    jobs_url, dlq_url = _ensure_queue_with_dlq(
        sqs, settings.jobs_queue_name, settings.jobs_dlq_name, visibility_timeout
    )
    webhooks_url = sqs.create_queue(
        QueueName=settings.webhooks_queue_name, Attributes={"VisibilityTimeout": str(visibility_timeout)}
    )["QueueUrl"]
    return {"jobs": jobs_url, "dlq": dlq_url, "webhooks": webhooks_url}


def ensure_kms_key(kms, alias: str) -> str:
    """Create the symmetric KMS key that seals webhook secrets and users' own Together keys,
    under ``alias``, if missing.

    Returns:
        The key id.
    """
    try:
        return kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "NotFoundException":
            raise
    key_id = kms.create_key(Description="PromptCanvas webhook signing secrets (dev stack)")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    return key_id


def ensure_uploads_queue(sqs, settings: Settings, visibility_timeout: int = 120) -> dict[str, str]:
    """Create the uploads queue (S3 ObjectCreated events) and its DLQ.

    Returns ``{"uploads": url, "uploads_dlq": url, "uploads_arn": arn}``.
    """
    url, dlq_url = _ensure_queue_with_dlq(
        sqs, settings.uploads_queue_name, settings.uploads_dlq_name, visibility_timeout
    )
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return {"uploads": url, "uploads_dlq": dlq_url, "uploads_arn": arn}


def ensure_upload_notifications(s3, settings: Settings, queue_arn: str) -> None:
    """The bucket notifies the uploads queue of objects created under ``uploads/``, and
    lets the web client POST to it from the browser (CORS, ``CORS_ALLOWED_ORIGINS`` or any).

    moto's S3 delivers these notifications to its SQS like AWS does (keys URL-encoded).
    """
    from chalicelib.storage.uploads import SOURCE_PREFIX

    s3.put_bucket_notification_configuration(
        Bucket=settings.images_bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": "uploads",
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": SOURCE_PREFIX}]}},
                }
            ]
        },
    )
    s3.put_bucket_cors(
        Bucket=settings.images_bucket,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": list(settings.cors_allowed_origins) or ["*"],
                    "AllowedMethods": ["POST", "GET"],
                    "AllowedHeaders": ["*"],
                    "MaxAgeSeconds": 600,
                }
            ]
        },
    )


def ensure_secret(secrets, secret_id: str, keys: list[str]) -> None:
    """Create or update the Secrets Manager secret holding the Together keys (a JSON list)."""
    value = json.dumps(keys)
    try:
        secrets.create_secret(Name=secret_id, SecretString=value)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceExistsException":
            raise
        secrets.put_secret_value(SecretId=secret_id, SecretString=value)


def ensure_all(settings: Settings | None = None) -> dict[str, object]:
    """Create every table, bucket, queue and the KMS key. Safe to call any number of times."""
    settings = settings or get_settings()
    session = boto3.session.Session()
    tables = ensure_tables()
    ensure_bucket(session.client("s3"), settings.images_bucket)
    queues = ensure_queues(session.client("sqs"), settings)
    upload_queues = ensure_uploads_queue(session.client("sqs"), settings)
    ensure_upload_notifications(session.client("s3"), settings, upload_queues.pop("uploads_arn"))
    queues.update(upload_queues)
    kms_key = ensure_kms_key(session.client("kms"), settings.webhook_secret_kms_key_id)
    return {"tables": tables, "bucket": settings.images_bucket, "queues": queues, "kms_key": kms_key}
