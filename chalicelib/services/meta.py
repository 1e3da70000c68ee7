"""Read-only API metadata: the model catalog, the limits, the OpenAPI document, key health."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from chalicelib.flux.availability import status_json, unavailable_models
from chalicelib.flux.catalog import MAX_PROMPT_CHARS, catalog_json
from chalicelib.settings import get_settings

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi.json"


@lru_cache(maxsize=1)
def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document shipped in ``chalicelib/openapi.json``."""
    return json.loads(OPENAPI_PATH.read_text())


def models() -> dict[str, Any]:
    """``GET /v1/models``: the catalog with each model's capabilities and availability
    (see :func:`chalicelib.flux.catalog.catalog_json`)."""
    return catalog_json(unavailable_models())


def model_status() -> dict[str, Any]:
    """``GET /v1/admin/models``: the catalog against the upstream's own model list."""
    return status_json()


def me(user_id: str, org_id: str | None, org_role: str | None, is_admin: bool) -> dict[str, Any]:
    """``GET /v1/me``: who the verified session token says the caller is, and whether this
    deployment makes them an admin (``CLERK_ADMIN_USER_IDS``, or an admin role in
    ``CLERK_ADMIN_ORG_ID``; see :func:`chalicelib.auth.clerk.is_admin`). The web client shows
    the Admin screen from ``is_admin``: an admin of some other organization is not one here.

    Returns:
        ``{"user_id", "org_id", "org_role", "is_admin"}`` (``org_*`` None without an active
        organization).
    """
    return {"user_id": user_id, "org_id": org_id, "org_role": org_role, "is_admin": bool(is_admin)}


def limits() -> dict[str, Any]:
    """``GET /v1/limits``: the input limits of this deployment (settings), so a client can
    check a prompt file before sending it.

    Returns:
        ``{"jobs": {"max_items", "max_body_bytes"}, "prompt": {"max_chars"},
        "archives": {"max_images"}, "request": {"max_body_bytes"}}`` (counts; bytes).
    """
    settings = get_settings()
    return {
        "jobs": {"max_items": settings.jobs_max_items, "max_body_bytes": settings.jobs_max_body_bytes},
        "prompt": {"max_chars": MAX_PROMPT_CHARS},
        "archives": {"max_images": settings.archive_max_images},
        "request": {"max_body_bytes": settings.max_body_bytes},
    }


def key_health() -> dict[str, Any]:
    """``GET /v1/admin/keys``: ``{"keys": [...]}`` by key id (never the key)."""
    from chalicelib.flux.keypool import get_key_pool

    pool = get_key_pool()
    pool.refresh(force=True)
    return {"keys": pool.health_report(), "healthy": pool.healthy_count()}


def key_spend() -> dict[str, Any]:
    """``GET /v1/admin/spend``: ``{"period": "YYYY-MM", "keys": [{"key_id", "source",
    "images", "usd"}], "total_usd"}``, the month's upstream cost per key, most expensive
    first. ``key_id`` is a shared key's id (``source: "shared"``) or a user's own key's id
    (``source: "own"``); never a key. Every configured shared key is listed, spent or not."""
    from chalicelib.flux.keypool import get_key_pool
    from chalicelib.services import usage

    period = usage.current_month()
    rows = {r["key_id"]: r for r in usage.key_spend(period)}
    for kid in get_key_pool().key_ids:
        rows.setdefault(kid, {"key_id": kid, "images": 0, "usd": 0.0})
    keys = []
    for kid, row in rows.items():
        own = kid.startswith("own:")
        keys.append({**row, "key_id": kid.removeprefix("own:"), "source": "own" if own else "shared"})
    keys.sort(key=lambda r: (-r["usd"], r["source"], r["key_id"]))
    return {"period": period, "keys": keys, "total_usd": round(sum(r["usd"] for r in keys), 6)}
