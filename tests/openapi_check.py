"""Validate real responses against the OpenAPI document's schemas."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

#: A well-formed image id that names nothing: a body the document allows gets a 404 for it.
NOBODYS = "01JD0000000000000000000000"

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


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
    """``pattern`` as ECMA-262 reads it (JSON Schema's dialect): ``$`` is the end of the
    string; Python's ``$`` also matches before a final newline."""
    if isinstance(instance, str) and not re.search(pattern.removesuffix("$") + r"\Z", instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


#: Draft 2020-12 with ECMA-262's reading of ``pattern``.
EcmaValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})


def validator(schema: dict[str, Any]) -> Any:
    """An :data:`EcmaValidator` for ``schema``, its ``$ref``s resolved in the document."""
    wrapped = {**copy.deepcopy(schema), "components": spec()["components"]}
    return EcmaValidator(wrapped)


def body_valid(schema_name: str, body: Any) -> bool:
    """True when ``body`` is valid against ``#/components/schemas/<schema_name>``."""
    return validator({"$ref": f"#/components/schemas/{schema_name}"}).is_valid(body)


def agrees(reply: Any, valid: bool, what: Any) -> None:
    """An allowed request is not a 400 (nor a 5xx); a forbidden one is a 400 whose body is
    the documented error shape."""
    if valid:
        assert reply.status != 400 and reply.status < 500, (what, reply.status, reply.body)
    else:
        assert reply.status == 400, (what, reply.status, reply.body)
        check("/v1/images", "GET", 400, reply.json)
