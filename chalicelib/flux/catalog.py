"""The image model catalog and validation of a request's generation fields.

One concern: turn a client's JSON body into a validated, immutable
:class:`GenerationParams`, using the per-model rules of the catalog.

The catalog is data: ``chalicelib/flux/models.json``, one table with the date it
was checked (``checked``) and its sources (``sources``, cited per model). Each
model states its kinds (text-to-image / edit / multi-reference), its size and
steps ranges and default steps, the optional parameters it takes, its image
inputs (``image_url``, the maximum number of ``reference_images`` and of
``image_loras``) and its price per megapixel. Retired models stay in the table
with their replacement, so a request for one is refused with 400
``model-retired`` rather than failing upstream.

Rules and their sources:

* Which parameter each model takes: Together's images overview and the FLUX.2
  quickstart (docs.together.ai), and the feature matrix of togethercomputer/skills
  ``together-images/references/api-reference.md``. A parameter the chosen model
  does not take is a 400 ``unsupported-parameter`` naming the field and the model,
  never dropped silently: Together itself refuses such requests (400/422).
* ``aspect_ratio`` (FLUX.1 [schnell], Kontext) is sent upstream *instead of*
  ``width``/``height`` (Together: "alternatively, you can use width and height");
  the standard size of the ratio is the nominal size used for pricing and checks.
* Width/height: 256..max pixels (Together's reference: 256-1920; FLUX1.1 [pro]
  256-1440, Black Forest Labs' documented range), multiples of 16 (our rule:
  FLUX works on 16-pixel latent patches, so such sizes are never resized).
* ``n`` is 1-4, ``steps`` within the model's range, ``seed`` an unsigned 32-bit
  integer (0..2**32-1), ``output_format`` "jpeg" | "png" (Together's reference).
* Price: Together's FLUX formula, megapixels x price per MP x steps / default steps
  (:func:`image_cost`).

Example::

    params = parse_generation_params({"prompt": "a red fox", "aspect_ratio": "16:9"})
    params.model, params.aspect_ratio, (params.width, params.height)
    # ("black-forest-labs/FLUX.1-schnell", "16:9", (1344, 768))
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from chalicelib.errors import ValidationError

logger = logging.getLogger(__name__)

CATALOG_PATH = Path(__file__).resolve().parent / "models.json"

MAX_PROMPT_CHARS = 2000
MAX_NEGATIVE_PROMPT_CHARS = 2000
MIN_GUIDANCE = 0.0
MAX_GUIDANCE = 20.0
#: Decimal places ``guidance`` is kept to: DynamoDB numbers stop at magnitudes of 1e-130
#: (a subnormal float would fail the metadata write), and no model tells 1e-6 apart.
GUIDANCE_DECIMALS = 6
MAX_SEED = 2**32 - 1
MIN_N = 1
MAX_N = 4
DEFAULT_SIZE = (1024, 1024)  # pixels; Together's default width/height
OUTPUT_FORMATS = ("jpeg", "png")

#: Optional text parameters a model may take (the catalog's ``parameters``).
TEXT_PARAMETERS: tuple[str, ...] = (
    "width",
    "height",
    "aspect_ratio",
    "steps",
    "negative_prompt",
    "guidance",
    "prompt_upsampling",
    "output_format",
)
#: Image-input parameters (stated per model in the catalog). The API takes ``image_url`` and
#: ``reference_images`` as ids of the caller's images (``chalicelib.services.image_inputs``);
#: ``image_loras`` is not taken yet.
IMAGE_PARAMETERS: tuple[str, ...] = ("image_url", "reference_images", "image_loras")
#: The :class:`GenerationParams` fields that carry image-input URLs.
IMAGE_URL_FIELDS: frozenset[str] = frozenset({"image_url", "reference_images"})
#: A field of the older API that no current model takes (FLUX.2 takes ``guidance``).
LEGACY_FIELDS: dict[str, str] = {"guidance_scale": "guidance"}

#: Every body field :func:`parse_generation_params` reads. Routes reject fields
#: outside ``GENERATION_FIELDS | their own fields``.
GENERATION_FIELDS: frozenset[str] = frozenset({"prompt", "model", "n", "seed", *TEXT_PARAMETERS, *LEGACY_FIELDS})

KINDS = ("text-to-image", "edit", "multi-reference")


class ModelRetiredError(ValidationError):
    """400 ``model-retired``: the model is no longer offered; the message names the replacement.

    Attributes:
        model: the retired model id.
        replacement: the model id to use instead (or None).
    """

    def __init__(self, model: str, replacement: str | None, *, code: str = "model-retired", why: str = "") -> None:
        why = why or "is retired: Together no longer offers it"
        hint = f"; use {replacement} instead" if replacement else ""
        super().__init__(f"model {model} {why}{hint}", field="model", code=code)
        self.model = model
        self.replacement = replacement


@dataclass(frozen=True)
class StepRange:
    """Diffusion steps a model takes: ``min``..``max`` inclusive; ``default`` (None: upstream's own)."""

    min: int
    max: int
    default: int | None


@dataclass(frozen=True)
class ModelSpec:
    """One catalog entry (see ``models.json``).

    Attributes:
        id: Together's model string, sent upstream as ``model``.
        name: display name.
        aliases: short names a client may send instead of ``id`` (exact spelling).
        kinds: subset of :data:`KINDS`.
        description: one line for the model picker.
        min_size, max_size, size_multiple: width/height rules, pixels.
        steps: the step range, or None when the model takes no ``steps``.
        parameters: the optional text parameters it takes (subset of :data:`TEXT_PARAMETERS`).
        image_url: whether it takes one image to edit (``image_url``).
        max_reference_images: how many ``reference_images`` it takes (0: none).
        max_loras: how many ``image_loras`` it takes (0: none).
        price_per_mp: USD per megapixel at the default steps.
        retired_since: ``YYYY-MM`` / ``YYYY`` when retired, else None.
        replacement: the model id to use instead of a retired one.
        sources: keys into the catalog's ``sources``.
    """

    id: str
    name: str
    aliases: tuple[str, ...]
    kinds: tuple[str, ...] = ()
    description: str = ""
    min_size: int = 256
    max_size: int = 1920
    size_multiple: int = 16
    steps: StepRange | None = None
    parameters: frozenset[str] = frozenset()
    image_url: bool = False
    max_reference_images: int = 0
    max_loras: int = 0
    price_per_mp: float = 0.0
    retired_since: str | None = None
    replacement: str | None = None
    sources: tuple[str, ...] = ()

    @property
    def retired(self) -> bool:
        """True when the catalog marks the model retired."""
        return self.retired_since is not None

    def takes(self, parameter: str) -> bool:
        """Whether the model takes the optional ``parameter`` (text or image input)."""
        if parameter == "image_url":
            return self.image_url
        if parameter == "reference_images":
            return self.max_reference_images > 0
        if parameter == "image_loras":
            return self.max_loras > 0
        return parameter in self.parameters

    def to_json(self, *, default: bool, available: bool = True) -> dict[str, Any]:
        """The ``GET /v1/models`` entry of a current model (see :func:`catalog_json`)."""
        ratios = list(aspect_ratios()) if "aspect_ratio" in self.parameters else []
        return {
            "id": self.id,
            "name": self.name,
            "aliases": list(self.aliases),
            "description": self.description,
            "kinds": list(self.kinds),
            "default": default,
            "available": available,
            "parameters": [p for p in TEXT_PARAMETERS if p in self.parameters],
            "size": {"min": self.min_size, "max": self.max_size, "multiple_of": self.size_multiple},
            "default_size": {"width": DEFAULT_SIZE[0], "height": DEFAULT_SIZE[1]},
            "sizes": [
                {"aspect_ratio": r, "width": w, "height": h}
                for r, (w, h) in standard_sizes().items()
                if self.min_size <= min(w, h) and max(w, h) <= self.max_size
            ],
            "aspect_ratios": ratios,
            "steps": (
                {"min": self.steps.min, "max": self.steps.max, "default": self.steps.default} if self.steps else None
            ),
            "n": {"min": MIN_N, "max": MAX_N, "default": 1},
            "image_inputs": {
                "image_url": self.image_url,
                "reference_images": self.max_reference_images,
                "image_loras": self.max_loras,
            },
            "price_per_mp": self.price_per_mp,
        }


@dataclass(frozen=True)
class Catalog:
    """The loaded ``models.json``: ``checked`` date, ``sources``, sizes and every model (current and retired)."""

    checked: str
    sources: dict[str, str]
    standard_sizes: dict[str, tuple[int, int]]
    aspect_ratios: tuple[str, ...]
    models: tuple[ModelSpec, ...]

    @property
    def current(self) -> tuple[ModelSpec, ...]:
        """The models on offer, in display order."""
        return tuple(m for m in self.models if not m.retired)


def _spec(entry: Mapping[str, Any]) -> ModelSpec:
    retired = entry.get("retired")
    common = {
        "id": entry["id"],
        "name": entry["name"],
        "aliases": tuple(entry.get("aliases", ())),
        "sources": tuple(entry.get("sources", ())),
    }
    if retired:
        return ModelSpec(**common, retired_since=retired["since"], replacement=retired.get("replacement"))
    steps = entry.get("steps")
    inputs = entry.get("image_inputs", {})
    return ModelSpec(
        **common,
        kinds=tuple(entry["kinds"]),
        description=entry.get("description", ""),
        min_size=int(entry["size"]["min"]),
        max_size=int(entry["size"]["max"]),
        size_multiple=int(entry["size"]["multiple_of"]),
        steps=StepRange(int(steps["min"]), int(steps["max"]), steps.get("default")) if steps else None,
        parameters=frozenset(entry["parameters"]),
        image_url=bool(inputs.get("image_url")),
        max_reference_images=int(inputs.get("reference_images", 0)),
        max_loras=int(inputs.get("image_loras", 0)),
        price_per_mp=float(entry["price_per_mp"]),
    )


def load_catalog(path: Path = CATALOG_PATH) -> Catalog:
    """Parse and check a catalog file.

    Raises:
        ValueError: a model names an unknown kind or parameter, a duplicate id or alias,
            a steps default outside its range, or a replacement that is not a current model.
    """
    raw = json.loads(path.read_text(encoding="utf-8"))
    models = tuple(_spec(entry) for entry in raw["models"])
    seen: set[str] = set()
    for spec in models:
        for name in (spec.id, *spec.aliases):
            if name.lower() in seen:
                raise ValueError(f"catalog: duplicate model name {name}")
            seen.add(name.lower())
        if not set(spec.kinds) <= set(KINDS) or not spec.parameters <= set(TEXT_PARAMETERS):
            raise ValueError(f"catalog: {spec.id} has an unknown kind or parameter")
        if spec.steps and spec.steps.default is not None and not spec.steps.min <= spec.steps.default <= spec.steps.max:
            raise ValueError(f"catalog: {spec.id} default steps outside its range")
        if not spec.retired and ("steps" in spec.parameters) != (spec.steps is not None):
            raise ValueError(f"catalog: {spec.id} steps range and parameters disagree")
    current = {m.id for m in models if not m.retired}
    for spec in models:
        if spec.retired and spec.replacement not in current:
            raise ValueError(f"catalog: {spec.id} is replaced by {spec.replacement}, not a current model")
    return Catalog(
        checked=raw["checked"],
        sources=dict(raw["sources"]),
        standard_sizes={s["aspect_ratio"]: (int(s["width"]), int(s["height"])) for s in raw["standard_sizes"]},
        aspect_ratios=tuple(raw["aspect_ratios"]),
        models=models,
    )


@lru_cache(maxsize=1)
def catalog() -> Catalog:
    """The shipped catalog (``models.json``), loaded once per process."""
    return load_catalog()


def standard_sizes() -> dict[str, tuple[int, int]]:
    """Aspect ratio -> (width, height) pixels of Together's standard sizes."""
    return catalog().standard_sizes


def aspect_ratios() -> tuple[str, ...]:
    """The ``aspect_ratio`` values models that take one accept (1:1, 16:9, 9:16, 4:3, 3:2)."""
    return catalog().aspect_ratios


@lru_cache(maxsize=1)
def _by_name() -> dict[str, ModelSpec]:
    table: dict[str, ModelSpec] = {}
    for spec in catalog().models:
        table[spec.id] = spec
        for alias in spec.aliases:
            table[alias] = spec
    return table


def model_names(spec: ModelSpec | None = None) -> tuple[str, ...]:
    """The names a request may give as ``model`` (exact spelling): each current model's id,
    then its aliases, in catalog order; only ``spec``'s when given. Retired models are not
    among them (a request naming one is a 400 ``model-retired``). The OpenAPI document's
    ``model`` enum lists exactly these."""
    specs = (spec,) if spec is not None else catalog().current
    return tuple(name for s in specs if not s.retired for name in (s.id, *s.aliases))


def find_model(name: str) -> ModelSpec | None:
    """The catalog entry (current or retired) for a model id or alias, spelled exactly; None if unknown."""
    return _by_name().get(name) if isinstance(name, str) else None


def get_model(name: str) -> ModelSpec:
    """The current model for an id or alias, spelled exactly as in :func:`model_names`.

    Raises:
        ValidationError: 400 ``invalid-request`` for an unknown model (field ``model``).
        ModelRetiredError: 400 ``model-retired`` naming the replacement.
    """
    spec = find_model(name)
    if spec is None:
        known = ", ".join(m.id for m in catalog().current)
        raise ValidationError(f"unknown model; choose one of: {known}", field="model")
    if spec.retired:
        raise ModelRetiredError(spec.id, spec.replacement)
    return spec


def default_model() -> ModelSpec:
    """The model used when a request names none: ``DEFAULT_MODEL`` (settings), else the catalog's first.

    A ``DEFAULT_MODEL`` that is unknown or retired is logged and the catalog's first
    current model (FLUX.1 [schnell]) is used, so a stale setting never fails every request.
    """
    from chalicelib.settings import get_settings

    configured = get_settings().default_model
    spec = find_model(configured) if configured else None
    if spec is not None and not spec.retired:
        return spec
    fallback = catalog().current[0]
    if configured not in _warned_defaults:  # once per process and value, not per request
        _warned_defaults.add(configured)
        logger.warning("DEFAULT_MODEL %r is not a current catalog model; using %s", configured, fallback.id)
    return fallback


_warned_defaults: set[str] = set()


def image_cost(model: str, width: int, height: int, steps: int | None) -> float:
    """What one image cost upstream, USD: Together's FLUX formula.

    ``width * height / 1e6 * price_per_mp * steps / default_steps``; a model without a
    default step count (or a request without steps) is billed per megapixel only.
    Unknown models cost 0.0. Source: togethercomputer/skills ``models.md``, "FLUX Pricing Formula".
    """
    spec = find_model(model)
    if spec is None or spec.retired:
        return 0.0
    cost = width * height / 1_000_000 * spec.price_per_mp
    if spec.steps and spec.steps.default and steps:
        cost *= steps / spec.steps.default
    return round(cost, 6)


def estimate_cost(model: str, width: int, height: int, steps: int | None, images: int) -> dict[str, Any]:
    """What ``images`` images of one request will cost upstream, before anything is sent.

    Returns:
        ``{"images", "megapixels", "usd", "model", "price_per_mp", "priced_at"}``:
        ``megapixels`` all images together (``width * height / 1e6 * images``, 6 decimals),
        ``usd`` ``images`` x :func:`image_cost` (Together's formula: megapixels x price per MP
        x steps / default steps), ``price_per_mp`` USD at the default steps, ``priced_at``
        the catalog's ``checked`` date (``YYYY-MM-DD``). With ``aspect_ratio`` the standard
        size of the ratio is priced (the upstream picks a size of that shape).
    """
    spec = find_model(model)
    return {
        "images": images,
        "megapixels": round(width * height / 1_000_000 * images, 6),
        "usd": round(image_cost(model, width, height, steps) * images, 6),
        "model": model,
        "price_per_mp": spec.price_per_mp if spec is not None else 0.0,
        "priced_at": catalog().checked,
    }


@dataclass(frozen=True)
class GenerationParams:
    """One validated generation request.

    Attributes:
        prompt: trimmed text, 1..2000 characters.
        model: Together model id (never an alias).
        width, height: pixels. With ``aspect_ratio``, the ratio's standard size
            (nominal: the upstream picks the exact size).
        aspect_ratio: sent upstream instead of width/height (schnell, Kontext), or None.
        steps: diffusion steps, or None (model takes none, or upstream default).
        n: images wanted, 1..4.
        seed: 0..2**32-1; drawn at random when the client sent none. Image ``i``
            of ``n`` uses ``seed + i`` (mod 2**32), see :meth:`seed_for`.
        negative_prompt: trimmed text or None.
        guidance: 0..20, rounded to 6 decimal places, or None (upstream default).
        prompt_upsampling: bool or None (upstream default).
        output_format: "jpeg" | "png" or None (upstream default).
        image_url: the image to edit, a URL the upstream fetches (Together's ``image_url``),
            or None. Set by the service that resolved the caller's input ids, never parsed
            from a client body.
        reference_images: URLs of reference images (Together's ``reference_images``), in
            order; at most the model's ``max_reference_images``.
    """

    prompt: str
    model: str
    width: int
    height: int
    n: int
    seed: int
    steps: int | None = None
    aspect_ratio: str | None = None
    negative_prompt: str | None = None
    guidance: float | None = None
    prompt_upsampling: bool | None = None
    output_format: str | None = None
    image_url: str | None = None
    reference_images: tuple[str, ...] = ()

    def seed_for(self, index: int) -> int:
        """The seed of image ``index`` (0-based): ``(seed + index) % 2**32``."""
        return (self.seed + index) % (MAX_SEED + 1)

    def to_body(self) -> dict[str, Any]:
        """A JSON body that :func:`parse_generation_params` turns back into ``self``
        (for queuing a job). ``None`` fields are omitted; with ``aspect_ratio`` the
        nominal width/height are omitted too. Image inputs are left out: their URLs are
        short-lived and made again for each generation."""
        body = {k: v for k, v in asdict(self).items() if v is not None and k not in IMAGE_URL_FIELDS}
        if self.aspect_ratio:
            body.pop("width")
            body.pop("height")
        return body

    def upstream_fields(self) -> dict[str, Any]:
        """The optional fields Together gets for this request (besides model, prompt, n, seed)."""
        fields: dict[str, Any] = {}
        if self.aspect_ratio:
            fields["aspect_ratio"] = self.aspect_ratio
        else:
            fields["width"], fields["height"] = self.width, self.height
        for name in ("steps", "negative_prompt", "guidance", "prompt_upsampling", "output_format"):
            value = getattr(self, name)
            if value is not None:
                fields[name] = value
        if self.image_url is not None:
            fields["image_url"] = self.image_url
        if self.reference_images:
            fields["reference_images"] = list(self.reference_images)
        return fields


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


def _size(body: Mapping[str, Any], field: str, spec: ModelSpec) -> int | None:
    value = _int(body, field, spec.min_size, spec.max_size)
    if value is not None and value % spec.size_multiple:
        raise _fail(field, f"{field} must be a multiple of {spec.size_multiple} pixels (got {value})")
    return value


def _guidance(body: Mapping[str, Any]) -> float | None:
    """``guidance`` in ``MIN_GUIDANCE..MAX_GUIDANCE``, rounded to ``GUIDANCE_DECIMALS`` places."""
    value = body.get("guidance")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail("guidance", "guidance must be a number")
    if isinstance(value, float) and not math.isfinite(value):  # an int is finite: isfinite() overflows past 1e308
        raise _fail("guidance", "guidance must be a number")
    if not MIN_GUIDANCE <= value <= MAX_GUIDANCE:  # exact for ints of any size
        raise _fail("guidance", f"guidance must be between {MIN_GUIDANCE:g} and {MAX_GUIDANCE:g}")
    return round(float(value), GUIDANCE_DECIMALS)


def _dimensions(body: Mapping[str, Any], spec: ModelSpec) -> tuple[int, int, str | None]:
    """``aspect_ratio`` XOR (``width`` and ``height``); neither -> 1024x1024."""
    aspect = body.get("aspect_ratio")
    width, height = _size(body, "width", spec), _size(body, "height", spec)
    if aspect is not None:
        if width is not None or height is not None:
            raise _fail("aspect_ratio", "send aspect_ratio or width and height, not both")
        ratios = aspect_ratios()
        if not isinstance(aspect, str) or aspect not in ratios:
            raise _fail("aspect_ratio", f"aspect_ratio must be one of: {', '.join(ratios)}")
        w, h = standard_sizes()[aspect]
        return w, h, aspect
    if width is None and height is None:
        return DEFAULT_SIZE[0], DEFAULT_SIZE[1], None
    if width is None:
        raise _fail("width", "width is required when height is given")
    if height is None:
        raise _fail("height", "height is required when width is given")
    return width, height, None


def _check_parameters(body: Mapping[str, Any], spec: ModelSpec) -> None:
    """400 ``unsupported-parameter`` for the first parameter sent that ``spec`` does not take."""
    for name in (*TEXT_PARAMETERS, *LEGACY_FIELDS):
        if body.get(name) is None or spec.takes(name):
            continue
        if name in LEGACY_FIELDS:
            message = f"{name} is not taken by any current model; {LEGACY_FIELDS[name]} is its FLUX.2 counterpart"
        else:
            takers = [m.name for m in catalog().current if m.takes(name)]
            message = f"model {spec.id} does not take {name}" + (
                f" (models that do: {', '.join(takers)})" if takers else ""
            )
        raise ValidationError(message, field=name, code="unsupported-parameter")


def parse_generation_params(
    body: Mapping[str, Any], *, allow_n: bool = True, default: ModelSpec | None = None
) -> GenerationParams:
    """Validate a request body's generation fields against the chosen model.

    Args:
        body: the decoded JSON body. ``prompt`` str (required); ``model`` id or alias
            (default :func:`default_model`); ``n`` int; ``seed`` int; and the optional
            parameters of :data:`TEXT_PARAMETERS` the model takes: ``aspect_ratio``
            *or* ``width`` + ``height`` (pixels), ``steps`` int, ``negative_prompt`` str,
            ``guidance`` number, ``prompt_upsampling`` bool, ``output_format``
            "jpeg" | "png". ``None`` counts as absent (routes refuse JSON ``null`` first,
            see :func:`chalicelib.jsonbody.reject_nulls`). Fields outside
            :data:`GENERATION_FIELDS` are ignored here; routes reject them.
        allow_n: when False (e.g. a single-image route), ``n`` other than 1 is an error.
        default: the model when the body names none (default :func:`default_model`).

    Returns:
        The parameters, with defaults filled in and a drawn ``seed`` when absent.

    Raises:
        ValidationError: 400 naming the offending ``field``; code ``unsupported-parameter``
            for a parameter the model does not take, ``invalid-request`` otherwise.
        ModelRetiredError: 400 ``model-retired`` naming the replacement.
    """
    if not isinstance(body, Mapping):
        raise ValidationError("the request body must be a JSON object")
    prompt = _text(body, "prompt", MAX_PROMPT_CHARS, required=True)
    assert prompt is not None
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _fail("model", "model must be a string")
    spec = get_model(model) if model is not None else (default or default_model())
    _check_parameters(body, spec)
    width, height, aspect = _dimensions(body, spec)
    steps = _int(body, "steps", spec.steps.min, spec.steps.max) if spec.steps else None
    if steps is None and spec.steps:
        steps = spec.steps.default
    n = _int(body, "n", MIN_N, MAX_N)
    if n is not None and n != 1 and not allow_n:
        raise _fail("n", "n is not accepted here; only one image per request")
    seed = _int(body, "seed", 0, MAX_SEED)
    negative = _text(body, "negative_prompt", MAX_NEGATIVE_PROMPT_CHARS, required=False)
    upsampling = body.get("prompt_upsampling")
    if upsampling is not None and not isinstance(upsampling, bool):
        raise _fail("prompt_upsampling", "prompt_upsampling must be true or false")
    fmt = body.get("output_format")
    if fmt is not None and (not isinstance(fmt, str) or fmt not in OUTPUT_FORMATS):
        raise _fail("output_format", "output_format must be 'jpeg' or 'png'")
    return GenerationParams(
        prompt=prompt,
        model=spec.id,
        width=width,
        height=height,
        aspect_ratio=aspect,
        steps=steps,
        n=n if n is not None else 1,
        seed=seed if seed is not None else secrets.randbelow(MAX_SEED + 1),
        negative_prompt=negative,
        guidance=_guidance(body),
        prompt_upsampling=upsampling,
        output_format=fmt,
    )


def catalog_json(unavailable: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """The body of ``GET /v1/models``.

    Args:
        unavailable: ids of catalog models the upstream no longer lists (shared state).

    Returns:
        ``{"models": [ModelSpec.to_json ...], "retired": [{"id", "name", "since",
        "replacement"}], "default": id, "checked": "YYYY-MM-DD", "pricing": str}``;
        models in display order.
    """
    default = default_model().id
    cat = catalog()
    return {
        "models": [m.to_json(default=m.id == default, available=m.id not in unavailable) for m in cat.current],
        "retired": [
            {"id": m.id, "name": m.name, "since": m.retired_since, "replacement": m.replacement}
            for m in cat.models
            if m.retired
        ],
        "default": default,
        "checked": cat.checked,
        "pricing": "width * height / 1e6 * price_per_mp * steps / default steps (USD)",
    }
