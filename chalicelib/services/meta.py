"""Read-only API metadata: the model catalog, the OpenAPI document, key health."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi.json"


@lru_cache(maxsize=1)
def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document shipped in ``chalicelib/openapi.json``."""
    return json.loads(OPENAPI_PATH.read_text())


def models() -> dict[str, Any]:
    """``GET /v1/models``: the catalog with each model's capabilities and availability
    (see :func:`chalicelib.flux.catalog.catalog_json`)."""
    from chalicelib.flux.availability import unavailable_models
    from chalicelib.flux.catalog import catalog_json

    return catalog_json(unavailable_models())


def model_status() -> dict[str, Any]:
    """``GET /v1/admin/models``: the catalog against the upstream's own model list."""
    from chalicelib.flux.availability import status_json

    return status_json()


def key_health() -> dict[str, Any]:
    """``GET /v1/admin/keys``: ``{"keys": [...]}`` by key id (never the key)."""
    from chalicelib.flux.keypool import get_key_pool

    pool = get_key_pool()
    pool.refresh(force=True)
    return {"keys": pool.health_report(), "healthy": pool.healthy_count()}
