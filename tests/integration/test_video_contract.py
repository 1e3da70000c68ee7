"""``POST /v1/videos`` and the OpenAPI document agree: the ``VideoRequest`` schema is the one
``infra.video_schema`` generates from the video catalog, it accepts exactly the bodies
:func:`parse_video_params` accepts for every model (sizes, durations, frame rates, keyframes,
reference images, prompt limits), and the API answers a body the document forbids with a 400."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.errors import ValidationError
from chalicelib.flux.video_catalog import parse_video_params, video_catalog
from devstack.prompts import parti_prompts
from infra import video_schema
from tests import openapi_check
from tests.openapi_check import body_valid

PROMPT = parti_prompts()[7]
FIRST = "01JD0000000000000000000001"
LAST = "01JD0000000000000000000002"
ALL_SIZES = sorted({size for spec in video_catalog().models for size in spec.sizes})
ALL_SECONDS = sorted({s for spec in video_catalog().models for s in spec.seconds} | {0, 21})
MODEL_CHOICES = [None, *(name for spec in video_catalog().models for name in (spec.id, *spec.aliases)), "veo-9"]


def _code_accepts(body: dict[str, Any]) -> bool:
    try:
        parse_video_params(body)
    except ValidationError:
        return False
    return True


def _bodies(model: str | None) -> Iterator[dict[str, Any]]:
    """Bodies around every rule of the catalog: each a small change to a plain request."""
    base: dict[str, Any] = {"prompt": PROMPT} if model is None else {"prompt": PROMPT, "model": model}
    yield base
    for width, height in ALL_SIZES:
        yield {**base, "width": width, "height": height}
    yield {**base, "width": ALL_SIZES[0][0]}
    yield {**base, "height": ALL_SIZES[0][1]}
    for seconds in ALL_SECONDS:
        yield {**base, "seconds": seconds}
    for fps in (14, 15, 16, 24, 25, 30, 60, 61):
        yield {**base, "fps": fps}
    for seed in (-1, 0, 2**32 - 1, 2**32):
        yield {**base, "seed": seed}
    yield {**base, "negative_prompt": "blurry, low quality"}
    yield {**base, "image_id": FIRST}
    yield {**base, "image_id": "not-a-ulid-but-alnum"}
    yield {**base, "image_id": FIRST, "last_image_id": LAST}
    yield {**base, "last_image_id": LAST}
    for n in (0, 1, 3, 4):
        yield {**base, "reference_image_ids": [f"01JD00000000000000000000{i:02d}" for i in range(n)]}
    rest = {k: v for k, v in base.items() if k != "prompt"}
    yield rest
    yield {**rest, "image_id": FIRST}
    for prompt in ("", " ", "a", " a ", "ab", "a b", "x" * 2048, "x" * 2049, "x" * 4001):
        yield {**rest, "prompt": prompt}
        yield {**rest, "prompt": prompt, "image_id": FIRST}
    yield {**base, "collection": "trips"}
    yield {**base, "colour": "red"}
    yield {**base, "seconds": None}


def test_the_document_is_generated_from_the_video_catalog() -> None:
    text = openapi_check.SPEC_PATH.read_text(encoding="utf-8")
    assert video_schema.updated_document(text) == text, "run: python -m infra.video_schema"


@pytest.mark.parametrize("model", MODEL_CHOICES, ids=repr)
def test_the_document_states_each_video_models_rules(model) -> None:
    for body in _bodies(model):
        assert body_valid("VideoRequest", body) == _code_accepts(body), body


def test_the_model_enum_is_the_catalog() -> None:
    schema = openapi_check.spec()["components"]["schemas"]["VideoRequest"]
    assert schema["properties"]["model"]["enum"] == MODEL_CHOICES[1:-1]
    assert len(schema["allOf"]) == len(video_catalog().models)


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": PROMPT, "image_id": "not-a-ulid-but-alnum"},
        {"prompt": PROMPT, "model": "openai/sora-2", "fps": 24},
        {"prompt": PROMPT, "model": "google/veo-3.0", "width": 720, "height": 720},
        {"prompt": "a", "model": "google/veo-3.0"},
        {"prompt": PROMPT, "model": "vidu/vidu-2.0", "reference_image_ids": [FIRST] * 4},
    ],
)
def test_the_api_refuses_what_the_document_forbids(api, body) -> None:
    assert not body_valid("VideoRequest", body)
    reply = api.post("/v1/videos", user="contract", json_body=body)
    assert reply.status == 400, (body, reply.status, reply.body)
    openapi_check.check("/v1/videos", "POST", 400, reply.json)
    assert api.get("/v1/videos", user="contract").json["videos"] == []


def _job_accepted(body: dict[str, Any]) -> bool:
    from chalicelib.jobs.submit import build_submission

    try:
        build_submission(body, None, source="prompts")
    except ValidationError:
        return False
    return True


def _job_bodies(model: str | None) -> Iterator[dict[str, Any]]:
    """Video job bodies around every per-model rule: sizes, durations, frame rates, prompt
    limits and keyframes, in each shape."""
    base: dict[str, Any] = {"kind": "video", "prompts": [PROMPT]}
    if model is not None:
        base["model"] = model
    yield base
    for width, height in ALL_SIZES:
        yield {**base, "width": width, "height": height}
    for seconds in ALL_SECONDS:
        yield {**base, "seconds": seconds}
    for fps in (14, 16, 24, 25, 30, 61):
        yield {**base, "fps": fps}
    rest = {k: v for k, v in base.items() if k != "prompts"}
    for prompt in (" ", "a", "ab", "x" * 2048, "x" * 2049):
        yield {**rest, "prompts": [prompt]}
        yield {**rest, "prompt": prompt, "count": 2}
        yield {**rest, "prompt": prompt, "image_ids": [FIRST]}
    yield {**rest, "prompt": PROMPT, "collection_images": "trips"}
    yield {**rest, "prompt": PROMPT, "image_ids": [FIRST], "count": 2}
    yield {**base, "n": 2}


@pytest.mark.parametrize("model", MODEL_CHOICES, ids=repr)
def test_the_document_states_each_video_models_rules_for_video_jobs(model) -> None:
    for body in _job_bodies(model):
        assert body_valid("VideoJobRequest", body) == _job_accepted(body), body
