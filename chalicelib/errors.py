"""The API's error type and its JSON shape.

Every error a client sees is ``{"error": {"code", "message", "field"?}}`` with a
4xx or 503 status. Services raise :class:`ApiError` (or a subclass); the route
layer turns it into a response. Nothing else may reach the client as a 500.

Example::

    raise ApiError(400, "invalid-field", "steps must be between 1 and 12", field="steps")
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error with an HTTP status and a stable, machine-readable code.

    Args:
        status: HTTP status code (4xx, or 503 for upstream unavailability).
        code: kebab-case error code, e.g. ``"token-expired"``.
        message: human-readable message; never contains secrets.
        field: the request field at fault, when there is one.
        headers: extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body: ``{"error": {"code", "message", "field"?}}``."""
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            err["field"] = self.field
        return {"error": err}


class ValidationError(ApiError):
    """400 ``invalid-request`` (or a more specific code) naming the field."""

    def __init__(self, message: str, field: str | None = None, code: str = "invalid-request") -> None:
        super().__init__(400, code, message, field=field)


class NotFound(ApiError):
    """404: the resource does not exist *or belongs to someone else*."""

    def __init__(self, what: str = "resource") -> None:
        super().__init__(404, "not-found", f"{what} not found")


class Forbidden(ApiError):
    """403: authenticated but not allowed (admin routes only)."""

    def __init__(self, message: str = "admin role required") -> None:
        super().__init__(403, "forbidden", message)
