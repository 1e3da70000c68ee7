"""Make moto's DynamoDB behave as DynamoDB does where our correctness depends on it.

moto applies an UpdateItem as read, evaluate condition, compute, write, without a lock,
so two concurrent ADDs to one item can lose one, and two conditional writes can both
pass. It also changes a stored item one action at a time, so a read served meanwhile can see
half an update (an upload ``rejected`` without its ``error_code``). DynamoDB serialises writes
to an item and a read sees a whole write or none ("UpdateItem ... is atomic"; Amazon DynamoDB
developer guide, "Atomic counters", "Condition expressions" and "Read consistency"). Job
counters, item leases and every status read rely on that, so every moto server the dev stack
or the tests start in this process gets one lock around its writes (the backend's methods) and
around each request handler that reads or writes items, which copies what it answers before it
lets go.

This changes the stand-in server, not the application: chalicelib still talks to it over HTTP.
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.RLock()
_applied = False
WRITE_METHODS = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")
READ_METHODS = ("get_item", "query", "scan", "batch_get_item", "transact_get_items")


def make_dynamodb_writes_atomic() -> None:
    """Wrap moto's DynamoDB backend write methods, and its request handlers that read or write
    items, in one process-wide (re-entrant) lock. Idempotent."""
    global _applied
    if _applied:
        return
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.responses import DynamoHandler

    _lock_methods(DynamoDBBackend, WRITE_METHODS)
    _lock_methods(DynamoHandler, WRITE_METHODS + READ_METHODS)
    _applied = True


def _lock_methods(cls: type, names: tuple[str, ...]) -> None:
    """Replace each method ``names`` of ``cls`` that exists with one that holds ``_lock``."""
    for name in names:
        original = getattr(cls, name, None)
        if original is None:
            continue

        def locked(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with _lock:
                return _original(self, *args, **kwargs)

        locked.__name__ = name
        setattr(cls, name, locked)
