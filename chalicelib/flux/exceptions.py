"""Errors the Flux client raises; each is a :class:`~chalicelib.errors.DomainError`
whose :class:`~chalicelib.errors.ErrorCode` the edge maps to an HTTP status
(:data:`chalicelib.http.ERROR_STATUS`).

No message or attribute here ever contains an API key: keys are named by their
``key_id`` (a sha256 prefix) and upstream messages are redacted before use.

Upstream status meanings follow Together's error-code table,
https://docs.together.ai/docs/error-codes (401 invalid key, 402 out of credits,
429 rate limited, 500 server error, 503 engine overloaded).
"""

from __future__ import annotations

import time
from enum import StrEnum

from chalicelib.errors import DomainError, ErrorCode


class FailureKind(StrEnum):
    """What one failed upstream attempt was, so callers decide on a type, never on message text.

    ``TIMEOUT`` no answer within the attempt's timeout; ``CONNECTION`` the connection
    failed; ``SERVER`` a 5xx (or other unexpected) status; ``CORRUPT_IMAGE`` a 200 whose
    image bytes are missing, undecodable, of the wrong size or format; ``IMAGE_DOWNLOAD``
    the image URL of a 200 could not be fetched (a transient network failure, not a bad
    image); ``RATE_LIMITED`` a 429; ``KEY_UNUSABLE`` a 401/402/403.
    """

    TIMEOUT = "timeout"
    CONNECTION = "connection"
    SERVER = "server-error"
    CORRUPT_IMAGE = "corrupt-image"
    IMAGE_DOWNLOAD = "image-download"
    RATE_LIMITED = "rate-limited"
    KEY_UNUSABLE = "key-unusable"


class FluxError(DomainError):
    """Base class of every error raised by :mod:`chalicelib.flux`."""


class AllKeysCoolingError(FluxError):
    """503 ``keys-cooling``: every usable key is rate limited (429) right now.

    Raised by :meth:`KeyPool.acquire` (and so by :meth:`FluxClient.generate`) when
    no key is healthy but at least one is cooling down and will be usable again.

    Attributes:
        retry_at: epoch seconds when the first key's cooldown ends.
        retry_after: seconds from now until ``retry_at`` (>= 0).

    The edge answers 503 with ``Retry-After`` = ``ceil(retry_after)``, at least 1
    (RFC 9110 section 10.2.3: a non-negative integer number of seconds).

    Subclasses (:class:`UpstreamBusyError`, :class:`KeyHealthUnavailableError`) are other
    "come back at ``retry_at``" conditions: whoever handles a cooling pool (the API's 503,
    the batch worker's deferral without spending an attempt) handles them alike.
    """

    error_code = ErrorCode.KEYS_COOLING
    what = "image generation is busy"

    def __init__(self, retry_at: float, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.retry_at = float(retry_at)
        self.retry_after = max(0.0, self.retry_at - now)
        seconds = max(1, int(-(-self.retry_after // 1)))
        super().__init__(
            type(self).error_code,
            f"{type(self).what}; retry in {seconds} s",
            retry_after_s=seconds,
        )


class UpstreamBusyError(AllKeysCoolingError):
    """503 ``upstream-busy``: Together answered 503 (no capacity on its side) until the
    deadline ran out. No key is to blame and none changed state.

    ``retry_at`` comes from the last 503's ``Retry-After`` when it had one, else a
    short default. Together's error-code table, https://docs.together.ai/docs/error-codes:
    503 "engine overloaded", retry after a brief wait.
    """

    error_code = ErrorCode.UPSTREAM_BUSY
    what = "the image service upstream is at capacity"


class KeyHealthUnavailableError(AllKeysCoolingError):
    """503 ``key-health-unavailable``: this instance has not yet read the key-health table
    (DynamoDB failed), so it cannot tell which keys are disabled or out of credits, and
    uses none (fail closed). ``retry_at`` is when it reads again (about a second away).
    """

    error_code = ErrorCode.KEY_HEALTH_UNAVAILABLE
    what = "image generation is starting up"


class NoUsableKeysError(FluxError):
    """503 ``no-usable-keys``: no key can serve until an operator acts.

    Raised when no key is configured (or the Secrets Manager secret cannot be
    read), or every key is ``disabled`` (401/403) or ``out_of_credits`` (402).
    Such keys stay out until :meth:`KeyPool.reset_key`.
    """

    def __init__(self, message: str = "image generation is unavailable; no usable upstream key") -> None:
        super().__init__(ErrorCode.NO_USABLE_KEYS, message)


class UpstreamRejectedError(FluxError):
    """422 ``upstream-rejected``: Together refused the request itself (400/404/413/422,
    or a 401/403 while the same key still authenticates on ``GET /v1/models``).

    Not retried: the same parameters would be refused by every key. ``message``
    is upstream's message (redacted); ``field`` is upstream's ``param`` when given.

    Attributes:
        upstream_status: Together's HTTP status.
    """

    def __init__(self, message: str, field: str | None = None, upstream_status: int = 422) -> None:
        super().__init__(ErrorCode.UPSTREAM_REJECTED, message, field=field)
        self.upstream_status = upstream_status


class UpstreamFailedError(FluxError):
    """502 ``upstream-failed``: attempts or the deadline ran out on transient failures.

    Raised after 5xx answers, timeouts, connection errors or corrupt images
    exhausted the attempt budget or the call's deadline. The client may retry later.

    Attributes:
        retryable: always True.
        last_error: the last failure, e.g. ``"503 from key 1a2b3c4d5e6f: overloaded"``
            (for people and logs only; decide on ``last_kind``).
        last_kind: the :class:`FailureKind` of the last failed attempt (None: unknown).
        attempts: upstream attempts made.
    """

    retryable = True

    def __init__(
        self,
        message: str,
        last_error: str | None = None,
        attempts: int = 0,
        last_kind: FailureKind | None = None,
    ) -> None:
        super().__init__(ErrorCode.UPSTREAM_FAILED, message)
        self.last_error = last_error
        self.last_kind = last_kind
        self.attempts = attempts


class CorruptImageError(UpstreamFailedError):
    """An upstream image that does not decode, has the wrong size, or a 200 answer
    without usable image data (``kind`` :attr:`FailureKind.CORRUPT_IMAGE`), or whose
    image URL could not be downloaded (``kind`` :attr:`FailureKind.IMAGE_DOWNLOAD`).

    Internal to one attempt: the client reports it against the key and retries; it
    only escapes as the ``last_error`` of an :class:`UpstreamFailedError`. Being a
    subclass, it would still map to a 502 if it ever escaped.
    """

    def __init__(self, message: str, kind: FailureKind = FailureKind.CORRUPT_IMAGE) -> None:
        super().__init__(message, last_error=message, last_kind=kind)
        self.kind = kind
