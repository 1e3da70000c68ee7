"""Parsing a request body that must be one JSON object."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.errors import ValidationError


def parse_json_object(raw: bytes | str) -> dict[str, Any]:
    """``raw`` as a JSON object.

    Raises:
        ValidationError: 400 ``invalid-json`` when it is empty, does not parse (RFC 8259),
            or is not an object.
    """
    if not raw or not raw.strip():
        raise ValidationError("a JSON object body is required", code="invalid-json")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"body is not valid JSON: {exc}", code="invalid-json") from None
    if not isinstance(body, dict):
        raise ValidationError("body must be a JSON object", code="invalid-json")
    return body
