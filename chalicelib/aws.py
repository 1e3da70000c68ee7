"""Lazily created, process-wide boto3 clients (the aws/chalice samples' pattern).

Clients are created on first use, so importing the app costs no boto3 session
set-up (cold start), and a warm Lambda reuses them. boto3 reads the endpoint
(``AWS_ENDPOINT_URL``), region and credentials from the standard environment.
"""

from __future__ import annotations

import threading
from typing import Any

_clients: dict[str, Any] = {}
_lock = threading.Lock()


def client(service: str) -> Any:
    """The shared boto3 client for ``service`` (e.g. ``"s3"``, ``"sqs"``).

    S3 clients use SigV4 and virtual-hosted-style addressing is left to botocore;
    presigned URLs are always SigV4.
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
            _clients[service] = boto3.session.Session().client(service, config=config)
        return _clients[service]


def http_pool_size(settings: Any) -> int:
    """Connections a process keeps open per host (boto3's ``max_pool_connections``, the Flux
    client's ``pool_maxsize``): one per thread that may call at once, the worker's
    ``WORKER_THREADS`` records times ``WORKER_MAX_CONCURRENCY`` invocations (the dev stack
    runs those invocations in one process; botocore's default of 10 would open and discard a
    connection per call beyond it). At least 10. Connections open lazily, so a Lambda
    instance with fewer threads opens fewer."""
    return max(10, int(settings.worker_threads) * int(settings.worker_max_concurrency))


def reset_clients() -> None:
    """Forget every client (tests that change the AWS environment call this)."""
    with _lock:
        _clients.clear()
