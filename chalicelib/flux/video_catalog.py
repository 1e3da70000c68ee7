"""The video model catalog and validation of a ``POST /v1/videos`` body against it.

One concern: turn a client's JSON body into a validated, immutable :class:`VideoParams`,
using the per-model rules of the ``video`` section of ``chalicelib/flux/models.json``
(the same data file as the image models, checked on the date it states, with its sources).

Each video model (kind ``"video"``) states its sizes (the exact ``WxH`` pairs it renders),
its durations (``seconds``, the first is the default), its frame rates (``fps``, the first
is the default; an empty list: the model picks its own and takes no ``fps``), its keyframes
(``none``, ``first`` or ``first+last``), how many reference images it takes, whether it
makes audio, its prompt length limits and whether a prompt is required, whether it needs a
first keyframe (image-to-video only), and its price per clip.

Rules and their sources (togethercomputer/skills, ``skills/together-video/references/
models.md`` and ``api-reference.md``, 2026):

* ``width``/``height``: one of the model's sizes, both or neither (default: the first).
* ``seconds``: one of the model's durations (Together takes it as a string; we send it so).
* ``fps``: one of the model's rates, within Together's documented 15-60.
* ``image_id`` (the first keyframe) needs a model with keyframes; ``last_image_id`` needs
  ``first+last`` and an ``image_id``; ``reference_image_ids`` needs a model that takes
  reference images, at most its limit (Vidu 2.0).
* prompt: the model's ``min``..``max`` characters; optional for Kling 2.1 Standard/Pro and
  Kling 1.6 Pro.
* ``seed``: an unsigned 32-bit integer; ``negative_prompt`` at most 2000 characters.
* Estimated cost (USD): ``price_per_video * seconds / default seconds`` (:func:`video_cost`);
  Together's reported ``outputs.cost`` replaces it once the video is done.

A rule broken is a :class:`~chalicelib.errors.ValidationError` (400) naming the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from chalicelib.errors import ValidationError
from chalicelib.flux.catalog import CATALOG_PATH, MAX_NEGATIVE_PROMPT_CHARS, MAX_SEED, _text, as_integer

KEYFRAMES = ("none", "first", "first+last")
#: An image or upload id: a ULID (26 characters of Crockford's base 32, upper case), as the
#: document's ``Ulid`` schema says; anything else is a 400, as for images.
ULID_RE = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
FIELDS = frozenset(
    {
        "prompt",
        "model",
        "width",
        "height",
        "seconds",
        "fps",
        "seed",
        "negative_prompt",
        "image_id",
        "last_image_id",
        "reference_image_ids",
        "collection",
    }
)
DEFAULT_MODEL = "pixverse/pixverse-v5"  # cheap, first+last keyframes, the smallest sizes


@dataclass(frozen=True)
class VideoModelSpec:
    """One video model (an entry of ``models.json`` → ``video.models``).

    Attributes:
        id: Together's API string, sent upstream as ``model``.
        name, aliases, description: display name, short names accepted instead of ``id``, one line.
        sizes: ``(width, height)`` pairs in pixels; the first is the default.
        seconds: clip durations in seconds; the first is the default.
        fps: frame rates (frames per second); the first is the default; empty: the model's own.
        keyframes: ``"none"``, ``"first"`` or ``"first+last"``.
        max_reference_images: how many reference images it takes (0: none).
        audio: whether the clip has a generated sound track.
        prompt_min, prompt_max: prompt length in characters; ``prompt_required``: False when optional.
        image_required: True for image-to-video only models (a first keyframe is needed).
        price_per_video: estimated USD per clip at the default duration.
        sources: keys into the section's ``sources``.
    """

    id: str
    name: str
    aliases: tuple[str, ...]
    description: str
    sizes: tuple[tuple[int, int], ...]
    seconds: tuple[int, ...]
    fps: tuple[int, ...]
    keyframes: str
    max_reference_images: int
    audio: bool
    prompt_min: int
    prompt_max: int
    prompt_required: bool
    image_required: bool
    price_per_video: float
    sources: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The public shape of the model (``GET /v1/videos/models``)."""
        return {
            "id": self.id,
            "name": self.name,
            "aliases": list(self.aliases),
            "kind": "video",
            "description": self.description,
            "sizes": [{"width": w, "height": h} for w, h in self.sizes],
            "seconds": list(self.seconds),
            "fps": list(self.fps),
            "keyframes": self.keyframes,
            "reference_images": self.max_reference_images,
            "audio": self.audio,
            "prompt": {"min": self.prompt_min, "max": self.prompt_max, "required": self.prompt_required},
            "image_required": self.image_required,
            "price_per_video": self.price_per_video,
        }


@dataclass(frozen=True)
class VideoCatalog:
    """The ``video`` section: ``checked`` date, ``sources``, the fps range and the models."""

    checked: str
    sources: dict[str, str]
    fps_min: int
    fps_max: int
    models: tuple[VideoModelSpec, ...]


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def _spec(entry: Mapping[str, Any]) -> VideoModelSpec:
    prompt = entry["prompt"]
    return VideoModelSpec(
        id=entry["id"],
        name=entry["name"],
        aliases=tuple(entry.get("aliases", ())),
        description=entry.get("description", ""),
        sizes=tuple(_size(s) for s in entry["sizes"]),
        seconds=tuple(int(s) for s in entry["seconds"]),
        fps=tuple(int(f) for f in entry["fps"]),
        keyframes=entry["keyframes"],
        max_reference_images=int(entry.get("reference_images", 0)),
        audio=bool(entry.get("audio")),
        prompt_min=int(prompt["min"]),
        prompt_max=int(prompt["max"]),
        prompt_required=bool(prompt["required"]),
        image_required=bool(entry.get("image_required")),
        price_per_video=float(entry["price_per_video"]),
        sources=tuple(entry.get("sources", ())),
    )


def load_video_catalog(path: Path = CATALOG_PATH) -> VideoCatalog:
    """Parse and check the ``video`` section of a catalog file.

    Raises:
        ValueError: a duplicate name, an unknown keyframe mode or source, an entry not of kind
            ``video``, an empty size or duration list, or an fps outside the section's range.
    """
    raw = json.loads(path.read_text(encoding="utf-8"))["video"]
    fps_min, fps_max = int(raw["fps_range"]["min"]), int(raw["fps_range"]["max"])
    models = tuple(_spec(e) for e in raw["models"])
    seen: set[str] = set()
    for entry, spec in zip(raw["models"], models, strict=True):
        if entry.get("kind") != "video" or spec.keyframes not in KEYFRAMES:
            raise ValueError(f"video catalog: {spec.id} has an unknown kind or keyframe mode")
        if not spec.sizes or not spec.seconds or any(not fps_min <= f <= fps_max for f in spec.fps):
            raise ValueError(f"video catalog: {spec.id} needs sizes, seconds and fps within range")
        if not set(spec.sources) <= set(raw["sources"]):
            raise ValueError(f"video catalog: {spec.id} cites an unknown source")
        if spec.image_required and spec.keyframes == "none":
            raise ValueError(f"video catalog: {spec.id} requires an image but takes no keyframe")
        for name in (spec.id, *spec.aliases):
            if name.lower() in seen:
                raise ValueError(f"video catalog: duplicate model name {name}")
            seen.add(name.lower())
    return VideoCatalog(
        checked=raw["checked"], sources=dict(raw["sources"]), fps_min=fps_min, fps_max=fps_max, models=models
    )


@lru_cache(maxsize=1)
def video_catalog() -> VideoCatalog:
    """The shipped video catalog, loaded once per process."""
    return load_video_catalog()


def find_video_model(name: str) -> VideoModelSpec | None:
    """The model whose id or alias is ``name`` (exact spelling), or None."""
    for spec in video_catalog().models:
        if name == spec.id or name in spec.aliases:
            return spec
    return None


def video_cost(spec: VideoModelSpec, seconds: int) -> float:
    """Estimated USD for one clip of ``seconds`` seconds: the price scales with the duration."""
    return round(spec.price_per_video * seconds / spec.seconds[0], 6)


def video_estimate(model: str, seconds: int, videos: int) -> dict[str, Any]:
    """The estimate of ``videos`` clips of ``seconds`` seconds of ``model`` (an id or alias):
    ``{"videos", "seconds", "usd", "model", "price_per_video", "priced_at"}`` (USD; the
    ``POST /v1/estimates`` answer for a video job, quoted in ``budget-exceeded``).

    Raises:
        ValueError: ``model`` is not in the video catalog.
    """
    spec = find_video_model(model)
    if spec is None:
        raise ValueError(f"unknown video model {model}")
    each = video_cost(spec, seconds)
    return {
        "videos": videos,
        "seconds": seconds,
        "usd": round(each * videos, 6),
        "model": spec.id,
        "price_per_video": each,
        "priced_at": video_catalog().checked,
    }


def catalog_json() -> dict[str, Any]:
    """``{"checked", "models": [...]}``: the body of ``GET /v1/videos/models``."""
    cat = video_catalog()
    return {"checked": cat.checked, "models": [m.to_json() for m in cat.models]}


@dataclass(frozen=True)
class VideoParams:
    """A validated ``POST /v1/videos`` request.

    Attributes:
        model: Together's model id. prompt: the text (may be None for models where it is optional).
        width, height: pixels. seconds: clip length in seconds. fps: frames per second (None: the model's own).
        seed: 0..2**32-1 or None (upstream picks). negative_prompt: or None.
        image_id, last_image_id: the caller's upload or image ids for the first/last keyframe, or None.
        reference_image_ids: upload or image ids of style references (possibly empty).
        collection: the collection to file the video under, or None.
        estimated_cost_usd: :func:`video_cost` of the request.
    """

    model: str
    prompt: str | None
    width: int
    height: int
    seconds: int
    fps: int | None
    seed: int | None
    negative_prompt: str | None
    image_id: str | None
    last_image_id: str | None
    reference_image_ids: tuple[str, ...]
    collection: str | None
    estimated_cost_usd: float

    def to_record(self) -> dict[str, Any]:
        """A JSON-safe dict (stored with the video; :meth:`from_record` reads it back)."""
        data = asdict(self)
        data["reference_image_ids"] = list(self.reference_image_ids)
        return data

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> VideoParams:
        """The inverse of :meth:`to_record`."""
        values = dict(data)
        values["reference_image_ids"] = tuple(values.get("reference_image_ids") or ())
        return cls(**values)


def _fail(field: str, message: str) -> ValidationError:
    return ValidationError(message, field=field)


def _choice(body: Mapping[str, Any], field: str, allowed: tuple[int, ...], model: str) -> int | None:
    if body.get(field) is None:
        return None
    value = as_integer(body[field])
    if value is None:
        raise _fail(field, f"{field} must be an integer")
    if value not in allowed:
        listed = ", ".join(str(a) for a in allowed)
        raise _fail(field, f"{field} must be one of {listed} for {model} (got {value})")
    return value


def _id(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not ULID_RE.fullmatch(value):
        raise _fail(field, f"{field} must be an image or upload id (a ULID)")
    return value


def parse_video_params(body: Any) -> VideoParams:
    """Validate a ``POST /v1/videos`` body against the chosen model's capabilities.

    Args:
        body: the decoded JSON body (must be an object; unknown fields are refused).

    Returns:
        The validated :class:`VideoParams` (defaults filled in from the model).

    Raises:
        ValidationError: 400, naming the field: an unknown field, an unknown model, a size,
            duration or fps the model does not render, a keyframe or reference image the model
            does not take, a prompt outside the model's limits, a bad seed.
    """
    if not isinstance(body, dict):
        raise ValidationError("body must be a JSON object")
    for name in sorted(body):
        if name not in FIELDS:
            raise ValidationError(f"unknown field {name}", field=name, code="unknown-field")
        if body[name] is None:  # the document allows no nulls: leave a field out instead
            raise _fail(name, f"{name} must not be null")
    model_name = body.get("model", DEFAULT_MODEL)
    if not isinstance(model_name, str):
        raise _fail("model", "model must be a string")
    spec = find_video_model(model_name)
    if spec is None:
        raise ValidationError(f"unknown video model {model_name}", field="model", code="model-unavailable")
    prompt = _text(body, "prompt", spec.prompt_max, required=spec.prompt_required)
    if prompt is not None and len(prompt) < spec.prompt_min:
        raise _fail("prompt", f"prompt must be at least {spec.prompt_min} characters for {spec.id}")
    negative = _text(body, "negative_prompt", MAX_NEGATIVE_PROMPT_CHARS, required=False)
    width, height = body.get("width"), body.get("height")
    if (width is None) != (height is None):
        raise _fail("height" if height is None else "width", "width and height go together")
    size = spec.sizes[0]
    if width is not None:
        size = (as_integer(width) or -1, as_integer(height) or -1)
        if size not in spec.sizes:
            listed = ", ".join(f"{w}x{h}" for w, h in spec.sizes)
            raise _fail("width", f"{width}x{height} is not a size {spec.id} renders ({listed})")
    seconds = _choice(body, "seconds", spec.seconds, spec.id) or spec.seconds[0]
    if body.get("fps") is not None and not spec.fps:
        raise ValidationError(f"{spec.id} picks its own frame rate", field="fps", code="unsupported-parameter")
    fps = _choice(body, "fps", spec.fps, spec.id) or (spec.fps[0] if spec.fps else None)
    seed = body.get("seed")
    if seed is not None:
        seed = as_integer(seed)
        if seed is None or not 0 <= seed <= MAX_SEED:
            raise _fail("seed", f"seed must be an integer between 0 and {MAX_SEED}")
    image_id, last_image_id = _id(body, "image_id"), _id(body, "last_image_id")
    if image_id is not None and spec.keyframes == "none":
        raise ValidationError(f"{spec.id} takes no keyframe image", field="image_id", code="unsupported-parameter")
    if spec.image_required and image_id is None:
        raise _fail("image_id", f"{spec.id} makes videos from an image: image_id is required")
    if last_image_id is not None:
        if spec.keyframes != "first+last":
            raise ValidationError(
                f"{spec.id} takes no last keyframe", field="last_image_id", code="unsupported-parameter"
            )
        if image_id is None:
            raise _fail("last_image_id", "last_image_id needs an image_id (the first keyframe)")
    refs = body.get("reference_image_ids")
    if refs is None:
        refs = []
    if not isinstance(refs, list):
        raise _fail("reference_image_ids", "reference_image_ids must be an array of ids")
    if refs and spec.max_reference_images == 0:
        raise ValidationError(
            f"{spec.id} takes no reference images", field="reference_image_ids", code="unsupported-parameter"
        )
    if len(refs) > spec.max_reference_images:
        raise _fail("reference_image_ids", f"{spec.id} takes at most {spec.max_reference_images} reference images")
    ref_ids = tuple(_id({"reference_image_ids": r}, "reference_image_ids") or "" for r in refs)
    if prompt is None and image_id is None:
        raise _fail("prompt", "a prompt or an image_id is required")
    return VideoParams(
        model=spec.id,
        prompt=prompt,
        width=size[0],
        height=size[1],
        seconds=seconds,
        fps=fps,
        seed=seed,
        negative_prompt=negative,
        image_id=image_id,
        last_image_id=last_image_id,
        reference_image_ids=ref_ids,
        collection=None,  # checked and set by the service (collection names are a service rule)
        estimated_cost_usd=video_cost(spec, seconds),
    )
