"""Authentication: Clerk session tokens (JWT, RS256) to a :class:`Principal`.

Public API::

    from chalicelib.auth import AuthError, Principal, authenticate

    principal = authenticate(request.headers)   # raises AuthError (401) on any failure
    principal.user_id, principal.is_admin

- :func:`authenticate` ``(headers, settings=None) -> Principal``
- :func:`extract_token` ``(headers) -> str | None``: ``Authorization: Bearer`` first, then ``__session``
- :func:`extract_token_and_source` ``(headers) -> (token, "bearer" | "cookie")``
- :func:`is_admin` ``(user_id, org_id, org_role, settings) -> bool``: the configured admin rule
- :func:`verify_session_token` ``(token, settings=None) -> dict``: the verified claims
- :class:`Principal`, :class:`AuthError` (codes in :mod:`chalicelib.auth.exceptions`)
- :func:`reset_caches`: forget verifiers and the JWKS cache (tests)

The rules and their sources (Clerk's "Manual JWT verification" and "Session tokens" docs, and
clerk/clerk-sdk-python ``verifytoken.py`` / ``authenticaterequest.py``) are in
:mod:`chalicelib.auth.clerk`; JWKS caching is in :mod:`chalicelib.auth.jwks`.
"""

from __future__ import annotations

from chalicelib.auth.clerk import (
    ClerkVerifier,
    Principal,
    authenticate,
    extract_token,
    extract_token_and_source,
    is_admin,
    is_admin_role,
    reset_caches,
    verifier_for,
    verify_session_token,
)
from chalicelib.auth.exceptions import AuthError
from chalicelib.auth.jwks import JwksKeySource

__all__ = [
    "AuthError",
    "ClerkVerifier",
    "JwksKeySource",
    "Principal",
    "authenticate",
    "extract_token",
    "extract_token_and_source",
    "is_admin",
    "is_admin_role",
    "reset_caches",
    "verifier_for",
    "verify_session_token",
]
