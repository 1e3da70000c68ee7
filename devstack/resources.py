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


def ensure_queues(sqs, settings: Settings, visibility_timeout: int = 60) -> dict[str, str]:
    """Create the jobs queue and its DLQ (redrive after DLQ_MAX_RECEIVE_COUNT receives).

    Returns ``{"jobs": url, "dlq": url, "webhooks": url}``.
    """
    dlq_url = sqs.create_queue(QueueName=settings.jobs_dlq_name)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(DLQ_MAX_RECEIVE_COUNT)})
    attrs = {"VisibilityTimeout": str(visibility_timeout), "RedrivePolicy": redrive}
    try:
        jobs_url = sqs.create_queue(QueueName=settings.jobs_queue_name, Attributes=attrs)["QueueUrl"]
    except ClientError:  # exists with other attributes: converge them
        jobs_url = sqs.get_queue_url(QueueName=settings.jobs_queue_name)["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=jobs_url, Attributes=attrs)
    webhooks_url = sqs.create_queue(
        QueueName=settings.webhooks_queue_name, Attributes={"VisibilityTimeout": str(visibility_timeout)}
    )["QueueUrl"]
    return {"jobs": jobs_url, "dlq": dlq_url, "webhooks": webhooks_url}


def ensure_kms_key(kms, alias: str) -> str:
    """Create the symmetric KMS key that seals webhook secrets, under ``alias``, if missing.

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
    kms_key = ensure_kms_key(session.client("kms"), settings.webhook_secret_kms_key_id)
    return {"tables": tables, "bucket": settings.images_bucket, "queues": queues, "kms_key": kms_key}
