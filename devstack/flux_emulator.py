"""A local emulator of Together AI's image API (FLUX models), for dev and tests only.

It speaks the wire protocol of ``POST /v1/images/generations`` closely enough for the
official ``together`` SDK and for our own client: bearer-key auth, Together's JSON error
body, per-key rate limits with ``Retry-After``, ``GET /v1/models`` (an authenticated probe),
revoked keys (403 everywhere), and injectable faults (429/500/503, hanging requests answered
with 504, 200s whose image bytes are garbage, and marker prompts that make one request answer
a 403 request error, a WAF page or any status). Edit and reference requests (``image_url``,
``reference_images``) fetch their URLs as Together does (a wall-clock deadline and a size
cap): an unreachable URL or one that is not an image is a 400 ``invalid_request_error``
naming the parameter, and the result is drawn from the fetched input (tinted, references
inset, the prompt on top), so callers can tell which input was used. Images are
real JPEG/PNG files drawn deterministically from the request, so the same request (with a
seed) always yields the same bytes, and different prompts yield visibly different pictures.

Run it standalone with ``python -m devstack.flux_emulator --port 8090`` (config from the
``FLUX_EMULATOR_*`` environment variables, see :meth:`EmulatorConfig.from_env`), or in
process::

    emulator = FluxEmulator(EmulatorConfig(keys=["k1"])).start()
    ...  # POST to emulator.url + "/v1/images/generations"
    emulator.stop()

Base URLs: clients that append ``/images/generations`` to a ``.../v1`` base (like our
``TOGETHER_BASE_URL``, default ``https://api.together.xyz/v1``) use ``emulator.url + "/v1"``;
the official ``together`` SDK (v2+, Stainless) appends ``/v1/images/generations`` itself, so
it takes ``base_url=emulator.url``.

Never packaged with the Lambda code.
"""

from __future__ import annotations

import argparse
import base64
import copy
import dataclasses
import hashlib
import io
import json
import math
import os
import random
import signal
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from chalicelib.flux.catalog import IMAGE_PARAMETERS, LEGACY_FIELDS, TEXT_PARAMETERS, ModelSpec, catalog, find_model
from devstack.video_emulator import VIDEOS_PATH, VideoApiError, VideoJobs

__all__ = [
    "API_PATH",
    "MODELS_PATH",
    "EmulatorConfig",
    "FluxEmulator",
    "key_id",
    "main",
    "fetch_image",
    "render_from_inputs",
    "render_image",
]

API_PATH = "/v1/images/generations"
"""Path of the image generation endpoint, relative to :attr:`FluxEmulator.url`."""

MODELS_PATH = "/v1/models"
"""Path of the model list (Together's ``GET /v1/models``), relative to :attr:`FluxEmulator.url`:
an authenticated, cheap ``GET`` (clients probe a key with it)."""

OTHER_MODELS = (
    {"id": "meta-llama/Llama-3.3-70B-Instruct-Turbo", "type": "chat", "organization": "Meta"},
    {"id": "BAAI/bge-large-en-v1.5", "type": "embedding", "organization": "BAAI"},
)
"""Non-image models the emulated ``GET /v1/models`` lists too (clients must filter on ``type``)."""

DEFAULT_PORT = 8090
"""Port used by :func:`main` when neither ``--port`` nor ``FLUX_EMULATOR_PORT`` is given."""

MAX_STORED_FILES = 2000
"""How many ``response_format="url"`` results are kept in memory (oldest dropped first)."""

MAX_BODY_BYTES = 1024 * 1024
"""Largest accepted request body, in bytes."""

IMAGE_FETCH_DEADLINE_S = 10.0
"""Wall-clock seconds for fetching one ``image_url`` / ``reference_images`` URL, connect to last byte."""

IMAGE_FETCH_MAX_BYTES = 20 * 1024 * 1024
"""Largest input image fetched, in bytes (more is refused as Together refuses oversized inputs)."""

IMAGE_FETCH_MAX_PIXELS = 40_000_000
"""Largest input image decoded, in pixels (a decompression bomb is refused, not decoded)."""

_FAULT_NAMES = ("429", "500", "503", "timeout", "corrupt")
_FAULT_FIELDS = {"429": "p429", "500": "p500", "503": "p503", "timeout": "ptimeout", "corrupt": "pcorrupt"}
_CORRUPT_MAGIC = b"\x00\x00EMULATED-CORRUPTION\x00"


def key_id(key: str) -> str:
    """Return the public identifier of an API key: the first 12 hex chars of its sha256.

    Stats and logs use this instead of the key itself.
    """
    return hashlib.sha256(key.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- config


def _csv(value: str | None) -> list[str]:
    """Split a comma-separated env value into stripped, non-empty items."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]


@dataclass
class EmulatorConfig:
    """Behaviour of a :class:`FluxEmulator`. All fields may be changed at runtime.

    Attributes:
        keys: Accepted API keys. An empty list accepts any non-empty bearer key.
        own_key_prefix: Keys that start with this prefix are accepted too, besides ``keys``:
            they stand for users' own Together accounts (bring your own key). Each is its own
            account: its own rate window, ``x-ratelimit-*`` headers and ``stats()["by_key"]``
            entry; ``revoked`` and ``out_of_credits`` apply to them as to any key. Any other
            key is refused with Together's 401 ``invalid_api_key`` (when ``keys`` is set).
            Empty string: no such keys.
        rate_limit_per_minute: Images per (emulated) minute allowed PER KEY, counted over a
            sliding window; 0 means unlimited. A request for ``n`` images needs ``n`` units of
            capacity; a request larger than the whole limit is allowed only into an empty window.
        time_scale: Emulated time speed-up. 1.0 is real time; 60.0 makes a minute of rate-limit
            window pass in one real second (``Retry-After`` is scaled to real seconds too).
            Must be > 0.
        latency_ms: Extra latency added to every generation request, in real milliseconds.
        p429: Probability (0..1) of a random 429 "overloaded" answer (not a per-key limit).
        p500: Probability (0..1) of a random 500 internal error.
        p503: Probability (0..1) of a random 503 service-unavailable answer.
        ptimeout: Probability (0..1) that the request hangs ``hang_seconds`` then answers 504.
        pcorrupt: Probability (0..1) of a 200 answer whose image bytes are not a decodable image.
        hang_seconds: How long a 'timeout' fault hangs, in real seconds (not scaled).
        out_of_credits: Keys that are valid but answered with 402.
        fault_seed: Seed of the fault RNG, for reproducible fault sequences; None = random.
        reject_substring: A prompt containing this string is refused with a 422
            ``content_policy_violation``. Empty string disables the check.
        revoked: Keys that are known but revoked: every request with one, the generation
            endpoint and ``GET /v1/models`` alike, is answered 403 ``authentication_error``.
        forbid_substring: A prompt containing this string is refused with a 403
            ``invalid_request_error`` (Together answers 403 to some request errors, e.g. input
            over the limit); the key is fine and ``GET /v1/models`` still answers 200. Empty
            string disables the check.
        waf_substring: A prompt containing this string is refused with a 403 HTML page, as a
            web application firewall in front of the API would. Empty string disables it.
        status_marker: Prefix of a marker that makes one request answer a chosen status: a
            prompt containing ``<prefix>NNN__`` (e.g. ``__STATUS_403__``) is answered with HTTP
            ``NNN`` and a Together-shaped error body (429 and 503 carry ``Retry-After``), and
            ``<prefix>GARBAGE__`` is answered 200 with a body that is not JSON. Checked after
            authentication and validation; the key is fine. Empty string disables markers.
        retry_after_503: ``Retry-After`` of 503 capacity answers, in emulated seconds
            (scaled by ``time_scale`` like 429s); 0 sends none.
        tighten_after_429s: Dynamic limit: a key that is answered this many rate-limit 429s
            within one window gets ``tighten_factor`` of its limit until a whole window passes
            without a 429 (as Together's dynamic limits throttle bursts). 0 keeps the limit fixed.
        tighten_factor: The fraction (0..1] of ``rate_limit_per_minute`` a tightened key gets.
        delisted_models: Catalog model ids the emulated upstream no longer offers: absent
            from ``GET /v1/models`` and refused like an unknown model.
        image_fetch_seconds: Wall-clock deadline for fetching one input image URL, real seconds.
        image_fetch_max_bytes: Largest input image fetched, bytes.
        video_render_seconds: How long a video job takes, in emulated seconds (``queued`` for
            the first tenth, then ``in_progress``); scaled by ``time_scale``.
        video_url_ttl_seconds: How long a handed-out ``video_url`` works, in emulated seconds;
            afterwards it answers 403 (each poll of a completed job hands out a fresh one).
        video_fail_substring: A video prompt containing it ends ``failed``. Empty disables it.
        pvideo_fail: Probability (0..1) that a video job ends ``failed``.
        video_max_edge: Longer side, in pixels, of the clips actually rendered (the answer
            reports the requested size).
        video_clip_seconds: Real length cap of the clips rendered, in seconds.

    Every answer to an authenticated generation request carries ``x-ratelimit-limit`` (the
    key's current limit, images per window), ``x-ratelimit-remaining`` (images left in the
    window) and ``x-ratelimit-reset`` (real seconds until the oldest image in the window leaves
    it and frees a unit, 0 when the window is empty), when a rate limit is set.
    """

    keys: list[str] = field(default_factory=list)
    own_key_prefix: str = "byok-"
    rate_limit_per_minute: int = 0
    time_scale: float = 1.0
    latency_ms: float = 0.0
    p429: float = 0.0
    p500: float = 0.0
    p503: float = 0.0
    ptimeout: float = 0.0
    pcorrupt: float = 0.0
    hang_seconds: float = 30.0
    out_of_credits: list[str] = field(default_factory=list)
    fault_seed: int | None = None
    reject_substring: str = "__REJECT__"
    revoked: list[str] = field(default_factory=list)
    forbid_substring: str = "__FORBID__"
    waf_substring: str = "__WAF__"
    status_marker: str = "__STATUS_"
    retry_after_503: float = 0.0
    tighten_after_429s: int = 0
    tighten_factor: float = 0.5
    delisted_models: list[str] = field(default_factory=list)
    image_fetch_seconds: float = IMAGE_FETCH_DEADLINE_S
    image_fetch_max_bytes: int = IMAGE_FETCH_MAX_BYTES
    video_render_seconds: float = 30.0
    video_url_ttl_seconds: float = 600.0
    video_fail_substring: str = "__VIDEO_FAIL__"
    pvideo_fail: float = 0.0
    video_max_edge: int = 256
    video_clip_seconds: float = 2.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check types and ranges of every field.

        Raises:
            ValueError: a field has the wrong type or is out of range (message names the field).
        """
        for name in ("keys", "out_of_credits", "revoked", "delisted_models"):
            value = getattr(self, name)
            if not isinstance(value, list | tuple) or not all(isinstance(k, str) for k in value):
                raise ValueError(f"{name} must be a list of strings")
            setattr(self, name, list(value))
        if not _is_int(self.rate_limit_per_minute) or self.rate_limit_per_minute < 0:
            raise ValueError("rate_limit_per_minute must be an integer >= 0")
        if not _is_int(self.image_fetch_max_bytes) or self.image_fetch_max_bytes < 1:
            raise ValueError("image_fetch_max_bytes must be an integer >= 1")
        if not _is_number(self.image_fetch_seconds) or not 0 < self.image_fetch_seconds <= 120:
            raise ValueError("image_fetch_seconds must be a number in (0, 120]")
        self.image_fetch_seconds = float(self.image_fetch_seconds)
        if not _is_int(self.tighten_after_429s) or self.tighten_after_429s < 0:
            raise ValueError("tighten_after_429s must be an integer >= 0")
        if not _is_number(self.tighten_factor) or not 0 < self.tighten_factor <= 1:
            raise ValueError("tighten_factor must be a number in (0, 1]")
        self.tighten_factor = float(self.tighten_factor)
        numbers = ("time_scale", "latency_ms", "hang_seconds", "retry_after_503", *_FAULT_FIELDS.values())
        for name in (*numbers, "video_render_seconds", "video_url_ttl_seconds", "pvideo_fail", "video_clip_seconds"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number")
            setattr(self, name, float(value))
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if self.latency_ms < 0 or self.hang_seconds < 0 or self.retry_after_503 < 0:
            raise ValueError("latency_ms, hang_seconds and retry_after_503 must be >= 0")
        if min(self.video_render_seconds, self.video_url_ttl_seconds) < 0 or self.video_clip_seconds <= 0:
            raise ValueError("video_render_seconds, video_url_ttl_seconds must be >= 0, video_clip_seconds > 0")
        if not _is_int(self.video_max_edge) or not 16 <= self.video_max_edge <= 1920:
            raise ValueError("video_max_edge must be an integer between 16 and 1920")
        for name in (*_FAULT_FIELDS.values(), "pvideo_fail"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.fault_seed is not None and not _is_int(self.fault_seed):
            raise ValueError("fault_seed must be an integer or null")
        for name in (
            "reject_substring",
            "forbid_substring",
            "waf_substring",
            "status_marker",
            "own_key_prefix",
            "video_fail_substring",
        ):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string")

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-serialisable dict (the ``GET /admin/config`` body)."""
        return dataclasses.asdict(self)

    def updated(self, changes: Mapping[str, Any]) -> EmulatorConfig:
        """Return a validated copy with ``changes`` applied.

        Raises:
            ValueError: an unknown field name, or an invalid value.
        """
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        return dataclasses.replace(copy.deepcopy(self), **dict(changes))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EmulatorConfig:
        """Build a config from environment variables (``os.environ`` when ``env`` is None).

        Variables (all optional):
            FLUX_EMULATOR_KEYS: comma-separated accepted keys (empty = any key).
            FLUX_EMULATOR_OWN_KEY_PREFIX: prefix of users' own keys, accepted too (default
                ``byok-``; empty: none).
            FLUX_EMULATOR_RATE_LIMIT: images per minute per key (int, 0 = unlimited).
            FLUX_EMULATOR_TIME_SCALE: float time speed-up.
            FLUX_EMULATOR_LATENCY_MS: float added latency in ms.
            FLUX_EMULATOR_FAULTS: e.g. ``"429=0.1,500=0,503=0.1,timeout=0,corrupt=0.02"``.
            FLUX_EMULATOR_OUT_OF_CREDITS: comma-separated keys answered with 402.
            FLUX_EMULATOR_REVOKED: comma-separated keys answered with 403 (revoked).
            FLUX_EMULATOR_TIGHTEN_AFTER_429S: int, 429s in a window that halve a key's limit.
            FLUX_EMULATOR_VIDEO_RENDER_SECONDS: float, emulated seconds a video job takes.
            FLUX_EMULATOR_VIDEO_URL_TTL_SECONDS: float, emulated seconds a ``video_url`` works.
            FLUX_EMULATOR_VIDEO_FAIL_RATE: float 0..1, share of video jobs that end ``failed``.
            FLUX_EMULATOR_HANG_SECONDS: float, how long a timeout fault hangs.
            FLUX_EMULATOR_FAULT_SEED: int seed of the fault RNG.
            FLUX_EMULATOR_REJECT_SUBSTRING: content-policy trigger string.

        Raises:
            ValueError: a variable cannot be parsed or is out of range.
        """
        env = os.environ if env is None else env
        kwargs: dict[str, Any] = {
            "keys": _csv(env.get("FLUX_EMULATOR_KEYS")),
            "out_of_credits": _csv(env.get("FLUX_EMULATOR_OUT_OF_CREDITS")),
            "revoked": _csv(env.get("FLUX_EMULATOR_REVOKED")),
        }
        numeric = {
            "FLUX_EMULATOR_RATE_LIMIT": ("rate_limit_per_minute", int),
            "FLUX_EMULATOR_TIME_SCALE": ("time_scale", float),
            "FLUX_EMULATOR_LATENCY_MS": ("latency_ms", float),
            "FLUX_EMULATOR_HANG_SECONDS": ("hang_seconds", float),
            "FLUX_EMULATOR_FAULT_SEED": ("fault_seed", int),
            "FLUX_EMULATOR_TIGHTEN_AFTER_429S": ("tighten_after_429s", int),
            "FLUX_EMULATOR_VIDEO_RENDER_SECONDS": ("video_render_seconds", float),
            "FLUX_EMULATOR_VIDEO_URL_TTL_SECONDS": ("video_url_ttl_seconds", float),
            "FLUX_EMULATOR_VIDEO_FAIL_RATE": ("pvideo_fail", float),
        }
        for var, (name, kind) in numeric.items():
            raw = (env.get(var) or "").strip()
            if raw:
                try:
                    kwargs[name] = kind(raw)
                except ValueError as exc:
                    raise ValueError(f"{var}={raw!r} is not a valid {kind.__name__}") from exc
        if "FLUX_EMULATOR_OWN_KEY_PREFIX" in env:
            kwargs["own_key_prefix"] = env["FLUX_EMULATOR_OWN_KEY_PREFIX"].strip()
        if "FLUX_EMULATOR_REJECT_SUBSTRING" in env:
            kwargs["reject_substring"] = env["FLUX_EMULATOR_REJECT_SUBSTRING"]
        for item in _csv(env.get("FLUX_EMULATOR_FAULTS")):
            name, sep, raw = item.partition("=")
            name = name.strip().lower()
            if not sep or name not in _FAULT_FIELDS:
                names = ", ".join(_FAULT_NAMES)
                raise ValueError(f"FLUX_EMULATOR_FAULTS item {item!r}: expected NAME=PROB, NAME in {names}")
            try:
                kwargs[_FAULT_FIELDS[name]] = float(raw)
            except ValueError as exc:
                raise ValueError(f"FLUX_EMULATOR_FAULTS item {item!r}: bad probability") from exc
        return cls(**kwargs)


def _is_int(value: object) -> bool:
    """True for ints that are not bools."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    """True for ints and floats that are not bools."""
    return isinstance(value, int | float) and not isinstance(value, bool)


# --------------------------------------------------------------------------- images


@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in font at ``size`` px (bitmap fallback without FreeType)."""
    try:
        return ImageFont.load_default(size)
    except (OSError, ValueError):  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def _check_render_args(output_format: str, width: int, height: int) -> None:
    """Raises ValueError for an unknown ``output_format`` or a non-positive size."""
    if output_format not in ("jpeg", "png"):
        raise ValueError(f"unsupported output_format {output_format!r}")
    if width <= 0 or height <= 0:
        raise ValueError("width and height must be positive")


def render_image(
    prompt: str,
    *,
    width: int,
    height: int,
    seed: int,
    index: int = 0,
    negative_prompt: str | None = None,
    model: str = "",
    output_format: str = "jpeg",
) -> bytes:
    """Draw a deterministic placeholder picture and return it encoded.

    The picture (a four-corner colour gradient, several shapes and the start of the prompt)
    depends only on the arguments: the same arguments give byte-identical output, while a
    different prompt, seed, index, negative prompt or model gives a different picture.

    Args:
        prompt: Text prompt; its first 40 characters are drawn in the bottom-left corner.
        width: Image width in pixels (> 0).
        height: Image height in pixels (> 0).
        seed: Generation seed.
        index: Position of the image in a multi-image answer (0-based).
        negative_prompt: Optional negative prompt (only influences the hash).
        model: Model name (only influences the hash).
        output_format: ``"jpeg"`` or ``"png"``.

    Returns:
        The encoded JPEG or PNG bytes, exactly ``width`` x ``height`` pixels, RGB.

    Raises:
        ValueError: unknown ``output_format`` or non-positive size.
    """
    _check_render_args(output_format, width, height)
    material = json.dumps(
        {"model": model, "prompt": prompt, "seed": seed, "index": index, "negative_prompt": negative_prompt},
        sort_keys=True,
        ensure_ascii=False,
    ).encode()
    digest = hashlib.sha256(material).digest()
    rng = random.Random(digest)

    def colour() -> tuple[int, int, int]:
        return (rng.randrange(256), rng.randrange(256), rng.randrange(256))

    corners = Image.new("RGB", (2, 2))
    corners.putdata([tuple(digest[i : i + 3]) for i in (0, 3, 6, 9)])
    img = corners.resize((width, height), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    side = min(width, height)
    for _ in range(5 + digest[12] % 5):
        kind = rng.randrange(4)
        cx, cy = rng.randrange(width), rng.randrange(height)
        rx = max(2, int(side * rng.uniform(0.05, 0.3)))
        ry = max(2, int(side * rng.uniform(0.05, 0.3)))
        box = (cx - rx, cy - ry, cx + rx, cy + ry)
        fill = colour()
        if kind == 0:
            draw.ellipse(box, fill=fill, outline=colour(), width=max(1, side // 128))
        elif kind == 1:
            draw.rectangle(box, fill=fill)
        elif kind == 2:
            draw.polygon([(cx, cy - ry), (cx - rx, cy + ry), (cx + rx, cy + ry)], fill=fill)
        else:
            draw.line([(cx - rx, cy - ry), (cx + rx, cy + ry)], fill=fill, width=max(2, side // 40))
    return _label_and_encode(img, draw, prompt, output_format)


def _label_and_encode(img: Image.Image, draw: ImageDraw.ImageDraw, prompt: str, output_format: str) -> bytes:
    """Draw the start of ``prompt`` in the bottom-left corner and encode ``img`` (JPEG q85 or PNG)."""
    width, height = img.size
    side = min(width, height)
    label = " ".join(prompt.split())[:40]
    if label and side >= 48:
        font = _font(max(8, side // 32))
        margin = max(2, side // 64)
        try:
            _draw_label(draw, label, font, margin, height)
        except (UnicodeError, OSError, ValueError):  # glyph trouble: fall back to ASCII
            _draw_label(draw, label.encode("ascii", "replace").decode(), font, margin, height)
    out = io.BytesIO()
    if output_format == "png":
        img.save(out, format="PNG", compress_level=1)
    else:
        img.save(out, format="JPEG", quality=85)
    return out.getvalue()


def render_from_inputs(
    prompt: str,
    base: Image.Image,
    references: list[Image.Image],
    *,
    width: int,
    height: int,
    seed: int,
    index: int = 0,
    model: str = "",
    output_format: str = "jpeg",
) -> bytes:
    """Draw an edit / multi-reference result that visibly derives from its inputs.

    ``base`` (the ``image_url`` input, else the first reference) is stretched to
    ``width`` x ``height`` and blended 30 % with a colour drawn from the prompt, seed, index
    and model (the tint); every other reference is inset as a thumbnail along the top edge
    (each a quarter of the width, left to right); the start of the prompt is drawn in the
    bottom-left corner as in :func:`render_image`. Deterministic in its arguments.

    Args:
        base: the decoded input image (any mode).
        references: the further reference images, in request order.
        width, height: pixels of the result (> 0).

    Returns:
        The encoded JPEG or PNG bytes, RGB.

    Raises:
        ValueError: unknown ``output_format`` or non-positive size.
    """
    _check_render_args(output_format, width, height)
    material = json.dumps(
        {"model": model, "prompt": prompt, "seed": seed, "index": index, "edit": True}, sort_keys=True
    ).encode()
    digest = hashlib.sha256(material).digest()
    tint = Image.new("RGB", (width, height), tuple(digest[0:3]))
    img = Image.blend(base.convert("RGB").resize((width, height), Image.Resampling.BILINEAR), tint, 0.3)
    inset_w = max(1, width // 4)
    for i, ref in enumerate(references[:4]):
        thumb = ref.convert("RGB").resize((inset_w, max(1, height // 4)), Image.Resampling.BILINEAR)
        img.paste(thumb, (i * inset_w, 0))
    return _label_and_encode(img, ImageDraw.Draw(img), prompt, output_format)


def fetch_image(
    url: str,
    param: str,
    *,
    deadline_s: float = IMAGE_FETCH_DEADLINE_S,
    max_bytes: int = IMAGE_FETCH_MAX_BYTES,
    stopping: threading.Event | None = None,
) -> Image.Image:
    """Fetch and decode one input image, as Together fetches ``image_url`` / ``reference_images``.

    Only ``http``/``https`` URLs; the whole fetch (connect to last byte) has a wall-clock
    deadline of ``deadline_s`` seconds, the body is read in chunks and refused past
    ``max_bytes`` bytes, and the decoded size is bounded by :data:`IMAGE_FETCH_MAX_PIXELS`.

    Returns:
        The decoded image (loaded).

    Raises:
        _ApiError: 400 ``invalid_request_error`` naming ``param`` (code ``invalid_image_url``)
            for a bad scheme, an unreachable URL, a non-2xx answer, a timeout, an oversized
            body or bytes that are not an image.
    """
    import requests  # the emulator's only outbound HTTP; imported here to keep startup light
    import urllib3

    def refuse(why: str) -> _ApiError:
        return _ApiError(400, f"Could not load image from '{param}': {why}", code="invalid_image_url", param=param)

    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        raise refuse("only http and https URLs are supported")
    started = time.monotonic()
    chunks: list[bytes] = []
    size = 0
    try:
        with requests.get(url, stream=True, timeout=(min(5.0, deadline_s), deadline_s), allow_redirects=False) as resp:
            if not 200 <= resp.status_code < 300:
                raise refuse(f"the URL answered HTTP {resp.status_code}")
            while True:
                # read1 returns what has arrived (at most one read timeout later), so a body
                # that trickles in is still checked against the wall-clock deadline
                chunk = resp.raw.read1(64 * 1024)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise refuse(f"the image exceeds {max_bytes} bytes")
                if time.monotonic() - started > deadline_s or (stopping is not None and stopping.is_set()):
                    raise refuse(f"fetching the image took longer than {deadline_s:g} s")
                chunks.append(chunk)
    except requests.RequestException as exc:
        raise refuse(f"the URL could not be fetched ({type(exc).__name__})") from None
    except (OSError, ValueError, urllib3.exceptions.HTTPError) as exc:  # errors while streaming the body
        raise refuse(f"the URL could not be fetched ({type(exc).__name__})") from None
    try:
        img = Image.open(io.BytesIO(b"".join(chunks)), formats=("JPEG", "PNG", "WEBP", "GIF"))
        if img.width * img.height > IMAGE_FETCH_MAX_PIXELS:
            raise refuse(f"the image has more than {IMAGE_FETCH_MAX_PIXELS} pixels")
        img.load()
    except _ApiError:
        raise
    except Exception:  # noqa: BLE001 - Pillow raises many types for bad bytes
        raise refuse("the URL did not return a supported image") from None
    return img


def _draw_label(
    draw: ImageDraw.ImageDraw,
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    margin: int,
    height: int,
) -> None:
    """Draw ``text`` on a dark band in the bottom-left corner."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    y = height - margin - (bottom - top) - top
    draw.rectangle((0, y + top - margin, right + 2 * margin, height), fill=(0, 0, 0))
    draw.text((margin, y), text, fill=(255, 255, 255), font=font)


def _garbage(rng: random.Random) -> bytes:
    """Bytes that no image decoder accepts (emulates a corrupted upstream payload)."""
    size = rng.randrange(64, 2048)
    return _CORRUPT_MAGIC + rng.randbytes(size)


# --------------------------------------------------------------------------- HTTP helpers


class _ApiError(Exception):
    """An error answer in Together's format: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def response(self) -> Response:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return _json(body, self.status, self.headers)


def _json(body: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=dict(headers or {}), mimetype="application/json")


def _fmt_seconds(seconds: float, time_scale: float) -> str:
    """Format a ``Retry-After`` value in real seconds.

    Real time (scale 1): an integer >= 1, rounded up. Scaled time: a decimal rounded up to
    the next hundredth, at least ``0.01``.
    """
    if time_scale == 1.0:
        return str(max(1, math.ceil(seconds - 1e-9)))
    return f"{max(0.01, math.ceil(seconds * 100 - 1e-6) / 100):.2f}"


def _fmt_reset(seconds: float, time_scale: float) -> str:
    """Format ``x-ratelimit-reset`` in real seconds: like ``Retry-After`` but may be 0."""
    if seconds <= 0:
        return "0"
    return _fmt_seconds(seconds, time_scale)


@dataclass
class _Params:
    """Validated generation parameters."""

    model: str
    prompt: str
    width: int
    height: int
    steps: int
    n: int
    seed: int | None
    negative_prompt: str | None
    guidance: float | None
    output_format: str
    response_format: str
    image_url: str | None = None
    reference_images: tuple[str, ...] = ()


def _model_spec(body: dict[str, Any], delisted: list[str]) -> ModelSpec:
    """The catalog entry of ``body["model"]`` (exact API string, as Together matches it).

    Raises:
        _ApiError: 400 ``model_not_available`` for an unknown, retired or delisted model.
    """
    model = body["model"]
    spec = find_model(model)
    if spec is None or spec.id != model or spec.retired or model in delisted:
        raise _ApiError(
            400,
            f"Unable to access model {model}. Please visit https://api.together.ai/models to view "
            "the list of supported models.",
            code="model_not_available",
            param="model",
        )
    return spec


def _check_taken(body: dict[str, Any], spec: ModelSpec) -> None:
    """400 for a parameter the model does not take, or an image input over the model's limits."""
    for name in (*TEXT_PARAMETERS, *IMAGE_PARAMETERS, *LEGACY_FIELDS):
        if body.get(name) is not None and not spec.takes(name):
            raise _ApiError(
                400, f"Model {spec.id} does not support parameter '{name}'", code="invalid_parameter", param=name
            )
    limits = {"reference_images": spec.max_reference_images, "image_loras": spec.max_loras}
    for name, limit in limits.items():
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, list):
            raise _ApiError(400, f"'{name}' must be an array", code="invalid_type", param=name)
        if len(value) > limit:
            raise _ApiError(
                400, f"'{name}' takes at most {limit} items for {spec.id}", code="invalid_value", param=name
            )
    for item in body.get("reference_images") or []:
        if not isinstance(item, str):
            raise _ApiError(
                400, "'reference_images' must be an array of URLs", code="invalid_type", param="reference_images"
            )
    for item in body.get("image_loras") or []:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str) or not _is_number(item.get("scale")):
            raise _ApiError(400, "'image_loras' items are {path, scale}", code="invalid_type", param="image_loras")
    if body.get("image_url") is not None and not isinstance(body["image_url"], str):
        raise _ApiError(400, "'image_url' must be a string", code="invalid_type", param="image_url")


def _parse_params(body: object, reject_substring: str, delisted: list[str] | None = None) -> _Params:
    """Validate a request body the way Together does (400 for shape, 422 for values).

    The model must be a current model of the catalog (``chalicelib/flux/models.json``),
    not in ``delisted``; a parameter the model does not take is a 400 naming it.

    Raises:
        _ApiError: 400 for missing fields / wrong types, unknown, retired or delisted models
            and parameters the model does not take; 422 for out-of-range values and
            content-policy rejections.
    """
    if not isinstance(body, dict):
        raise _ApiError(400, "Request body must be a JSON object", code="invalid_json")

    def bad_type(name: str, expected: str) -> _ApiError:
        return _ApiError(400, f"'{name}' must be {expected}", code="invalid_type", param=name)

    def bad_value(name: str, message: str) -> _ApiError:
        return _ApiError(422, message, code="invalid_value", param=name)

    for name in ("model", "prompt"):
        if body.get(name) is None:
            raise _ApiError(400, f"'{name}' is a required property", code="missing_required_parameter", param=name)
        if not isinstance(body[name], str):
            raise bad_type(name, "a string")
    model, prompt = body["model"], body["prompt"]
    if not prompt.strip():
        raise _ApiError(400, "'prompt' must not be empty", code="missing_required_parameter", param="prompt")
    spec = _model_spec(body, delisted or [])
    _check_taken(body, spec)

    def int_field(name: str, default: int, lo: int, hi: int) -> int:
        value = body.get(name)
        if value is None:
            return default
        if not _is_int(value):
            raise bad_type(name, "an integer")
        if not lo <= value <= hi:
            raise bad_value(name, f"'{name}' must be between {lo} and {hi}, got {value}")
        return value

    def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = body.get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise bad_type(name, "a string")
        if value not in allowed:
            raise bad_value(name, f"'{name}' must be one of {', '.join(allowed)}, got {value!r}")
        return value

    width = int_field("width", 1024, 64, 2048)
    height = int_field("height", 1024, 64, 2048)
    for name, value in (("width", width), ("height", height)):
        if value % 16:
            raise bad_value(name, f"'{name}' must be a multiple of 16, got {value}")
    if body.get("aspect_ratio") is not None:
        sizes = catalog().standard_sizes
        ratio = choice("aspect_ratio", "1:1", catalog().aspect_ratios)
        width, height = sizes[ratio]
    steps_range = spec.steps
    steps = int_field("steps", (steps_range.default or 28) if steps_range else 0, 1, 50)
    n = int_field("n", 1, 1, 4)
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise bad_type("seed", "an integer")

    negative_prompt = body.get("negative_prompt")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise bad_type("negative_prompt", "a string")
    guidance = body.get("guidance")
    if guidance is not None:
        if not _is_number(guidance):
            raise bad_type("guidance", "a number")
        guidance = float(guidance)
    upsampling = body.get("prompt_upsampling")
    if upsampling is not None and not isinstance(upsampling, bool):
        raise bad_type("prompt_upsampling", "a boolean")

    output_format = choice("output_format", "jpeg", ("jpeg", "png"))
    response_format = choice("response_format", "base64", ("base64", "url"))

    if reject_substring and reject_substring in prompt:
        raise _ApiError(
            422,
            "The prompt was flagged by the content safety filter. Please revise your prompt and retry.",
            code="content_policy_violation",
            param="prompt",
        )
    return _Params(
        model=model,
        prompt=prompt,
        width=width,
        height=height,
        steps=steps,
        n=n,
        seed=seed,
        negative_prompt=negative_prompt,
        guidance=guidance,
        output_format=output_format,
        response_format=response_format,
        image_url=body.get("image_url"),
        reference_images=tuple(body.get("reference_images") or ()),
    )


class _QuietRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler without the per-request access log line (errors are still logged)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Do nothing: tests fire thousands of requests."""


# --------------------------------------------------------------------------- rate limiting


class _SlidingWindow:
    """Per-key sliding window of consumed images. Not thread-safe: callers hold the lock."""

    def __init__(self) -> None:
        self._events: dict[str, deque[tuple[float, int]]] = {}
        self._rejections: dict[str, deque[float]] = {}  # key -> times of rate-limit 429s
        self._tight_until: dict[str, float] = {}  # key -> monotonic time its tightening ends

    def clear(self) -> None:
        self._events.clear()
        self._rejections.clear()
        self._tight_until.clear()

    def limit_for(self, key: str, limit: int, factor: float, now: float) -> int:
        """``limit``, or ``factor`` of it (at least 1) while ``key`` is tightened."""
        if self._tight_until.get(key, 0.0) > now:
            return max(1, int(limit * factor))
        return limit

    def rejected(self, key: str, window: float, threshold: int, now: float) -> None:
        """Count a rate-limit 429 for ``key``; ``threshold`` of them within ``window``
        tighten it until a whole window passes without one (0: never)."""
        if threshold <= 0:
            return
        times = self._rejections.setdefault(key, deque())
        times.append(now)
        while times and times[0] <= now - window:
            times.popleft()
        if len(times) >= threshold or self._tight_until.get(key, 0.0) > now:
            self._tight_until[key] = now + window

    def peek(self, key: str, limit: int, window: float, now: float) -> tuple[int, float]:
        """``(remaining, reset)`` for ``key`` without consuming: images left in the window
        and real seconds until its oldest image leaves it (0 if empty)."""
        events = self._events.setdefault(key, deque())
        while events and events[0][0] <= now - window:
            events.popleft()
        used = sum(count for _, count in events)
        reset = events[0][0] + window - now if events else 0.0
        return max(0, limit - used), max(0.0, reset)

    def acquire(self, key: str, n: int, limit: int, window: float, now: float) -> tuple[bool, int, float]:
        """Try to consume ``n`` images for ``key``.

        Args:
            key: The API key (the raw key; never exposed).
            n: Images requested.
            limit: Images allowed per window (> 0).
            window: Window length in real seconds.
            now: Current ``time.monotonic()``.

        Returns:
            ``(allowed, remaining, retry_after)``: whether capacity was consumed, the capacity
            left in the window afterwards, and (when refused) real seconds until the request
            would fit.
        """
        events = self._events.setdefault(key, deque())
        while events and events[0][0] <= now - window:
            events.popleft()
        used = sum(count for _, count in events)
        if used == 0 or used + n <= limit:
            events.append((now, n))
            return True, max(0, limit - used - n), 0.0
        need = min(used + n - limit, used)
        freed = 0
        retry_after = window
        for stamp, count in events:
            freed += count
            if freed >= need:
                retry_after = stamp + window - now
                break
        return False, max(0, limit - used), max(retry_after, 0.0)


# --------------------------------------------------------------------------- the emulator


def _empty_stats() -> dict[str, Any]:
    return {"requests": 0, "images": 0, "by_status": {}, "by_key": {}, "faults": {}}


class FluxEmulator:
    """A threaded HTTP server emulating Together AI's ``/v1/images/generations``.

    Attributes:
        config: The live config; handlers read it per request, so assigning fields takes
            effect immediately (prefer :meth:`configure` or ``POST /admin/config``).
        host: Interface to bind.
        port: Bound port (the real one after :meth:`start` when constructed with 0).
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        access_log: bool = False,
    ) -> None:
        """Create a stopped emulator.

        Args:
            config: Initial config (copied); :meth:`reset` returns to it. Defaults to
                ``EmulatorConfig()`` (any key, no limits, no faults).
            host: Interface to bind, e.g. ``"127.0.0.1"`` or ``"0.0.0.0"``.
            port: TCP port; 0 picks a free one on :meth:`start`.
            access_log: Log one line per request (werkzeug's format) to the ``werkzeug`` logger.
        """
        self.access_log = access_log
        self._initial = copy.deepcopy(config) if config is not None else EmulatorConfig()
        self.config = copy.deepcopy(self._initial)
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._stats = _empty_stats()
        self._window = _SlidingWindow()
        self._files: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self.videos = VideoJobs()
        self._fault_rng = random.Random(self.config.fault_seed)
        self._stopping = threading.Event()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL without ``/v1``, e.g. ``"http://127.0.0.1:54321"``."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def start(self) -> FluxEmulator:
        """Bind the port and serve in a daemon thread. Returns ``self``.

        Raises:
            RuntimeError: already started.
            OSError: the port cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("FluxEmulator already started")
        self._stopping.clear()
        handler = WSGIRequestHandler if self.access_log else _QuietRequestHandler
        server = make_server(self.host, self.port, self._wsgi, threaded=True, request_handler=handler)
        self._server = server
        self.port = server.server_port
        self._thread = threading.Thread(target=server.serve_forever, name="flux-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; wakes requests hanging in a timeout fault.

        Idempotent.
        """
        self._stopping.set()
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FluxEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- control -----------------------------------------------------------------

    def reset(self, **overrides: Any) -> None:
        """Return to the initial config plus ``overrides``; clear stats, rate windows and files.

        The fault RNG is re-seeded from the resulting ``fault_seed``.

        Raises:
            ValueError: unknown field in ``overrides`` or invalid value (nothing is changed).
        """
        config = self._initial.updated(overrides)
        with self._lock:
            self.config = config
            self._stats = _empty_stats()
            self._window.clear()
            self._files.clear()
            self._fault_rng = random.Random(config.fault_seed)
        self.videos.clear()

    def configure(self, **changes: Any) -> EmulatorConfig:
        """Apply a partial config update (what ``POST /admin/config`` does). Counters are kept.

        Changing ``fault_seed`` re-seeds the fault RNG.

        Returns:
            The new config.

        Raises:
            ValueError: unknown field or invalid value (nothing is changed).
        """
        config = self.config.updated(changes)
        with self._lock:
            self.config = config
            if "fault_seed" in changes:
                self._fault_rng = random.Random(config.fault_seed)
        return config

    def stats(self) -> dict[str, Any]:
        """Counters since the last reset (the ``GET /admin/stats`` body).

        Returns:
            ``{"requests": int, "images": int, "by_status": {"200": int, ...},
            "by_key": {key_id: {"requests", "images", "by_status"}}, "faults": {"500": int, ...},
            "videos": {"submitted", "polls", "jobs"}}``.
            Only generation requests are counted; keys appear only as :func:`key_id`.
        """
        with self._lock:
            stats = copy.deepcopy(self._stats)
        stats["videos"] = self.videos.stats()
        return stats

    # -- internals ---------------------------------------------------------------

    def _record(self, status: int, key: str | None, images: int, fault: str | None) -> None:
        with self._lock:
            stats = self._stats
            stats["requests"] += 1
            stats["images"] += images
            code = str(status)
            stats["by_status"][code] = stats["by_status"].get(code, 0) + 1
            if fault:
                stats["faults"][fault] = stats["faults"].get(fault, 0) + 1
            if key is not None:
                entry = stats["by_key"].setdefault(key_id(key), {"requests": 0, "images": 0, "by_status": {}})
                entry["requests"] += 1
                entry["images"] += images
                entry["by_status"][code] = entry["by_status"].get(code, 0) + 1

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        request.max_content_length = MAX_BODY_BYTES
        try:
            response = self._dispatch(request)
        except _ApiError as exc:
            response = exc.response()
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        path, method = request.path, request.method
        routes: dict[str, dict[str, Any]] = {
            API_PATH: {"POST": self._generate},
            MODELS_PATH: {"GET": self._models},
            "/health": {"GET": lambda r: _json({"status": "ok"})},
            "/admin/config": {"GET": lambda r: _json(self.config.to_dict()), "POST": self._admin_config},
            "/admin/reset": {"POST": self._admin_reset},
            "/admin/stats": {"GET": lambda r: _json(self.stats())},
        }
        if path.startswith("/files/") and method in ("GET", "HEAD"):
            return self._file(path.removeprefix("/files/"))
        if path.startswith("/shrt/") and method in ("GET", "HEAD"):
            status, data, mimetype = self.videos.download(path.removeprefix("/shrt/"), self.config)
            return Response(data, status=status, mimetype=mimetype)
        if path == VIDEOS_PATH or path.startswith(VIDEOS_PATH + "/"):
            return self._videos(request)
        handlers = routes.get(path)
        if handlers is None:
            raise _ApiError(404, f"Unknown path {path}", code="not_found")
        handler = handlers.get(method)
        if handler is None:
            raise _ApiError(405, f"Method {method} not allowed on {path}", code="method_not_allowed")
        return handler(request)

    def _read_json(self, request: Request) -> object:
        try:
            raw = request.get_data(cache=False)
        except RequestEntityTooLarge as exc:
            raise _ApiError(413, "Request body too large", code="request_too_large") from exc
        if not raw:
            return None
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _ApiError(400, f"Request body is not valid JSON: {exc}", code="invalid_json") from exc

    def _admin_config(self, request: Request) -> Response:
        body = self._read_json(request)
        if not isinstance(body, dict):
            raise _ApiError(400, "Body must be a JSON object of config fields", code="invalid_json")
        try:
            config = self.configure(**body)
        except (ValueError, TypeError) as exc:
            raise _ApiError(400, str(exc), code="invalid_config") from exc
        return _json(config.to_dict())

    def _admin_reset(self, request: Request) -> Response:
        body = self._read_json(request)
        if body is not None and not isinstance(body, dict):
            raise _ApiError(400, "Body must be empty or a JSON object of config overrides", code="invalid_json")
        try:
            self.reset(**(body or {}))
        except (ValueError, TypeError) as exc:
            raise _ApiError(400, str(exc), code="invalid_config") from exc
        return _json(self.config.to_dict())

    def _file(self, name: str) -> Response:
        with self._lock:
            entry = self._files.get(name)
        if entry is None:
            raise _ApiError(404, f"No such file {name}", code="not_found")
        data, mimetype = entry
        return Response(data, mimetype=mimetype)

    def _store(self, data: bytes, ext: str) -> str:
        name = f"{uuid.uuid4().hex}.{ext}"
        mimetype = "image/png" if ext == "png" else "image/jpeg"
        with self._lock:
            self._files[name] = (data, mimetype)
            while len(self._files) > MAX_STORED_FILES:
                self._files.popitem(last=False)
        return name

    def _generate(self, request: Request) -> Response:
        config = self.config
        key: str | None = None
        fault: str | None = None
        images = 0
        status = 500
        try:
            if config.latency_ms > 0:
                self._stopping.wait(config.latency_ms / 1000.0)
            key = self._authenticate(request, config)
            self._check_revoked(key, config)
            response, images, fault = self._generate_authed(request, config, key)
            status = response.status_code
            for name, value in self._rate_headers(key, config).items():
                response.headers.setdefault(name, value)
            return response
        except _ApiError as exc:
            status = exc.status
            fault = fault or exc.headers.get("X-Emulator-Fault")
            if key is not None:
                for name, value in self._rate_headers(key, config).items():
                    exc.headers.setdefault(name, value)
            raise
        finally:
            self._record(status, key, images, fault)

    def _authenticate(self, request: Request, config: EmulatorConfig) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _ApiError(
                401,
                "Missing API key. Pass it in the Authorization header as 'Bearer YOUR_KEY'.",
                code="invalid_api_key",
            )
        own = bool(config.own_key_prefix) and token.startswith(config.own_key_prefix)
        if config.keys and token not in config.keys and not own:
            raise _ApiError(
                401,
                f"Invalid API key provided (key id {key_id(token)}). "
                "You can find your API key at https://api.together.xyz/settings/api-keys.",
                code="invalid_api_key",
            )
        return token

    def _check_revoked(self, key: str, config: EmulatorConfig) -> None:
        """Raise the 403 of a revoked key (see ``EmulatorConfig.revoked``)."""
        if key in config.revoked:
            raise _ApiError(
                403,
                f"This API key has been revoked (key id {key_id(key)}).",
                type_="authentication_error",
                code="api_key_revoked",
            )

    def _models(self, request: Request) -> Response:
        """``GET /v1/models``: Together's model list (a JSON array), image models from the catalog.

        Each entry: ``{id, object: "model", created, type, display_name, organization}``;
        ``type`` is ``"image"`` for the catalog's current models not in ``delisted_models``.
        Authenticated like generation (a revoked key gets its 403), so clients probe a key
        with it. Not counted in :meth:`stats` (only generation requests are).
        """
        config = self.config
        self._check_revoked(self._authenticate(request, config), config)
        entries = [
            {
                "id": spec.id,
                "object": "model",
                "created": 1735689600,
                "type": "image",
                "display_name": spec.name,
                "organization": spec.id.split("/", 1)[0],
            }
            for spec in catalog().current
            if spec.id not in config.delisted_models
        ]
        entries += [{"object": "model", "created": 1735689600, "display_name": m["id"], **m} for m in OTHER_MODELS]
        return _json(entries)

    def _retry_headers(self, seconds: float, config: EmulatorConfig) -> dict[str, str]:
        return {"Retry-After": _fmt_seconds(seconds, config.time_scale)}

    def _rate_headers(self, key: str, config: EmulatorConfig) -> dict[str, str]:
        """The three ``x-ratelimit-*`` headers for ``key`` now ({} without a rate limit)."""
        if config.rate_limit_per_minute <= 0:
            return {}
        window = 60.0 / config.time_scale
        now = time.monotonic()
        with self._lock:
            limit = self._window.limit_for(key, config.rate_limit_per_minute, config.tighten_factor, now)
            remaining, reset = self._window.peek(key, limit, window, now)
        return {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(remaining),
            "x-ratelimit-reset": _fmt_reset(reset, config.time_scale),
        }

    def _generate_authed(self, request: Request, config: EmulatorConfig, key: str) -> tuple[Response, int, str | None]:
        """Everything after authentication. Returns ``(response, images, fault_name)``."""
        if key in config.out_of_credits:
            raise _ApiError(
                402,
                "Credit limit exceeded. Please add a payment method or credits to your account.",
                type_="billing_error",
                code="insufficient_quota",
            )
        params = _parse_params(self._read_json(request), config.reject_substring, config.delisted_models)
        marked = self._marked_answer(params.prompt, config)
        if marked is not None:
            return marked, 0, "marker"

        fault = self._draw_fault(config)
        self._raise_fault(fault, config)
        headers = self._take_units(key, params.n, config) if fault is None else {}

        seed = params.seed if params.seed is not None else random.randrange(2**31)
        ext = "png" if params.output_format == "png" else "jpg"
        inputs = self._fetch_inputs(params, config)
        data: list[dict[str, Any]] = []
        for index in range(params.n):
            if fault == "corrupt":
                with self._lock:
                    blob = _garbage(self._fault_rng)
            elif inputs:
                blob = render_from_inputs(
                    params.prompt,
                    inputs[0],
                    inputs[1:],
                    width=params.width,
                    height=params.height,
                    seed=seed,
                    index=index,
                    model=params.model,
                    output_format=params.output_format,
                )
            else:
                blob = render_image(
                    params.prompt,
                    width=params.width,
                    height=params.height,
                    seed=seed,
                    index=index,
                    negative_prompt=params.negative_prompt,
                    model=params.model,
                    output_format=params.output_format,
                )
            if params.response_format == "url":
                name = self._store(blob, ext)
                data.append({"index": index, "type": "url", "url": f"{request.host_url}files/{name}"})
            else:
                data.append({"index": index, "type": "b64_json", "b64_json": base64.b64encode(blob).decode()})
        if fault:
            headers["X-Emulator-Fault"] = fault
        body = {"id": uuid.uuid4().hex, "model": params.model, "object": "list", "data": data}
        images = 0 if fault else params.n
        return _json(body, 200, headers), images, fault

    def _raise_fault(self, fault: str | None, config: EmulatorConfig) -> None:
        """Raise the answer of a drawn 429 / 500 / 503 / timeout fault (``corrupt`` and None pass)."""
        if fault == "429":
            headers = self._retry_headers(1.0 / config.time_scale, config)
            headers["X-Emulator-Fault"] = fault
            raise _ApiError(
                429,
                "The model is receiving too many requests right now; please retry later.",
                type_="rate_limit_error",
                code="rate_limit_exceeded",
                headers=headers,
            )
        if fault == "500":
            raise _ApiError(
                500,
                "Internal server error (emulated fault)",
                type_="server_error",
                code="internal_error",
                headers={"X-Emulator-Fault": fault},
            )
        if fault == "503":
            raise self._capacity_error(config, {"X-Emulator-Fault": fault})
        if fault == "timeout":
            self._stopping.wait(config.hang_seconds)
            raise _ApiError(
                504,
                "Upstream request timed out (emulated fault)",
                type_="timeout_error",
                code="timeout",
                headers={"X-Emulator-Fault": fault},
            )

    def _take_units(self, key: str, units: int, config: EmulatorConfig) -> dict[str, str]:
        """Take ``units`` of ``key``'s rate-limit window; the ``x-ratelimit-*`` headers ({} unlimited).

        Raises:
            _ApiError: 429 with ``Retry-After`` when the window has no room.
        """
        headers: dict[str, str] = {}
        if config.rate_limit_per_minute > 0:
            window = 60.0 / config.time_scale
            now = time.monotonic()
            with self._lock:
                limit = self._window.limit_for(key, config.rate_limit_per_minute, config.tighten_factor, now)
                allowed, remaining, retry_after = self._window.acquire(key, units, limit, window, now)
                _, reset = self._window.peek(key, limit, window, now)
                if not allowed:
                    self._window.rejected(key, window, config.tighten_after_429s, now)
            headers = {
                "x-ratelimit-limit": str(limit),
                "x-ratelimit-remaining": str(remaining),
                "x-ratelimit-reset": _fmt_reset(reset, config.time_scale),
            }
            if not allowed:
                headers.update(self._retry_headers(retry_after, config))
                raise _ApiError(
                    429,
                    f"Rate limit exceeded: {limit} images per minute for this API key.",
                    type_="rate_limit_error",
                    code="rate_limit_exceeded",
                    headers=headers,
                )

        return headers

    def _videos(self, request: Request) -> Response:
        """``POST /v2/videos`` and ``GET /v2/videos/{id}`` (see :mod:`devstack.video_emulator`):
        authenticated like generation; a submit also meets the random faults, the status
        markers and the per-key rate limit (one unit per video). Counted in :meth:`stats`."""
        config = self.config
        key: str | None = None
        status = 500
        try:
            key = self._authenticate(request, config)
            self._check_revoked(key, config)
            job_id = request.path.removeprefix(VIDEOS_PATH).strip("/")
            if request.method == "GET" and job_id:
                response = _json(self.videos.retrieve(job_id, config, request.host_url))
            elif request.method == "POST" and not job_id:
                response = self._video_submit(request, config, key)
            else:
                raise _ApiError(
                    405, f"Method {request.method} not allowed on {request.path}", code="method_not_allowed"
                )
            status = response.status_code
            return response
        except VideoApiError as exc:
            status = exc.status
            raise _ApiError(exc.status, exc.message, code=exc.code, param=exc.param) from None
        except _ApiError as exc:
            status = exc.status
            raise
        finally:
            self._record(status, key, 0, None)

    def _video_submit(self, request: Request, config: EmulatorConfig, key: str) -> Response:
        if key in config.out_of_credits:
            raise _ApiError(402, "Credit limit exceeded.", type_="billing_error", code="insufficient_quota")
        body = self._read_json(request)
        prompt = body.get("prompt") if isinstance(body, dict) else None
        marked = self._marked_answer(prompt, config) if isinstance(prompt, str) else None
        if marked is not None:
            return marked
        self._raise_fault(self._draw_fault(config), config)
        headers = self._take_units(key, 1, config)
        return _json(self.videos.submit(body, config), 200, headers)

    def _fetch_inputs(self, params: _Params, config: EmulatorConfig) -> list[Image.Image]:
        """The request's input images, fetched in order: ``image_url`` first, then each of
        ``reference_images`` (each with :func:`fetch_image`'s deadline and size cap).

        Raises:
            _ApiError: 400 naming the parameter whose URL failed.
        """
        limits = {
            "deadline_s": config.image_fetch_seconds,
            "max_bytes": config.image_fetch_max_bytes,
            "stopping": self._stopping,
        }
        images: list[Image.Image] = []
        if params.image_url is not None:
            images.append(fetch_image(params.image_url, "image_url", **limits))
        for url in params.reference_images:
            images.append(fetch_image(url, "reference_images", **limits))
        return images

    def _capacity_error(self, config: EmulatorConfig, headers: Mapping[str, str]) -> _ApiError:
        """A 503 "no capacity" answer (with ``Retry-After`` when ``retry_after_503`` > 0)."""
        headers = dict(headers)
        if config.retry_after_503 > 0:
            headers.update(self._retry_headers(config.retry_after_503 / config.time_scale, config))
        return _ApiError(
            503,
            "The server is overloaded or not ready yet (emulated fault)",
            type_="server_error",
            code="service_unavailable",
            headers=headers,
        )

    def _marked_answer(self, prompt: str, config: EmulatorConfig) -> Response | None:
        """The answer a marker in ``prompt`` asks for (see :class:`EmulatorConfig`), or None.

        Raises:
            _ApiError: the 403 of ``forbid_substring``, or the status of a status marker.
        """
        if config.forbid_substring and config.forbid_substring in prompt:
            raise _ApiError(
                403,
                "Input validation error: the request exceeds the limits of this model.",
                code="request_forbidden",
                param="prompt",
            )
        if config.waf_substring and config.waf_substring in prompt:
            page = "<html><head><title>403 Forbidden</title></head><body><h1>Request blocked</h1></body></html>"
            return Response(page, status=403, mimetype="text/html")
        marker = config.status_marker
        if not marker or marker not in prompt:
            return None
        code = prompt.split(marker, 1)[1].split("__", 1)[0]
        if code == "GARBAGE":
            return Response(b"\x89<html>not json at all", status=200, mimetype="application/json")
        if not (code.isdigit() and len(code) == 3 and 400 <= int(code) <= 599):
            return None
        status = int(code)
        headers = {"X-Emulator-Fault": "marker"}
        if status == 503:
            raise self._capacity_error(config, headers)
        if status == 429:
            headers.update(self._retry_headers(1.0 / config.time_scale, config))
        kinds = {401: "authentication_error", 402: "billing_error", 429: "rate_limit_error"}
        raise _ApiError(
            status,
            f"Emulated {status} answer (status marker).",
            type_=kinds.get(status, "server_error" if status >= 500 else "invalid_request_error"),
            code=f"emulated_{status}",
            headers=headers,
        )

    def _draw_fault(self, config: EmulatorConfig) -> str | None:
        """Pick at most one random fault, checking 429, 500, 503, timeout, corrupt in order."""
        probabilities = [(name, getattr(config, _FAULT_FIELDS[name])) for name in _FAULT_NAMES]
        if not any(p > 0 for _, p in probabilities):
            return None
        with self._lock:
            for name, probability in probabilities:
                if probability > 0 and self._fault_rng.random() < probability:
                    return name
        return None


# --------------------------------------------------------------------------- CLI


def main() -> None:
    """Run the emulator in the foreground until SIGINT/SIGTERM.

    ``python -m devstack.flux_emulator [--host H] [--port N]``; the port defaults to
    ``FLUX_EMULATOR_PORT`` or 8090, the host to ``FLUX_EMULATOR_HOST`` or 127.0.0.1, and the
    config comes from :meth:`EmulatorConfig.from_env`.
    """
    parser = argparse.ArgumentParser(description="Local emulator of Together AI's image API (FLUX).")
    parser.add_argument("--host", default=os.environ.get("FLUX_EMULATOR_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("FLUX_EMULATOR_PORT", DEFAULT_PORT)))
    args = parser.parse_args()
    try:
        config = EmulatorConfig.from_env()
    except ValueError as exc:
        parser.error(str(exc))
    emulator = FluxEmulator(config, host=args.host, port=args.port, access_log=True).start()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    keys = ", ".join(key_id(k) for k in config.keys) or "any"
    print(
        f"Flux emulator on {emulator.url}{API_PATH} (key ids: {keys}; "
        f"rate limit {config.rate_limit_per_minute or 'unlimited'}/min; time scale {config.time_scale})",
        flush=True,
    )
    try:
        done.wait()
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
