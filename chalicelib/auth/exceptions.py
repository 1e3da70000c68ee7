"""The one error authentication raises: :class:`AuthError`, always HTTP 401.

Codes follow the reasons of Clerk's Python SDK (``clerk_backend_api.security.types``:
``TokenVerificationErrorReason`` / ``AuthErrorReason``, repo clerk/clerk-sdk-python) where one exists,
so logs read the same as Clerk's; ``token-missing-claim``, ``token-unknown-kid``,
``token-invalid-algorithm``, ``token-session-pending`` and ``jwks-unavailable`` are ours.

Messages are fixed strings per code: they never contain the token, a claim value or a key id, and
never a library's exception text (which can quote token parts).

``WWW-Authenticate`` follows RFC 6750 section 3: a request with no token gets a bare ``Bearer``
challenge; a request with a bad token gets ``Bearer error="invalid_token"``.
"""

from __future__ import annotations

from chalicelib.errors import ApiError

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

MESSAGES: dict[str, str] = {
    TOKEN_MISSING: "no session token: send 'Authorization: Bearer <token>' or the __session cookie",
    TOKEN_EXPIRED: "the session token has expired",
    TOKEN_NOT_ACTIVE_YET: "the session token is not valid yet (nbf is in the future)",
    TOKEN_IAT_IN_THE_FUTURE: "the session token was issued in the future (iat)",
    TOKEN_INVALID_SIGNATURE: "the session token signature is invalid",
    TOKEN_INVALID_ISSUER: "the session token was issued by an unexpected issuer (iss)",
    TOKEN_INVALID_AUTHORIZED_PARTIES: "the session token's authorized party (azp) is not allowed",
    TOKEN_INVALID_ALGORITHM: "the session token must be signed with RS256",
    TOKEN_INVALID: "the session token is malformed",
    TOKEN_MISSING_CLAIM: "the session token lacks a required claim",
    TOKEN_UNKNOWN_KID: "the session token was signed by an unknown key (kid)",
    TOKEN_SESSION_PENDING: "the session is pending (sts) and cannot use the API yet",
    JWKS_UNAVAILABLE: "the signing keys could not be loaded; try again shortly",
}

CODES = frozenset(MESSAGES)


class AuthError(ApiError):
    """401: the request carries no valid Clerk session token.

    Args:
        code: one of :data:`CODES` (kebab-case, e.g. ``"token-expired"``).
        message: overrides the fixed message for ``code``; must never contain the token.

    Attributes:
        status: always 401 (``jwks-unavailable`` too: the caller cannot be authenticated, and the
            API never answers 500).
        headers: ``{"WWW-Authenticate": ...}``.
    """

    def __init__(self, code: str, message: str | None = None) -> None:
        if code not in CODES:
            raise ValueError(f"unknown auth error code {code!r}")
        challenge = "Bearer" if code == TOKEN_MISSING else 'Bearer error="invalid_token"'
        super().__init__(401, code, message or MESSAGES[code], headers={"WWW-Authenticate": challenge})

    def __repr__(self) -> str:
        return f"AuthError({self.code!r})"
