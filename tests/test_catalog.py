"""The model catalog and request validation (pure functions, no stack needed)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from chalicelib.errors import ValidationError
from chalicelib.flux.catalog import (
    ASPECT_RATIOS,
    DEFAULT_MODEL,
    GENERATION_FIELDS,
    MAX_SEED,
    MODELS,
    GenerationParams,
    catalog_json,
    get_model,
    parse_generation_params,
)

PARTI = Path("/work/shared/data/parti_prompts.tsv")
SCHNELL_FREE = "black-forest-labs/FLUX.1-schnell-Free"
DEV = "black-forest-labs/FLUX.1-dev"
PRO = "black-forest-labs/FLUX.1.1-pro"


def parse(**body) -> GenerationParams:
    return parse_generation_params({"prompt": "a lighthouse at dusk", **body})


# -- defaults -------------------------------------------------------------------------------------


def test_defaults():
    p = parse()
    assert p.model == DEFAULT_MODEL == SCHNELL_FREE
    assert (p.width, p.height, p.steps, p.n, p.output_format) == (768, 768, 4, 1, "jpeg")
    assert p.negative_prompt is None and p.guidance_scale is None
    assert 0 <= p.seed <= MAX_SEED


def test_a_seed_is_drawn_when_absent_and_kept_when_given():
    assert len({parse().seed for _ in range(20)}) > 1
    assert parse(seed=0).seed == 0 and parse(seed=2**32 - 1).seed == 2**32 - 1
    assert parse(seed=None).seed >= 0  # null counts as absent


@pytest.mark.parametrize(
    ("model", "steps", "size"),
    [
        (SCHNELL_FREE, 4, (768, 768)),
        ("black-forest-labs/FLUX.1-schnell", 4, (768, 768)),
        (DEV, 28, (1024, 1024)),
        (PRO, 28, (1024, 1024)),
    ],
)
def test_model_defaults(model, steps, size):
    p = parse(model=model)
    assert (p.model, p.steps, (p.width, p.height)) == (model, steps, size)


@pytest.mark.parametrize(
    ("alias", "model"),
    [
        ("flux-schnell-free", SCHNELL_FREE),
        ("flux-dev", DEV),
        ("schnell", "black-forest-labs/FLUX.1-schnell"),
        ("flux-pro", PRO),
    ],
)
def test_aliases_resolve_to_the_model_id(alias, model):
    assert parse(model=alias).model == model
    assert get_model(alias).id == model


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # the document lists model, aspect_ratio and output_format as enums: exact spelling
        ({"model": "FLUX-DEV"}, "model"),
        ({"model": " dev"}, "model"),
        ({"model": "Black-Forest-Labs/flux.1-dev"}, "model"),
        ({"output_format": "PNG"}, "output_format"),
        ({"aspect_ratio": "Square"}, "aspect_ratio"),
    ],
)
def test_enums_take_the_documented_spelling_only(body, field):
    with pytest.raises(ValidationError) as caught:
        parse(**body)
    assert caught.value.field == field


def test_explicit_fields_are_kept():
    p = parse(
        model="dev",
        width=1440,
        height=256,
        steps=50,
        n=4,
        seed=7,
        negative_prompt="  blurry\r\nlow quality ",
        guidance_scale=7,
        output_format="png",
    )
    assert (p.width, p.height, p.steps, p.n, p.seed) == (1440, 256, 50, 4, 7)
    assert p.negative_prompt == "blurry\nlow quality"
    assert p.guidance_scale == 7.0 and isinstance(p.guidance_scale, float)
    assert p.output_format == "png"


def test_prompt_is_trimmed_and_keeps_newlines_tabs_and_unicode():
    p = parse_generation_params({"prompt": "  un café\tà Rio — 🌅\r\nsecond line  "})
    assert p.prompt == "un café\tà Rio — 🌅\nsecond line"
    assert parse_generation_params({"prompt": "x" * 2000}).prompt == "x" * 2000


def test_every_parti_prompt_is_accepted():
    with PARTI.open(encoding="utf-8", newline="") as fh:
        prompts = [row["Prompt"] for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]
    assert len(prompts) > 1000
    for prompt in prompts:
        assert parse_generation_params({"prompt": prompt}).prompt == prompt.strip()


def test_to_body_round_trips():
    p = parse(model="dev", aspect_ratio="16:9", seed=99, negative_prompt="text", guidance_scale=3.5, n=2)
    body = p.to_body()
    assert set(body) <= GENERATION_FIELDS
    assert parse_generation_params(json.loads(json.dumps(body))) == p


def test_seed_for_wraps_at_2_32():
    p = parse(seed=2**32 - 1, n=2)
    assert [p.seed_for(i) for i in range(2)] == [2**32 - 1, 0]


def test_unknown_fields_are_ignored_here():
    assert parse(collection="trips", foo=1).prompt == "a lighthouse at dusk"
    assert {
        "prompt",
        "model",
        "aspect_ratio",
        "width",
        "height",
        "steps",
        "seed",
        "negative_prompt",
        "guidance_scale",
        "n",
        "output_format",
    } == GENERATION_FIELDS


# -- presets --------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", MODELS, ids=lambda m: m.id)
def test_presets_are_valid_sizes_with_the_right_shape(spec):
    assert set(spec.presets) == set(ASPECT_RATIOS)
    for name, (w, h) in spec.presets.items():
        assert w % 16 == 0 and h % 16 == 0 and 256 <= w <= 1440 and 256 <= h <= 1440, name
        p = parse(model=spec.id, aspect_ratio=name)
        assert (p.width, p.height) == (w, h)
    presets = spec.presets
    assert presets["square"][0] == presets["square"][1] and presets["square"] == spec.default_size
    assert (
        presets["portrait"][1] > presets["portrait"][0] and presets["landscape"][0] > presets["landscape"][1]
    )
    assert math.isclose(presets["16:9"][0] / presets["16:9"][1], 16 / 9)
    assert presets["9:16"] == presets["16:9"][::-1]


def test_integers_with_a_zero_fraction_are_integers():
    # JSON Schema 2020-12: an "integer" is any number with a zero fractional part
    p = parse(width=512.0, height=768, steps=4.0, n=2.0, seed=7.0)
    assert (p.width, p.height, p.steps, p.n, p.seed) == (512, 768, 4, 2, 7)
    assert all(isinstance(v, int) for v in (p.width, p.steps, p.n, p.seed))


# -- errors name their field ----------------------------------------------------------------------

LONG = "x" * 2001
MISSING = object()
INVALID = [
    ({"prompt": MISSING}, "prompt"),
    ({"prompt": None}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   \n\t "}, "prompt"),
    ({"prompt": 42}, "prompt"),
    ({"prompt": ["a"]}, "prompt"),
    ({"prompt": LONG}, "prompt"),
    ({"prompt": "bell\x07"}, "prompt"),
    ({"prompt": "esc \x1b[31m red"}, "prompt"),
    ({"prompt": "nul\x00"}, "prompt"),
    ({"prompt": "c1 \x85 control"}, "prompt"),
    ({"model": "stabilityai/stable-diffusion-xl"}, "model"),
    ({"model": 3}, "model"),
    ({"aspect_ratio": "3:2"}, "aspect_ratio"),
    ({"aspect_ratio": 1}, "aspect_ratio"),
    ({"aspect_ratio": "square", "width": 512, "height": 512}, "aspect_ratio"),
    ({"aspect_ratio": "square", "width": 512}, "aspect_ratio"),
    ({"width": 512}, "height"),
    ({"height": 512}, "width"),
    ({"width": 240, "height": 512}, "width"),
    ({"width": 1456, "height": 512}, "width"),
    ({"width": 1000, "height": 512}, "width"),
    ({"width": "512", "height": 512}, "width"),
    ({"width": 512.5, "height": 512}, "width"),
    ({"width": True, "height": 512}, "width"),
    ({"width": 512, "height": 1000}, "height"),
    ({"width": 512, "height": -512}, "height"),
    ({"steps": 0}, "steps"),
    ({"steps": 13}, "steps"),
    ({"steps": True}, "steps"),
    ({"steps": "4"}, "steps"),
    ({"steps": 4.5}, "steps"),
    ({"prompt": " " + "x" * 2000}, "prompt"),
    ({"model": "dev", "steps": 51}, "steps"),
    ({"model": "pro", "steps": 4}, "steps"),
    ({"n": 0}, "n"),
    ({"n": 5}, "n"),
    ({"n": True}, "n"),
    ({"n": "2"}, "n"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**32}, "seed"),
    ({"seed": "1"}, "seed"),
    ({"seed": True}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"negative_prompt": 5}, "negative_prompt"),
    ({"negative_prompt": LONG}, "negative_prompt"),
    ({"negative_prompt": "vertical\x0btab"}, "negative_prompt"),
    ({"guidance_scale": -0.5}, "guidance_scale"),
    ({"guidance_scale": 20.5}, "guidance_scale"),
    ({"guidance_scale": "7"}, "guidance_scale"),
    ({"guidance_scale": False}, "guidance_scale"),
    ({"guidance_scale": float("nan")}, "guidance_scale"),
    ({"guidance_scale": float("inf")}, "guidance_scale"),
    ({"output_format": "gif"}, "output_format"),
    ({"output_format": "webp"}, "output_format"),
    ({"output_format": 1}, "output_format"),
]


@pytest.mark.parametrize(("fields", "field"), INVALID, ids=[f"{f}-{i}" for i, (_, f) in enumerate(INVALID)])
def test_each_invalid_field_is_named(fields, field):
    body = {k: v for k, v in {"prompt": "a lighthouse at dusk", **fields}.items() if v is not MISSING}
    with pytest.raises(ValidationError) as info:
        parse_generation_params(body)
    err = info.value
    assert err.status == 400 and err.field == field
    assert err.body()["error"]["field"] == field and err.message


def test_n_can_be_refused_by_the_route():
    assert parse_generation_params({"prompt": "x", "n": 1}, allow_n=False).n == 1
    with pytest.raises(ValidationError) as info:
        parse_generation_params({"prompt": "x", "n": 2}, allow_n=False)
    assert info.value.field == "n"


@pytest.mark.parametrize("body", [None, [], "prompt", 3])
def test_the_body_must_be_an_object(body):
    with pytest.raises(ValidationError) as info:
        parse_generation_params(body)
    assert info.value.status == 400 and info.value.field is None


# -- GET /v1/models -------------------------------------------------------------------------------


def test_catalog_json():
    models = catalog_json()
    assert json.loads(json.dumps(models)) == models
    assert [m["id"] for m in models] == [SCHNELL_FREE, "black-forest-labs/FLUX.1-schnell", DEV, PRO]
    assert [m["default"] for m in models] == [True, False, False, False]
    free = models[0]
    assert free["steps"] == {"min": 1, "max": 12, "default": 4}
    assert free["n"] == {"min": 1, "max": 4, "default": 1}
    assert free["default_size"] == {"width": 768, "height": 768}
    assert free["presets"]["16:9"] == {"width": 1024, "height": 576}
    assert free["size"] == {"min": 256, "max": 1440, "multiple_of": 16}
    assert models[2]["steps"] == {"min": 1, "max": 50, "default": 28}
    assert models[3]["steps"] == {"min": 28, "max": 28, "default": 28}
    assert "flux-schnell-free" in free["aliases"]
