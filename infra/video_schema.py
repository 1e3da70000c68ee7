"""Generate the ``VideoRequest`` and ``VideoJobRequest`` schemas of the OpenAPI document from the video catalog:
``python -m infra.video_schema [--check]``.

``POST /v1/videos`` is validated by :func:`chalicelib.flux.video_catalog.parse_video_params`
against the ``video`` section of ``chalicelib/flux/models.json``. This module states the same
rules in JSON Schema (OpenAPI 3.1), so the document says exactly what the API accepts:

- ``properties``: each field's type and its bounds over every model (``model`` is the enum of
  every id and alias; ``width``/``height``/``seconds`` the smallest and largest any model
  takes; ``fps`` Together's documented 15-60; ``reference_image_ids`` the largest count);
- ``dependentRequired``: ``width`` and ``height`` together, ``last_image_id`` needs ``image_id``;
- ``allOf``: one ``if``/``then`` per model (the default model when ``model`` is absent): its
  sizes as ``WxH`` pairs, durations, frame rates (``fps: false`` for a model that picks its
  own), keyframes (``image_id`` / ``last_image_id`` false where not taken, ``image_id``
  required for image-to-video models), reference images, and its prompt limits (at most
  ``prompt.max`` characters as sent; at least ``prompt.min`` characters once trimmed, stated
  as a pattern with that many visible characters; a prompt or an ``image_id`` where the
  prompt is optional).

Run it after changing the video catalog or the video request's rules; commit
``chalicelib/openapi.json``. ``tests/integration/test_video_contract.py`` fails on a stale
document and checks, per model, that the document and ``parse_video_params`` agree.

Exit status: 0 written / up to date, 1 stale (``--check``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from chalicelib.flux.catalog import _BLANKS, FORBIDDEN_CONTROLS, MAX_NEGATIVE_PROMPT_CHARS, MAX_SEED, TEXT_PATTERN
from chalicelib.flux.video_catalog import DEFAULT_MODEL, VideoModelSpec, find_video_model, video_catalog

ROOT = Path(__file__).resolve().parent.parent
OPENAPI_PATH = ROOT / "chalicelib" / "openapi.json"
ULID_REF = {"$ref": "#/components/schemas/Ulid"}
#: A character that counts once a prompt is trimmed: neither a control character nor white space.
VISIBLE = rf"[^\x00-\x1f\x7f-\x9f{_BLANKS}]"
ANY_ALLOWED = rf"[^{FORBIDDEN_CONTROLS}]*"
#: What trimming removes and the text patterns allow: TAB, LF, CR and Unicode white space.
BLANK = rf"[\t\n\r{_BLANKS}]"


def prompt_pattern(min_chars: int) -> str:
    """A text pattern (no forbidden control characters) with at least ``min_chars`` (1 or
    more) visible characters: exactly the strings whose trimmed length is at least
    ``min_chars`` when ``min_chars`` is 1 or 2, as trimming keeps everything between the
    first and the last visible character."""
    if min_chars <= 2:
        return f"^{ANY_ALLOWED}" + f"{VISIBLE}{ANY_ALLOWED}" * max(1, min_chars) + "$"
    raise ValueError("prompt.min above 2 characters cannot be stated as a pattern here")


def _names(spec: VideoModelSpec) -> list[str]:
    return [spec.id, *spec.aliases]


def _model_rule(spec: VideoModelSpec, *, default: bool) -> dict[str, Any]:
    """The ``if``/``then`` of one model."""
    named: dict[str, Any] = {"required": ["model"], "properties": {"model": {"enum": _names(spec)}}}
    condition = {"anyOf": [named, {"not": {"required": ["model"]}}]} if default else named
    props: dict[str, Any] = {
        "seconds": {"enum": list(spec.seconds)},
        "fps": {"enum": list(spec.fps)} if spec.fps else False,
        "prompt": {"maxLength": spec.prompt_max, "pattern": prompt_pattern(spec.prompt_min)},
    }
    if spec.keyframes == "none":
        props["image_id"] = False
    if spec.keyframes != "first+last":
        props["last_image_id"] = False
    props["reference_image_ids"] = (
        {"maxItems": spec.max_reference_images} if spec.max_reference_images else {"maxItems": 0}
    )
    then: dict[str, Any] = {"properties": props, "allOf": [{"anyOf": _size_choices(spec)}]}
    needs = (("image_id", spec.image_required), ("prompt", spec.prompt_required))
    required = [name for name, needed in needs if needed]
    if required:
        then["required"] = required
    if not spec.prompt_required:  # a blank prompt counts as none: then the first keyframe is the request
        blank_or_long_enough = f"^(?:{BLANK}*|{prompt_pattern(spec.prompt_min)[1:-1]})$"
        props["prompt"] = {"maxLength": spec.prompt_max, "pattern": blank_or_long_enough}
        visible = {"required": ["prompt"], "properties": {"prompt": {"pattern": prompt_pattern(spec.prompt_min)}}}
        then["allOf"].append({"anyOf": [{"required": ["image_id"]}, visible]})
    return {"if": condition, "then": then}


def _size_choices(spec: VideoModelSpec) -> list[dict[str, Any]]:
    return [
        {"not": {"required": ["width"]}},
        *({"properties": {"width": {"const": w}, "height": {"const": h}}} for w, h in spec.sizes),
    ]


def _sizes_text(spec: VideoModelSpec) -> str:
    return ", ".join(f"{w}x{h}" for w, h in spec.sizes)


def video_request_schema() -> dict[str, Any]:
    """The ``VideoRequest`` component schema (JSON Schema 2020-12, as OpenAPI 3.1 reads it)."""
    cat = video_catalog()
    models = cat.models
    default = find_video_model(DEFAULT_MODEL)
    assert default is not None, "the default video model is in the catalog"
    widths = [w for m in models for w, _ in m.sizes]
    heights = [h for m in models for _, h in m.sizes]
    seconds = [s for m in models for s in m.seconds]
    optional_prompt = ", ".join(m.name for m in models if not m.prompt_required)
    image_only = ", ".join(m.name for m in models if m.image_required)
    no_keyframes = ", ".join(m.name for m in models if m.keyframes == "none")
    first_last = ", ".join(m.name for m in models if m.keyframes == "first+last")
    own_fps = ", ".join(m.name for m in models if not m.fps)
    with_refs = ", ".join(f"{m.name} {m.max_reference_images}" for m in models if m.max_reference_images)
    return {
        "type": "object",
        "additionalProperties": False,
        "description": (
            "A video request, validated against the model (GET /v1/videos/models, catalog checked "
            f"{cat.checked}): a size, duration, frame rate, keyframe or reference image the model does "
            "not take is a 400 naming the field. No field may be null: leave optional fields out. "
            "The per-model rules are in allOf (one if/then per model; the default model "
            f"{DEFAULT_MODEL} when model is absent). Generated from chalicelib/flux/models.json "
            "by python -m infra.video_schema."
        ),
        "properties": {
            "prompt": {
                "type": "string",
                "maxLength": max(m.prompt_max for m in models),
                "pattern": TEXT_PATTERN,
                "description": (
                    "No control characters but TAB, LF, CR; stored trimmed. Per model: at most its "
                    "prompt.max characters as sent, at least its prompt.min once trimmed (1 or 2). "
                    f"Required, except for {optional_prompt}, which take an image_id instead (a blank "
                    f"prompt then counts as none); image-to-video models ({image_only}) need an image_id."
                ),
            },
            "model": {
                "enum": [name for m in models for name in _names(m)],
                "description": f"A video model id or alias, exact spelling (default {DEFAULT_MODEL}).",
            },
            "width": {
                "type": "integer",
                "minimum": min(widths),
                "maximum": max(widths),
                "description": (
                    "Pixels, with height: one of the model's sizes (GET /v1/videos/models sizes; "
                    f"default: its first; the default model's: {_sizes_text(default)})."
                ),
            },
            "height": {
                "type": "integer",
                "minimum": min(heights),
                "maximum": max(heights),
                "description": "Pixels, with width; see width.",
            },
            "seconds": {
                "type": "integer",
                "minimum": min(seconds),
                "maximum": max(seconds),
                "description": "Clip length in seconds: one of the model's durations (default: its first).",
            },
            "fps": {
                "type": "integer",
                "minimum": cat.fps_min,
                "maximum": cat.fps_max,
                "description": (
                    "Frames per second: one of the model's rates (default: its first). Models that "
                    f"pick their own ({own_fps}) take none: 400 unsupported-parameter."
                ),
            },
            "seed": {"type": "integer", "minimum": 0, "maximum": MAX_SEED},
            "negative_prompt": {"type": "string", "maxLength": MAX_NEGATIVE_PROMPT_CHARS, "pattern": TEXT_PATTERN},
            "image_id": {
                **ULID_REF,
                "description": (
                    "The first keyframe: one of your image uploads or generated images (another "
                    "user's, or none: 404); it is also the poster. Not for models without keyframes "
                    f"({no_keyframes}): 400 unsupported-parameter."
                ),
            },
            "last_image_id": {
                **ULID_REF,
                "description": f"The last keyframe, with image_id; models with first+last keyframes: {first_last}.",
            },
            "reference_image_ids": {
                "type": "array",
                "maxItems": max(m.max_reference_images for m in models),
                "items": ULID_REF,
                "description": f"Style references (uploads or generated images); models that take them: {with_refs}.",
            },
            "collection": {"$ref": "#/components/schemas/CollectionName"},
        },
        "dependentRequired": {"width": ["height"], "height": ["width"], "last_image_id": ["image_id"]},
        "allOf": [_model_rule(m, default=m.id == default.id) for m in models],
    }


def _job_model_rule(spec: VideoModelSpec, *, default: bool) -> dict[str, Any]:
    """The ``if``/``then`` of one model in a video job: its durations, frame rates, sizes,
    prompt limits (``prompt`` and each of ``prompts``) and keyframes (``image_ids`` /
    ``collection_images`` give each item its first keyframe)."""
    named: dict[str, Any] = {"required": ["model"], "properties": {"model": {"enum": _names(spec)}}}
    condition = {"anyOf": [named, {"not": {"required": ["model"]}}]} if default else named
    text = {"maxLength": spec.prompt_max, "pattern": prompt_pattern(spec.prompt_min)}
    props: dict[str, Any] = {
        "seconds": {"enum": list(spec.seconds)},
        "fps": {"enum": list(spec.fps)} if spec.fps else False,
        "prompt": text,
        "prompts": {"items": text},
    }
    if spec.keyframes == "none":
        props["image_ids"] = False
        props["collection_images"] = False
    then: dict[str, Any] = {"properties": props, "allOf": [{"anyOf": _size_choices(spec)}]}
    if spec.image_required:
        then["allOf"].append({"anyOf": [{"required": ["image_ids"]}, {"required": ["collection_images"]}]})
    return {"if": condition, "then": then}


def video_job_request_schema(document: dict[str, Any]) -> dict[str, Any]:
    """The ``VideoJobRequest`` component schema: ``POST /v1/jobs`` with ``kind: "video"``
    (the shapes and field descriptions as they stand in ``document``; the per-model rules
    generated here, one if/then per model as in :func:`video_request_schema`)."""
    models = video_catalog().models
    default = find_video_model(DEFAULT_MODEL)
    assert default is not None, "the default video model is in the catalog"
    schema = dict(document["components"]["schemas"]["VideoJobRequest"])
    request = video_request_schema()["properties"]
    props = dict(schema["properties"])
    text = {"type": "string", "minLength": 1, "maxLength": max(m.prompt_max for m in models)}
    props["prompt"] = {**text, "pattern": prompt_pattern(1)}
    props["prompts"] = {**props["prompts"], "items": {**text, "pattern": prompt_pattern(1)}}
    for name in ("model", "width", "height", "seconds", "fps", "seed", "negative_prompt"):
        props[name] = request[name]
    schema["properties"] = props
    schema["allOf"] = [_job_model_rule(m, default=m.id == default.id) for m in models]
    return schema


def render(document: Any) -> str:
    """The committed form of ``chalicelib/openapi.json``: 1-space indent, UTF-8, trailing newline."""
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def updated_document(text: str) -> str:
    """``text`` (the OpenAPI document) with its ``VideoRequest`` schema regenerated."""
    document = json.loads(text)
    document["components"]["schemas"]["VideoRequest"] = video_request_schema()
    document["components"]["schemas"]["VideoJobRequest"] = video_job_request_schema(document)
    return render(document)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m infra.video_schema", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if chalicelib/openapi.json is out of date")
    args = parser.parse_args(argv)
    current = OPENAPI_PATH.read_text(encoding="utf-8")
    wanted = updated_document(current)
    if current == wanted:
        return 0
    if args.check:
        print("out of date: chalicelib/openapi.json (run: python -m infra.video_schema)", file=sys.stderr)
        return 1
    OPENAPI_PATH.write_text(wanted, encoding="utf-8")
    print("wrote chalicelib/openapi.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
