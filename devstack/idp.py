"""The dev identity provider: a local stand-in for Clerk's Frontend API (dev tool only).

It holds an RS256 key pair made when it is created and mints Clerk-shaped *session tokens*
(Clerk session token v2, https://clerk.com/docs/guides/sessions/session-tokens): ``iss``, ``sub``,
``sid``, ``azp``, ``iat``, ``nbf``, ``exp``, ``v: 2`` and, for an active organization,
``o: {"id", "rol"}`` with the role *without* the ``org:`` prefix (``"admin"``). The public keys are
published as a JWKS, exactly where Clerk publishes them (``{issuer}/.well-known/jwks.json``), so the
API verifies these tokens with the same code path it uses against a real Clerk instance.

HTTP (werkzeug, threaded, in a daemon thread):

- ``GET /.well-known/jwks.json``: RFC 7517 JWK Set (``kid``, ``kty``, ``use: sig``, ``alg: RS256``,
  ``n``, ``e``); counted in :attr:`DevIdentityProvider.jwks_fetches`.
- ``GET /.well-known/openid-configuration``: ``issuer``, ``jwks_uri``, ``token_endpoint``.
- ``POST /token`` with JSON ``{"user_id", "org_id"?, "org_role"?, "azp"?, "ttl_seconds"?}``
  -> ``{"token", "expires_at" (epoch seconds), "user_id"}``; 400 ``{"error": {...}}`` on bad input.
- ``POST /admin/rotate`` (optional JSON ``{"keep_old": bool}``) -> ``{"kid"}``.
- ``GET /health`` -> ``{"status": "ok"}``.

Every response carries permissive CORS headers and ``OPTIONS`` preflights are answered, because
the local web client calls ``/token`` from another origin. Nothing here is meant to be secure:
anyone who can reach the port can mint a token for any user. Never deploy it.

Example::

    idp = DevIdentityProvider(default_azp="http://localhost:8001").start()
    token = idp.mint("user_123", org_id="org_1", org_role="admin")
    idp.stop()

Run alone: ``python -m devstack.idp --port 8200``.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import signal
import sys
import threading
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from werkzeug.exceptions import BadRequest, HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

DEFAULT_TTL_SECONDS = 60
MAX_TTL_SECONDS = 24 * 3600
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
ROLE_RE = re.compile(r"^[A-Za-z0-9_:-]{1,64}$")
MAX_AZP_CHARS = 2048
MAX_BODY_BYTES = 16 * 1024

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization",
    "Access-Control-Max-Age": "600",
}


class _Key:
    """One RSA key pair and its key id."""

    def __init__(self) -> None:
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "ins_dev_" + secrets.token_hex(8)

    def jwk(self) -> dict[str, Any]:
        """The public half as an RFC 7517 JWK."""
        jwk = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {"kid": self.kid, "kty": "RSA", "use": "sig", "alg": "RS256", "n": jwk["n"], "e": jwk["e"]}


class _QuietHandler(WSGIRequestHandler):
    """werkzeug's request handler without the per-request access log."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class DevIdentityProvider:
    """A local Clerk-like token issuer with a JWKS endpoint.

    Args:
        host: interface to bind (default loopback).
        port: TCP port; 0 picks a free one.
        issuer: the ``iss`` claim; defaults to :attr:`url` (as Clerk's issuer is its Frontend API URL).
        default_azp: ``azp`` for tokens that do not name one; omitted from tokens when ``None``.
        token_ttl: default token lifetime in seconds (Clerk's default is 60).

    Attributes:
        jwks_fetches: how many times ``GET /.well-known/jwks.json`` was served (tests count fetches).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        issuer: str | None = None,
        default_azp: str | None = None,
        token_ttl: int = DEFAULT_TTL_SECONDS,
    ) -> None:
        self.host = host
        self.port = port
        self._issuer = issuer
        self.default_azp = default_azp
        self.token_ttl = token_ttl
        self.jwks_fetches = 0
        self._lock = threading.Lock()
        self._key = _Key()
        self._old_keys: list[_Key] = []
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        self.log_requests = False  # set before start() to log each request (main() does)
        self._routes = Map(
            [
                Rule("/.well-known/jwks.json", endpoint="jwks", methods=["GET"]),
                Rule("/.well-known/openid-configuration", endpoint="openid", methods=["GET"]),
                Rule("/token", endpoint="token", methods=["POST"]),
                Rule("/admin/rotate", endpoint="rotate", methods=["POST"]),
                Rule("/health", endpoint="health", methods=["GET"]),
            ]
        )

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> DevIdentityProvider:
        """Bind the port and serve in a daemon thread. Returns ``self``.

        Raises:
            RuntimeError: already started.
            OSError: the port cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("DevIdentityProvider already started")
        handler = WSGIRequestHandler if self.log_requests else _QuietHandler
        self._server = make_server(self.host, self.port, self._wsgi, threaded=True, request_handler=handler)
        self._url = f"http://{self.host}:{self._server.port}"
        server = self._server
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.05), name="dev-idp", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (idempotent). Keys and counters are kept."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> DevIdentityProvider:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- addresses

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8200`` (only after :meth:`start`)."""
        if self._url is None:
            raise RuntimeError("DevIdentityProvider not started")
        return self._url

    @property
    def issuer(self) -> str:
        """The ``iss`` claim of minted tokens (the ``issuer`` argument, else :attr:`url`)."""
        return self._issuer or self.url

    @property
    def jwks_url(self) -> str:
        return self.url + "/.well-known/jwks.json"

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    # ----------------------------------------------------------------- keys

    @property
    def kid(self) -> str:
        """The key id of the current signing key."""
        return self._key.kid

    @property
    def private_key(self) -> rsa.RSAPrivateKey:
        """The current signing key (tests use it to forge tokens)."""
        return self._key.private_key

    def public_pem(self) -> str:
        """The current public key as PEM (SubjectPublicKeyInfo), the shape of ``CLERK_JWT_KEY``."""
        return (
            self._key.private_key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def jwks(self) -> dict[str, Any]:
        """The published JWK Set: the current key first, then any kept old keys."""
        with self._lock:
            keys = [self._key, *self._old_keys]
        return {"keys": [k.jwk() for k in keys]}

    def rotate(self, keep_old: bool = True) -> str:
        """Make a new key pair and sign with it from now on.

        Args:
            keep_old: keep publishing the previous keys (tokens they signed stay verifiable).

        Returns:
            The new key id.
        """
        new = _Key()
        with self._lock:
            self._old_keys = [self._key, *self._old_keys] if keep_old else []
            self._key = new
        return new.kid

    # ----------------------------------------------------------------- tokens

    def claims(self, user_id: str, **overrides: Any) -> dict[str, Any]:
        """The default claim set of a session token for ``user_id``, with ``overrides`` applied.

        Defaults: ``iss``, ``sub``, ``sid`` (``sess_`` + random), ``azp`` (``default_azp``; absent
        when ``None``), ``iat`` = ``nbf`` = now, ``exp`` = now + ``token_ttl``, ``v`` = 2. An
        override replaces a claim; an override of ``None`` removes it.
        """
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": user_id,
            "sid": "sess_" + secrets.token_hex(12),
            "iat": now,
            "nbf": now,
            "exp": now + self.token_ttl,
            "v": 2,
        }
        if self.default_azp:
            claims["azp"] = self.default_azp
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def sign(
        self,
        claims: dict[str, Any],
        *,
        kid: str | None = None,
        key: rsa.RSAPrivateKey | None = None,
        headers: dict[str, Any] | None = None,
    ) -> str:
        """Sign ``claims`` as an RS256 JWT (header ``alg``, ``typ: JWT``, ``kid``).

        Args:
            claims: the payload, used as given.
            kid: the header ``kid`` (default: the current key's).
            key: the signing key (default: the current key); tests pass another to forge.
            headers: extra header fields.
        """
        with self._lock:
            current = self._key
        header = {"kid": kid or current.kid, "typ": "JWT", **(headers or {})}
        return jwt.encode(claims, key or current.private_key, algorithm="RS256", headers=header)

    def mint(
        self,
        user_id: str,
        *,
        org_id: str | None = None,
        org_role: str | None = None,
        azp: str | None = None,
        ttl: int | None = None,
        **overrides: Any,
    ) -> str:
        """A signed session token for ``user_id``.

        Args:
            user_id: the ``sub`` claim.
            org_id: the active organization; adds ``o: {"id", "rol"}``.
            org_role: the role in it (default ``"member"``); an ``org:`` prefix is dropped, as Clerk
                v2 stores ``o.rol`` without it.
            azp: authorized party (default: ``default_azp``).
            ttl: lifetime in seconds (default: ``token_ttl``); ``exp`` = ``iat`` + ``ttl``.
            **overrides: claims to replace after the above; ``None`` removes a claim.

        Raises:
            ValueError: ``org_role`` without ``org_id``.
        """
        return self.sign(self._session_claims(user_id, org_id, org_role, azp, ttl, overrides))

    def _session_claims(
        self,
        user_id: str,
        org_id: str | None,
        org_role: str | None,
        azp: str | None,
        ttl: int | None,
        overrides: dict[str, Any],
    ) -> dict[str, Any]:
        if org_role is not None and org_id is None:
            raise ValueError("org_role needs org_id")
        claims = self.claims(user_id)
        if azp is not None:
            claims["azp"] = azp
        claims["exp"] = claims["iat"] + (self.token_ttl if ttl is None else int(ttl))
        if org_id is not None:
            claims["o"] = {"id": org_id, "rol": (org_role or "member").removeprefix("org:")}
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    # ----------------------------------------------------------------- HTTP

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except HTTPException as exc:
            response = _error(exc.code or 500, _http_code(exc), exc.description or exc.name)
        except Exception:  # pragma: no cover - a dev tool should answer, not hang up
            response = _error(500, "internal", "internal error")
        response.headers.update(CORS_HEADERS)
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status=204)
        adapter = self._routes.bind_to_environ(request.environ)
        endpoint, _ = adapter.match()
        return getattr(self, f"_on_{endpoint}")(request)

    def _on_jwks(self, request: Request) -> Response:
        with self._lock:
            self.jwks_fetches += 1
        response = _json(self.jwks())
        response.headers["Cache-Control"] = "no-store"
        return response

    def _on_openid(self, request: Request) -> Response:
        return _json(
            {
                "issuer": self.issuer,
                "jwks_uri": self.jwks_url,
                "token_endpoint": self.token_url,
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    def _on_health(self, request: Request) -> Response:
        return _json({"status": "ok", "kid": self.kid})

    def _on_rotate(self, request: Request) -> Response:
        body = _read_json(request, required=False)
        keep_old = body.get("keep_old", True)
        if not isinstance(keep_old, bool):
            return _error(400, "invalid-field", "keep_old must be a boolean", "keep_old")
        return _json({"kid": self.rotate(keep_old=keep_old)})

    def _on_token(self, request: Request) -> Response:
        body = _read_json(request, required=True)
        user_id = body.get("user_id")
        if not isinstance(user_id, str) or not ID_RE.match(user_id):
            return _error(400, "invalid-field", "user_id must be 1-128 characters of A-Z a-z 0-9 _ -", "user_id")
        org_id = body.get("org_id")
        if org_id is not None and (not isinstance(org_id, str) or not ID_RE.match(org_id)):
            return _error(400, "invalid-field", "org_id must be 1-128 characters of A-Z a-z 0-9 _ -", "org_id")
        org_role = body.get("org_role")
        if org_role is not None:
            if not isinstance(org_role, str) or not ROLE_RE.match(org_role):
                message = "org_role must be 1-64 characters of A-Z a-z 0-9 _ : -"
                return _error(400, "invalid-field", message, "org_role")
            if org_id is None:
                return _error(400, "invalid-field", "org_role needs org_id", "org_role")
        azp = body.get("azp")
        if azp is not None and (not isinstance(azp, str) or not 0 < len(azp) <= MAX_AZP_CHARS):
            return _error(400, "invalid-field", "azp must be a non-empty string", "azp")
        ttl = body.get("ttl_seconds", self.token_ttl)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_TTL_SECONDS:
            message = f"ttl_seconds must be an integer 1-{MAX_TTL_SECONDS}"
            return _error(400, "invalid-field", message, "ttl_seconds")
        claims = self._session_claims(user_id, org_id, org_role, azp, ttl, {})
        return _json({"token": self.sign(claims), "expires_at": claims["exp"], "user_id": user_id})


def _read_json(request: Request, *, required: bool) -> dict[str, Any]:
    raw = request.get_data(cache=False, as_text=False)[: MAX_BODY_BYTES + 1]
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(description="request body too large")
    if not raw.strip():
        if required:
            raise BadRequest(description="a JSON object body is required")
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest(description="body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest(description="body must be a JSON object")
    return body


def _http_code(exc: HTTPException) -> str:
    if isinstance(exc, NotFound):
        return "not-found"
    if isinstance(exc, MethodNotAllowed):
        return "method-not-allowed"
    return "invalid-request"


def _json(payload: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")


def _error(status: int, code: str, message: str, field: str | None = None) -> Response:
    err: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        err["field"] = field
    return _json({"error": err}, status)


def main() -> None:
    """``python -m devstack.idp [--host H] [--port N] [--issuer URL] [--azp ORIGIN]``: serve until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m devstack.idp", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200, help="0 picks a free port (default 8200)")
    parser.add_argument("--issuer", default=None, help="iss claim (default: the server URL)")
    parser.add_argument("--azp", default=None, help="default azp claim, e.g. http://localhost:8001")
    parser.add_argument("--ttl", type=int, default=DEFAULT_TTL_SECONDS, help="token lifetime in seconds")
    args = parser.parse_args()
    idp = DevIdentityProvider(
        host=args.host, port=args.port, issuer=args.issuer, default_azp=args.azp, token_ttl=args.ttl
    )
    idp.log_requests = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop cleanly when a parent terminates us
    idp.start()
    print(f"dev IdP at {idp.url}", flush=True)
    print(f"  issuer {idp.issuer}\n  jwks   {idp.jwks_url}\n  token  {idp.token_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        idp.stop()


if __name__ == "__main__":
    main()
