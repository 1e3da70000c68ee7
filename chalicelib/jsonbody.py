"""Parsing a request body that must be one JSON object."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from chalicelib.errors import ValidationError


def parse_json_object(raw: bytes | str) -> dict[str, Any]:
    """``raw`` as a JSON object.

    Raises:
        ValidationError: 400 ``invalid-json`` when it is empty, does not parse (RFC 8259),
            nests deeper than the parser's recursion limit (RFC 8259 section 9 lets a parser
            limit the depth of nesting), is not an object, or holds a string with an unpaired
            surrogate escape (``"\\ud800"``: not a Unicode string, RFC 8259 section 8.2).
    """
    if not raw or not raw.strip():
        raise ValidationError("a JSON object body is required", code="invalid-json")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"body is not valid JSON: {exc}", code="invalid-json") from None
    except RecursionError:
        raise ValidationError("body nests too deeply", code="invalid-json") from None
    if not isinstance(body, dict):
        raise ValidationError("body must be a JSON object", code="invalid-json")
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("body holds an unpaired surrogate escape", code="invalid-json") from None
    except RecursionError:
        raise ValidationError("body nests too deeply", code="invalid-json") from None
    return body


def reject_nulls(body: Mapping[str, Any]) -> None:
    """Refuse a top-level JSON ``null``: the OpenAPI document gives no field a null type,
    so an optional field is left out, never sent as null.

    Raises:
        ValidationError: 400 naming the first field that is null.
    """
    for name, value in body.items():
        if value is None:
            raise ValidationError(f"{name} must not be null (leave it out instead)", field=name)
