"""The thin HTTP layer between Chalice routes and the services.

:class:`Api` wraps a Chalice app so that every route gets, in one place:

- authentication (a Clerk session token, checked in-route; see ``chalicelib.auth``)
  for every ``/v1`` route, and the admin rule for admin routes;
- CSRF protection: a state-changing request (POST/PUT/PATCH/DELETE) authenticated by the
  ``__session`` cookie must carry an ``Origin`` listed in ``CORS_ALLOWED_ORIGINS`` (403
  ``origin-not-allowed`` otherwise, a missing ``Origin`` too). Bearer requests are not
  subject to it: a cross-site page cannot set ``Authorization`` without a CORS preflight.
  Source: OWASP CSRF Prevention Cheat Sheet ("Verifying origin with standard headers");
- request media types: a state-changing request with a body (or a ``Content-Type``) must
  send one of the route's ``content_types`` (default ``application/json``; parameters such
  as ``charset`` are ignored), else 415 ``unsupported-media-type``. Chalice's own check is
  turned off (every route is registered with ``*/*``) because it accepts any header that
  merely *contains* the type, e.g. ``text/plain; application/json`` (a CORS-safelisted,
  preflight-free type), and answers in its own non-JSON error shape;
- a per-user rate limit on every state-changing ``/v1`` route
  (``MUTATION_RATE_LIMIT_PER_MINUTE``, 429 ``rate-limited`` with ``Retry-After``), so new
  routes get it without asking; ``rate_limit=False`` opts a route out;
- CORS with an allow-list (``CORS_ALLOWED_ORIGINS``): the request's ``Origin`` is
  echoed when allowed, preflight ``OPTIONS`` is answered, credentials are allowed.
  Chalice's ``CORSConfig`` takes a single origin, hence our own handling;
- JSON bodies with a size limit, and every error as ``{"error": {...}}`` JSON:
  a client never sees Chalice's or API Gateway's default 500;
- the one table from error cause to HTTP status (:data:`ERROR_STATUS`): services and
  domain modules raise :class:`~chalicelib.errors.DomainError` with an
  :class:`~chalicelib.errors.ErrorCode`; :func:`error_response` picks the status here and
  adds ``Retry-After`` (from ``retry_after_s``) and, on a 401, ``WWW-Authenticate``
  (RFC 6750 section 3: a bare ``Bearer`` challenge without a token, else
  ``Bearer error="invalid_token"``).

Checks run in this order: authentication (401), admin (403), Origin (403), media type
(415), rate limit (429); a request refused by one of them reaches no service and is not
counted by the rate limit.

Example::

    api = Api(app)

    @api.route("/v1/images", methods=["POST"])
    def create_images(ctx: RequestContext) -> tuple[int, dict]:
        return 201, images.generate(ctx.principal.user_id, ctx.json()).body
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalice import Chalice, Response
from chalice.app import Request

from chalicelib import observability
from chalicelib.aws import counting_calls, server_timing
from chalicelib.errors import DomainError, ErrorCode, Forbidden, ValidationError
from chalicelib.jsonbody import parse_json_object
from chalicelib.settings import get_settings

logger = logging.getLogger("promptcanvas.http")

ALLOWED_HEADERS = "Authorization,Content-Type,Idempotency-Key"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_ONLY = ("application/json",)
ANY_CONTENT_TYPE = "*/*"
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

    @property
    def source_ip(self) -> str:
        """The client address API Gateway saw (``requestContext.identity.sourceIp``), or ``""``."""
        identity = (self.request.context or {}).get("identity") or {}
        return str(identity.get("sourceIp") or "")

    @property
    def base_url(self) -> str:
        """Where this API is reached: ``{scheme}://{host}`` (``X-Forwarded-Proto``, default ``http``,
        and ``Host``), plus ``/{stage}`` on an API Gateway ``execute-api`` host, whose paths start
        with the stage. Used for links when ``SHARE_BASE_URL`` is not set."""
        proto = (self.header("x-forwarded-proto") or "http").split(",")[0].strip().lower()
        scheme = "https" if proto == "https" else "http"
        host = self.header("host") or "localhost"
        stage = (self.request.context or {}).get("stage")
        if stage and host.endswith(".amazonaws.com"):
            return f"{scheme}://{host}/{stage}"
        return f"{scheme}://{host}"

    def json(self) -> dict[str, Any]:
        """The JSON object body.

        Raises:
            DomainError: ``body-too-large`` over ``max_body_bytes`` (64 KiB);
                ``invalid-json`` when it does not parse or is not an object.
        """
        raw = self.request.raw_body or b""
        if len(raw) > get_settings().max_body_bytes:
            limit = get_settings().max_body_bytes
            raise DomainError(ErrorCode.BODY_TOO_LARGE, f"request body exceeds {limit} bytes")
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


def media_type(content_type: str | None) -> str | None:
    """The media type of a ``Content-Type`` value, lower-cased, without parameters (RFC 9110 8.3.1).

    ``"application/json; charset=utf-8"`` -> ``"application/json"``; ``"text/plain; application/json"``
    -> ``"text/plain"``; ``None`` or blank -> ``None``.
    """
    if content_type is None:
        return None
    value = content_type.split(";", 1)[0].strip().lower()
    return value or None


def check_content_type(request: Request, accepted: tuple[str, ...]) -> None:
    """Refuse a state-changing request whose body is not of an ``accepted`` media type.

    A request without a body and without ``Content-Type`` passes (e.g. ``POST .../cancel``).
    ``accepted`` containing ``*/*`` lets everything through (the service checks itself).

    Raises:
        DomainError: 415 ``unsupported-media-type``.
    """
    if request.method not in WRITE_METHODS or ANY_CONTENT_TYPE in accepted:
        return
    header = request.headers.get("content-type")
    if header is None and not request.raw_body:
        return
    if media_type(header) not in accepted:
        raise DomainError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"send Content-Type: {' or '.join(accepted)}",
            field="Content-Type",
        )


def check_origin(request: Request, principal: Any) -> None:
    """CSRF check: a cookie-authenticated state-changing request must come from an allowed Origin.

    Allowed means listed exactly in ``CORS_ALLOWED_ORIGINS``; a ``*`` entry does not count here,
    and neither does a missing or ``null`` ``Origin``. Bearer-authenticated requests pass.
    Source: OWASP CSRF Prevention Cheat Sheet; Fetch standard (browsers send ``Origin`` on every
    cross-origin request and on same-origin POSTs).

    Raises:
        DomainError: 403 ``origin-not-allowed``.
    """
    from chalicelib.auth.clerk import TOKEN_SOURCE_COOKIE

    if request.method not in WRITE_METHODS or getattr(principal, "token_source", None) != TOKEN_SOURCE_COOKIE:
        return
    origin = request.headers.get("origin")
    if not origin or origin not in get_settings().cors_allowed_origins:
        raise DomainError(
            ErrorCode.ORIGIN_NOT_ALLOWED,
            "a cookie-authenticated write must come from an allowed Origin; send Authorization: Bearer instead",
            field="Origin",
        )


#: The HTTP status of every error code: the one place where a domain error becomes HTTP.
ERROR_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.INVALID_CURSOR: 400,
    ErrorCode.INVALID_MULTIPART: 400,
    ErrorCode.UNKNOWN_FIELD: 400,
    ErrorCode.TOO_MANY_IMAGES: 400,
    ErrorCode.UNSUPPORTED_PARAMETER: 400,
    ErrorCode.MODEL_RETIRED: 400,
    ErrorCode.MODEL_UNAVAILABLE: 400,
    ErrorCode.UNSUPPORTED_CONTENT_TYPE: 400,
    ErrorCode.FILE_TOO_LARGE: 400,
    ErrorCode.BODY_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    # every authentication failure is a 401, jwks-unavailable too: the caller cannot be
    # authenticated, and the API never answers 500
    ErrorCode.TOKEN_MISSING: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.TOKEN_NOT_ACTIVE_YET: 401,
    ErrorCode.TOKEN_IAT_IN_THE_FUTURE: 401,
    ErrorCode.TOKEN_INVALID_SIGNATURE: 401,
    ErrorCode.TOKEN_INVALID_ISSUER: 401,
    ErrorCode.TOKEN_INVALID_AUTHORIZED_PARTIES: 401,
    ErrorCode.TOKEN_INVALID_ALGORITHM: 401,
    ErrorCode.TOKEN_INVALID: 401,
    ErrorCode.TOKEN_MISSING_CLAIM: 401,
    ErrorCode.TOKEN_UNKNOWN_KID: 401,
    ErrorCode.TOKEN_SESSION_PENDING: 401,
    ErrorCode.JWKS_UNAVAILABLE: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.ORIGIN_NOT_ALLOWED: 403,
    ErrorCode.STORAGE_QUOTA_EXCEEDED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.JOB_FINISHED: 409,
    ErrorCode.NOTHING_TO_RETRY: 409,
    ErrorCode.NOTHING_TO_ARCHIVE: 409,
    ErrorCode.IDEMPOTENCY_KEY_IN_PROGRESS: 409,
    ErrorCode.UPLOAD_CHANGED: 409,
    ErrorCode.UPLOAD_PENDING: 409,
    ErrorCode.UPLOAD_NOT_AN_IMAGE: 422,
    ErrorCode.UPLOAD_REJECTED: 422,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 422,
    ErrorCode.INVALID_PROMPT_FILE: 422,
    ErrorCode.WEBHOOK_URL_REFUSED: 422,
    ErrorCode.TOGETHER_KEY_REFUSED: 422,
    ErrorCode.TOGETHER_KEY_UNUSABLE: 422,
    ErrorCode.UPSTREAM_REJECTED: 422,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.QUOTA_EXCEEDED: 429,
    ErrorCode.BUDGET_EXCEEDED: 429,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.UPSTREAM_FAILED: 502,
    ErrorCode.STORAGE_FAILED: 502,
    ErrorCode.KEYS_COOLING: 503,
    ErrorCode.UPSTREAM_BUSY: 503,
    ErrorCode.KEY_HEALTH_UNAVAILABLE: 503,
    ErrorCode.NO_USABLE_KEYS: 503,
    ErrorCode.SHARE_UNAVAILABLE: 503,
}


def error_status(code: ErrorCode) -> int:
    """The HTTP status of ``code`` (:data:`ERROR_STATUS`; 500 for a code missing there,
    which a unit test forbids)."""
    return ERROR_STATUS.get(code, 500)


def error_headers(error: DomainError) -> dict[str, str]:
    """The HTTP headers ``error`` implies: ``Retry-After`` (whole seconds, at least 1;
    RFC 9110 section 10.2.3) when it has ``retry_after_s``, and ``WWW-Authenticate`` on
    a 401 (RFC 6750 section 3)."""
    headers: dict[str, str] = {}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    if error_status(error.code) == 401:
        missing = error.code is ErrorCode.TOKEN_MISSING
        headers["WWW-Authenticate"] = "Bearer" if missing else 'Bearer error="invalid_token"'
    return headers


def error_response(error: DomainError, origin: str | None = None) -> Response:
    """The JSON response for ``error``: its status from :data:`ERROR_STATUS`, its
    headers from :func:`error_headers`, and CORS."""
    headers = {"Content-Type": "application/json", **error_headers(error), **cors_headers(origin)}
    return Response(body=json.dumps(error.body()), status_code=error_status(error.code), headers=headers)


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
        rate_limit: bool = True,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register ``handler(ctx) -> body | (status, body) | Response`` on ``path``.

        Args:
            path: Chalice route path, e.g. ``"/v1/images/{image_id}"``.
            methods: HTTP methods (``OPTIONS`` is added for preflight automatically).
            auth: require a verified session token (default: True for ``/v1`` paths).
            admin: also require the admin role (403 ``forbidden`` otherwise).
            content_types: media types a state-changing request body may have (default
                ``["application/json"]``; e.g. ``["application/json", "multipart/form-data"]``;
                ``["*/*"]`` when the service checks the type itself). Others get 415.
            rate_limit: count authenticated POST/PUT/PATCH/DELETE requests against the user's
                ``MUTATION_RATE_LIMIT_PER_MINUTE`` (default True).
        """
        needs_auth = path.startswith("/v1") if auth is None else auth
        accepted = tuple(t.strip().lower() for t in (content_types or JSON_ONLY))

        def decorator(handler: Callable[..., Any]) -> Callable[..., Any]:
            def view(**params: str) -> Response:
                request = self.app.current_request
                origin = request.headers.get("origin")
                with counting_calls() as calls:  # the AWS calls of this request: Server-Timing
                    try:
                        principal = None
                        if needs_auth or admin:
                            from chalicelib.auth import authenticate

                            principal = authenticate(request.headers)
                            observability.bind(user_id=principal.user_id)
                            if admin and not principal.is_admin:
                                raise Forbidden()
                            check_origin(request, principal)
                        check_content_type(request, accepted)
                        if principal is not None and rate_limit and request.method in WRITE_METHODS:
                            from chalicelib.services import usage

                            usage.hit_mutation_rate_limit(principal.user_id)
                        result = handler(RequestContext(request, principal, params))
                        response = _to_response(result)
                    except DomainError as exc:
                        response = error_response(exc, origin)
                    except Exception:  # never a bare 500 from Chalice: log, answer JSON
                        logger.exception("unhandled error on %s %s", request.method, path)
                        response = error_response(DomainError(ErrorCode.INTERNAL_ERROR, "internal error"), origin)
                    else:
                        response.headers.update(cors_headers(origin))
                response.headers["Server-Timing"] = ", ".join(
                    t for t in (response.headers.get("Server-Timing"), server_timing(calls)) if t
                )
                return response

            view.__name__ = handler.__name__
            view.__doc__ = handler.__doc__
            # Chalice's content-type check is replaced by check_content_type (see the module doc).
            self.app.route(path, methods=methods, content_types=[ANY_CONTENT_TYPE])(view)
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
        self.app.route(path, methods=["OPTIONS"], content_types=[ANY_CONTENT_TYPE])(preflight)


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
