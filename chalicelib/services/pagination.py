"""Cursors and limits for paginated list routes.

A cursor is the sort key of the last entry of a page (an image or job id, a job item
id): the next page starts after it. The service rebuilds DynamoDB's
``ExclusiveStartKey`` from the caller's own partition and the cursor, so a cursor can
only ever page the caller's data, and any cursor of the documented pattern is valid
(it names a position, not an entry that must exist).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from chalicelib.errors import ValidationError

#: A ULID (Crockford base32, 26 characters): image, job and archive ids; the cursor of
#: ``GET /v1/images`` and ``GET /v1/jobs``.
ULID_PATTERN = "^[0-9A-HJKMNP-TV-Z]{26}$"
#: A job item id (the 0-based prompt index, 4 digits): the cursor of ``GET /v1/jobs/{id}/items``.
ITEM_ID_PATTERN = "^[0-9]{4}$"


def matches(pattern: str, value: str) -> bool:
    """Whether all of ``value`` matches ``pattern`` as JSON Schema reads it (ECMA-262:
    ``$`` is the end of the string, never before a final newline)."""
    return re.fullmatch(pattern.removeprefix("^").removesuffix("$"), value) is not None


def encode_cursor(last_key: dict[str, Any] | None, sort_attr: str) -> str | None:
    """``LastEvaluatedKey`` (PynamoDB's ``last_evaluated_key``) → the cursor: its
    ``sort_attr`` value, or None at the end."""
    if not last_key:
        return None
    return last_key[sort_attr]["S"]


def decode_cursor(
    cursor: str | None, partition: dict[str, str], sort_attr: str, pattern: str = ULID_PATTERN
) -> dict[str, Any] | None:
    """Cursor → ``ExclusiveStartKey``: ``partition`` (attribute → value: the caller's own
    keys, for a GSI also the table's) plus ``sort_attr`` = the cursor.

    Raises:
        ValidationError: 400 ``invalid-cursor`` (field ``cursor``) when it does not
            match ``pattern``.
    """
    if cursor is None:
        return None
    if not matches(pattern, cursor):
        raise ValidationError("cursor is not valid", field="cursor", code="invalid-cursor")
    return {name: {"S": value} for name, value in {**partition, sort_attr: cursor}.items()}


def owner_page(model: Any, user_id: str, query: Mapping[str, str], collection: str | None) -> dict[str, Any]:
    """One page of the caller's items of ``model``, newest first (range key descending).

    With ``collection``, the page comes from the model's ``by_collection`` index (hash
    ``"{user_id}#{collection}"``); ``?limit=`` and ``?cursor=`` are read from ``query``.
    The cursor is the range key (a ULID) of the previous page's last item.

    Returns:
        ``{"items": [model, ...], "next_cursor": str | None}``.

    Raises:
        ValidationError: 400 naming ``limit`` or ``cursor``.
    """
    limit = parse_limit(query.get("limit"))
    sort_attr = model._range_key_attribute().attr_name  # the item's ULID id: the cursor
    if collection:
        partition = {"user_collection": f"{user_id}#{collection}", "user_id": user_id}
        start = decode_cursor(query.get("cursor"), partition, sort_attr)
        result = model.by_collection.query(
            partition["user_collection"], scan_index_forward=False, limit=limit, last_evaluated_key=start
        )
    else:
        start = decode_cursor(query.get("cursor"), {"user_id": user_id}, sort_attr)
        result = model.query(user_id, scan_index_forward=False, limit=limit, last_evaluated_key=start)
    items = list(result)
    return {"items": items, "next_cursor": encode_cursor(result.last_evaluated_key, sort_attr)}


def parse_limit(raw: str | None, default: int = 24, maximum: int = 100) -> int:
    """The ``limit`` query parameter: decimal digits, 1..maximum (absent: ``default``).

    Raises:
        ValidationError: 400 (field ``limit``) when not an integer in range.
    """
    if raw is None:
        return default
    if not matches("^-?[0-9]+$", raw):
        raise ValidationError("limit must be an integer", field="limit")
    # past 4,300 digits int() refuses a string (CPython's int_max_str_digits); any such value is out of range
    value = int(raw) if len(raw) <= 12 else maximum + 1
    if not 1 <= value <= maximum:
        raise ValidationError(f"limit must be between 1 and {maximum}", field="limit")
    return value
