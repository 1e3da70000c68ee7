"""Fuzzing the request bodies Schemathesis cannot model: ``POST /v1/estimates``,
``POST /v1/jobs`` and ``POST /v1/videos``.

Their schemas hold one ``if``/``then`` per model on top of the prompt shapes; Schemathesis'
canonicaliser gives up on that many combinations, so ``schemathesis.toml`` leaves these
three operations out of ``st run``. Here Hypothesis builds bodies from the document itself:
each property's values come from every bound, ``enum`` and ``const`` the document states for
it anywhere (per-model rules included), one step either side of each bound, and hostile
strings. The document is the oracle, as in Schemathesis' ``positive_data_acceptance`` and
``negative_data_rejection`` checks: a body the document allows is never a 400 (nor a 5xx),
and one it forbids is always a 400 in the documented error shape.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.prompts import first
from tests import openapi_check
from tests.openapi_check import NOBODYS

PROMPTS = first(12)
TEXTS = [*PROMPTS, "", "   ", "a\x00b", "tab\tand\nnewline", "café ☕", "\u200b", "x" * 2001]
IDS = [NOBODYS, "01jd0000000000000000000000", "nope", ""]
COLLECTIONS = ["shop", "Trip 2026", " shop", "a/b", ""]
URLS = ["https://127.0.0.1/hook", "http://10.0.0.1:8080/h?x=1", "ftp://example.com/", "", "https://"]
ODD = [None, "1", 1.5, -1, 0, [], {}, True]


def _request_schema(path: str) -> dict[str, Any]:
    return openapi_check.spec()["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every ``properties`` object in the document's components, depth first."""
    if isinstance(node, dict):
        if isinstance(node.get("properties"), dict):
            yield node["properties"]
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _stated_values() -> dict[str, set[Any]]:
    """For each property name: every ``enum``/``const`` member and every numeric bound the
    document gives it in any schema, each bound with its neighbours (a step of 1 and 16)."""
    values: dict[str, set[Any]] = {}
    for props in _walk(openapi_check.spec()["components"]):
        for name, schema in props.items():
            if not isinstance(schema, dict):
                continue
            found = values.setdefault(name, set())
            found.update(v for v in schema.get("enum", []) if not isinstance(v, (list, dict)))
            if "const" in schema and not isinstance(schema["const"], (list, dict)):
                found.add(schema["const"])
            for bound in ("minimum", "maximum"):
                if isinstance(schema.get(bound), (int, float)):
                    b = schema[bound]
                    found.update({b, b - 1, b + 1, b - 16, b + 16})
            for bound in ("maxItems", "maxLength"):
                if isinstance(schema.get(bound), int):
                    values.setdefault(f"{name}#len", set()).update({schema[bound], schema[bound] + 1})
    return values


STATED = _stated_values()


def _lists(pool: list[Any], name: str, big: bool) -> st.SearchStrategy[list[Any]]:
    """Short lists from ``pool``; with ``big``, sometimes a list at a stated length or one past it."""
    short = st.lists(st.sampled_from(pool), min_size=0, max_size=3)
    if not big:
        return short
    lengths = sorted(n for n in STATED.get(f"{name}#len", set()) if n <= 1001)
    return st.one_of(short, short, st.sampled_from(lengths).map(lambda n: [pool[0]] * n)) if lengths else short


def _values(name: str, big: bool) -> st.SearchStrategy[Any]:
    """A value for the property ``name``: what the document states for it, bounds and their
    neighbours, and hostile strings."""
    stated = sorted(STATED.get(name, set()), key=repr)
    if name in ("prompt", "negative_prompt", "name"):
        main = st.sampled_from(TEXTS)
    elif name == "prompts":
        main = _lists(TEXTS, name, big)
    elif name in ("image_id", "last_image_id"):
        main = st.sampled_from(IDS)
    elif name in ("image_ids", "reference_image_ids"):
        main = _lists(IDS, name, big)
    elif name in ("collection", "collection_images"):
        main = st.sampled_from(COLLECTIONS)
    elif name == "webhook_url":
        main = st.sampled_from(URLS)
    elif name == "sets":
        one = st.fixed_dictionaries({"prompt": st.sampled_from(TEXTS), "image_ids": _lists(IDS, "image_ids", False)})
        main = st.lists(one, min_size=0, max_size=2)
    elif name in ("count", "n") and not big:
        main = st.sampled_from([v for v in stated if not isinstance(v, (int, float)) or v <= 5] or [1])
    elif stated:
        main = st.sampled_from(stated)
    else:
        main = st.booleans()
    return main


#: The field groups a body may be built on, per request schema (each allowed on its own).
SHAPES = {
    "JobRequest": [
        ("prompts",),
        ("prompt", "count"),
        ("prompt",),
        ("prompt", "image_ids"),
        ("prompt", "collection_images"),
        ("sets",),
    ],
    "VideoJobRequest": [
        ("prompts",),
        ("prompt", "count"),
        ("prompt",),
        ("prompt", "image_ids"),
        ("prompt", "collection_images"),
    ],
    "VideoRequest": [("prompt",), ("prompt", "image_id"), ("image_id",), ("prompt", "reference_image_ids")],
}
#: Properties sent together (the document's ``dependentRequired``).
PAIRED = {"width": "height", "height": "width"}
GOOD = {
    "prompts": st.lists(st.sampled_from(PROMPTS), min_size=1, max_size=3),
    "prompt": st.sampled_from(PROMPTS),
    "count": st.integers(1, 3),
    "image_ids": st.just([NOBODYS]),
    "image_id": st.just(NOBODYS),
    "reference_image_ids": st.just([NOBODYS]),
    "collection_images": st.just("shop"),
    "sets": st.just([{"prompt": PROMPTS[0], "image_ids": [NOBODYS]}]),
}


def _chance(draw: st.DrawFn, percent: int) -> bool:
    """True in ``percent`` in 100 draws. Hypothesis's own choices lean towards their bounds
    (and its ``randoms()`` too), so the odds come from a ``random.Random`` it seeds."""
    return random.Random(draw(st.integers(0, 2**32 - 1))).random() * 100 < percent


@st.composite
def bodies(draw: st.DrawFn, schema_names: list[str], big: bool) -> dict[str, Any]:
    """A body built on one allowed shape of one of ``schema_names`` (``kind`` set to match),
    sometimes a model from the document's ``enum``, up to two further properties with
    stated values, and in about a third of bodies one property set to an odd value."""
    name = draw(st.sampled_from(schema_names))
    schema = _component(name)
    body: dict[str, Any] = {field: draw(GOOD[field]) for field in draw(st.sampled_from(SHAPES[name]))}
    if "kind" in schema["properties"]:
        body["kind"] = schema["properties"]["kind"]["const"]
    if draw(st.booleans()):
        body["model"] = draw(st.sampled_from(schema["properties"]["model"]["enum"]))
    optional = sorted(set(schema["properties"]) - set(body))
    for field in draw(st.lists(st.sampled_from(optional), max_size=2, unique=True)):
        body[field] = draw(_values(field, big))
        pair = PAIRED.get(field)
        if pair in schema["properties"] and pair not in body:
            body[pair] = draw(_values(pair, big))
    if _chance(draw, 25):
        field = draw(st.sampled_from(sorted(schema["properties"])))
        body[field] = draw(st.one_of(st.sampled_from(ODD), _values(field, big)))
    if _chance(draw, 5):
        body["unknown_field"] = 1
    return body


def _component(name: str) -> dict[str, Any]:
    return openapi_check.spec()["components"]["schemas"][name]


JOB_SCHEMAS = ["JobRequest", "VideoJobRequest"]
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _fuzz(api: Any, path: str, strategy: st.SearchStrategy[dict[str, Any]], examples: int) -> list[bool]:
    """Send ``examples`` bodies to ``POST path``, each from a new user (no rate limit or
    quota carries over); assert each answer agrees with the document. Returns, per body,
    whether the document allowed it."""
    validator = openapi_check.validator(_request_schema(path))
    users = itertools.count()
    seen: list[bool] = []

    @settings(FUZZ, max_examples=examples)
    @given(strategy)
    def run(body: dict[str, Any]) -> None:
        valid = validator.is_valid(body)
        seen.append(valid)
        reply = api.post(path, user=f"fuzz-{next(users)}", json_body=body)
        openapi_check.agrees(reply, valid, body)

    run()
    return seen


def _mixed(seen: list[bool]) -> None:
    """The run tried both sides of the document: at least a tenth allowed and a tenth forbidden."""
    assert len(seen) >= 20
    allowed = sum(seen) / len(seen)
    assert 0.1 <= allowed <= 0.9, f"{allowed:.0%} of {len(seen)} bodies were allowed"


@pytest.mark.timeout(300)
def test_estimate_bodies_are_answered_as_the_document_says(api):
    _mixed(_fuzz(api, "/v1/estimates", bodies(JOB_SCHEMAS, big=True), examples=150))


@pytest.mark.timeout(300)
def test_job_bodies_are_answered_as_the_document_says(api, flux):
    _mixed(_fuzz(api, "/v1/jobs", bodies(JOB_SCHEMAS, big=False), examples=50))


@pytest.mark.timeout(300)
def test_video_bodies_are_answered_as_the_document_says(api, flux):
    _mixed(_fuzz(api, "/v1/videos", bodies(["VideoRequest"], big=False), examples=50))
