"""Opaque cursors and limits for paginated list routes.

A cursor is the DynamoDB ``LastEvaluatedKey`` as base64url JSON. It is checked
against the caller's ``user_id`` so a crafted cursor cannot page another user's data.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from chalicelib.errors import ValidationError


def encode_cursor(last_key: dict[str, Any] | None) -> str | None:
    """``LastEvaluatedKey`` (PynamoDB's ``last_evaluated_key``) → opaque cursor, or None at the end."""
    if not last_key:
        return None
    raw = json.dumps(last_key, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, user_id: str, user_attr: str = "user_id") -> dict[str, Any] | None:
    """Opaque cursor → ``ExclusiveStartKey``.

    Raises:
        ValidationError: 400 ``invalid-cursor`` (field ``cursor``) when it does not decode
            or belongs to another user.
    """
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode()))
        owner = key[user_attr]["S"]
    except (ValueError, KeyError, TypeError):
        raise ValidationError("cursor is not valid", field="cursor", code="invalid-cursor") from None
    if owner != user_id and not str(owner).startswith(user_id + "#"):
        raise ValidationError("cursor is not valid", field="cursor", code="invalid-cursor")
    return key


def owner_page(model: Any, user_id: str, query: Mapping[str, str], collection: str | None) -> dict[str, Any]:
    """One page of the caller's items of ``model``, newest first (range key descending).

    With ``collection``, the page comes from the model's ``by_collection`` index (hash
    ``"{user_id}#{collection}"``); ``?limit=`` and ``?cursor=`` are read from ``query``.

    Returns:
        ``{"items": [model, ...], "next_cursor": str | None}``.

    Raises:
        ValidationError: 400 naming ``limit`` or ``cursor``.
    """
    limit = parse_limit(query.get("limit"))
    if collection:
        start = decode_cursor(query.get("cursor"), user_id, user_attr="user_collection")
        result = model.by_collection.query(
            f"{user_id}#{collection}", scan_index_forward=False, limit=limit, last_evaluated_key=start
        )
    else:
        start = decode_cursor(query.get("cursor"), user_id)
        result = model.query(user_id, scan_index_forward=False, limit=limit, last_evaluated_key=start)
    items = list(result)
    return {"items": items, "next_cursor": encode_cursor(result.last_evaluated_key)}


def parse_limit(raw: str | None, default: int = 24, maximum: int = 100) -> int:
    """The ``limit`` query parameter, 1..maximum.

    Raises:
        ValidationError: 400 (field ``limit``) when not an integer in range.
    """
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError("limit must be an integer", field="limit") from None
    if not 1 <= value <= maximum:
        raise ValidationError(f"limit must be between 1 and {maximum}", field="limit")
    return value
