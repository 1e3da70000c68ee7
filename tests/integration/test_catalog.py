"""The model catalog (models.json) and request validation against it (pure functions, no stack needed)."""

from __future__ import annotations

import csv
import json
from datetime import date
from pathlib import Path

import pytest

from chalicelib.errors import ValidationError
from chalicelib.flux.catalog import (
    CATALOG_PATH,
    GENERATION_FIELDS,
    IMAGE_PARAMETERS,
    MAX_SEED,
    TEXT_PARAMETERS,
    GenerationParams,
    ModelRetiredError,
    catalog,
    catalog_json,
    default_model,
    get_model,
    image_cost,
    load_catalog,
    parse_generation_params,
)
from chalicelib.http import error_status
from chalicelib.settings import get_settings

PARTI = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "parti_prompts.tsv"
SCHNELL = "black-forest-labs/FLUX.1-schnell"
SCHNELL_FREE = "black-forest-labs/FLUX.1-schnell-Free"
PRO_11 = "black-forest-labs/FLUX.1.1-pro"
F2_PRO = "black-forest-labs/FLUX.2-pro"
F2_DEV = "black-forest-labs/FLUX.2-dev"
F2_FLEX = "black-forest-labs/FLUX.2-flex"
F2_MAX = "black-forest-labs/FLUX.2-max"
KONTEXT_PRO = "black-forest-labs/FLUX.1-kontext-pro"
KONTEXT_MAX = "black-forest-labs/FLUX.1-kontext-max"
FLASH = "google/flash-image-2.5"
GEMINI = "google/gemini-3-pro-image"
CURRENT = [SCHNELL, PRO_11, F2_PRO, F2_DEV, F2_FLEX, F2_MAX, KONTEXT_PRO, KONTEXT_MAX, FLASH, GEMINI]

#: The per-model parameter table of Together's docs (/work/shared/docs/together-images-2026.md).
TAKES = {
    "negative_prompt": {SCHNELL},
    "guidance": {F2_DEV, F2_FLEX},
    "prompt_upsampling": {F2_PRO, F2_DEV, F2_FLEX, F2_MAX},
    "output_format": {F2_PRO, F2_DEV, F2_FLEX, F2_MAX},
    "aspect_ratio": {SCHNELL, KONTEXT_PRO, KONTEXT_MAX},
    "steps": {SCHNELL, KONTEXT_PRO, KONTEXT_MAX, F2_DEV, F2_FLEX},
    "image_url": {KONTEXT_PRO, KONTEXT_MAX, F2_PRO, F2_FLEX},
    "reference_images": {F2_PRO, F2_DEV, F2_FLEX, FLASH, GEMINI},
    "image_loras": {F2_DEV},
}
#: One valid value per text parameter, for the model that takes it.
VALUES = {
    "negative_prompt": "blurry, low quality",
    "guidance": 4.5,
    "prompt_upsampling": True,
    "output_format": "png",
    "aspect_ratio": "16:9",
    "steps": 8,
}


@pytest.fixture(autouse=True)
def _default_settings(monkeypatch):
    monkeypatch.delenv("DEFAULT_MODEL", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def parse(**body) -> GenerationParams:
    return parse_generation_params({"prompt": "a lighthouse at dusk", **body})


def error_of(**body) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse(**body)
    assert error_status(info.value.code) == 400
    return info.value


# -- the table ------------------------------------------------------------------------------------


def test_the_catalog_is_dated_sourced_data():
    raw = json.loads(CATALOG_PATH.read_text())
    assert date.fromisoformat(raw["checked"]) >= date(2026, 11, 30)  # re-checked, never older
    cat = catalog()
    assert [m.id for m in cat.current] == CURRENT
    for spec in cat.models:
        assert spec.sources and set(spec.sources) <= set(cat.sources), spec.id
    for spec in cat.current:
        assert spec.kinds and spec.price_per_mp > 0
        assert 256 == spec.min_size < spec.max_size <= 1920


def test_the_catalog_states_kinds_image_inputs_and_default_steps():
    kinds = {m.id: set(m.kinds) for m in catalog().current}
    assert kinds[KONTEXT_PRO] == kinds[KONTEXT_MAX] == {"edit"}
    assert {"edit", "multi-reference"} <= kinds[F2_PRO] and {"edit", "multi-reference"} <= kinds[F2_FLEX]
    assert "multi-reference" in kinds[F2_DEV] and "multi-reference" in kinds[FLASH]
    assert kinds[SCHNELL] == {"text-to-image"}
    for name, models in TAKES.items():
        assert {m.id for m in catalog().current if m.takes(name)} == models, name
    assert get_model(F2_DEV).max_loras == 2
    assert get_model(SCHNELL).steps.default == 4
    assert get_model(KONTEXT_PRO).steps.default == get_model(KONTEXT_MAX).steps.default == 28
    assert get_model(PRO_11).steps is None


@pytest.mark.parametrize(
    "broken",
    [
        {"parameters": ["width", "height", "seeds"]},
        {"kinds": ["video"]},
        {"steps": {"min": 1, "max": 12, "default": 40}},
        {"aliases": ["flux-pro"]},
    ],
)
def test_a_broken_catalog_does_not_load(tmp_path, broken):
    raw = json.loads(CATALOG_PATH.read_text())
    raw["models"][0].update(broken)
    path = tmp_path / "models.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError):
        load_catalog(path)


def test_a_retired_model_must_name_a_current_replacement(tmp_path):
    raw = json.loads(CATALOG_PATH.read_text())
    free = next(m for m in raw["models"] if m["id"] == SCHNELL_FREE)
    free["retired"]["replacement"] = "black-forest-labs/FLUX.1-dev"  # itself retired
    path = tmp_path / "models.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError):
        load_catalog(path)


# -- defaults and the default model ---------------------------------------------------------------


def test_defaults():
    p = parse()
    assert p.model == default_model().id == SCHNELL
    assert (p.width, p.height, p.steps, p.n, p.aspect_ratio) == (1024, 1024, 4, 1, None)
    assert p.negative_prompt is p.guidance is p.prompt_upsampling is p.output_format is None
    assert 0 <= p.seed <= MAX_SEED


def test_default_model_is_configurable(monkeypatch):
    monkeypatch.setenv("DEFAULT_MODEL", F2_PRO)
    get_settings.cache_clear()
    assert parse().model == F2_PRO
    assert catalog_json()["default"] == F2_PRO


@pytest.mark.parametrize("configured", [SCHNELL_FREE, "no/such-model"])
def test_a_stale_default_model_falls_back_to_the_catalog_default(monkeypatch, configured):
    monkeypatch.setenv("DEFAULT_MODEL", configured)
    get_settings.cache_clear()
    assert parse().model == SCHNELL


def test_a_seed_is_drawn_when_absent_and_kept_when_given():
    assert len({parse().seed for _ in range(20)}) > 1
    assert parse(seed=0).seed == 0 and parse(seed=2**32 - 1).seed == 2**32 - 1
    assert parse(seed=None).seed >= 0  # null counts as absent


@pytest.mark.parametrize(
    ("model", "steps"),
    [(SCHNELL, 4), (KONTEXT_PRO, 28), (KONTEXT_MAX, 28), (PRO_11, None), (F2_DEV, None), (FLASH, None)],
)
def test_model_default_steps(model, steps):
    p = parse(model=model)
    assert (p.model, p.steps, (p.width, p.height)) == (model, steps, (1024, 1024))


@pytest.mark.parametrize(
    ("alias", "model"),
    [("schnell", SCHNELL), ("flux-2-dev", F2_DEV), ("nano-banana", FLASH), ("flux2-pro", F2_PRO)],
)
def test_aliases_resolve_to_the_model_id(alias, model):
    assert parse(model=alias).model == model
    assert get_model(alias).id == model


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # the document lists model, aspect_ratio and output_format as enums: exact spelling
        ({"model": "FLUX-2-DEV"}, "model"),
        ({"model": " flux-2-dev"}, "model"),
        ({"model": "Black-Forest-Labs/flux.2-pro"}, "model"),
        ({"model": F2_PRO, "output_format": "PNG"}, "output_format"),
        ({"aspect_ratio": "1:1 "}, "aspect_ratio"),
    ],
)
def test_enums_take_the_documented_spelling_only(body, field):
    with pytest.raises(ValidationError) as caught:
        parse(**body)
    assert caught.value.field == field


# -- per-model parameters -------------------------------------------------------------------------


@pytest.mark.parametrize("model", CURRENT)
@pytest.mark.parametrize("name", sorted(VALUES))
def test_each_text_parameter_is_taken_exactly_by_its_models(model, name):
    body = {"model": model, name: VALUES[name]}
    if model in TAKES[name]:
        p = parse(**body)
        assert getattr(p, name) == VALUES[name]
        assert p.upstream_fields()[name] == VALUES[name]
    else:
        err = error_of(**body)
        assert (err.code, err.field) == ("unsupported-parameter", name)
        assert model in err.message and name in err.message


def test_legacy_guidance_scale_is_refused_with_a_pointer_to_guidance():
    err = error_of(model=F2_DEV, guidance_scale=3.5)
    assert (err.code, err.field) == ("unsupported-parameter", "guidance_scale")
    assert "guidance" in err.message.replace("guidance_scale", "")


def test_image_inputs_are_not_request_fields_yet():
    assert not set(IMAGE_PARAMETERS) & GENERATION_FIELDS
    assert set(TEXT_PARAMETERS) <= GENERATION_FIELDS


def test_aspect_ratio_is_sent_upstream_instead_of_a_size():
    p = parse(model=KONTEXT_PRO, aspect_ratio="9:16")
    assert (p.width, p.height) == (768, 1344)  # the ratio's standard size: nominal
    fields = p.upstream_fields()
    assert fields["aspect_ratio"] == "9:16" and "width" not in fields and "height" not in fields
    assert fields["steps"] == 28


def test_a_size_is_sent_when_no_aspect_ratio():
    fields = parse(model=F2_PRO, width=1344, height=768, output_format="png").upstream_fields()
    assert fields == {"width": 1344, "height": 768, "output_format": "png"}


def test_to_body_round_trips():
    for body in (
        {"model": "schnell", "aspect_ratio": "16:9", "seed": 99, "negative_prompt": "text", "n": 2},
        {"model": F2_FLEX, "width": 832, "height": 1248, "guidance": 3.5, "steps": 30, "prompt_upsampling": False},
    ):
        p = parse(**body)
        out = p.to_body()
        assert set(out) <= GENERATION_FIELDS
        assert parse_generation_params(json.loads(json.dumps(out))) == p


def test_prompt_is_trimmed_and_keeps_newlines_tabs_and_unicode():
    p = parse_generation_params({"prompt": "  un café\tà Rio — 🌅\r\nsecond line  "})
    assert p.prompt == "un café\tà Rio — 🌅\nsecond line"


def test_every_parti_prompt_is_accepted():
    with PARTI.open(encoding="utf-8", newline="") as fh:
        prompts = [row["Prompt"] for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]
    assert len(prompts) > 1000
    for prompt in prompts:
        assert parse_generation_params({"prompt": prompt}).prompt == prompt.strip()


def test_seed_for_wraps_at_2_32():
    p = parse(seed=2**32 - 1, n=2)
    assert [p.seed_for(i) for i in range(2)] == [2**32 - 1, 0]


# -- retired and unknown models -------------------------------------------------------------------


def test_integers_with_a_zero_fraction_are_integers():
    # JSON Schema 2020-12: an "integer" is any number with a zero fractional part
    p = parse(width=512.0, height=768, steps=4.0, n=2.0, seed=7.0)
    assert (p.width, p.height, p.steps, p.n, p.seed) == (512, 768, 4, 2, 7)
    assert all(isinstance(v, int) for v in (p.width, p.steps, p.n, p.seed))


def test_guidance_is_kept_to_six_decimal_places():
    assert parse(model=F2_DEV, guidance=2.225073858507203e-309).guidance == 0.0
    assert parse(model=F2_DEV, guidance=3.1234567).guidance == 3.123457


@pytest.mark.parametrize(
    ("model", "replacement"),
    [
        (SCHNELL_FREE, SCHNELL),
        ("flux-schnell-free", SCHNELL),
        ("black-forest-labs/FLUX.1-dev", F2_DEV),
        ("black-forest-labs/FLUX.1-kontext-dev", KONTEXT_PRO),
    ],
)
def test_a_retired_model_is_refused_naming_the_replacement(model, replacement):
    with pytest.raises(ModelRetiredError) as info:
        parse(model=model)
    err = info.value
    assert (error_status(err.code), err.code, err.field, err.replacement) == (
        400,
        "model-retired",
        "model",
        replacement,
    )
    assert replacement in err.message


# -- errors name their field ----------------------------------------------------------------------

LONG = "x" * 2001
MISSING = object()
INVALID = [
    ({"prompt": MISSING}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": 42}, "prompt"),
    ({"prompt": LONG}, "prompt"),
    ({"prompt": "bell\x07"}, "prompt"),
    ({"model": "stabilityai/stable-diffusion-xl"}, "model"),
    ({"model": 3}, "model"),
    ({"aspect_ratio": "square"}, "aspect_ratio"),
    ({"aspect_ratio": "2:3"}, "aspect_ratio"),
    ({"aspect_ratio": 1}, "aspect_ratio"),
    ({"aspect_ratio": "1:1", "width": 512, "height": 512}, "aspect_ratio"),
    ({"width": 512}, "height"),
    ({"height": 512}, "width"),
    ({"width": 240, "height": 512}, "width"),
    ({"width": 1936, "height": 512}, "width"),
    ({"model": PRO_11, "width": 1456, "height": 512}, "width"),
    ({"width": 1000, "height": 512}, "width"),
    ({"width": "512", "height": 512}, "width"),
    ({"width": 512.5, "height": 512}, "width"),
    ({"width": True, "height": 512}, "width"),
    ({"steps": 0}, "steps"),
    ({"steps": 13}, "steps"),
    ({"steps": True}, "steps"),
    ({"steps": "4"}, "steps"),
    ({"steps": 4.5}, "steps"),
    ({"prompt": " " + "x" * 2000}, "prompt"),
    ({"model": KONTEXT_PRO, "steps": 51}, "steps"),
    ({"model": PRO_11, "steps": 4}, "steps"),
    ({"n": 0}, "n"),
    ({"n": 5}, "n"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**32}, "seed"),
    ({"negative_prompt": 5}, "negative_prompt"),
    ({"negative_prompt": LONG}, "negative_prompt"),
    ({"model": F2_DEV, "guidance": -0.5}, "guidance"),
    ({"model": F2_DEV, "guidance": "7"}, "guidance"),
    ({"model": F2_DEV, "guidance": float("nan")}, "guidance"),
    ({"model": F2_PRO, "prompt_upsampling": "yes"}, "prompt_upsampling"),
    ({"model": F2_PRO, "output_format": "gif"}, "output_format"),
    ({"model": F2_PRO, "output_format": 1}, "output_format"),
]


@pytest.mark.parametrize(("fields", "field"), INVALID, ids=[f"{f}-{i}" for i, (_, f) in enumerate(INVALID)])
def test_each_invalid_field_is_named(fields, field):
    body = {k: v for k, v in {"prompt": "a lighthouse at dusk", **fields}.items() if v is not MISSING}
    with pytest.raises(ValidationError) as info:
        parse_generation_params(body)
    err = info.value
    assert error_status(err.code) == 400 and err.field == field
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
    assert error_status(info.value.code) == 400 and info.value.field is None


# -- price ----------------------------------------------------------------------------------------


def test_image_cost_follows_togethers_formula():
    schnell = get_model(SCHNELL).price_per_mp
    assert image_cost(SCHNELL, 1000, 1000, 4) == pytest.approx(schnell)
    assert image_cost(SCHNELL, 1000, 1000, 8) == pytest.approx(2 * schnell)  # steps / default steps
    assert image_cost(SCHNELL, 500, 1000, 4) == pytest.approx(schnell / 2)  # megapixels
    kontext = get_model(KONTEXT_PRO).price_per_mp
    assert image_cost(KONTEXT_PRO, 1024, 1024, 14) == pytest.approx(1.048576 * kontext / 2, abs=1e-6)
    assert image_cost(F2_PRO, 1024, 1024, None) == pytest.approx(1.048576 * get_model(F2_PRO).price_per_mp, abs=1e-6)
    assert image_cost(SCHNELL_FREE, 1024, 1024, 4) == 0.0


# -- GET /v1/models -------------------------------------------------------------------------------


def test_catalog_json():
    body = catalog_json(unavailable={FLASH})
    assert json.loads(json.dumps(body)) == body
    models = body["models"]
    assert [m["id"] for m in models] == CURRENT
    assert body["default"] == SCHNELL and [m["default"] for m in models] == [True] + [False] * 9
    assert body["checked"] == catalog().checked
    assert {r["id"]: r["replacement"] for r in body["retired"]}[SCHNELL_FREE] == SCHNELL
    by_id = {m["id"]: m for m in models}
    assert by_id[FLASH]["available"] is False and by_id[SCHNELL]["available"] is True
    schnell = by_id[SCHNELL]
    assert schnell["parameters"] == ["width", "height", "aspect_ratio", "steps", "negative_prompt"]
    assert schnell["steps"] == {"min": 1, "max": 12, "default": 4}
    assert schnell["aspect_ratios"] == ["1:1", "16:9", "9:16", "4:3", "3:2"]
    assert schnell["kinds"] == ["text-to-image"]
    assert schnell["price_per_mp"] > 0
    assert by_id[F2_DEV]["image_inputs"] == {"image_url": False, "reference_images": 6, "image_loras": 2}
    assert by_id[F2_PRO]["steps"] is None and by_id[F2_PRO]["aspect_ratios"] == []
    assert all(s["width"] <= 1440 and s["height"] <= 1440 for s in by_id[PRO_11]["sizes"])


# -- an aspect_ratio request: the upstream picks the pixels ---------------------------------------


def _jpeg(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 160)).save(out, format="JPEG")
    return out.getvalue()


@pytest.mark.parametrize(("size", "ok"), [((1344, 768), True), ((1360, 768), True), ((1024, 1024), False)])
def test_an_aspect_ratio_answer_is_checked_for_its_shape_not_its_pixels(size, ok):
    from chalicelib.flux.client import verify_image
    from chalicelib.flux.exceptions import CorruptImageError

    p = parse(aspect_ratio="16:9")
    data = _jpeg(*size)
    if ok:
        assert verify_image(data, p.width, p.height, ratio_only=True) == ("image/jpeg", "jpg")
    else:
        with pytest.raises(CorruptImageError):
            verify_image(data, p.width, p.height, ratio_only=True)
    with pytest.raises(CorruptImageError):  # a width/height request still needs the exact size
        verify_image(_jpeg(1360, 768), 1344, 768)
