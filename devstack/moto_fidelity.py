"""Make moto's DynamoDB behave as DynamoDB does where our correctness depends on it.

moto applies an UpdateItem as read, evaluate condition, compute, write, without a lock,
so two concurrent ADDs to one item can lose one, and two conditional writes can both
pass. DynamoDB serialises writes to an item ("UpdateItem ... is atomic"; Amazon DynamoDB
developer guide, "Atomic counters" and "Condition expressions"). Job counters and item
leases rely on that, so every moto server the dev stack or the tests start in this
process gets one lock around its single-item and transactional writes.

This changes the stand-in server, not the application: chalicelib still talks to it over HTTP.
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.RLock()
_applied = False
WRITE_METHODS = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")


def make_dynamodb_writes_atomic() -> None:
    """Wrap moto's DynamoDB backend write methods in one process-wide lock. Idempotent."""
    global _applied
    if _applied:
        return
    from moto.dynamodb.models import DynamoDBBackend

    for name in WRITE_METHODS:
        original = getattr(DynamoDBBackend, name, None)
        if original is None:
            continue

        def locked(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with _lock:
                return _original(self, *args, **kwargs)

        locked.__name__ = name
        setattr(DynamoDBBackend, name, locked)
    _applied = True
