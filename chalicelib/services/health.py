"""``GET /health``: is each dependency reachable?"""

from __future__ import annotations

from typing import Any

from chalicelib import __version__
from chalicelib.aws import client
from chalicelib.settings import get_settings


def check() -> tuple[int, dict[str, Any]]:
    """Probe DynamoDB, S3 and the key pool.

    Returns:
        ``(status, {"status": "ok" | "degraded", "version", "checks": {...}})``;
        status 200 when every check passes, else 503. Never raises.
    """
    settings = get_settings()
    checks: dict[str, Any] = {}
    try:
        from chalicelib.db import ImageModel

        ImageModel.describe_table()
        checks["dynamodb"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a health check reports, never raises
        checks["dynamodb"] = f"error: {type(exc).__name__}"
    try:
        client("s3").head_bucket(Bucket=settings.images_bucket)
        checks["s3"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["s3"] = f"error: {type(exc).__name__}"
    try:
        from chalicelib.flux.keypool import get_key_pool

        checks["healthy_keys"] = get_key_pool().healthy_count()
    except Exception as exc:  # noqa: BLE001
        checks["healthy_keys"] = 0
        checks["keys"] = f"error: {type(exc).__name__}"
    ok = checks["dynamodb"] == "ok" and checks["s3"] == "ok" and checks["healthy_keys"] > 0
    return (200 if ok else 503), {"status": "ok" if ok else "degraded", "version": __version__, "checks": checks}
