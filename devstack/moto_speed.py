"""Take per-request work off moto's server that buys nothing.

Found by profiling moto with py-spy, and logging its garbage collections, under ``make bench``.

- **Backend lookup.** moto's server picks the backend of each request under one process-wide
  lock, and to do so it lists moto's package directory (``os.listdir`` and ``os.path.isdir``
  on some 200 entries) and tries the URL patterns of every service
  (``DomainDispatcherApplication.get_backend_for_host``). The answer depends only on the host
  name it infers, so it is memoised per host. That lookup was about a quarter of moto's busy
  CPU time on ``POST /v1/images``, all of it serialised by the lock.
- **SQS retention check.** For every message a ReceiveMessage hands out, moto checks the
  queue's retention period by building *all* the queue's attributes, which counts every
  message in the queue three ways (``SQSBackend.is_message_valid_based_on_retention_period``
  → ``Queue.attributes``): quadratic in the queue's depth, 13 % of moto's busy time while a
  500-item job drained. It reads the one attribute instead; the answer is the same.
- **Condition expressions.** moto parses a write's ``ConditionExpression`` twice per call (once
  to check the names and values used, once to evaluate it), with a hand-written lexer. The
  parse of each (expression, names, values) is remembered: the values are part of the key,
  and the parsed tree is only read when evaluated. A bad expression is never remembered, so
  it is refused every time.
- **Update expressions.** moto parses a write's ``UpdateExpression`` twice per call too; the
  syntax tree of each is remembered. moto reads the tree and validates a deep copy of it.
- **Action names.** moto lists its response class's methods (``inspect.getmembers``) on every
  request to find the action; the list is remembered per class.

  Together, measured with a rate-limit-and-quota conditional UpdateItem (four conditions,
  ``ReturnValues=ALL_NEW``) in paired rounds against two servers: moto's CPU per call
  12.1 → 8.4 ms (12.5 → 9.6 ms with the condition parse alone).
- **Garbage-collection pauses** (the moto process only, :func:`freeze_after_full_collections`):
  full collections walk every object moto stores, holding the GIL, for longer as the heap grows.

This changes the stand-in server, not the application: chalicelib still talks to it over HTTP,
and every request still reaches the same moto backend as before.
"""

from __future__ import annotations

import threading
from typing import Any

_applied = False
_frozen = False
_lock = threading.Lock()
HOSTS_REMEMBERED = 1024  # distinct inferred host names (a few per service and region in use)
EXPRESSIONS_REMEMBERED = 4096  # distinct parses kept per memo (condition and update expressions)


def speed_up_moto_server() -> None:
    """Memoise moto's backend lookup per inferred host (``get_backend_for_host``) and read the
    one attribute SQS's retention check needs. Idempotent.

    Example::

        speed_up_moto_server()
        KeepAliveServer(DomainDispatcherApplication(create_backend_app)).start()
    """
    global _applied
    with _lock:
        if _applied:
            return
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication

        original = DomainDispatcherApplication.get_backend_for_host
        found: dict[str | None, Any] = {}  # the patterns are moto's module-level index, one for all instances

        def get_backend_for_host(self: Any, host: str | None) -> Any:
            try:
                return found[host]
            except KeyError:
                backend = original(self, host)
                if len(found) < HOSTS_REMEMBERED:
                    found[host] = backend
                return backend

        DomainDispatcherApplication.get_backend_for_host = get_backend_for_host  # type: ignore[method-assign]

        from moto.core.utils import unix_time
        from moto.sqs.models import SQSBackend

        def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
            retention_s = int(self.get_queue(queue_name).message_retention_period)
            return retention_s + message.sent_timestamp / 1000 > unix_time()

        SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period  # type: ignore[method-assign]
        _memoise_condition_parser()
        _memoise_action_names()
        _memoise_update_parser()
        _applied = True


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> Any:
    """Store ``value`` under ``key`` in ``memo`` (emptied first once it holds
    :data:`EXPRESSIONS_REMEMBERED` entries) and return it."""
    if len(memo) >= EXPRESSIONS_REMEMBERED:
        memo.clear()
    memo[key] = value
    return value


def _memoise_update_parser() -> None:
    """Remember moto's parse of each DynamoDB update expression (its syntax tree). moto only
    reads the tree, and validates a deep copy of it, so one tree serves every call."""
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser

    original = UpdateExpressionParser.make.__func__  # type: ignore[attr-defined]
    parsed: dict[str, Any] = {}

    def make(cls: Any, expression_str: str) -> Any:
        try:
            return parsed[expression_str]
        except KeyError:
            return _remember(parsed, expression_str, original(cls, expression_str))

    UpdateExpressionParser.make = classmethod(make)  # type: ignore[method-assign, assignment]


def _memoise_action_names() -> None:
    """Remember the method names of each response class, which moto lists on every request."""
    import functools

    import moto.core.responses as responses

    responses.method_names_from_class = functools.cache(responses.method_names_from_class)


def _memoise_condition_parser() -> None:
    """Remember moto's parse of each DynamoDB condition expression with its names and values."""
    import json

    from moto.dynamodb.comparisons import ConditionExpressionParser

    original = ConditionExpressionParser.parse
    parsed: dict[tuple[str, str, str], tuple[Any, list[str], list[str]]] = {}

    def parse(self: Any) -> Any:
        if not self.condition_expression:
            return original(self)
        key = (
            self.condition_expression,
            json.dumps(self.expression_attribute_names, sort_keys=True),
            json.dumps(self.expression_attribute_values, sort_keys=True),
        )
        try:
            op, names, values = parsed[key]
        except KeyError:
            op = original(self)
            _remember(parsed, key, (op, list(self.expr_attr_names_found), list(self.expr_attr_values_found)))
            return op
        self.expr_attr_names_found.extend(names)
        self.expr_attr_values_found.extend(values)
        return op

    ConditionExpressionParser.parse = parse  # type: ignore[method-assign]


def freeze_after_full_collections() -> None:
    """After each full (generation 2) garbage collection, move every surviving object to the
    permanent generation (``gc.freeze()``), so the next full collection scans only what was
    allocated since. Idempotent. For the moto process only: it affects the whole interpreter.

    moto keeps every item, object and message it serves as Python objects: more than a
    million of them within two minutes of ``make bench``. A full collection walks them all
    holding the GIL, so the pauses grew with the heap (0.3 s at 0.55 million objects, 0.55 s at
    1.25 million, logged with ``gc.callbacks``) until calls timed out (PynamoDB's 5 s) and the
    SDK retried them. Objects that survived a full collection are moto's stored state; cycles
    they form later are not collected, a bounded cost for a dev or test server.
    Source: Python docs, ``gc.freeze`` ("avoid ... copy-on-write" and pauses in long-lived
    processes) and ``gc.callbacks``.

    Example::

        freeze_after_full_collections()  # in devstack.moto_process, before serving
    """
    global _frozen
    with _lock:
        if _frozen:
            return
        import gc

        def after(phase: str, info: dict[str, Any]) -> None:
            if phase == "stop" and info.get("generation") == 2:
                gc.freeze()

        gc.callbacks.append(after)
        _frozen = True
