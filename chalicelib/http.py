"""The thin HTTP layer between Chalice routes and the services.

:class:`Api` wraps a Chalice app so that every route gets, in one place:

- authentication (a Clerk session token, checked in-route; see ``chalicelib.auth``)
  for every ``/v1`` route, and the admin rule for admin routes;
- CORS with an allow-list (``CORS_ALLOWED_ORIGINS``): the request's ``Origin`` is
  echoed when allowed, preflight ``OPTIONS`` is answered, credentials are allowed.
  Chalice's ``CORSConfig`` takes a single origin, hence our own handling;
- JSON bodies with a size limit, and every error as ``{"error": {...}}`` JSON:
  a client never sees Chalice's or API Gateway's default 500.

Example::

    api = Api(app)

    @api.route("/v1/images", methods=["POST"])
    def create_images(ctx: RequestContext) -> tuple[int, dict]:
        return 201, images.generate(ctx.principal, ctx.json())
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalice import Chalice, Response
from chalice.app import Request

from chalicelib import observability
from chalicelib.errors import ApiError, Forbidden, ValidationError
from chalicelib.jsonbody import parse_json_object
from chalicelib.settings import get_settings

logger = logging.getLogger("promptcanvas.http")

ALLOWED_HEADERS = "Authorization,Content-Type,Idempotency-Key"
EXPOSED_HEADERS = "Retry-After,Location,Server-Timing"


@dataclass
class RequestContext:
    """What a route handler gets: the Chalice request, the principal (or None on
    public routes) and the URI parameters."""

    request: Request
    principal: Any
    params: dict[str, str]

    @property
    def query(self) -> dict[str, str]:
        """Query-string parameters, each given at most once (the document declares every
        query parameter as one value).

        Raises:
            ValidationError: 400 naming a parameter given more than once.
        """
        params = self.request.query_params or {}
        for name in params:
            if len(params.getlist(name)) > 1:
                raise ValidationError(f"{name} may be given only once", field=name)
        return dict(params)

    def header(self, name: str) -> str | None:
        """A request header, case-insensitively."""
        return self.request.headers.get(name)

    def json(self) -> dict[str, Any]:
        """The JSON object body.

        Raises:
            ApiError: 413 ``body-too-large`` over ``max_body_bytes`` (64 KiB);
                400 ``invalid-json`` when it does not parse or is not an object.
        """
        raw = self.request.raw_body or b""
        if len(raw) > get_settings().max_body_bytes:
            raise ApiError(413, "body-too-large", f"request body exceeds {get_settings().max_body_bytes} bytes")
        return parse_json_object(raw)


def cors_headers(origin: str | None) -> dict[str, str]:
    """CORS response headers for a request from ``origin`` (none if it is not allowed).

    Source: Fetch standard, CORS protocol (credentialed requests need an explicit
    origin, not ``*``, and ``Vary: Origin``).
    """
    allowed = get_settings().cors_allowed_origins
    if not origin or not (origin in allowed or "*" in allowed):
        return {"Vary": "Origin"}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Expose-Headers": EXPOSED_HEADERS,
        "Vary": "Origin",
    }


def error_response(error: ApiError, origin: str | None = None) -> Response:
    """The JSON response for ``error``, with its extra headers and CORS."""
    headers = {"Content-Type": "application/json", **error.headers, **cors_headers(origin)}
    return Response(body=json.dumps(error.body()), status_code=error.status, headers=headers)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response."""
    return Response(
        body=json.dumps(body, default=str),
        status_code=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


class Api:
    """Registers routes on a Chalice app with auth, CORS and error handling."""

    def __init__(self, app: Chalice) -> None:
        self.app = app
        self._preflight_paths: set[str] = set()

    def route(
        self,
        path: str,
        methods: list[str],
        *,
        auth: bool | None = None,
        admin: bool = False,
        content_types: list[str] | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register ``handler(ctx) -> body | (status, body) | Response`` on ``path``.

        Args:
            path: Chalice route path, e.g. ``"/v1/images/{image_id}"``.
            methods: HTTP methods (``OPTIONS`` is added for preflight automatically).
            auth: require a verified session token (default: True for ``/v1`` paths).
            admin: also require the admin role (403 ``forbidden`` otherwise).
            content_types: request content types Chalice lets through (default JSON only;
                ``["*/*"]`` when the service checks the type itself, e.g. multipart uploads).
        """
        needs_auth = path.startswith("/v1") if auth is None else auth

        def decorator(handler: Callable[..., Any]) -> Callable[..., Any]:
            def view(**params: str) -> Response:
                request = self.app.current_request
                origin = request.headers.get("origin")
                try:
                    principal = None
                    if needs_auth or admin:
                        from chalicelib.auth import authenticate

                        principal = authenticate(request.headers)
                        observability.bind(user_id=principal.user_id)
                        if admin and not principal.is_admin:
                            raise Forbidden()
                    result = handler(RequestContext(request, principal, params))
                    response = _to_response(result)
                except ApiError as exc:
                    response = error_response(exc, origin)
                except Exception:  # never a bare 500 from Chalice: log, answer JSON
                    logger.exception("unhandled error on %s %s", request.method, path)
                    response = error_response(ApiError(500, "internal-error", "internal error"), origin)
                else:
                    response.headers.update(cors_headers(origin))
                return response

            view.__name__ = handler.__name__
            view.__doc__ = handler.__doc__
            extra = {"content_types": content_types} if content_types else {}
            self.app.route(path, methods=methods, **extra)(view)
            self._register_preflight(path)
            return handler

        return decorator

    def _register_preflight(self, path: str) -> None:
        if path in self._preflight_paths:
            return
        self._preflight_paths.add(path)

        def preflight(**_params: str) -> Response:
            origin = self.app.current_request.headers.get("origin")
            headers = cors_headers(origin)
            if "Access-Control-Allow-Origin" in headers:
                headers.update(
                    {
                        "Access-Control-Allow-Methods": "GET,POST,PUT,PATCH,DELETE,OPTIONS",
                        "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                        "Access-Control-Max-Age": "600",
                    }
                )
            return Response(body="", status_code=204, headers=headers)

        preflight.__name__ = "preflight_" + "".join(c if c.isalnum() else "_" for c in path)
        self.app.route(path, methods=["OPTIONS"])(preflight)


def _to_response(result: Any) -> Response:
    if isinstance(result, Response):
        return result
    if isinstance(result, tuple):
        status, body = result[0], result[1]
        headers = result[2] if len(result) > 2 else None
        if status == 204:
            return Response(body="", status_code=204, headers=headers or {})
        return json_response(body, status, headers)
    return json_response(result)
