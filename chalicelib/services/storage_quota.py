"""The per-user storage quota of uploads, in bytes (``UPLOAD_QUOTA_BYTES``).

One counter per user: ``UsageModel(user_id, "upload-bytes").count``, bytes charged. Every
change to it is written in the same DynamoDB transaction as the upload item it belongs
to (TransactWriteItems), so the counter never drifts from the items: creating an upload
reserves its announced size, verification replaces the reservation by the stored bytes
(the stripped copy plus its thumbnail), rejection and deletion give everything back.
A charge that would take the counter past the quota fails its transaction's condition.
Sources: Amazon DynamoDB developer guide, "Amazon DynamoDB Transactions" and "Condition
expressions"; PynamoDB docs, "Transaction Operations".
"""

from __future__ import annotations

from typing import Any

from pynamodb.connection import Connection
from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib.db import UploadModel, UsageModel
from chalicelib.errors import DomainError, ErrorCode
from chalicelib.settings import get_settings

PERIOD = "upload-bytes"  # UsageModel range key of the storage counter


class QuotaExceeded(Exception):
    """A charge would take the user's stored bytes past ``UPLOAD_QUOTA_BYTES``."""


def connection() -> Connection:
    """A PynamoDB connection for transactions, with the models' region and endpoint."""
    meta = UploadModel.Meta
    return Connection(region=getattr(meta, "region", None), host=getattr(meta, "host", None))


def add_to(tx: TransactWrite, user_id: str, delta: int) -> None:
    """Add ``delta`` bytes (negative: give back) to the user's counter inside ``tx``.

    A positive ``delta`` carries the condition that the counter stays within the quota.

    Raises:
        QuotaExceeded: ``delta`` alone is larger than the quota (the transaction is not sent).
    """
    delta = int(delta)
    if delta == 0:
        return
    item = UsageModel(user_id, PERIOD)
    if delta > 0:
        room = get_settings().upload_quota_bytes - delta
        if room < 0:
            raise QuotaExceeded()
        condition = UsageModel.count.does_not_exist() | (UsageModel.count <= room)
        tx.update(item, actions=[UsageModel.count.add(delta)], condition=condition)
    else:
        tx.update(item, actions=[UsageModel.count.add(delta)])


def failed_condition(exc: TransactWriteError, position: int) -> bool:
    """Whether the transaction's item at ``position`` (0-based) failed its condition."""
    reasons = getattr(exc, "cancellation_reasons", None) or []
    reason = reasons[position] if position < len(reasons) else None
    return getattr(reason, "code", None) == "ConditionalCheckFailed"


def exceeded(field: str | None = "size_bytes") -> DomainError:
    """403 ``storage-quota-exceeded``."""
    quota = get_settings().upload_quota_bytes
    return DomainError(
        ErrorCode.STORAGE_QUOTA_EXCEEDED, f"the storage quota of {quota} bytes would be exceeded", field=field
    )


def current(user_id: str) -> dict[str, Any]:
    """``{"used_bytes", "quota_bytes"}`` of the user's uploads."""
    try:
        used = int(UsageModel.get(user_id, PERIOD, consistent_read=True).count or 0)
    except UsageModel.DoesNotExist:
        used = 0
    return {"used_bytes": max(0, used), "quota_bytes": get_settings().upload_quota_bytes}
