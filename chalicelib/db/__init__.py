"""PynamoDB models: the single definition of every DynamoDB table.

``ALL_MODELS`` lists every table's model; the dev stack creates tables from it
and infra tests compare it with the CloudFormation template.
"""

from __future__ import annotations

from chalicelib.db.base import BaseModel, is_condition_failure, same_item, table_name, utcnow, watching_retries
from chalicelib.db.catalog import CatalogStatusModel
from chalicelib.db.images import ImageModel, PromptHistoryModel
from chalicelib.db.jobs import ArchiveModel, IdempotencyModel, JobItemModel, JobModel
from chalicelib.db.keys import KeyHealthModel
from chalicelib.db.shares import ShareHitModel, ShareModel
from chalicelib.db.uploads import UploadModel
from chalicelib.db.usage import UsageModel, UserModel
from chalicelib.db.videos import VideoModel

ALL_MODELS: list[type[BaseModel]] = [
    ImageModel,
    PromptHistoryModel,
    UsageModel,
    UserModel,
    KeyHealthModel,
    JobModel,
    JobItemModel,
    IdempotencyModel,
    ArchiveModel,
    UploadModel,
    CatalogStatusModel,
    ShareModel,
    ShareHitModel,
    VideoModel,
]

__all__ = [
    "ALL_MODELS",
    "ArchiveModel",
    "IdempotencyModel",
    "JobItemModel",
    "JobModel",
    "BaseModel",
    "CatalogStatusModel",
    "ImageModel",
    "KeyHealthModel",
    "PromptHistoryModel",
    "ShareHitModel",
    "ShareModel",
    "UsageModel",
    "UserModel",
    "UploadModel",
    "VideoModel",
    "is_condition_failure",
    "same_item",
    "table_name",
    "utcnow",
    "watching_retries",
]
