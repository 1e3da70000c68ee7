"""PynamoDB models: the single definition of every DynamoDB table.

``ALL_MODELS`` lists every table's model; the dev stack creates tables from it
and infra tests compare it with the CloudFormation template.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalicelib.db.base import BaseModel, is_condition_failure, same_item, table_name, utcnow, watching_retries
from chalicelib.lazy import lazy_exports

if TYPE_CHECKING:
    from chalicelib.db.catalog import CatalogStatusModel
    from chalicelib.db.images import ImageModel, PromptHistoryModel
    from chalicelib.db.jobs import ArchiveModel, IdempotencyModel, JobItemModel, JobModel
    from chalicelib.db.keys import KeyHealthModel
    from chalicelib.db.shares import ShareHitModel, ShareModel
    from chalicelib.db.uploads import UploadModel
    from chalicelib.db.usage import UsageModel, UserModel
    from chalicelib.db.videos import VideoModel

#: Each model's module. A model class is built (PynamoDB's metaclass reads its attributes)
#: when its name is first used here (PEP 562 module ``__getattr__``), so a process loads only
#: the tables its requests touch.
_HOME = {
    "ImageModel": "images",
    "PromptHistoryModel": "images",
    "UsageModel": "usage",
    "UserModel": "usage",
    "KeyHealthModel": "keys",
    "JobModel": "jobs",
    "JobItemModel": "jobs",
    "IdempotencyModel": "jobs",
    "ArchiveModel": "jobs",
    "UploadModel": "uploads",
    "CatalogStatusModel": "catalog",
    "ShareModel": "shares",
    "ShareHitModel": "shares",
    "VideoModel": "videos",
}


_model, _dir = lazy_exports(__name__, _HOME)


def __getattr__(name: str) -> Any:
    """A model class by name, imported on first use, or ``ALL_MODELS``: every table's model
    (``list[type[BaseModel]]``, in :data:`_HOME`'s order).

    Raises:
        AttributeError: no such model.
    """
    if name != "ALL_MODELS":
        return _model(name)
    globals()[name] = [_model(model) for model in _HOME]
    return globals()[name]


def __dir__() -> list[str]:
    return sorted({*_dir(), "ALL_MODELS"})


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
