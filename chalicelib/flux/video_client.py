"""VideoClient: Together's asynchronous video API over the same key pool, pacing and health.

One concern: single, bounded calls to ``/v2/videos``; the caller (the video worker) decides
when to call again. Nothing here sleeps longer than a pacing slot
(:data:`~chalicelib.flux.pacing.MAX_PACE_WAIT_S`), so a Lambda never waits for a render.

Wire contract (togethercomputer/skills ``skills/together-video/references/api-reference.md``):

* :meth:`VideoClient.submit`: ``POST {root}/v2/videos`` ``{model, prompt, width, height,
  seconds (a string), fps, seed, negative_prompt, output_format: "MP4", frame_images:
  [{input_image: URL, frame: "first" | "last"}], reference_images: [URL]}`` → ``{id, status}``.
* :meth:`VideoClient.retrieve`: ``GET {root}/v2/videos/{id}`` → ``status`` (``queued``,
  ``in_progress``, ``completed``, ``failed``, ``cancelled``), ``outputs: {video_url, cost}``
  or ``error: {code, message}``. Polled with the key that submitted (the job belongs to its
  account).
* :meth:`VideoClient.open_video`: the short-lived ``video_url``, fetched promptly with a
  User-Agent, streamed (never held whole) and capped at :data:`MAX_VIDEO_BYTES`.

Each answer goes to the pool as the image client's do (``docs/architecture.md``, "The key
pool"): ``x-ratelimit-*`` paces the key per model; 429 cools the key; 402 marks it out of
credits; 401 disables it; 503 backs the model off for every key; 400/403/404/413/422 are the
request's fault (:class:`UpstreamRejectedError`, no key changes: a 403 is never taken as
evidence against a shared key here); other 5xx and timeouts count an error on the key and
raise :class:`UpstreamFailedError` (the worker retries later). Every call has a wall-clock
timeout (``settings.flux_request_timeout_seconds``) and every answer body a size cap.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import requests

from chalicelib import outbound
from chalicelib.flux.client import CONNECT_TIMEOUT_S, USER_AGENT, normalize_base_url, parse_retry_after
from chalicelib.flux.exceptions import (
    AllKeysCoolingError,
    FailureKind,
    UpstreamBusyError,
    UpstreamFailedError,
    UpstreamRejectedError,
)
from chalicelib.flux.keypool import DISABLED, OUT_OF_CREDITS, KeyLease, KeyPool, get_key_pool
from chalicelib.flux.pacing import MAX_PACE_WAIT_S
from chalicelib.flux.video_catalog import VideoParams
from chalicelib.settings import Settings, get_settings

logger = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 64 * 1024  # bytes of a JSON answer to submit or retrieve
MAX_VIDEO_BYTES = 512 * 1024 * 1024  # bytes; a 20 s 1080p clip is well under 100 MB
DOWNLOAD_CHUNK_BYTES = 1024 * 1024  # bytes read from the video URL at a time
#: seconds a video download may take, wall clock: MAX_VIDEO_BYTES at over 4 MB/s
DOWNLOAD_DEADLINE_S = 120.0
TERMINAL = frozenset({"completed", "failed", "cancelled"})
REJECT_STATUSES = frozenset({400, 403, 404, 413, 415, 422})


@dataclass(frozen=True)
class VideoJobRef:
    """A submitted job: Together's ``id`` and the id of the key that owns it."""

    upstream_id: str
    key_id: str


@dataclass(frozen=True)
class VideoStatus:
    """One poll's answer.

    Attributes:
        status: ``queued``, ``in_progress``, ``completed``, ``failed`` or ``cancelled``.
        video_url: the short-lived download URL (completed only).
        cost: USD Together reports (completed only; None if absent or not a number).
        error_code, error_message: why it failed (failed / cancelled only).
    """

    status: str
    video_url: str | None = None
    cost: float | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def terminal(self) -> bool:
        """True once the job will not change any more."""
        return self.status in TERMINAL


class VideoDownloadError(UpstreamFailedError):
    """The ``video_url`` answered anything but 200 (an expired URL: 403), or was too large,
    or the connection failed: poll again for a fresh URL."""

    def __init__(self, message: str) -> None:
        super().__init__(message, last_error=message, last_kind=FailureKind.IMAGE_DOWNLOAD)


class _CappedReader:
    """A read-only file over a streamed response body that refuses more than ``cap`` bytes,
    and refuses to end when ``watch`` cut the download at its deadline (a cut reads as the
    server closing, which a body without a length cannot tell from its end)."""

    def __init__(self, resp: requests.Response, cap: int, watch: outbound.Watch) -> None:
        self._chunks = resp.iter_content(DOWNLOAD_CHUNK_BYTES)
        self._watch = watch
        self._buffer = b""
        self._cap = cap
        self.total = 0

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                if self._watch.fired:
                    raise VideoDownloadError(f"video download took over {DOWNLOAD_DEADLINE_S:g} s") from None
                break
            except requests.RequestException as exc:
                raise VideoDownloadError(f"video download failed ({type(exc).__name__})") from None
            self.total += len(chunk)
            if self.total > self._cap:
                raise VideoDownloadError(f"video exceeds {self._cap} bytes")
            self._buffer += chunk
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def _json_body(resp: requests.Response) -> dict[str, Any]:
    import urllib3.exceptions

    try:
        raw = resp.raw.read(MAX_ANSWER_BYTES + 1, decode_content=True) if resp.raw is not None else resp.content
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
        # a read timeout, or the socket shut at the call's deadline (outbound.deadline)
        unread = f"video answer not read ({type(exc).__name__})"
        raise UpstreamFailedError(unread, last_kind=FailureKind.TIMEOUT) from None
    if len(raw) > MAX_ANSWER_BYTES:
        raise UpstreamFailedError("video answer too large", last_kind=FailureKind.SERVER)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        raise UpstreamFailedError("video answer is not JSON", last_kind=FailureKind.SERVER) from None
    if not isinstance(body, dict):
        raise UpstreamFailedError("video answer is not an object", last_kind=FailureKind.SERVER)
    return body


def _message(body: dict[str, Any]) -> tuple[str, str | None]:
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or "")[:300], error.get("param")
    return "", None


class VideoClient:
    """Submit and poll Together video jobs with the shared key pool.

    Args:
        settings: defaults to :func:`get_settings`.
        pool: defaults to the process-wide :func:`get_key_pool`.
        session: a ``requests.Session`` (one is created, with a User-Agent).
    """

    def __init__(
        self, settings: Settings | None = None, pool: KeyPool | None = None, session: requests.Session | None = None
    ) -> None:
        self._settings = settings
        self._pool = pool
        if session is None:
            session = outbound.bounded_session(8, USER_AGENT)
        session.headers["User-Agent"] = USER_AGENT  # Together's CDN refuses a blank one
        self.session = session

    @property
    def settings(self) -> Settings:
        """The settings given, else the current process settings (read at each call)."""
        return self._settings or get_settings()

    @property
    def pool(self) -> KeyPool:
        """The pool given, else the current process-wide key pool (read at each call)."""
        return self._pool or get_key_pool()

    @property
    def endpoint(self) -> str:
        """``{root}/v2/videos``: the configured ``TOGETHER_BASE_URL`` without its ``/v1``."""
        return normalize_base_url(self.settings.together_base_url).removesuffix("/v1") + "/v2/videos"

    def _timeout(self) -> tuple[float, float]:
        total = self.settings.flux_request_timeout_seconds
        return (min(CONNECT_TIMEOUT_S, total), total)

    def submit(self, params: VideoParams, first_url: str | None, last_url: str | None, refs: list[str]) -> VideoJobRef:
        """One ``POST /v2/videos`` with the key the pool books for ``params.model``.

        Args:
            params: the validated request. first_url, last_url: keyframe image URLs (presigned GETs).
            refs: reference image URLs.

        Returns:
            The job's id and the id of the key that owns it.

        Raises:
            AllKeysCoolingError: no key free within the pacing horizon, or this key answered 429.
            UpstreamBusyError: Together answered 503.
            NoUsableKeysError: no usable key at all.
            UpstreamRejectedError: Together refused the request (400/403/404/413/422).
            UpstreamFailedError: another status, a timeout or an answer without an id; the job
                was (probably) not created, but after a timeout it may have been.
        """
        lease, wait = self.pool.reserve(params.model, max_wait_s=MAX_PACE_WAIT_S)
        if wait > 0:
            time.sleep(wait)
        body: dict[str, Any] = {
            "model": params.model,
            "width": params.width,
            "height": params.height,
            "seconds": str(params.seconds),
            "output_format": "MP4",
        }
        optional = {
            "prompt": params.prompt,
            "fps": params.fps,
            "seed": params.seed,
            "negative_prompt": params.negative_prompt,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        frames = [{"input_image": first_url, "frame": "first"}] if first_url else []
        if last_url:
            frames.append({"input_image": last_url, "frame": "last"})
        if frames:
            body["frame_images"] = frames
        if refs:
            body["reference_images"] = refs
        answer = self._json_call("POST", self.endpoint, lease, params.model, json=body)
        upstream_id = answer.get("id")
        if not isinstance(upstream_id, str) or not upstream_id or len(upstream_id) > 128:
            raise UpstreamFailedError("video submit answered without an id", last_kind=FailureKind.SERVER)
        self.pool.report_success(lease.key_id, 0.0, model=params.model)
        return VideoJobRef(upstream_id=upstream_id, key_id=lease.key_id)

    def retrieve(self, job: VideoJobRef, model: str) -> VideoStatus:
        """One ``GET /v2/videos/{id}`` with the key that submitted it (any usable key if it is gone).

        Raises:
            as :meth:`submit` (a 404 is :class:`UpstreamRejectedError`: the job is unknown).
        """
        lease = self.pool.lease_for(job.key_id) or self.pool.acquire()
        url = f"{self.endpoint}/{requests.utils.quote(job.upstream_id, safe='')}"
        answer = self._json_call("GET", url, lease, model)
        status = str(answer.get("status") or "")
        if status not in TERMINAL | {"queued", "in_progress"}:
            raise UpstreamFailedError(f"unknown video status {status[:40]!r}", last_kind=FailureKind.SERVER)
        outputs = answer.get("outputs") if isinstance(answer.get("outputs"), dict) else {}
        error = answer.get("error") if isinstance(answer.get("error"), dict) else {}
        cost = outputs.get("cost")
        url = outputs.get("video_url")
        if status == "completed" and not (isinstance(url, str) and url.startswith(("https://", "http://"))):
            raise UpstreamFailedError("completed video without a video_url", last_kind=FailureKind.SERVER)
        return VideoStatus(
            status=status,
            video_url=url if status == "completed" else None,
            cost=float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) and cost >= 0 else None,
            error_code=str(error.get("code"))[:80] if error.get("code") else None,
            error_message=str(error.get("message"))[:300] if error.get("message") else None,
        )

    @contextmanager
    def open_video(self, url: str) -> Iterator[IO[bytes]]:
        """Stream ``url`` (no Authorization header; a real User-Agent) as a file-like object.

        Reads are capped at :data:`MAX_VIDEO_BYTES`, and the whole download, however the
        reads are paced, ends within :data:`DOWNLOAD_DEADLINE_S` of wall-clock time
        (:func:`~chalicelib.outbound.deadline`); memory stays at about one chunk
        (:data:`DOWNLOAD_CHUNK_BYTES`) per read.

        Raises:
            VideoDownloadError: not a 200 (403: the URL expired), too large, too slow, or the
                connection failed.
        """
        with outbound.deadline(time.monotonic() + DOWNLOAD_DEADLINE_S) as watch:
            try:
                resp = self.session.get(url, timeout=self._timeout(), stream=True)
            except requests.RequestException as exc:
                raise VideoDownloadError(f"video download failed ({type(exc).__name__})") from None
            with resp:
                if resp.status_code != 200 or watch.fired:
                    raise VideoDownloadError(f"video download answered {resp.status_code}")
                length = resp.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > MAX_VIDEO_BYTES:
                    raise VideoDownloadError(f"video exceeds {MAX_VIDEO_BYTES} bytes")
                yield _CappedReader(resp, MAX_VIDEO_BYTES, watch)  # type: ignore[misc]

    def _json_call(self, method: str, url: str, lease: KeyLease, model: str, **kwargs: Any) -> dict[str, Any]:
        """:meth:`_call`, and the 200's JSON object, all within the request timeout of
        wall-clock time (:func:`~chalicelib.outbound.deadline`).

        Raises:
            UpstreamFailedError: as :meth:`_call`; the deadline passed (``TIMEOUT``); the
                answer is over :data:`MAX_ANSWER_BYTES` or not a JSON object.
            AllKeysCoolingError, UpstreamBusyError, UpstreamRejectedError: as :meth:`_call`.
        """
        with outbound.deadline(time.monotonic() + self._timeout()[1]) as watch:
            try:
                with self._call(method, url, lease, model, **kwargs) as resp:
                    answer = _json_body(resp)
            except UpstreamFailedError:
                if not watch.fired:
                    raise
            if watch.fired:  # cut: a cut in the headers reads as an answer the server ended
                raise UpstreamFailedError("video call timed out", last_kind=FailureKind.TIMEOUT)
        return answer

    def _call(self, method: str, url: str, lease: KeyLease, model: str, **kwargs: Any) -> requests.Response:
        """Send with ``lease``; report the answer to the pool; return a 200 (streamed) or raise."""
        kid = lease.key_id
        try:
            resp = self.session.request(
                method,
                url,
                headers={"Authorization": f"Bearer {lease.key}"},
                timeout=self._timeout(),
                stream=True,
                **kwargs,
            )
        except requests.Timeout:
            self.pool.report_error(kid, "video call timed out")
            raise UpstreamFailedError("video call timed out", last_kind=FailureKind.TIMEOUT) from None
        except requests.RequestException as exc:
            self.pool.report_error(kid, f"video call failed ({type(exc).__name__})")
            raise UpstreamFailedError("video call failed", last_kind=FailureKind.CONNECTION) from None
        status = resp.status_code
        self.pool.report_answer(kid, model, resp.headers)
        if status == 200:
            return resp
        with resp:
            try:
                message, param = _message(_json_body(resp))
            except UpstreamFailedError:
                message, param = "", None
        message = self.pool.redact(message) or f"HTTP {status}"
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        if status == 429:
            until = self.pool.report_rate_limited(kid, retry_after) or time.time() + (retry_after or 1.0)
            raise AllKeysCoolingError(retry_at=until)
        if status == 402:
            self.pool.report_disabled(kid, f"402: {message}", state=OUT_OF_CREDITS)
            raise AllKeysCoolingError(retry_at=time.time() + 1)
        if status == 401:
            self.pool.report_disabled(kid, f"401: {message}", state=DISABLED)
            raise AllKeysCoolingError(retry_at=time.time() + 1)
        if status in REJECT_STATUSES:
            raise UpstreamRejectedError(message, field=param, upstream_status=status)
        if status == 503:
            until = self.pool.report_busy(model, retry_after)
            raise UpstreamBusyError(retry_at=max(until, time.time() + 1))
        self.pool.report_error(kid, f"{status} from upstream: {message}")
        raise UpstreamFailedError(f"{status} from upstream: {message}", last_kind=FailureKind.SERVER)


_client: VideoClient | None = None
_client_lock = threading.Lock()


def get_video_client() -> VideoClient:
    """The process-wide video client (settings and key pool from the environment)."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                _client = VideoClient()
    return _client


def reset_video_client() -> None:
    """Forget the process-wide client (tests; after the key pool is reset)."""
    global _client
    with _client_lock:
        _client = None
