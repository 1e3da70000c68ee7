"""Lazily created, process-wide boto3 clients (the aws/chalice samples' pattern).

Clients are created on first use, so importing the app costs no boto3 session
set-up (cold start), and a warm Lambda reuses them. boto3 reads the endpoint
(``AWS_ENDPOINT_URL``), region and credentials from the standard environment.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_clients: dict[str, Any] = {}
_session: Any = None  # one boto3 Session for every client
_loader: Any = None  # one botocore data loader for every session of the process
_lock = threading.Lock()
_calls: ContextVar[Counter[str] | None] = ContextVar("aws_calls", default=None)
_calls_lock = threading.Lock()


@contextmanager
def counting_calls() -> Iterator[Counter[str]]:
    """Count the AWS API calls made in this context (and in threads started with a copy of
    it, ``contextvars.copy_context().run``): a ``Counter`` of ``"service.Operation"`` (e.g.
    ``"s3.PutObject"``, ``"dynamodb.UpdateItem"``) to call count. One call is one API call
    as the SDK makes it (its retries are not counted again). Nested contexts count only in
    the innermost."""
    counter: Counter[str] = Counter()
    token = _calls.set(counter)
    try:
        yield counter
    finally:
        _calls.reset(token)


def record_call(service: str, operation: str) -> None:
    """Count one ``service.operation`` call in the current :func:`counting_calls` context
    (nothing outside one). The clients of :func:`client` call it; so does the DynamoDB
    adapter for PynamoDB's calls."""
    counter = _calls.get()
    if counter is not None:
        with _calls_lock:
            counter[f"{service}.{operation}"] += 1


def _on_call(model: Any, **_kwargs: Any) -> None:
    """botocore ``before-call`` handler: one API call (``model`` is its OperationModel)."""
    record_call(model.service_model.service_name, model.name)


def server_timing(counter: Counter[str]) -> str:
    """The ``Server-Timing`` metric for a request's AWS calls (W3C Server Timing):
    ``aws;desc="<total> calls: dynamodb.UpdateItem=1 s3.PutObject=2 ..."`` (sorted by name)."""
    detail = " ".join(f"{name}={n}" for name, n in sorted(counter.items()))
    total = sum(counter.values())
    return f'aws;desc="{total} calls{": " + detail if detail else ""}"'


def client(service: str) -> Any:
    """The shared boto3 client for ``service`` (e.g. ``"s3"``, ``"sqs"``).

    S3 clients use SigV4 and virtual-hosted-style addressing is left to botocore;
    presigned URLs are always SigV4. Every client comes from one boto3 Session, so botocore
    lists its service data and loads the endpoint rules once per process, not once per service.
    """
    found = _clients.get(service)
    if found is not None:
        return found
    with _lock:
        if service not in _clients:
            import boto3
            from botocore.config import Config

            from chalicelib.settings import get_settings

            config = Config(
                max_pool_connections=http_pool_size(get_settings()),
                connect_timeout=3,
                read_timeout=10,
                retries={"max_attempts": 3, "mode": "standard"},
                signature_version="s3v4" if service == "s3" else None,
                s3={"addressing_style": "path"} if service == "s3" else None,
            )
            global _session
            if _session is None:
                _session = boto3.session.Session(botocore_session=botocore_session())
            made = _session.client(service, config=config)
            made.meta.events.register("before-call", _on_call)
            _clients[service] = made
        return _clients[service]


def botocore_session() -> Any:
    """A new botocore ``Session`` that shares the process's data loader.

    botocore's loader caches the JSON it reads (``endpoints.json``, 1.2 MB, and each
    service's model), but per session, and PynamoDB makes a session for every model's
    connection: measured here, each model's first call cost 73-93 ms of CPU, 12 ms with a
    shared loader. The loader holds only botocore's static data (no credentials, no
    connections), so sharing it across sessions and threads is safe (its cache is a dict;
    two threads at worst both read a file).
    """
    import botocore.session

    global _loader
    session = botocore.session.get_session()
    if _loader is None:
        _loader = session.get_component("data_loader")
    else:
        session.register_component("data_loader", _loader)
    return session


#: The AWS services the code calls (``infra.slim.used_services`` finds the same by scanning the
#: code, and a test keeps the two equal).
SERVICES = ("dynamodb", "kms", "s3", "secretsmanager", "sqs")


def preload_sdk_data(services: tuple[str, ...] = SERVICES) -> None:
    """Read botocore's data for ``services`` into the process's shared data loader: each one's
    model and endpoint rules, and the endpoints, partitions, defaults and retry tables every
    client reads. It makes a client of each with placeholder credentials and drops it, so it
    loads exactly what a real client's creation loads, and needs no credentials, region or
    network.

    For SnapStart's snapshot (:func:`chalicelib.snapstart.before_snapshot`): the restore hook
    drops every client, session and credential, but the loader holds only parsed JSON, so a
    restored process makes its first clients without reading or parsing a file.
    """
    session = botocore_session()
    for service in services:
        session.create_client(
            service, region_name="us-east-1", aws_access_key_id="preload", aws_secret_access_key="preload"
        )


def http_pool_size(settings: Any) -> int:
    """Connections a process keeps open per host (boto3's ``max_pool_connections``, the Flux
    client's ``pool_maxsize``): one per thread that may call at once, the worker's
    ``WORKER_THREADS`` records times ``WORKER_MAX_CONCURRENCY`` invocations (the dev stack
    runs those invocations in one process; botocore's default of 10 would open and discard a
    connection per call beyond it). At least 10. Connections open lazily, so a Lambda
    instance with fewer threads opens fewer."""
    return max(10, int(settings.worker_threads) * int(settings.worker_max_concurrency))


def reset_clients() -> None:
    """Forget every client and the session with its cached credentials (tests that change the
    AWS environment call this, and so does the SnapStart restore hook)."""
    global _session
    with _lock:
        _clients.clear()
        _session = None
