"""The one error authentication raises: :class:`AuthError`, always HTTP 401.

Codes follow the reasons of Clerk's Python SDK (``clerk_backend_api.security.types``:
``TokenVerificationErrorReason`` / ``AuthErrorReason``, repo clerk/clerk-sdk-python) where one exists,
so logs read the same as Clerk's; ``token-missing-claim``, ``token-unknown-kid``,
``token-invalid-algorithm``, ``token-session-pending`` and ``jwks-unavailable`` are ours.

Messages are fixed strings per code: they never contain the token, a claim value or a key id, and
never a library's exception text (which can quote token parts).

``WWW-Authenticate`` (added at the edge) follows RFC 6750 section 3: a request with no token gets a bare ``Bearer``
challenge; a request with a bad token gets ``Bearer error="invalid_token"``.
"""

from __future__ import annotations

from chalicelib.errors import DomainError, ErrorCode

TOKEN_MISSING = ErrorCode.TOKEN_MISSING
TOKEN_EXPIRED = ErrorCode.TOKEN_EXPIRED
TOKEN_NOT_ACTIVE_YET = ErrorCode.TOKEN_NOT_ACTIVE_YET
TOKEN_IAT_IN_THE_FUTURE = ErrorCode.TOKEN_IAT_IN_THE_FUTURE
TOKEN_INVALID_SIGNATURE = ErrorCode.TOKEN_INVALID_SIGNATURE
TOKEN_INVALID_ISSUER = ErrorCode.TOKEN_INVALID_ISSUER
TOKEN_INVALID_AUTHORIZED_PARTIES = ErrorCode.TOKEN_INVALID_AUTHORIZED_PARTIES
TOKEN_INVALID_ALGORITHM = ErrorCode.TOKEN_INVALID_ALGORITHM
TOKEN_INVALID = ErrorCode.TOKEN_INVALID
TOKEN_MISSING_CLAIM = ErrorCode.TOKEN_MISSING_CLAIM
TOKEN_UNKNOWN_KID = ErrorCode.TOKEN_UNKNOWN_KID
TOKEN_SESSION_PENDING = ErrorCode.TOKEN_SESSION_PENDING
JWKS_UNAVAILABLE = ErrorCode.JWKS_UNAVAILABLE

MESSAGES: dict[ErrorCode, str] = {
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


class AuthError(DomainError):
    """The request carries no valid Clerk session token (the edge answers 401).

    Args:
        code: one of :data:`CODES` (kebab-case, e.g. ``"token-expired"``).
        message: overrides the fixed message for ``code``; must never contain the token.

    The edge answers 401 for every code (``jwks-unavailable`` too: the caller cannot be
    authenticated, and the API never answers 500), with ``WWW-Authenticate``
    (:func:`chalicelib.http.error_headers`).
    """

    def __init__(self, code: str, message: str | None = None) -> None:
        if code not in CODES:
            raise ValueError(f"unknown auth error code {code!r}")
        super().__init__(code, message or MESSAGES[ErrorCode(code)])

    def __repr__(self) -> str:
        return f"AuthError({self.code.value!r})"
