"""Together's asynchronous video API, emulated for dev and tests: ``/v2/videos``.

Wire contract (togethercomputer/skills, ``skills/together-video/references/api-reference.md``):

* ``POST /v2/videos`` ``{model, prompt, width, height, seconds, fps, steps, guidance_scale,
  seed, negative_prompt, output_format: MP4 | WEBM, output_quality, frame_images:
  [{input_image: URL | base64, frame: 0 | "first" | "last"}], reference_images: [URL]}``
  (the ``together`` SDK 3.x nests the last two in ``media: {frame_images, reference_images}``;
  both are accepted) answers ``{id, object: "video", model, status: "in_progress", created_at}``.
* ``GET /v2/videos/{id}`` answers the job: ``status`` (``queued``, ``in_progress``,
  ``completed``, ``failed``, ``cancelled``), then ``outputs: {video_url, cost}``, ``size`` and
  ``seconds`` on success or ``error: {code, message}`` on failure.

The model must be a video model of the catalog (``chalicelib/flux/models.json`` → ``video``)
and the request must fit it, as Together checks: a size, duration or fps it does not render,
a last keyframe to a first-only model, reference images to a model without them, a missing
prompt where one is required are 400s naming the parameter. Keyframe URLs are fetched at
submit (as Together does; 400 when they cannot be fetched or decoded), so a presigned URL
that does not work fails here as it would upstream.

Time: a job is ``queued`` for the first tenth of ``video_render_seconds`` (emulated) and
``in_progress`` until it ends; ``time_scale`` speeds both up. The clip is rendered (PyAV,
dev-only) when first asked for: a short real video, MP4/H.264 or WebM/VP9 as asked, at the
requested aspect ratio scaled down to ``video_max_edge`` pixels and cut to
``video_clip_seconds`` at no more than 12 fps (tests stay cheap; the answer still reports
the requested ``size`` and ``seconds``). The first keyframe, when given, is the first frame.

Faults: a prompt containing ``video_fail_substring`` (or a draw under ``pvideo_fail``) ends the
job ``failed`` with ``error``; every ``video_url`` stops working ``video_url_ttl_seconds``
(emulated) after it was handed out (403, like an expired presigned URL) and each ``GET`` of a
completed job hands out a fresh one. Submits take the image endpoint's random faults
(429/500/503, timeout) and its per-key rate limit, one unit per video.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import requests
from PIL import Image, ImageDraw, UnidentifiedImageError

from chalicelib.flux.video_catalog import VideoModelSpec, find_video_model, video_cost

VIDEOS_PATH = "/v2/videos"
"""Path of the video endpoint, relative to the emulator's URL."""

MAX_FPS = 12  # frames per second rendered at most (the answer still reports the requested fps)
MAX_JOBS = 2000  # jobs kept in memory (oldest dropped first)
FETCH_TIMEOUT_S = 5.0  # seconds to fetch one keyframe URL
MAX_FETCH_BYTES = 20 * 1024 * 1024  # bytes of one keyframe or reference image


class VideoApiError(Exception):
    """An error answer in Together's shape (``status``, ``message``, ``code``, ``param``)."""

    def __init__(self, status: int, message: str, *, code: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


@dataclass
class VideoJob:
    """One emulated job: the request, when it was made, its outcome, its rendered clip."""

    id: str
    model: str
    prompt: str
    width: int
    height: int
    seconds: int
    fps: int
    output_format: str
    created: float  # time.monotonic() at submit
    created_at: int  # epoch seconds
    cost: float
    fail: bool
    first_frame: bytes | None = None
    clip: bytes | None = None
    urls: list[str] = field(default_factory=list)


def _bad(param: str, message: str, status: int = 400) -> VideoApiError:
    return VideoApiError(status, message, code="invalid_parameter", param=param)


def _int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(name, f"'{name}' must be an integer")
    return value


def _load_image(source: str, param: str) -> bytes:
    """The bytes of a keyframe: fetched from an http(s) URL or decoded from base64 (400 if neither)."""
    if source.startswith(("http://", "https://")):
        try:
            with requests.get(source, timeout=FETCH_TIMEOUT_S, stream=True) as resp:
                if resp.status_code != 200:
                    raise _bad(param, f"could not fetch {param}: HTTP {resp.status_code}")
                data = resp.raw.read(MAX_FETCH_BYTES + 1, decode_content=True)
        except requests.RequestException as exc:
            raise _bad(param, f"could not fetch {param} ({type(exc).__name__})") from None
        if len(data) > MAX_FETCH_BYTES:
            raise _bad(param, f"{param} is too large")
    else:
        try:
            data = base64.b64decode(source.split(",", 1)[-1], validate=True)
        except (binascii.Error, ValueError):
            raise _bad(param, f"{param} is neither a URL nor base64 image data") from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, ValueError):
        raise _bad(param, f"{param} is not an image") from None
    return data


def parse_video_request(body: object) -> tuple[VideoModelSpec, dict[str, Any], bytes | None]:
    """Check a ``POST /v2/videos`` body as Together does.

    Returns:
        ``(spec, values, first_frame_bytes)``; values has ``prompt, width, height, seconds, fps,
        output_format``.

    Raises:
        VideoApiError: 400 naming the parameter.
    """
    if not isinstance(body, dict):
        raise VideoApiError(400, "Request body must be a JSON object", code="invalid_json")
    model = body.get("model")
    if not isinstance(model, str):
        raise _bad("model", "'model' is a required property")
    spec = find_video_model(model)
    if spec is None or spec.id != model:
        raise VideoApiError(400, f"Unable to access model {model}.", code="model_not_available", param="model")
    prompt = body.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise _bad("prompt", "'prompt' must be a string")
    if spec.prompt_required and not (prompt or "").strip():
        raise _bad("prompt", f"'prompt' is required for {spec.id}")
    if prompt and not spec.prompt_min <= len(prompt) <= spec.prompt_max:
        raise _bad("prompt", f"'prompt' must be {spec.prompt_min}-{spec.prompt_max} characters for {spec.id}")
    width, height = _int(body, "width"), _int(body, "height")
    size = (width or spec.sizes[0][0], height or spec.sizes[0][1])
    if size not in spec.sizes:
        raise _bad("width", f"{size[0]}x{size[1]} is not supported by {spec.id}")
    seconds = _int(body, "seconds") or spec.seconds[0]
    if seconds not in spec.seconds:
        raise _bad("seconds", f"seconds={seconds} is not supported by {spec.id}")
    fps = _int(body, "fps")
    if fps is not None and not (spec.fps and fps in spec.fps):
        raise _bad("fps", f"fps={fps} is not supported by {spec.id}")
    output_format = body.get("output_format") or "MP4"
    if output_format not in ("MP4", "WEBM"):
        raise _bad("output_format", "'output_format' must be MP4 or WEBM")
    media = body.get("media") or {}
    if not isinstance(media, dict):
        raise _bad("media", "'media' must be an object")
    frames = body.get("frame_images") or media.get("frame_images") or []
    if not isinstance(frames, list) or not all(isinstance(f, dict) for f in frames):
        raise _bad("frame_images", "'frame_images' must be an array of {input_image, frame}")
    first: bytes | None = None
    positions = []
    for index, item in enumerate(frames):
        # An omitted frame: the first item is the first frame, the second the last (the SDK's rule).
        frame, source = item.get("frame", "first" if index == 0 else "last"), item.get("input_image")
        if frame not in (0, "first", "last") or not isinstance(source, str):
            raise _bad("frame_images", "each frame_images item needs input_image and frame 0 | first | last")
        position = "first" if frame in (0, "first") else "last"
        positions.append(position)
        data = _load_image(source, "frame_images")
        if position == "first":
            first = data
    allowed = {"none": 0, "first": 1, "first+last": 2}[spec.keyframes]
    if len(positions) > allowed or len(set(positions)) != len(positions):
        raise _bad("frame_images", f"{spec.id} takes keyframes: {spec.keyframes}")
    if spec.keyframes == "first" and positions and positions != ["first"]:
        raise _bad("frame_images", f"{spec.id} takes only a first keyframe")
    if spec.image_required and first is None:
        raise _bad("frame_images", f"{spec.id} needs a first keyframe")
    refs = body.get("reference_images") or media.get("reference_images") or []
    if not isinstance(refs, list) or len(refs) > spec.max_reference_images:
        raise _bad("reference_images", f"{spec.id} takes at most {spec.max_reference_images} reference_images")
    for ref in refs:
        if not isinstance(ref, str):
            raise _bad("reference_images", "'reference_images' must be an array of URLs")
        _load_image(ref, "reference_images")
    values = {
        "prompt": prompt or "",
        "width": size[0],
        "height": size[1],
        "seconds": seconds,
        "fps": fps or (spec.fps[0] if spec.fps else 24),
        "output_format": output_format,
    }
    return spec, values, first


def render_video(
    prompt: str,
    *,
    width: int,
    height: int,
    seconds: float,
    fps: int,
    output_format: str = "MP4",
    first_frame: bytes | None = None,
    max_edge: int = 256,
) -> bytes:
    """Encode a short, real, playable clip (PyAV): H.264 in MP4 or VP9 in WebM.

    The clip keeps the aspect ratio of ``width`` x ``height`` with its longer side at most
    ``max_edge`` pixels (even sizes, as yuv420p needs), ``seconds`` long at ``min(fps, 12)``
    frames per second; a bar sweeps across a background drawn from the prompt, over the
    first keyframe when one is given. Deterministic for the same arguments.

    Raises:
        ValueError: an unknown ``output_format``.
    """
    import av  # dev-only dependency (requirements-dev.txt); never in the Lambda package

    if output_format not in ("MP4", "WEBM"):
        raise ValueError(f"unknown output_format {output_format!r}")
    scale = min(1.0, max_edge / max(width, height))
    w, h = max(16, int(width * scale) // 2 * 2), max(16, int(height * scale) // 2 * 2)
    rate = max(1, min(fps, MAX_FPS))
    count = max(2, int(round(seconds * rate)))
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    if first_frame is not None:
        with Image.open(io.BytesIO(first_frame)) as img:
            background = img.convert("RGB").resize((w, h))
    else:
        background = Image.new("RGB", (w, h), tuple(digest[0:3]))
    buf = io.BytesIO()
    container = av.open(buf, "w", format="mp4" if output_format == "MP4" else "webm")
    stream = container.add_stream("libx264" if output_format == "MP4" else "libvpx-vp9", rate=rate)
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    stream.options = {"preset": "ultrafast"} if output_format == "MP4" else {"deadline": "realtime", "cpu-used": "8"}
    bar = tuple(255 - c for c in digest[0:3])
    for index in range(count):
        frame = background.copy()
        if index:  # the first frame is the keyframe itself
            x = int((w - w // 8) * index / (count - 1))
            ImageDraw.Draw(frame).rectangle((x, 0, x + w // 8, h), fill=bar)
        for packet in stream.encode(av.VideoFrame.from_image(frame)):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return buf.getvalue()


class VideoJobs:
    """The emulator's video jobs (thread-safe). Timing and faults come from the live config."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, VideoJob] = {}
        self._files: dict[str, tuple[str, float]] = {}  # url token -> (job id, monotonic expiry)
        self._rng = random.Random()
        self.submitted = 0
        self.polls = 0

    def clear(self) -> None:
        """Forget every job and URL; zero the counters."""
        with self._lock:
            self._jobs.clear()
            self._files.clear()
            self.submitted = 0
            self.polls = 0

    def stats(self) -> dict[str, int]:
        """``{"submitted", "polls", "jobs"}`` since the last :meth:`clear`."""
        with self._lock:
            return {"submitted": self.submitted, "polls": self.polls, "jobs": len(self._jobs)}

    def submit(self, body: object, config: Any) -> dict[str, Any]:
        """``POST /v2/videos`` after authentication: check, record, answer ``in_progress``.

        Raises:
            VideoApiError: 400 for a request the model does not take.
        """
        spec, values, first = parse_video_request(body)
        fail = bool(config.video_fail_substring and config.video_fail_substring in values["prompt"])
        with self._lock:
            fail = fail or (config.pvideo_fail > 0 and self._rng.random() < config.pvideo_fail)
            job = VideoJob(
                id=str(uuid.uuid4()),
                model=spec.id,
                created=time.monotonic(),
                created_at=int(time.time()),
                cost=video_cost(spec, values["seconds"]),
                fail=fail,
                first_frame=first,
                **values,
            )
            self._jobs[job.id] = job
            self.submitted += 1
            while len(self._jobs) > MAX_JOBS:
                self._jobs.pop(next(iter(self._jobs)))
        return {
            "id": job.id,
            "object": "video",
            "model": job.model,
            "status": "in_progress",
            "created_at": job.created_at,
        }

    def retrieve(self, job_id: str, config: Any, host_url: str) -> dict[str, Any]:
        """``GET /v2/videos/{id}``: the job's state now (a fresh ``video_url`` once completed).

        Raises:
            VideoApiError: 404 for an unknown id.
        """
        with self._lock:
            job = self._jobs.get(job_id)
            self.polls += 1
        if job is None:
            raise VideoApiError(404, f"Video job {job_id} not found", code="not_found")
        elapsed = (time.monotonic() - job.created) * config.time_scale  # emulated seconds
        answer: dict[str, Any] = {
            "id": job.id,
            "object": "video",
            "model": job.model,
            "created_at": job.created_at,
            "size": f"{job.width}x{job.height}",
            "seconds": str(job.seconds),
        }
        if elapsed < config.video_render_seconds:
            answer["status"] = "queued" if elapsed < config.video_render_seconds / 10 else "in_progress"
            return answer
        answer["completed_at"] = job.created_at + math.ceil(config.video_render_seconds)
        if job.fail:
            answer["status"] = "failed"
            answer["error"] = {"code": "generation_failed", "message": "The video could not be generated (emulated)."}
            return answer
        token = uuid.uuid4().hex
        with self._lock:
            self._files[token] = (job.id, time.monotonic() + config.video_url_ttl_seconds / config.time_scale)
        ext = "mp4" if job.output_format == "MP4" else "webm"
        answer["status"] = "completed"
        answer["outputs"] = {"cost": job.cost, "video_url": f"{host_url}shrt/{token}.{ext}"}
        return answer

    def download(self, name: str, config: Any) -> tuple[int, bytes, str]:
        """``GET /shrt/{token}.{ext}``: ``(status, body, mimetype)``; 403 once the URL expired."""
        token = name.rsplit(".", 1)[0]
        with self._lock:
            entry = self._files.get(token)
            job = self._jobs.get(entry[0]) if entry else None
        if entry is None or job is None:
            return 404, b"not found", "text/plain"
        if time.monotonic() > entry[1]:
            return 403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>", "text/xml"
        if job.clip is None:
            clip = render_video(
                job.prompt,
                width=job.width,
                height=job.height,
                seconds=min(job.seconds, config.video_clip_seconds),
                fps=job.fps,
                output_format=job.output_format,
                first_frame=job.first_frame,
                max_edge=config.video_max_edge,
            )
            with self._lock:
                job.clip = job.clip or clip
        return 200, job.clip, "video/mp4" if job.output_format == "MP4" else "video/webm"
