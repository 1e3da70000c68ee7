"""Domain errors: plain exceptions that carry a typed cause, never an HTTP status.

Every error a client can see has an :class:`ErrorCode` (the stable, kebab-case JSON
``code``). Services and domain modules raise :class:`DomainError` (or a subclass);
only the edge, :mod:`chalicelib.http`, turns one into a response, through its single
table from code to HTTP status (:data:`chalicelib.http.ERROR_STATUS`). The body is
``{"error": {"code", "message", "field"?}}``.

Example::

    raise ValidationError("steps must be between 1 and 12", field="steps")
    raise DomainError(ErrorCode.JOB_FINISHED, "the job has already finished")
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Every error code of the API (the JSON ``error.code``)."""

    # the request itself
    INVALID_REQUEST = "invalid-request"
    INVALID_JSON = "invalid-json"
    INVALID_CURSOR = "invalid-cursor"
    INVALID_MULTIPART = "invalid-multipart"
    UNKNOWN_FIELD = "unknown-field"
    TOO_MANY_IMAGES = "too-many-images"
    BODY_TOO_LARGE = "body-too-large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type"
    UNSUPPORTED_PARAMETER = "unsupported-parameter"
    MODEL_RETIRED = "model-retired"
    MODEL_UNAVAILABLE = "model-unavailable"
    UNSUPPORTED_CONTENT_TYPE = "unsupported-content-type"
    FILE_TOO_LARGE = "file-too-large"
    # authentication (codes after Clerk's SDK reasons, see chalicelib.auth.exceptions)
    TOKEN_MISSING = "token-missing"
    TOKEN_EXPIRED = "token-expired"
    TOKEN_NOT_ACTIVE_YET = "token-not-active-yet"
    TOKEN_IAT_IN_THE_FUTURE = "token-iat-in-the-future"
    TOKEN_INVALID_SIGNATURE = "token-invalid-signature"
    TOKEN_INVALID_ISSUER = "token-invalid-issuer"
    TOKEN_INVALID_AUTHORIZED_PARTIES = "token-invalid-authorized-parties"
    TOKEN_INVALID_ALGORITHM = "token-invalid-algorithm"
    TOKEN_INVALID = "token-invalid"
    TOKEN_MISSING_CLAIM = "token-missing-claim"
    TOKEN_UNKNOWN_KID = "token-unknown-kid"
    TOKEN_SESSION_PENDING = "token-session-pending"
    JWKS_UNAVAILABLE = "jwks-unavailable"
    # permissions and resources
    FORBIDDEN = "forbidden"
    ORIGIN_NOT_ALLOWED = "origin-not-allowed"
    NOT_FOUND = "not-found"
    # the resource's state
    JOB_FINISHED = "job-finished"
    NOTHING_TO_RETRY = "nothing-to-retry"
    NOTHING_TO_ARCHIVE = "nothing-to-archive"
    UPLOAD_CHANGED = "upload-changed"
    UPLOAD_PENDING = "upload-pending"
    UPLOAD_NOT_AN_IMAGE = "upload-not-an-image"
    UPLOAD_REJECTED = "upload-rejected"
    IDEMPOTENCY_KEY_IN_PROGRESS = "idempotency-key-in-progress"
    IDEMPOTENCY_KEY_REUSED = "idempotency-key-reused"
    INVALID_PROMPT_FILE = "invalid-prompt-file"
    WEBHOOK_URL_REFUSED = "webhook-url-refused"
    TOGETHER_KEY_REFUSED = "together-key-refused"
    TOGETHER_KEY_UNUSABLE = "together-key-unusable"
    # limits
    RATE_LIMITED = "rate-limited"
    QUOTA_EXCEEDED = "quota-exceeded"
    BUDGET_EXCEEDED = "budget-exceeded"
    SHARE_UNAVAILABLE = "share-unavailable"
    STORAGE_QUOTA_EXCEEDED = "storage-quota-exceeded"
    # upstream and storage
    UPSTREAM_REJECTED = "upstream-rejected"
    UPSTREAM_FAILED = "upstream-failed"
    STORAGE_FAILED = "storage-failed"
    KEYS_COOLING = "keys-cooling"
    UPSTREAM_BUSY = "upstream-busy"
    KEY_HEALTH_UNAVAILABLE = "key-health-unavailable"
    NO_USABLE_KEYS = "no-usable-keys"
    INTERNAL_ERROR = "internal-error"


class DomainError(Exception):
    """An error with a typed cause and a message for people.

    Args:
        code: the cause (an :class:`ErrorCode`, or its string value).
        message: human-readable message; never contains secrets.
        field: the request field at fault, when there is one.
        retry_after_s: seconds after which the same request may succeed (rate limits,
            cooling keys, a request still in progress); the edge sends ``Retry-After``.

    Raises:
        ValueError: ``code`` is not an :class:`ErrorCode`.
    """

    def __init__(
        self,
        code: ErrorCode | str,
        message: str,
        field: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.field = field
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, Any]:
        """The JSON body: ``{"error": {"code", "message", "field"?}}``."""
        err: dict[str, Any] = {"code": self.code.value, "message": self.message}
        if self.field is not None:
            err["field"] = self.field
        return {"error": err}


class ValidationError(DomainError):
    """Bad input, naming the field: ``invalid-request`` or a more specific code
    (``invalid-json``, ``unknown-field``, ``invalid-cursor``, ``invalid-multipart``)."""

    def __init__(self, message: str, field: str | None = None, code: ErrorCode | str = ErrorCode.INVALID_REQUEST):
        super().__init__(code, message, field=field)


class NotFound(DomainError):
    """``not-found``: the resource does not exist *or belongs to someone else*."""

    def __init__(self, what: str = "resource") -> None:
        super().__init__(ErrorCode.NOT_FOUND, f"{what} not found")


class Forbidden(DomainError):
    """``forbidden``: authenticated but not allowed (admin routes only)."""

    def __init__(self, message: str = "admin role required") -> None:
        super().__init__(ErrorCode.FORBIDDEN, message)
