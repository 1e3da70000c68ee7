"""Base class and helpers shared by the PynamoDB models.

Table names are ``{TABLE_PREFIX}{name}``; the prefix comes from settings so a
stage (or a test run) gets its own tables. Every table is PAY_PER_REQUEST.
The models are the single source of truth for key schemas and indexes: the dev
stack creates tables from them and a test compares them with infra/.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from pynamodb.constants import NONE
from pynamodb.exceptions import TransactWriteError
from pynamodb.models import Model
from pynamodb.signals import pre_dynamodb_send, signals_available

from chalicelib.aws import botocore_session, http_pool_size, record_call
from chalicelib.settings import get_settings


def _count_call(_sender: object, operation_name: str = "", **_kwargs: object) -> None:
    """PynamoDB's ``pre_dynamodb_send`` signal (one per API call): counted by
    :func:`chalicelib.aws.record_call` (the ``Server-Timing`` header's AWS calls)."""
    record_call("dynamodb", operation_name)


if signals_available:  # blinker (a runtime requirement) makes PynamoDB send its signals
    pre_dynamodb_send.connect(_count_call, weak=False)


def table_name(name: str) -> str:
    """The physical table name for logical table ``name`` (e.g. ``"images"``)."""
    return f"{get_settings().table_prefix}{name}"


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


class BaseModel(Model):
    """Common Meta for every table (billing mode; region/endpoint come from the
    standard AWS environment: ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``)."""

    class Meta:
        billing_mode = "PAY_PER_REQUEST"
        # Short timeouts: a Lambda must fail fast rather than hang on DynamoDB.
        connect_timeout_seconds = 3
        read_timeout_seconds = 5
        max_retry_attempts = 3

    @classmethod
    def _get_connection(cls) -> Any:
        """PynamoDB's connection for this model, with its botocore client made.

        PynamoDB makes each model's one client from a session of the calling thread, and so
        a botocore session per model (each costs about 9 ms of CPU: its handlers and their
        aliases; a first ``POST /v1/images`` touches several models). Here every model's client
        comes from one session of the process (:func:`_model_session`, which shares the
        process's data loader, so no model parses botocore's data again). botocore sessions
        are not thread-safe, so the client is made at once, under a lock; once it exists, no
        thread touches a session (a worker's batch runs on new threads every invocation).
        Models whose connections have the same settings (region, endpoint, timeouts, retries,
        pool size, extra headers: every model here) share one client (:data:`_clients`): a
        botocore client is thread-safe, and each further one cost about 7 ms of CPU on a cold
        or restored copy's first calls. Its connection pool holds
        :func:`~chalicelib.aws.http_pool_size` connections (PynamoDB's default of 10 was per model).
        Source: botocore docs, "Session" (one per thread) and "Clients" (thread-safe), and
        PynamoDB's ``Connection.client``.
        """
        connection = super()._get_connection()
        conn = connection.connection
        if conn._client is None:
            with _session_lock:
                if conn._client is None:
                    # one pool for every model's calls: as many connections as threads may call
                    conn._max_pool_connections = max(conn._max_pool_connections, http_pool_size(get_settings()))
                    settings = _client_settings(conn)
                    shared = _clients.get(settings)
                    if shared is not None:
                        conn._client = shared
                    else:
                        conn._local.session = _model_session()
                        _clients[settings] = conn.client  # made now, while the session is held
        return connection

    def update_no_return(self, actions: list[Any], condition: Any = None) -> None:
        """One UpdateItem on this item's key, like ``Model.update``, that asks for nothing back
        (``ReturnValues`` ``NONE``): for counters and stamps the caller does not read. This
        instance is left as it was. DynamoDB then sends no attributes, so neither side
        serialises or parses them.
        Source: Amazon DynamoDB API reference, "UpdateItem" (``ReturnValues``, default ``NONE``).

        Args:
            actions: PynamoDB update actions (``Model.attr.add(1)``, ``.set(...)``), at least one.
            condition: an optional PynamoDB condition.

        Raises:
            TypeError: no actions, or the model has a version attribute (use ``update``).
            pynamodb.exceptions.UpdateError: the condition failed or DynamoDB failed.

        Example::

            UsageModel(user_id, "2026-12").update_no_return([UsageModel.count.add(1)])
        """
        if not isinstance(actions, list) or not actions:
            raise TypeError("actions must be a non-empty list")
        if self._version_attribute_name is not None:
            raise TypeError(f"{type(self).__name__} has a version attribute: use update()")
        hash_key, range_key = self._get_hash_range_key_serialized_values()
        self._get_connection().update_item(
            hash_key, range_key=range_key, return_values=NONE, condition=condition, actions=actions
        )


_session: Any = None  # the botocore session every model's client is made from
_session_lock = threading.Lock()
#: the models' botocore clients, one per distinct connection settings (:func:`_client_settings`)
_clients: dict[tuple[Any, ...], Any] = {}


def _client_settings(conn: Any) -> tuple[Any, ...]:
    """What PynamoDB's ``Connection.client`` makes a client from: models whose connections
    agree on all of it can share one client."""
    return (
        conn.region,
        conn.host,
        conn._connect_timeout_seconds,
        conn._read_timeout_seconds,
        conn._max_retry_attempts_exception,
        conn._max_pool_connections,
        repr(conn._retry_configuration),
        repr(conn._extra_headers),
    )


def _model_session() -> Any:
    """The process's botocore session for the models' clients (call with ``_session_lock``
    held), with the retry watch (:func:`watching_retries`) on its DynamoDB calls."""
    global _session
    if _session is None:
        _session = botocore_session()
        _session.register("after-call.dynamodb", _note_retries)
    return _session


_retries: ContextVar[list[int] | None] = ContextVar("dynamodb_retries", default=None)


def _note_retries(parsed: Any = None, **_kwargs: Any) -> None:
    """botocore ``after-call`` handler of the models' clients: a call that succeeded after
    retries adds its ``ResponseMetadata.RetryAttempts`` to the :func:`watching_retries` list."""
    box = _retries.get()
    if box is not None and isinstance(parsed, dict):
        attempts = int((parsed.get("ResponseMetadata") or {}).get("RetryAttempts") or 0)
        if attempts:
            box.append(attempts)


@contextmanager
def watching_retries() -> Iterator[list[int]]:
    """Collect the SDK retries of the DynamoDB calls made in this context (this thread):
    yields a list that gets each retried call's retry count.

    A write the SDK retried may have been applied by an attempt whose answer was lost; for
    an atomic counter ADD that counts twice (Amazon DynamoDB developer guide, "Atomic
    counters": not idempotent). Callers use this to know when to recount.

    Example::

        with watching_retries() as retries:
            job.update(actions=[JobModel.succeeded_count.add(1)])
        if retries:
            ...  # the ADD may have counted twice
    """
    box: list[int] = []
    token = _retries.set(box)
    try:
        yield box
    finally:
        _retries.reset(token)


def reset_connections() -> None:
    """Drop every model's cached ``TableConnection`` (a botocore client, with its endpoint,
    credentials and connection pool) and the models' session (with its credentials), so the
    next call builds fresh ones from the environment as it is now. For a SnapStart restore and
    for tests that change the endpoint."""
    global _session
    with _session_lock:
        _session = None  # its cached credentials go too
        _clients.clear()
    pending = list(BaseModel.__subclasses__())
    while pending:
        model = pending.pop()
        model._connection = None
        pending.extend(model.__subclasses__())


def same_item(stored: Model, written: Model, ignore: Iterable[str] = ()) -> bool:
    """True when ``stored`` (read back) holds what ``written`` would write, attribute by
    attribute, apart from the attribute names in ``ignore``.

    Used after a conditional put failed: when botocore retries a put whose first attempt
    committed but whose answer was lost, the retry fails its ``attribute_not_exists``
    condition on our own item; equal content means the write succeeded.
    """
    skip = set(ignore)
    mine = {k: v for k, v in written.serialize().items() if k not in skip}
    theirs = {k: v for k, v in stored.serialize().items() if k not in skip}
    return mine == theirs


def is_condition_failure(exc: BaseException) -> bool:
    """True when a write (PutItem / UpdateItem / DeleteItem, or a TransactWriteItems) failed
    on its ConditionExpression rather than on DynamoDB itself.

    A single-item write fails with ``ConditionalCheckFailedException``; a transaction is
    cancelled with a ``ConditionalCheckFailed`` reason on one of its actions. Source:
    DynamoDB API reference, "PutItem" / "TransactWriteItems" errors.
    """
    if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
        return True
    if isinstance(exc, TransactWriteError):
        return any(r is not None and r.code == "ConditionalCheckFailed" for r in exc.cancellation_reasons or [])
    return False
