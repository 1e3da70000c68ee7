"""``GET /health``: a cached, uninformative dependency check for load balancers and uptime probes.

The route is public, so it must be cheap and tell an attacker nothing:

- one probe of DynamoDB, S3 and the key pool runs at most once per ``HEALTH_CACHE_SECONDS``
  (default 30 s) per process; every other hit answers from memory with no AWS call, and only one
  thread probes at a time (the others answer with the last result meanwhile);
- the answer is only ``{"status": "ok"}`` (200) or ``{"status": "degraded"}`` (503): no version,
  no resource names, no number of healthy keys, no exception names. Operators find the failing
  dependency in the log line written on each failed probe, and key health under the admin route
  ``GET /v1/admin/keys``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from chalicelib.settings import get_settings
from chalicelib.storage import objects

logger = logging.getLogger("promptcanvas.health")

_lock = threading.Lock()
_probe_lock = threading.Lock()
_cached: tuple[float, bool] | None = None  # (monotonic time of the probe, healthy)


def _probe() -> bool:
    """Probe DynamoDB, S3 and the key pool once. Logs what failed (type names only). Never raises."""
    failed: list[str] = []
    try:
        from chalicelib.db import ImageModel

        ImageModel.describe_table()
    except Exception as exc:  # noqa: BLE001 - a health check reports, never raises
        failed.append(f"dynamodb:{type(exc).__name__}")
    try:
        objects.check_bucket()
    except Exception as exc:  # noqa: BLE001
        failed.append(f"s3:{type(exc).__name__}")
    try:
        from chalicelib.flux.keypool import get_key_pool

        if get_key_pool().healthy_count() <= 0:
            failed.append("keys:none-healthy")
    except Exception as exc:  # noqa: BLE001
        failed.append(f"keys:{type(exc).__name__}")
    if failed:
        logger.warning("health probe failed: %s", ", ".join(failed))
    return not failed


def _healthy(now: float) -> bool:
    """The cached probe result, refreshed when older than ``HEALTH_CACHE_SECONDS``."""
    global _cached
    ttl = get_settings().health_cache_seconds
    with _lock:
        cached = _cached
    if cached is not None and now - cached[0] < ttl:
        return cached[1]
    if not _probe_lock.acquire(blocking=cached is None):
        return cached[1]  # another thread is probing; the last answer stands meanwhile
    try:
        healthy = _probe()
        with _lock:
            _cached = (time.monotonic(), healthy)
        return healthy
    finally:
        _probe_lock.release()


def check() -> tuple[int, dict[str, Any]]:
    """The health answer.

    Returns:
        ``(200, {"status": "ok"})`` when DynamoDB, S3 and at least one Together key were fine at the
        last probe, else ``(503, {"status": "degraded"})``. Never raises.
    """
    if _healthy(time.monotonic()):
        return 200, {"status": "ok"}
    return 503, {"status": "degraded"}


def reset_cache() -> None:
    """Forget the cached probe result (tests; a new process starts empty anyway)."""
    global _cached
    with _lock:
        _cached = None
