"""Verify Clerk session tokens and turn them into a :class:`Principal`.

The rules are Clerk's, from

- Clerk docs, "Manual JWT verification" (https://clerk.com/docs/guides/sessions/manual-jwt-verification):
  token from the ``__session`` cookie or the ``Authorization`` header; verify the signature with the
  instance's public key (JWKS URL or PEM "JWKS Public Key"); check ``exp`` and ``nbf``; check ``azp``
  against the permitted origins; optionally reject ``sts == "pending"``;
- Clerk docs, "Session tokens" (https://clerk.com/docs/guides/sessions/session-tokens): the claims
  (``sid``, ``sub``, ``azp``, ``v``, and v2's ``o`` object whose ``rol`` is the role *without* the
  ``org:`` prefix; v1's ``org_id``/``org_role``);
- Clerk's Python SDK, clerk/clerk-sdk-python ``src/clerk_backend_api/security/``:
  ``authenticaterequest.py`` (``Authorization`` first, then the ``__session`` cookie) and
  ``verifytoken.py`` (``algorithms=['RS256']``, 5000 ms clock skew, ``azp`` required and allowlisted
  when authorized parties are set, error reasons such as ``token-iat-in-the-future``),

and stricter than the SDK in these ways (each one marked "ours" below):

- the header ``alg`` must be ``RS256`` and is checked before any key is looked up; ``typ``, if
  present, must be ``JWT`` (as Clerk JS ``assertHeaderType``);
- ``exp``, ``nbf``, ``iat``, ``sub`` and ``sid`` are required; the time claims must be JSON numbers
  (PyJWT would accept the string ``"9999999999"`` via ``int()``); ``sub``/``sid`` non-empty strings;
- ``iat`` in the future (beyond the leeway) is rejected with its own code (``token-iat-in-the-future``);
- ``iss`` must equal ``Settings.clerk_issuer`` when configured (the SDK skips ``iss``);
- ``sts == "pending"`` is always rejected;
- JWKS fetching is cached, rate-limited and keeps keys on failure (see :mod:`chalicelib.auth.jwks`).

Every failure is an :class:`~chalicelib.auth.exceptions.AuthError` (401) with a stable code.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from chalicelib.auth import exceptions as codes
from chalicelib.auth.exceptions import AuthError
from chalicelib.auth.jwks import (
    DEFAULT_MIN_REFETCH_INTERVAL_SECONDS,
    MIN_RSA_KEY_BITS,
    JwksKeySource,
    key_source_for,
    reset_key_sources,
)
from chalicelib.settings import Settings, get_settings

log = logging.getLogger(__name__)

ALGORITHM = "RS256"
LEEWAY_SECONDS = 5.0  # clerk-sdk-python VerifyTokenOptions.clock_skew_in_ms = 5000
REQUIRED_CLAIMS = ("exp", "nbf", "iat", "sub", "sid")
SESSION_COOKIE = "__session"
MAX_TOKEN_CHARS = 16 * 1024  # a session token lives in a cookie (< 4 KB); anything far larger is junk
TOKEN_SOURCE_BEARER = "bearer"
TOKEN_SOURCE_COOKIE = "cookie"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller.

    Attributes:
        user_id: Clerk user id (``sub``), e.g. ``"user_2abc"``.
        session_id: Clerk session id (``sid``), e.g. ``"sess_2abc"``.
        org_id: active organization (v2 ``o.id``, v1 ``org_id``), or ``None``.
        org_role: role in it as the token states it (v2 ``o.rol`` has no ``org:`` prefix, e.g.
            ``"admin"``; v1 ``org_role`` has it, e.g. ``"org:admin"``), or ``None``.
        is_admin: granted by configuration only (see :func:`is_admin`): ``sub`` is in
            ``Settings.clerk_admin_user_ids``, or ``org_id`` is ``Settings.clerk_admin_org_id`` and
            ``org_role`` is one of ``Settings.clerk_admin_roles`` (compared without ``org:``).
        token_source: where the token came from: ``"bearer"`` (``Authorization`` header) or
            ``"cookie"`` (``__session``); cookie-authenticated writes get the Origin check.
        claims: every verified claim.
    """

    user_id: str
    session_id: str
    org_id: str | None
    org_role: str | None
    is_admin: bool
    token_source: str = TOKEN_SOURCE_BEARER
    claims: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name`` (case-insensitive) in any mapping, or ``None``."""
    value = headers.get(name)
    if value is not None:
        return value
    for key, val in headers.items():
        if isinstance(key, str) and key.lower() == name:
            return val
    return None


def extract_token(headers: Mapping[str, str]) -> str | None:
    """The session token of a request: ``Authorization: Bearer <t>`` first, then the ``__session`` cookie.

    Args:
        headers: request headers (any mapping; Chalice's is case-insensitive, a dict need not be).

    Returns:
        The raw token, or ``None`` when the request carries none (see :func:`extract_token_and_source`).
    """
    return extract_token_and_source(headers)[0]


def extract_token_and_source(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The session token of a request and where it came from.

    Order as clerk-sdk-python ``authenticate_request.get_session_token`` (Clerk docs "Manual JWT
    verification": ``Authorization`` for cross-origin requests, ``__session`` for same-origin).
    Header names are matched case-insensitively, the ``Bearer`` scheme too (RFC 7235). An
    ``Authorization`` header with another scheme or an empty token is ignored.

    Args:
        headers: request headers (any mapping).

    Returns:
        ``(token, "bearer" | "cookie")``, or ``(None, None)`` when the request carries none.
    """
    authorization = _header(headers, "authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip(), TOKEN_SOURCE_BEARER
    cookie = _header(headers, "cookie")
    if cookie:
        for part in cookie.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name.strip() == SESSION_COOKIE:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                if value:
                    return value, TOKEN_SOURCE_COOKIE
    return None, None


@lru_cache(maxsize=8)
def _load_pem(pem: str) -> RSAPublicKey:
    """Parse ``CLERK_JWT_KEY`` (PEM, or the bare base64 body Clerk's dashboard also shows).

    Raises:
        AuthError: ``jwks-unavailable`` when it is not an RSA public key of at least 2048 bits.
    """
    text = pem.strip().replace("\\n", "\n")
    if "-----BEGIN" not in text:
        body = "".join(text.split())
        text = "-----BEGIN PUBLIC KEY-----\n" + body + "\n-----END PUBLIC KEY-----\n"
    try:
        key = load_pem_public_key(text.encode())
    except (ValueError, TypeError):
        log.error("CLERK_JWT_KEY is not a PEM public key")
        raise AuthError(codes.JWKS_UNAVAILABLE) from None
    if not isinstance(key, RSAPublicKey) or key.key_size < MIN_RSA_KEY_BITS:
        log.error("CLERK_JWT_KEY is not an RSA public key of at least %d bits", MIN_RSA_KEY_BITS)
        raise AuthError(codes.JWKS_UNAVAILABLE)
    return key


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)  # isfinite() overflows on an int past 1e308


class ClerkVerifier:
    """Verifies Clerk session tokens under one :class:`Settings`.

    Key: ``settings.clerk_jwt_key`` (PEM; networkless, the token's ``kid`` is not used) if set, else the
    JWKS at ``settings.jwks_url`` through the process-wide :func:`~chalicelib.auth.jwks.key_source_for`.

    Args:
        settings: issuer, authorized parties, admin roles, key and JWKS timings.
        key_source: a JWKS source to use instead of the process-wide one (tests).
        leeway_seconds: clock skew allowed on ``exp``/``nbf``/``iat``, in seconds (default 5).
        min_refetch_interval_seconds: minimum seconds between JWKS fetches (default 10).
        clock: wall clock in epoch seconds (tests).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        key_source: JwksKeySource | None = None,
        leeway_seconds: float = LEEWAY_SECONDS,
        min_refetch_interval_seconds: float = DEFAULT_MIN_REFETCH_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.leeway_seconds = leeway_seconds
        self.min_refetch_interval_seconds = min_refetch_interval_seconds
        self._key_source = key_source
        self._clock = clock

    # ------------------------------------------------------------------ keys

    def _key_for(self, header: dict[str, Any]) -> RSAPublicKey:
        """The verification key for a token with this (unverified) header.

        Raises:
            AuthError: ``jwks-unavailable`` (nothing configured or loadable), ``token-unknown-kid``.
        """
        if self.settings.clerk_jwt_key:
            return _load_pem(self.settings.clerk_jwt_key)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError(codes.TOKEN_UNKNOWN_KID)
        source = self._key_source
        if source is None:
            url = self.settings.jwks_url
            if not url:
                log.error("no CLERK_JWT_KEY, CLERK_JWKS_URL or CLERK_ISSUER configured")
                raise AuthError(codes.JWKS_UNAVAILABLE)
            source = key_source_for(
                url,
                cache_seconds=self.settings.jwks_cache_seconds,
                fetch_timeout_seconds=self.settings.jwks_fetch_timeout_seconds,
                min_refetch_interval_seconds=self.min_refetch_interval_seconds,
            )
        return source.get_key(kid)

    # ------------------------------------------------------------------ verification

    def verify(self, token: str) -> dict[str, Any]:
        """Verify a session token and return its claims.

        Order: shape; header ``alg`` (RS256 only) and ``typ``; key (PEM or JWKS by ``kid``);
        signature; required claims and their types; ``exp``, ``nbf``, ``iat`` (each with
        ``leeway_seconds``); ``iss``; ``azp``; ``sts``. No claim is trusted before the signature.

        Args:
            token: the compact JWS (never logged, never echoed in an error).

        Returns:
            The verified claims.

        Raises:
            AuthError: 401 with one of the codes in :mod:`chalicelib.auth.exceptions`.
        """
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise AuthError(codes.TOKEN_INVALID)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError(codes.TOKEN_INVALID) from None
        # Algorithm pinned by us, never taken from the header (Clerk: RS256; ours: checked up front,
        # so "none" and HS256-with-the-public-key fail before any key is touched).
        if header.get("alg") != ALGORITHM:
            raise AuthError(codes.TOKEN_INVALID_ALGORITHM)
        if "typ" in header and header["typ"] != "JWT":  # Clerk JS assertHeaderType
            raise AuthError(codes.TOKEN_INVALID)
        key = self._key_for(header)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                # Time and issuer checks are done below, with our codes and type rules. PyJWT still
                # checks the signature, aud (Clerk session tokens have none), sub and jti types.
                options={
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_iss": False,
                    "require": [],
                },
            )
        except jwt.InvalidSignatureError:
            raise AuthError(codes.TOKEN_INVALID_SIGNATURE) from None
        except jwt.InvalidAlgorithmError:
            raise AuthError(codes.TOKEN_INVALID_ALGORITHM) from None
        except jwt.PyJWTError:
            raise AuthError(codes.TOKEN_INVALID) from None
        self._check_claims(claims)
        return claims

    def _check_claims(self, claims: dict[str, Any]) -> None:
        """Claim rules after a good signature (see :meth:`verify`).

        Raises:
            AuthError: the first rule broken.
        """
        for name in REQUIRED_CLAIMS:  # ours: all five required (Clerk docs list them as default claims)
            if claims.get(name) is None:
                raise AuthError(codes.TOKEN_MISSING_CLAIM, f"the session token lacks the '{name}' claim")
        for name in ("exp", "nbf", "iat"):
            if not _is_number(claims[name]):
                raise AuthError(codes.TOKEN_INVALID, f"the '{name}' claim must be a number")
        for name in ("sub", "sid"):
            if not isinstance(claims[name], str) or not claims[name]:
                raise AuthError(codes.TOKEN_INVALID, f"the '{name}' claim must be a non-empty string")

        now, leeway = self._clock(), self.leeway_seconds
        # Manual JWT verification: "Validate that the token isn't expired by checking exp and nbf".
        if claims["exp"] <= now - leeway:
            raise AuthError(codes.TOKEN_EXPIRED)
        if claims["nbf"] > now + leeway:
            raise AuthError(codes.TOKEN_NOT_ACTIVE_YET)
        # clerk-sdk-python maps this to TOKEN_IAT_IN_THE_FUTURE; checked here explicitly so it does not
        # depend on the PyJWT version (several 2.x releases only checked that iat is an integer).
        if claims["iat"] > now + leeway:
            raise AuthError(codes.TOKEN_IAT_IN_THE_FUTURE)

        issuer = self.settings.clerk_issuer
        if issuer:  # ours: Clerk's iss is the Frontend API URL (Session tokens doc); the SDK skips it
            iss = claims.get("iss")
            if not isinstance(iss, str) or iss.rstrip("/") != issuer.rstrip("/"):
                raise AuthError(codes.TOKEN_INVALID_ISSUER)

        parties = self.settings.clerk_authorized_parties
        if parties:  # clerk-sdk-python verifytoken: azp missing or not listed -> invalid authorized parties
            azp = claims.get("azp")
            if not isinstance(azp, str) or azp not in parties:
                raise AuthError(codes.TOKEN_INVALID_AUTHORIZED_PARTIES)

        # Manual JWT verification, "Optional: Check for a sts claim": pending sessions must not get in.
        if claims.get("sts") == "pending":
            raise AuthError(codes.TOKEN_SESSION_PENDING)

    # ------------------------------------------------------------------ principal

    def principal(self, claims: Mapping[str, Any], token_source: str = TOKEN_SOURCE_BEARER) -> Principal:
        """The :class:`Principal` of verified ``claims`` (v2 ``o`` claim, else v1 ``org_*`` claims).

        v2 as clerk-sdk-python ``authenticate_request`` (``org_id = o.id``, ``org_role = o.rol``).
        ``token_source`` is ``"bearer"`` or ``"cookie"`` (see :func:`extract_token_and_source`).
        """
        org_id: Any = None
        org_role: Any = None
        org = claims.get("o")
        if isinstance(org, Mapping):
            org_id, org_role = org.get("id"), org.get("rol")
        else:
            org_id, org_role = claims.get("org_id"), claims.get("org_role")
        org_id = org_id if isinstance(org_id, str) and org_id else None
        org_role = org_role if isinstance(org_role, str) and org_role else None
        return Principal(
            user_id=claims["sub"],
            session_id=claims["sid"],
            org_id=org_id,
            org_role=org_role,
            is_admin=is_admin(claims["sub"], org_id, org_role, self.settings),
            token_source=token_source,
            claims=dict(claims),
        )

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """Extract, verify and map the request's session token.

        Raises:
            AuthError: ``token-missing`` when there is no token; any verification code otherwise.
        """
        token, source = extract_token_and_source(headers)
        if token is None:
            raise AuthError(codes.TOKEN_MISSING)
        try:
            claims = self.verify(token)
        except AuthError as exc:
            log.info("session token rejected: %s", exc.code)
            raise
        return self.principal(claims, source or TOKEN_SOURCE_BEARER)


def is_admin_role(role: str | None, admin_roles: tuple[str, ...] | list[str]) -> bool:
    """Whether ``role`` is an admin role, with or without the ``org:`` prefix on either side.

    Clerk v2 ``o.rol`` is ``"admin"``; v1 ``org_role`` and the dashboard's role keys are ``"org:admin"``
    (Clerk docs, "Session tokens").
    """
    if not role:
        return False
    wanted = {r.removeprefix("org:") for r in admin_roles if r}
    return role.removeprefix("org:") in wanted


def is_admin(user_id: str, org_id: str | None, org_role: str | None, settings: Settings) -> bool:
    """Whether a verified caller is one of *our* admins. Granted by configuration only:

    - ``user_id`` (``sub``) is listed in ``settings.clerk_admin_user_ids`` (``CLERK_ADMIN_USER_IDS``); or
    - the active organization ``org_id`` is ``settings.clerk_admin_org_id`` (``CLERK_ADMIN_ORG_ID``)
      and ``org_role`` is one of ``settings.clerk_admin_roles`` (:func:`is_admin_role`).

    Any Clerk user can create an organization and is its admin (Clerk docs, "Organizations": the
    creator gets the ``org:admin`` role), so a role alone never makes an admin. With neither
    setting configured, nobody is an admin.
    """
    if user_id in settings.clerk_admin_user_ids:
        return True
    admin_org = settings.clerk_admin_org_id
    return bool(admin_org) and org_id == admin_org and is_admin_role(org_role, settings.clerk_admin_roles)


# ---------------------------------------------------------------------- process-wide verifiers

_VERIFIERS: dict[tuple[Any, ...], ClerkVerifier] = {}
_VERIFIERS_LOCK = threading.Lock()
_MAX_VERIFIERS = 16


def _cache_key(settings: Settings) -> tuple[Any, ...]:
    # Key on exactly the fields auth reads.
    return (
        settings.clerk_admin_org_id,
        tuple(settings.clerk_admin_user_ids),
        settings.clerk_jwt_key,
        settings.jwks_url,
        settings.clerk_issuer,
        tuple(settings.clerk_authorized_parties),
        tuple(settings.clerk_admin_roles),
        settings.jwks_cache_seconds,
        settings.jwks_fetch_timeout_seconds,
    )


def verifier_for(settings: Settings | None = None) -> ClerkVerifier:
    """The process-wide :class:`ClerkVerifier` for ``settings`` (default :func:`get_settings`).

    Reused across warm invocations, so is the JWKS cache behind it.
    """
    settings = settings or get_settings()
    key = _cache_key(settings)
    with _VERIFIERS_LOCK:
        verifier = _VERIFIERS.get(key)
        if verifier is None:
            if len(_VERIFIERS) >= _MAX_VERIFIERS:
                _VERIFIERS.clear()
            verifier = _VERIFIERS[key] = ClerkVerifier(settings)
        return verifier


def verify_session_token(token: str, settings: Settings | None = None) -> dict[str, Any]:
    """Verify a Clerk session token; return its claims.

    Args:
        token: the raw JWT.
        settings: configuration (default :func:`get_settings`).

    Raises:
        AuthError: 401 with the reason's code.
    """
    return verifier_for(settings).verify(token)


def authenticate(headers: Mapping[str, str], settings: Settings | None = None) -> Principal:
    """The :class:`Principal` of a request, from its ``Authorization``/``Cookie`` headers.

    Args:
        headers: request headers (case-insensitive names).
        settings: configuration (default :func:`get_settings`).

    Raises:
        AuthError: 401, ``token-missing`` or a verification code; never anything else for a bad token.
    """
    return verifier_for(settings).authenticate(headers)


def reset_caches() -> None:
    """Forget cached verifiers, JWKS and parsed PEM keys (tests)."""
    with _VERIFIERS_LOCK:
        _VERIFIERS.clear()
    reset_key_sources()
    _load_pem.cache_clear()
