"""The FLUX model catalog and validation of a request's generation fields.

One concern: turn a client's JSON body into a validated, immutable
:class:`GenerationParams`, using per-model rules from :data:`MODELS`.

Sources for the rules:

* Model ids, ``steps``, ``seed``, ``n``, ``negative_prompt``, ``guidance_scale``,
  ``output_format`` ("jpeg" | "png", default "jpeg"): Together's API reference,
  https://docs.together.ai/reference/post-images-generations
* ``n`` is 1-4 and FLUX.1 [schnell] "looks good at 4" steps, guidance 8-10 is
  "more faithful": https://docs.together.ai/docs/inference/images/parameters and
  https://docs.together.ai/docs/images-overview ("Fastest; default 4 steps").
* FLUX.1 [dev] 28 default steps (1-50): Black Forest Labs' reference inference
  settings for [dev]; Together documents ``steps`` as 1-50 for image models.
* Width/height multiples of 16 in 256..1440 pixels (our product rule). Together's
  parameters page asks for multiples of 8; FLUX works on 16-pixel latent patches
  (8x VAE downsampling, 2x2 patches), so 16 never gets resized. 256..1440 is the
  size range Black Forest Labs documents for FLUX [pro]; we apply it to every model
  so any request can move between models unchanged.
* ``seed`` is an unsigned 32-bit integer (0..2**32-1), the range every FLUX
  backend accepts.

Example::

    params = parse_generation_params({"prompt": "a red fox", "aspect_ratio": "16:9"})
    params.width, params.height, params.steps, params.seed  # (1024, 576, 4, <drawn>)
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from chalicelib.errors import ValidationError

MIN_SIZE = 256  # pixels
MAX_SIZE = 1440  # pixels
SIZE_MULTIPLE = 16  # pixels
MAX_PROMPT_CHARS = 2000
MAX_NEGATIVE_PROMPT_CHARS = 2000
MIN_GUIDANCE = 0.0
MAX_GUIDANCE = 20.0
#: Decimal places ``guidance_scale`` is kept to: DynamoDB numbers stop at magnitudes of 1e-130
#: (a subnormal float would fail the metadata write), and no model tells 1e-6 apart.
GUIDANCE_DECIMALS = 6
MAX_SEED = 2**32 - 1
MIN_N = 1
MAX_N = 4
OUTPUT_FORMATS = ("jpeg", "png")
ASPECT_RATIOS = ("square", "portrait", "landscape", "16:9", "9:16")

#: Every body field :func:`parse_generation_params` reads. Routes reject fields
#: outside ``GENERATION_FIELDS | their own fields``.
GENERATION_FIELDS: frozenset[str] = frozenset(
    {
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
    }
)


def _presets(edge: int) -> dict[str, tuple[int, int]]:
    """Aspect presets around a square of ``edge`` pixels: (width, height), multiples of 16.

    ``portrait``/``landscape`` are 3:4 / 4:3; ``16:9``/``9:16`` are exact
    (1024x576 and 1280x720 are both multiples of 16).
    """
    short = edge * 3 // 4
    wide = {768: (1024, 576), 1024: (1280, 720)}[edge]
    return {
        "square": (edge, edge),
        "portrait": (short, edge),
        "landscape": (edge, short),
        "16:9": wide,
        "9:16": (wide[1], wide[0]),
    }


@dataclass(frozen=True)
class ModelSpec:
    """What one upstream model accepts.

    Attributes:
        id: Together's model string, sent upstream as ``model``.
        name: display name.
        aliases: short names a client may send instead of ``id`` (case-insensitive).
        min_steps, max_steps, default_steps: diffusion steps (inclusive range).
        default_size: (width, height) in pixels when the request names no size;
            always the ``square`` preset.
        presets: aspect preset name -> (width, height) pixels.
        description: one line for the model picker.
    """

    id: str
    name: str
    aliases: tuple[str, ...]
    min_steps: int
    max_steps: int
    default_steps: int
    default_size: tuple[int, int]
    presets: dict[str, tuple[int, int]]
    description: str

    def to_json(self, *, default: bool) -> dict[str, Any]:
        """The ``GET /v1/models`` entry for this model (see :func:`catalog_json`)."""
        return {
            "id": self.id,
            "name": self.name,
            "aliases": list(self.aliases),
            "description": self.description,
            "default": default,
            "steps": {"min": self.min_steps, "max": self.max_steps, "default": self.default_steps},
            "n": {"min": MIN_N, "max": MAX_N, "default": 1},
            "default_size": {"width": self.default_size[0], "height": self.default_size[1]},
            "presets": {k: {"width": w, "height": h} for k, (w, h) in self.presets.items()},
            "size": {"min": MIN_SIZE, "max": MAX_SIZE, "multiple_of": SIZE_MULTIPLE},
        }


_SCHNELL = _presets(768)
_LARGE = _presets(1024)

#: The models this service offers, in display order. The first is the default.
MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="black-forest-labs/FLUX.1-schnell-Free",
        name="FLUX.1 [schnell] Free",
        aliases=("flux-schnell-free", "schnell-free", "free"),
        min_steps=1,
        max_steps=12,
        default_steps=4,
        default_size=_SCHNELL["square"],
        presets=_SCHNELL,
        description="Free, fast 4-step model; tight upstream rate limits.",
    ),
    ModelSpec(
        id="black-forest-labs/FLUX.1-schnell",
        name="FLUX.1 [schnell]",
        aliases=("flux-schnell", "schnell"),
        min_steps=1,
        max_steps=12,
        default_steps=4,
        default_size=_SCHNELL["square"],
        presets=_SCHNELL,
        description="Fast 4-step model.",
    ),
    ModelSpec(
        id="black-forest-labs/FLUX.1-dev",
        name="FLUX.1 [dev]",
        aliases=("flux-dev", "dev"),
        min_steps=1,
        max_steps=50,
        default_steps=28,
        default_size=_LARGE["square"],
        presets=_LARGE,
        description="Higher quality, slower; honours guidance_scale.",
    ),
    ModelSpec(
        id="black-forest-labs/FLUX.1.1-pro",
        name="FLUX1.1 [pro]",
        aliases=("flux-pro", "flux-1.1-pro", "pro"),
        # BFL's FLUX1.1 [pro] API has no step parameter (the model picks its own
        # schedule); we always send ``steps`` (see client.py), so it is pinned to 28.
        min_steps=28,
        max_steps=28,
        default_steps=28,
        default_size=_LARGE["square"],
        presets=_LARGE,
        description="Best quality, paid per image.",
    ),
)

DEFAULT_MODEL = MODELS[0].id
_BY_NAME: dict[str, ModelSpec] = {}
for _spec in MODELS:
    _BY_NAME[_spec.id] = _spec
    for _alias in _spec.aliases:
        _BY_NAME[_alias] = _spec

#: Every name a request may give as ``model``: the ids, then the aliases (exact spelling).
MODEL_NAMES: tuple[str, ...] = tuple(_BY_NAME)


def get_model(name: str) -> ModelSpec:
    """The spec for a model id or alias, spelled exactly as in :data:`MODEL_NAMES`.

    Raises:
        ValidationError: unknown model (field ``model``).
    """
    spec = _BY_NAME.get(name) if isinstance(name, str) else None
    if spec is None:
        known = ", ".join(m.id for m in MODELS)
        raise ValidationError(f"unknown model; choose one of: {known}", field="model")
    return spec


@dataclass(frozen=True)
class GenerationParams:
    """One validated generation request.

    Attributes:
        prompt: trimmed text, 1..2000 characters.
        model: Together model id (never an alias).
        width, height: pixels, multiples of 16 in 256..1440.
        steps: diffusion steps within the model's range.
        n: images wanted, 1..4.
        seed: 0..2**32-1; drawn at random when the client sent none. Image ``i``
            of ``n`` uses ``seed + i`` (mod 2**32), see :func:`seed_for`.
        negative_prompt: trimmed text or None.
        guidance_scale: 0..20, rounded to 6 decimal places, or None (upstream default).
        output_format: "jpeg" or "png".
    """

    prompt: str
    model: str
    width: int
    height: int
    steps: int
    n: int
    seed: int
    negative_prompt: str | None = None
    guidance_scale: float | None = None
    output_format: str = "jpeg"

    def seed_for(self, index: int) -> int:
        """The seed of image ``index`` (0-based): ``(seed + index) % 2**32``."""
        return (self.seed + index) % (MAX_SEED + 1)

    def to_body(self) -> dict[str, Any]:
        """A JSON body that :func:`parse_generation_params` turns back into ``self``
        (for queuing a job). ``None`` fields are omitted."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def _fail(field: str, message: str) -> ValidationError:
    return ValidationError(message, field=field)


#: Characters a text field may not hold: the C0/C1 control characters (Unicode category Cc)
#: except TAB, LF and CR. Shared with the OpenAPI document's ``pattern`` (ECMA-262 syntax).
FORBIDDEN_CONTROLS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
#: What Python's ``str.strip()`` removes, besides control characters: Unicode White_Space.
_BLANKS = r"\x20\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
#: A text field: no forbidden control character (the document's ``pattern``).
TEXT_PATTERN = f"^[^{FORBIDDEN_CONTROLS}]*$"
#: A required text field: as :data:`TEXT_PATTERN`, with at least one visible character.
REQUIRED_TEXT_PATTERN = rf"^[^{FORBIDDEN_CONTROLS}]*[^\x00-\x1f\x7f-\x9f{_BLANKS}][^{FORBIDDEN_CONTROLS}]*$"
_FORBIDDEN_RE = re.compile(f"[{FORBIDDEN_CONTROLS}]")


def _text(body: Mapping[str, Any], field: str, limit: int, *, required: bool) -> str | None:
    """A text field as sent: at most ``limit`` characters (code points, before any
    trimming, as JSON Schema's ``maxLength`` counts them), no control characters but
    TAB, LF and CR; a required one needs a character that is not white space.

    Returns the value trimmed, with CRLF/CR turned into LF (None for an optional field
    that is blank).
    """
    value = body.get(field)
    if value is None:
        if required:
            raise _fail(field, f"{field} is required")
        return None
    if not isinstance(value, str):
        raise _fail(field, f"{field} must be a string")
    if len(value) > limit:
        raise _fail(field, f"{field} must be at most {limit} characters (got {len(value)})")
    found = _FORBIDDEN_RE.search(value)
    if found:
        raise _fail(field, f"{field} must not contain control characters (found U+{ord(found.group()):04X})")
    value = value.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not value:
        if required:
            raise _fail(field, f"{field} must not be empty")
        return None
    return value


def _int(body: Mapping[str, Any], field: str, lo: int, hi: int) -> int | None:
    """An integer field in ``lo..hi``. As in JSON Schema, a number with a zero fractional
    part (``4.0``) is an integer; booleans are not."""
    value = body.get(field)
    if value is None:
        return None
    value = as_integer(value)
    if value is None:
        raise _fail(field, f"{field} must be an integer")
    if not lo <= value <= hi:
        raise _fail(field, f"{field} must be between {lo} and {hi} (got {value})")
    return value


def as_integer(value: Any) -> int | None:
    """``value`` as an int when JSON Schema calls it an integer (``3`` or ``3.0``), else None.

    Source: JSON Schema 2020-12 validation, section 6.1.1 ("integer" is any number with a
    zero fractional part).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _size(body: Mapping[str, Any], field: str) -> int | None:
    value = _int(body, field, MIN_SIZE, MAX_SIZE)
    if value is not None and value % SIZE_MULTIPLE:
        raise _fail(field, f"{field} must be a multiple of {SIZE_MULTIPLE} pixels (got {value})")
    return value


def _guidance(body: Mapping[str, Any]) -> float | None:
    """``guidance_scale`` in ``MIN_GUIDANCE..MAX_GUIDANCE``, rounded to ``GUIDANCE_DECIMALS`` places."""
    value = body.get("guidance_scale")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail("guidance_scale", "guidance_scale must be a number")
    if not MIN_GUIDANCE <= value <= MAX_GUIDANCE:
        raise _fail("guidance_scale", f"guidance_scale must be between {MIN_GUIDANCE:g} and {MAX_GUIDANCE:g}")
    return round(float(value), GUIDANCE_DECIMALS)


def _dimensions(body: Mapping[str, Any], spec: ModelSpec) -> tuple[int, int]:
    """``aspect_ratio`` XOR (``width`` and ``height``); neither -> the model's default size."""
    aspect = body.get("aspect_ratio")
    width, height = _size(body, "width"), _size(body, "height")
    if aspect is not None:
        if width is not None or height is not None:
            raise _fail("aspect_ratio", "send aspect_ratio or width and height, not both")
        if not isinstance(aspect, str) or aspect not in spec.presets:
            raise _fail("aspect_ratio", f"aspect_ratio must be one of: {', '.join(ASPECT_RATIOS)}")
        return spec.presets[aspect]
    if width is None and height is None:
        return spec.default_size
    if width is None:
        raise _fail("width", "width is required when height is given")
    if height is None:
        raise _fail("height", "height is required when width is given")
    return width, height


def parse_generation_params(body: Mapping[str, Any], *, allow_n: bool = True) -> GenerationParams:
    """Validate a request body's generation fields into :class:`GenerationParams`.

    Args:
        body: the decoded JSON body. Fields (all optional but ``prompt``):
            ``prompt`` str, ``model`` id or alias, ``aspect_ratio`` one of
            :data:`ASPECT_RATIOS` *or* ``width`` + ``height`` (pixels), ``steps`` int,
            ``seed`` int, ``negative_prompt`` str, ``guidance_scale`` number, ``n`` int,
            ``output_format`` "jpeg" | "png". ``None`` counts as absent (routes refuse JSON ``null``
            first, see :func:`chalicelib.jsonbody.reject_nulls`).
            Unknown fields are ignored here; routes reject them using
            :data:`GENERATION_FIELDS`.
        allow_n: when False (e.g. a single-image route), ``n`` other than 1 is an error.

    Returns:
        The parameters, with defaults filled in and a drawn ``seed`` when absent.

    Raises:
        ValidationError: 400 naming the offending ``field``.
    """
    if not isinstance(body, Mapping):
        raise ValidationError("the request body must be a JSON object")
    prompt = _text(body, "prompt", MAX_PROMPT_CHARS, required=True)
    assert prompt is not None
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _fail("model", "model must be a string")
    spec = get_model(model) if model is not None else get_model(DEFAULT_MODEL)
    width, height = _dimensions(body, spec)
    steps = _int(body, "steps", spec.min_steps, spec.max_steps)
    n = _int(body, "n", MIN_N, MAX_N)
    if n is not None and n != 1 and not allow_n:
        raise _fail("n", "n is not accepted here; only one image per request")
    seed = _int(body, "seed", 0, MAX_SEED)
    negative = _text(body, "negative_prompt", MAX_NEGATIVE_PROMPT_CHARS, required=False)
    guidance = _guidance(body)
    fmt = body.get("output_format")
    if fmt is not None and (not isinstance(fmt, str) or fmt not in OUTPUT_FORMATS):
        raise _fail("output_format", "output_format must be 'jpeg' or 'png'")
    return GenerationParams(
        prompt=prompt,
        model=spec.id,
        width=width,
        height=height,
        steps=steps if steps is not None else spec.default_steps,
        n=n if n is not None else 1,
        seed=seed if seed is not None else secrets.randbelow(MAX_SEED + 1),
        negative_prompt=negative,
        guidance_scale=guidance,
        output_format=fmt or "jpeg",
    )


def catalog_json() -> list[dict[str, Any]]:
    """The body of ``GET /v1/models``: one dict per model, the default first.

    Each: ``id``, ``name``, ``aliases``, ``description``, ``default`` (bool),
    ``steps`` {min, max, default}, ``n`` {min, max, default},
    ``default_size`` {width, height}, ``presets`` {name: {width, height}},
    ``size`` {min, max, multiple_of} (pixels).
    """
    return [spec.to_json(default=spec.id == DEFAULT_MODEL) for spec in MODELS]
