from __future__ import annotations

import boto3

from chalicelib.db import ALL_MODELS
from chalicelib.settings import get_settings
from devstack.resources import ensure_all


def test_resources_are_created_idempotently(aws):
    first = ensure_all()
    second = ensure_all()
    assert first == second
    ddb = boto3.client("dynamodb")
    tables = set(ddb.list_tables()["TableNames"])
    assert {m.Meta.table_name for m in ALL_MODELS} <= tables
    s3 = boto3.client("s3")
    assert get_settings().images_bucket in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    sqs = boto3.client("sqs")
    attrs = sqs.get_queue_attributes(QueueUrl=first["queues"]["jobs"], AttributeNames=["RedrivePolicy"])
    assert "deadLetterTargetArn" in attrs["Attributes"]["RedrivePolicy"]
    webhooks = sqs.get_queue_attributes(QueueUrl=first["queues"]["webhooks"], AttributeNames=["QueueArn"])
    assert webhooks["Attributes"]["QueueArn"].endswith(":" + get_settings().webhooks_queue_name)
    key = boto3.client("kms").describe_key(KeyId=get_settings().webhook_secret_kms_key_id)["KeyMetadata"]
    assert key["KeyId"] == first["kms_key"] and key["KeyState"] == "Enabled"
