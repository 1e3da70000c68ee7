"""Validate real responses against the OpenAPI document's schemas."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

SPEC_PATH = Path(__file__).resolve().parent.parent / "chalicelib" / "openapi.json"


@lru_cache(maxsize=1)
def spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text())


def response_schema(path: str, method: str, status: int) -> dict[str, Any] | None:
    op = spec()["paths"][path][method.lower()]
    response = op["responses"].get(str(status))
    assert response is not None, f"{method} {path} has no documented {status} response"
    content = response.get("content", {}).get("application/json")
    return content["schema"] if content else None


def check(path: str, method: str, status: int, body: Any) -> None:
    """Assert ``body`` matches the documented schema of ``method path`` answering ``status``."""
    schema = response_schema(path, method, status)
    if schema is None:
        return
    wrapped = {**schema, "components": spec()["components"]}
    jsonschema.Draft202012Validator(wrapped).validate(body)
