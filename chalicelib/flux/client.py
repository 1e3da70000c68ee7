"""FluxClient: text-to-image through Together AI, over a pool of keys, within a deadline.

One concern: turn :class:`GenerationParams` into verified image bytes.

Wire contract (Together's API reference,
https://docs.together.ai/reference/post-images-generations, and the
``images.generate`` resource of togethercomputer/together-python):
``POST {base}/v1/images/generations`` with ``Authorization: Bearer <key>`` and a
JSON body ``{model, prompt, n, seed, response_format}`` plus the optional
parameters the model takes (:meth:`GenerationParams.upstream_fields`: ``width`` and
``height`` or ``aspect_ratio``, ``steps``, ``negative_prompt``, ``guidance``,
``prompt_upsampling``, ``output_format``); the answer is
``{"data": [{"type": "b64_json", "b64_json": ...} | {"type": "url", "url": ...}]}``.
We always send ``steps`` and ``response_format="base64"`` (Together's
recommended way to save images: no second fetch); a ``url`` answer is still
downloaded, with a non-empty ``User-Agent`` because Together's CDN answers 403 to
a blank one (https://docs.together.ai/docs/images-overview).

Errors are ``{"error": {"message", "type", "param", "code"}}``; status meanings
from https://docs.together.ai/docs/error-codes. What each answer does:

=========================  ===================================================
upstream                   client
=========================  ===================================================
200 + image that decodes   success (counted locally, no DynamoDB call)
429                        key cools for Retry-After; next key at once
401 / 403                  probe the key: ``GET {base}/models`` (at most
                           :data:`PROBE_TIMEOUT_S`, body never read). 2xx:
                           :class:`UpstreamRejectedError`, no key changes;
                           401/403: key disabled, next key; no answer: key
                           skipped for this call, nothing written
402                        key out_of_credits; next key at once
400 / 404 / 413 / 422      :class:`UpstreamRejectedError`, no retry
503                        capacity, no key blamed (no write): the pool backs
                           the model off for every key (Retry-After, else
                           jittered exponential); when attempts or the
                           deadline run out, :class:`UpstreamBusyError`
other 5xx, 408, timeout    errors +1; full-jitter back-off; next key
corrupt / wrong size       errors +1; full-jitter back-off; next key
=========================  ===================================================

Every answer's ``x-ratelimit-*`` headers go to the pool, which paces each key per model
(:mod:`chalicelib.flux.pacing`): a send books its slot with :meth:`KeyPool.reserve` and
waits for it in process (at most :data:`~chalicelib.flux.pacing.MAX_PACE_WAIT_S`, and never
past the deadline; a later slot is a 503 with Retry-After, which the batch worker turns into
a deferred message), so work waits before sending rather than after a 429, and short waits
do not pay SQS's one-second visibility granularity.

One :meth:`FluxClient.generate` call (all ``n`` images) changes the shared state of at
most one key: one user's request is no evidence against several shared keys. A 429,
401/403 or 402 from a further key in the same call only skips that key for the call.
Together documents 403 for request errors too (https://docs.together.ai/docs/error-codes),
and a WAF in front of it may answer 403 on content: hence the probe.

Back-off is AWS's "full jitter": ``uniform(0, min(cap, base * 2**k))``
(AWS Architecture Blog, "Exponential Backoff and Jitter"), with ``cap`` 1 s so
retries stay inside the deadline. Attempts per image are bounded by
``2 * keys + 2`` and by the deadline (default ``settings.flux_deadline_seconds``,
25 s, under API Gateway's 29 s integration timeout); each attempt's timeout is
``min(settings.flux_request_timeout_seconds, time left)``. ``requests`` timeouts
bound connect and each read, not the whole body; a server trickling bytes could
overrun by one read timeout.

``n > 1``: we make ``n`` upstream calls of one image each, with seeds ``seed``,
``seed+1``, ... (mod 2**32), one after the other. So every stored image's seed
reproduces it with ``n=1``, the calls spread over keys, and bursts stay gentle on
per-key rate limits. The call returns all ``n`` images or raises.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import io
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # requests is imported where a call is made
    import requests

from chalicelib import observability, outbound
from chalicelib.aws import http_pool_size
from chalicelib.flux.catalog import GenerationParams
from chalicelib.flux.exceptions import (
    AllKeysCoolingError,
    CorruptImageError,
    FailureKind,
    FluxError,
    NoUsableKeysError,
    UpstreamBusyError,
    UpstreamFailedError,
    UpstreamRejectedError,
)
from chalicelib.flux.keypool import DISABLED, MAX_COOLDOWN_S, OUT_OF_CREDITS, KeyLease, KeyPool, get_key_pool
from chalicelib.flux.pacing import MAX_PACE_WAIT_S
from chalicelib.settings import Settings, get_settings

logger = logging.getLogger(__name__)

USER_AGENT = "PromptCanvas/1.0 (flux-client; python-requests)"
CONNECT_TIMEOUT_S = 3.05  # seconds; a little over a TCP retransmit window
MIN_ATTEMPT_S = 0.3  # seconds; no new attempt with less time than this left
MAX_COOLDOWN_WAIT_S = 2.0  # seconds; wait for a cooling key only if it is back this soon
PROBE_TIMEOUT_S = 2.0  # seconds; GET /models that checks a key after a 401/403
BUSY_RETRY_S = 5.0  # seconds; Retry-After we give after 503s that carried none
BACKOFF_BASE_S = 0.1  # seconds
BACKOFF_CAP_S = 1.0  # seconds
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # bytes; a 1440x1440 PNG is ~6 MB
#: bytes of a generation answer read at most: one image of MAX_IMAGE_BYTES in base64, and its JSON
MAX_ANSWER_BYTES = MAX_IMAGE_BYTES * 4 // 3 + 64 * 1024
RATIO_TOLERANCE = 0.03  # relative aspect-ratio difference accepted for an aspect_ratio request
MAX_EDGE = 2048  # pixels; the longest side accepted for an aspect_ratio request
REJECT_STATUSES = frozenset({400, 404, 413, 415, 422})
FORMATS = {"JPEG": ("image/jpeg", "jpg"), "PNG": ("image/png", "png"), "WEBP": ("image/webp", "webp")}


@dataclass(frozen=True)
class GeneratedImage:
    """One verified image.

    Attributes:
        data: the encoded image bytes (not shown in ``repr``).
        content_type: ``image/jpeg`` | ``image/png`` (``image/webp`` if upstream sent it).
        ext: file extension without the dot: ``jpg`` | ``png`` | ``webp``.
        width, height: pixels, equal to the requested size.
        seed: the seed that reproduces this image with ``n=1``.
        index: position in the request, 0-based.
        key_id: which key served it (sha256 prefix).
        upstream_ms: milliseconds of the successful upstream call (incl. download).
        model: the Together model id.
    """

    data: bytes = field(repr=False)
    content_type: str
    ext: str
    width: int
    height: int
    seed: int
    index: int
    key_id: str
    upstream_ms: int
    model: str

    @property
    def size_bytes(self) -> int:
        """``len(data)`` in bytes."""
        return len(self.data)


def normalize_base_url(url: str) -> str:
    """Together's API root with ``/v1``: ``https://api.together.ai`` and
    ``https://api.together.xyz/v1/`` both become ``.../v1`` (no trailing slash)."""
    url = url.strip().rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110 section 10.2.3):
    delay-seconds (fractions accepted) or an HTTP-date. None if absent or unparsable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _error_detail(raw: bytes, status: int) -> tuple[str, str | None]:
    """(message, param) from a Together error body (``raw``, the answer's bytes); falls back to
    the status line (``status``).

    Accepts ``{"error": {"message", "param"}}``, ``{"error": "text"}``,
    ``{"message": ...}`` and FastAPI's ``{"detail": [{"loc", "msg"}]}``.
    """
    try:
        body: Any = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        text = raw[:1200].decode("utf-8", "replace").strip()
        return (text[:300] or f"HTTP {status}"), None
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, str):
            return err, None
        if isinstance(err, dict):
            detail = err.get("detail")
            if isinstance(detail, list) and detail and isinstance(detail[0], dict):
                loc = detail[0].get("loc") or []
                param = str(loc[-1]) if loc else None
                return str(detail[0].get("msg") or f"HTTP {status}"), param
            message = err.get("message") or detail or f"HTTP {status}"
            param = err.get("param")
            return str(message), (str(param) if param else None)
    return f"HTTP {status}", None


def verify_image(data: bytes, width: int, height: int, *, ratio_only: bool = False) -> tuple[str, str]:
    """Check that ``data`` is a whole JPEG/PNG/WebP of ``width`` x ``height`` pixels.

    With ``ratio_only`` (a request that sent ``aspect_ratio``: the upstream picks the
    exact size), any size of the same aspect ratio (within :data:`RATIO_TOLERANCE`) and
    at most :data:`MAX_EDGE` pixels a side is accepted.

    The header is read first (so a wrong or huge size is refused before decoding),
    then ``verify()`` (PNG chunk CRCs) and a full ``load()`` (truncation, bad data).

    Returns:
        (content_type, ext).

    Raises:
        CorruptImageError: empty, too large, undecodable, unknown format or wrong size.
    """
    from PIL import Image

    if not data:
        raise CorruptImageError("empty image")
    if len(data) > MAX_IMAGE_BYTES:
        raise CorruptImageError(f"image of {len(data)} bytes exceeds {MAX_IMAGE_BYTES}")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, size = img.format, img.size
            if ratio_only:
                ratio = size[0] / max(1, size[1])
                if abs(ratio / (width / height) - 1) > RATIO_TOLERANCE or max(size) > MAX_EDGE:
                    raise CorruptImageError(f"image is {size[0]}x{size[1]}, expected the shape of {width}x{height}")
            elif size != (width, height):
                raise CorruptImageError(f"image is {size[0]}x{size[1]}, expected {width}x{height}")
            img.verify()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except CorruptImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, ...
        raise CorruptImageError(f"image does not decode ({type(exc).__name__})") from None
    if fmt not in FORMATS:
        raise CorruptImageError(f"unexpected image format {fmt}")
    return FORMATS[fmt]


class BodyLimitExceeded(Exception):
    """A streamed answer went past its byte cap (``which == "size"``) or its wall-clock
    deadline (``which == "deadline"``)."""

    def __init__(self, which: str) -> None:
        super().__init__(which)
        self.which = which


def read_bounded(resp: requests.Response, max_bytes: int, deadline: float) -> bytes:
    """The body of a streamed (``stream=True``) answer, at most ``max_bytes`` bytes, read
    before ``deadline`` (``time.monotonic()`` seconds), 64 KiB at a time.

    Raises:
        BodyLimitExceeded: ``"size"`` or ``"deadline"``.
        requests.RequestException: the connection failed while reading.
    """
    chunks, total = [], 0
    for chunk in resp.iter_content(64 * 1024):
        total += len(chunk)
        if total > max_bytes:
            raise BodyLimitExceeded("size")
        if time.monotonic() > deadline:
            raise BodyLimitExceeded("deadline")
        chunks.append(chunk)
    return b"".join(chunks)


class _Transient(Exception):
    """One attempt failed in a way worth retrying after a back-off (another key or the same)."""

    def __init__(self, message: str, kind: FailureKind) -> None:
        super().__init__(message)
        self.kind = kind


class _NextKey(Exception):
    """One attempt failed because of the key (429/401/402/403) or the platform (503); try
    again now (the key pool paces the next send).

    ``kind``: the attempt's :class:`FailureKind`. ``busy``: it was a 429 (over our rate) or
    a 503 (no capacity): nothing is broken.
    """

    def __init__(self, message: str, kind: FailureKind, *, busy: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.busy = busy


@dataclass
class _Call:
    """What one :meth:`FluxClient.generate` call did to the key pool (all its images).

    Attributes:
        changed: the key id whose shared state (cooldown, disabled, out of credits) this
            call changed; one call changes at most one key.
        excluded: key id -> epoch seconds until which this call does not use it again
            (``inf``: not at all), for keys it may not change or could not judge.
        busy_until: epoch seconds; the latest end of a 503's ``Retry-After`` (0: no 503).
    """

    changed: str | None = None
    excluded: dict[str, float] = field(default_factory=dict)
    busy_until: float = 0.0

    def may_change(self, kid: str) -> bool:
        """True if this call may still change ``kid``'s shared state."""
        return self.changed is None or self.changed == kid


class FluxClient:
    """Generate images with Together's FLUX models.

    Args:
        settings: defaults to :func:`get_settings`.
        pool: the key pool; defaults to the process-wide :func:`get_key_pool` when
            ``settings`` is None, else a new ``KeyPool(settings)``.
        session: a ``requests.Session`` to reuse connections (one is created).
        response_format: what to ask Together for: ``"base64"`` (default, the image
            comes inline) or ``"url"`` (the image is downloaded from the returned URL).
        sleep, monotonic: clock hooks (tests); seconds.

    Raises:
        ValueError: unknown ``response_format``.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        pool: KeyPool | None = None,
        session: requests.Session | None = None,
        *,
        response_format: str = "base64",
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if response_format not in ("base64", "url"):
            raise ValueError("response_format must be 'base64' or 'url'")
        self.response_format = response_format
        if pool is None:
            pool = get_key_pool() if settings is None else KeyPool(settings)
        self.settings = settings or get_settings()
        self.pool = pool
        self.endpoint = normalize_base_url(self.settings.together_base_url) + "/images/generations"
        self.models_url = normalize_base_url(self.settings.together_base_url) + "/models"
        if session is None:  # requests is imported on first use: the first response needs no HTTP client
            session = outbound.bounded_session(http_pool_size(self.settings), USER_AGENT)
        elif not session.headers.get("User-Agent"):
            session.headers["User-Agent"] = USER_AGENT  # the CDN refuses a blank one
        self.session = session
        self._sleep = sleep
        self._monotonic = monotonic

    def close(self) -> None:
        """Close the HTTP session (its pooled connections)."""
        self.session.close()

    # -- public ---------------------------------------------------------------------------------

    def generate(self, params: GenerationParams, *, deadline_s: float | None = None) -> list[GeneratedImage]:
        """Generate ``params.n`` images, in order, each verified.

        Args:
            params: validated parameters (see :func:`parse_generation_params`).
            deadline_s: seconds from now for the whole call, all images and retries
                included; default ``settings.flux_deadline_seconds``.

        Returns:
            ``params.n`` images; image ``i`` has seed ``params.seed_for(i)``.

        Raises:
            UpstreamRejectedError: 422, Together refused the parameters (no retry).
            AllKeysCoolingError: 503, every key rate limited (``retry_at``, ``Retry-After``);
                its subclasses :class:`UpstreamBusyError` (Together answered 503 until the
                deadline) and :class:`KeyHealthUnavailableError` (key health never read).
            NoUsableKeysError: 503, no key configured or all disabled / out of credits.
            UpstreamFailedError: 502, transient failures exhausted attempts or the deadline,
                or every key was skipped for this call.
        """
        budget = self.settings.flux_deadline_seconds if deadline_s is None else deadline_s
        deadline = self._monotonic() + max(0.0, budget)
        call = _Call()
        return [self._generate_one(params, index, deadline, call) for index in range(params.n)]

    # -- one image ------------------------------------------------------------------------------

    def _payload(self, params: GenerationParams, seed: int) -> dict[str, Any]:
        """The upstream body: only the parameters the model takes (the catalog checked them)."""
        return {
            "model": params.model,
            "prompt": params.prompt,
            "n": 1,
            "seed": seed,
            "response_format": self.response_format,
            **params.upstream_fields(),
        }

    def _generate_one(self, params: GenerationParams, index: int, deadline: float, call: _Call) -> GeneratedImage:
        seed = params.seed_for(index)
        payload = self._payload(params, seed)
        max_attempts = 2 * max(1, len(self.pool)) + 2
        attempts = 0
        transient = 0
        only_busy = True  # every attempt so far was a 429 or a 503
        last_error: str | None = None
        last_kind: FailureKind | None = None
        no_slot_in_time = False  # the next key is free within a short wait, but after the deadline
        while True:
            remaining = deadline - self._monotonic()
            if attempts >= max_attempts or remaining < MIN_ATTEMPT_S or no_slot_in_time:
                why = "attempts" if attempts >= max_attempts else "deadline"
                logger.error("flux gave up reason=%s attempts=%d last_error=%s", why, attempts, last_error)
                if attempts and only_busy:
                    # Every attempt was a 429 or a 503: upstream is saturated, not broken. Say so
                    # (503 with Retry-After), so callers back off instead of counting a failure.
                    raise self._busy_error(call)
                raise UpstreamFailedError(
                    f"image generation failed upstream ({why} exhausted after {attempts} attempts)",
                    last_error=last_error,
                    attempts=attempts,
                    last_kind=last_kind,
                )
            try:
                max_wait = min(MAX_PACE_WAIT_S, remaining - MIN_ATTEMPT_S)
                lease, wait = self.pool.reserve(params.model, exclude=call.excluded, max_wait_s=max_wait)
            except AllKeysCoolingError as exc:
                if exc.retry_after <= MAX_COOLDOWN_WAIT_S:
                    if exc.retry_after + MIN_ATTEMPT_S < remaining:
                        self._sleep(exc.retry_after + 0.01)
                        continue
                    if attempts and not only_busy:  # a short wait, past the deadline after real failures:
                        no_slot_in_time = True  # the deadline ended it, not the keys (no "busy, retry")
                        continue
                raise
            except NoUsableKeysError:
                if not call.excluded:
                    raise
                if only_busy:
                    raise self._busy_error(call) from None
                raise UpstreamFailedError(
                    f"image generation failed upstream (no key left to try after {attempts} attempts)",
                    last_error=last_error,
                    attempts=attempts,
                ) from None
            if wait > 0:  # paced: the slot is booked, send when it comes
                self._sleep(wait)
                remaining = deadline - self._monotonic()
            attempts += 1
            timeout = min(self.settings.flux_request_timeout_seconds, remaining)
            try:
                return self._attempt(lease, payload, params, seed, index, timeout, deadline, call)
            except _NextKey as exc:
                last_error, last_kind = str(exc), exc.kind
                only_busy = only_busy and exc.busy
            except _Transient as exc:
                last_error, last_kind = str(exc), exc.kind
                only_busy = False
                transient += 1
                if attempts >= max_attempts:
                    continue  # no back-off before giving up
                pause = random.uniform(0.0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**transient))
                pause = min(pause, max(0.0, deadline - self._monotonic() - MIN_ATTEMPT_S))
                if pause > 0:
                    self._sleep(pause)

    def _attempt(
        self,
        lease: KeyLease,
        payload: dict[str, Any],
        params: GenerationParams,
        seed: int,
        index: int,
        timeout: float,
        deadline: float,
        call: _Call,
    ) -> GeneratedImage:
        """One upstream call with ``lease``; reports the outcome to the pool.

        Raises:
            _NextKey, _Transient: retry (already reported); UpstreamRejectedError: stop.
        """
        kid = lease.key_id
        started = self._monotonic()
        status, headers, raw = self._send(lease, payload, params.model, timeout)
        observability.record_upstream_call((self._monotonic() - started) * 1000, status)
        if status == 200:
            try:
                data = self._image_bytes(raw, deadline)
                content_type, ext = verify_image(
                    data, params.width, params.height, ratio_only=params.aspect_ratio is not None
                )
            except CorruptImageError as exc:
                raise self._transient(kid, f"200 with a bad image: {exc.message}", exc.kind) from None
            elapsed = self._monotonic() - started
            self.pool.report_success(kid, elapsed, model=params.model)
            logger.info("flux ok key_id=%s ms=%d bytes=%d index=%d", kid, elapsed * 1000, len(data), index)
            return GeneratedImage(
                data=data,
                content_type=content_type,
                ext=ext,
                width=params.width,
                height=params.height,
                seed=seed,
                index=index,
                key_id=kid,
                upstream_ms=int(elapsed * 1000),
                model=params.model,
            )
        message, param = _error_detail(raw, status)
        message = self.pool.redact(message)
        if status == 429:
            retry_after = parse_retry_after(headers.get("Retry-After"))
            if call.may_change(kid):
                call.changed = kid
                self.pool.report_rate_limited(kid, retry_after)
            else:  # this call already changed another key: skip this one, write nothing
                wait = self.settings.flux_default_cooldown_seconds if retry_after is None else retry_after
                call.excluded[kid] = time.time() + min(wait, MAX_COOLDOWN_S)
            raise _NextKey(f"429 from key {kid}: {message}", FailureKind.RATE_LIMITED, busy=True)
        if status in (401, 403):
            return self._auth_failure(lease, status, message, param, deadline, call)
        if status == 402:
            self._take_out(kid, f"402: {message}", OUT_OF_CREDITS, call)
            raise _NextKey(f"402 from key {kid}: {message}", FailureKind.KEY_UNUSABLE)
        if status in REJECT_STATUSES:
            logger.info("flux rejected status=%d key_id=%s param=%s", status, kid, param)
            raise UpstreamRejectedError(message, field=param, upstream_status=status)
        if status == 503:  # platform capacity: every key backs off, none is to blame
            retry_after = parse_retry_after(headers.get("Retry-After"))
            until = self.pool.report_busy(params.model, retry_after)
            call.busy_until = max(call.busy_until, until, time.time() + (BUSY_RETRY_S if retry_after is None else 0))
            raise _NextKey(f"503 from upstream: {message}", FailureKind.SERVER, busy=True)
        raise self._transient(kid, f"{status} from upstream: {message}", FailureKind.SERVER)

    def _send(self, lease: KeyLease, payload: dict[str, Any], model: str, timeout: float) -> tuple[int, Any, bytes]:
        """POST ``payload`` with ``lease``'s key; the answer's ``(status, headers, body)``.

        The whole exchange ends within ``timeout`` seconds of wall-clock time
        (:func:`~chalicelib.outbound.deadline`), and at most :data:`MAX_ANSWER_BYTES`
        of body are read. The rate-limit headers of any answer are reported to the pool.

        Raises:
            _Transient: no answer in time, a connection error, or an answer over the cap
                (already reported; an unanswered send is given back to the pacing).
        """
        import requests  # on first use: the first response needs no HTTP client but boto3's

        kid = lease.key_id
        started = self._monotonic()
        answered = False
        ends = time.monotonic() + timeout
        with outbound.deadline(ends) as watch:
            try:
                with self.session.post(
                    self.endpoint,
                    json=payload,
                    headers={"Authorization": f"Bearer {lease.key}"},
                    timeout=(min(CONNECT_TIMEOUT_S, timeout), timeout),
                    stream=True,
                ) as resp:
                    self.pool.report_answer(kid, model, resp.headers)
                    answered = True
                    try:
                        raw = read_bounded(resp, MAX_ANSWER_BYTES, ends)
                    except BodyLimitExceeded as exc:
                        if exc.which == "deadline":
                            raise requests.Timeout() from None
                        too_big = f"{resp.status_code} answer over {MAX_ANSWER_BYTES} bytes"
                        observability.record_upstream_call((self._monotonic() - started) * 1000, resp.status_code)
                        raise self._transient(kid, too_big, FailureKind.SERVER) from None
                    if watch.fired:  # cut in the headers, the answer reads as one the server ended
                        raise requests.Timeout()
                    return resp.status_code, resp.headers, raw
            except requests.RequestException as exc:
                observability.record_upstream_call((self._monotonic() - started) * 1000, None)
                if not answered:  # the send is given back to the pacing only if no headers came
                    self.pool.report_unanswered(kid, model)
                if watch.fired or isinstance(exc, requests.Timeout):
                    raise self._transient(kid, f"timeout after {timeout:.1f} s", FailureKind.TIMEOUT) from None
                raise self._transient(kid, f"connection error ({type(exc).__name__})", FailureKind.CONNECTION) from None

    def _auth_failure(
        self, lease: KeyLease, status: int, message: str, param: str | None, deadline: float, call: _Call
    ) -> GeneratedImage:
        """A 401/403 to a generation request: ask the key itself (``GET /models``).

        The key still authenticates: the refusal was about this request (Together answers 403
        to some request errors; a WAF may answer 403 on content), so the user gets
        :class:`UpstreamRejectedError` and no key changes. The probe is refused with 401/403 too:
        the key is disabled (if this call has not changed another key). No answer: the key is
        skipped for this call and nothing is written.

        Raises:
            UpstreamRejectedError, _NextKey: always (the return type only satisfies the caller).
        """
        kid = lease.key_id
        probe = self._probe(lease, deadline)
        if probe is not None and 200 <= probe < 300:
            logger.info("flux refused status=%d key_id=%s probe=%d: a request error", status, kid, probe)
            raise UpstreamRejectedError(message, field=param, upstream_status=status)
        if probe in (401, 403):
            self._take_out(kid, f"{status}: {message} (GET /models: {probe})", DISABLED, call)
            raise _NextKey(f"{status} from key {kid}, confirmed: {message}", FailureKind.KEY_UNUSABLE)
        call.excluded[kid] = math.inf
        logger.warning("flux refused status=%d key_id=%s probe=%s: unconfirmed, key skipped", status, kid, probe)
        raise _NextKey(f"{status} from key {kid} (probe {probe}): {message}", FailureKind.KEY_UNUSABLE)

    def _take_out(self, kid: str, reason: str, state: str, call: _Call) -> None:
        """Disable ``kid`` (``state``) unless this call already changed another key; then
        only skip it for the rest of this call."""
        if call.may_change(kid):
            call.changed = kid
            self.pool.report_disabled(kid, reason, state=state)
        else:
            call.excluded[kid] = math.inf
            logger.warning("flux key %s not written (one key per call) key_id=%s", state, kid)

    def _probe(self, lease: KeyLease, deadline: float) -> int | None:
        """Status of ``GET {base}/models`` with ``lease``'s key: a cheap authenticated call.

        At most :data:`PROBE_TIMEOUT_S` (and the time left before ``deadline``); the body is
        never read (only the status matters), so its size does not matter. None on a
        timeout, a connection error, or no time left.
        """
        timeout = min(PROBE_TIMEOUT_S, deadline - self._monotonic())
        if timeout < MIN_ATTEMPT_S:
            return None
        import requests  # on first use: the first response needs no HTTP client but boto3's

        try:
            with (
                outbound.deadline(time.monotonic() + timeout) as watch,
                self.session.get(
                    self.models_url,
                    headers={"Authorization": f"Bearer {lease.key}"},
                    timeout=(min(CONNECT_TIMEOUT_S, timeout), timeout),
                    stream=True,
                ) as resp,
            ):
                return None if watch.fired else resp.status_code  # cut: the status line may be all there was
        except requests.RequestException:
            return None

    def _busy_error(self, call: _Call) -> AllKeysCoolingError:
        """503 with a retry time when the attempts were all 429/503: :class:`UpstreamBusyError`
        if upstream answered 503, else the pool's cooling error (or its skipped keys')."""
        if call.busy_until:
            return UpstreamBusyError(retry_at=call.busy_until)
        waits = [until for until in call.excluded.values() if until < math.inf]
        try:
            self.pool.acquire(exclude=call.excluded)
        except AllKeysCoolingError as exc:
            waits.append(exc.retry_at)
        except FluxError:
            pass
        if waits:
            return AllKeysCoolingError(retry_at=min(waits))
        return AllKeysCoolingError(time.time() + self.settings.flux_default_cooldown_seconds)

    def _transient(self, kid: str, message: str, kind: FailureKind) -> _Transient:
        """Report a transient failure on ``kid``; returns the exception to raise."""
        self.pool.report_error(kid, message)
        return _Transient(f"{message} (key {kid})", kind)

    def _image_bytes(self, raw: bytes, deadline: float) -> bytes:
        """The first image of a 200 answer (``raw``, its bytes): base64-decoded, or downloaded
        from its URL before ``deadline`` (``self._monotonic()`` seconds).

        Raises:
            CorruptImageError: no usable data, bad base64, or the download failed.
        """
        try:
            body = json.loads(raw)
            item = body["data"][0]
        except (ValueError, KeyError, IndexError, TypeError, RecursionError):
            raise CorruptImageError("answer has no image data") from None
        if not isinstance(item, dict):
            raise CorruptImageError("answer has no image data")
        kind = item.get("type")
        if item.get("b64_json") and kind in (None, "b64_json"):
            try:
                return base64.b64decode(item["b64_json"], validate=False)
            except (binascii.Error, ValueError, TypeError):
                raise CorruptImageError("image is not valid base64") from None
        if item.get("url"):
            return self._download(str(item["url"]), deadline)
        raise CorruptImageError("answer has no image data")

    def _download(self, url: str, deadline: float) -> bytes:
        """GET an image URL (no Authorization header; a real User-Agent), at most
        :data:`MAX_IMAGE_BYTES`, within the deadline."""
        timeout = max(0.1, min(self.settings.flux_request_timeout_seconds, deadline - self._monotonic()))
        import requests  # on first use: the first response needs no HTTP client but boto3's

        ends = time.monotonic() + timeout
        with outbound.deadline(ends) as watch:
            try:
                with self.session.get(url, timeout=(min(CONNECT_TIMEOUT_S, timeout), timeout), stream=True) as r:
                    if r.status_code != 200:
                        raise CorruptImageError(f"image download answered {r.status_code}", FailureKind.IMAGE_DOWNLOAD)
                    data = read_bounded(r, MAX_IMAGE_BYTES, ends)
                if not watch.fired:  # cut in the headers, the answer reads as one the server ended
                    return data
                raise BodyLimitExceeded("deadline")
            except BodyLimitExceeded as exc:
                if exc.which == "size":
                    raise CorruptImageError(f"image download exceeds {MAX_IMAGE_BYTES} bytes") from None
                raise CorruptImageError(
                    f"image download took over {timeout:.1f} s", FailureKind.IMAGE_DOWNLOAD
                ) from None
            except requests.RequestException as exc:
                why = f"took over {timeout:.1f} s" if watch.fired else f"failed ({type(exc).__name__})"
                raise CorruptImageError(f"image download {why}", FailureKind.IMAGE_DOWNLOAD) from None


_client: FluxClient | None = None
_client_lock = threading.Lock()


def get_flux_client() -> FluxClient:
    """The process-wide client (settings and key pool from the environment)."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                _client = FluxClient()
    return _client


def reset_flux_client() -> None:
    """Close and forget the process-wide client (tests). The key pool is separate:
    see :func:`~chalicelib.flux.keypool.reset_key_pool`."""
    global _client
    with _client_lock:
        if _client is not None:
            _client.close()
        _client = None
