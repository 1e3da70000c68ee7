"""Session tokens the API must reject, and the error code for each.

``REJECTION_CASES`` is ``[(name, build(idp, azp) -> token, expected_code)]``. ``azp`` is an authorized
party the verifier accepts, so each token is wrong in exactly one way. The expectations assume the
verifier runs in JWKS mode against ``idp`` with ``clerk_issuer=idp.issuer`` and
``clerk_authorized_parties`` containing ``azp`` (in PEM mode the ``kid`` is not used, so
``unknown-kid`` would verify). Reused by the API route tests over HTTP.

Example::

    @pytest.mark.parametrize(("name", "build", "code"), REJECTION_CASES, ids=CASE_IDS)
    def test_rejected(idp, name, build, code): ...
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack.idp import DevIdentityProvider

USER = "user_case"

Builder = Callable[[DevIdentityProvider, str], str]


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(obj: dict[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(header, payload, signature segment) of a compact JWS, without verifying it."""
    header, payload, signature = token.split(".")
    return json.loads(_b64url_decode(header)), json.loads(_b64url_decode(payload)), signature


def _b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


@lru_cache(maxsize=1)
def other_private_key() -> rsa.RSAPrivateKey:
    """An RSA key the IdP never published."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _now() -> int:
    return int(time.time())


def expired(idp: DevIdentityProvider, azp: str) -> str:
    now = _now()
    return idp.mint(USER, azp=azp, iat=now - 120, nbf=now - 120, exp=now - 60)


def nbf_in_future(idp: DevIdentityProvider, azp: str) -> str:
    now = _now()
    return idp.mint(USER, azp=azp, iat=now, nbf=now + 60, exp=now + 120)


def iat_in_future(idp: DevIdentityProvider, azp: str) -> str:
    now = _now()
    return idp.mint(USER, azp=azp, iat=now + 60, nbf=now, exp=now + 120)


def wrong_issuer(idp: DevIdentityProvider, azp: str) -> str:
    return idp.mint(USER, azp=azp, iss="https://evil.clerk.accounts.dev")


def azp_not_allowed(idp: DevIdentityProvider, azp: str) -> str:
    return idp.mint(USER, azp="https://evil.example")


def azp_missing(idp: DevIdentityProvider, azp: str) -> str:
    return idp.sign(idp.claims(USER, azp=None))


def sid_missing(idp: DevIdentityProvider, azp: str) -> str:
    return idp.mint(USER, azp=azp, sid=None)


def sub_missing(idp: DevIdentityProvider, azp: str) -> str:
    return idp.mint(USER, azp=azp, sub=None)


def exp_missing(idp: DevIdentityProvider, azp: str) -> str:
    return idp.mint(USER, azp=azp, exp=None)


def exp_as_string(idp: DevIdentityProvider, azp: str) -> str:
    return idp.mint(USER, azp=azp, exp=str(_now() + 60))


def alg_none(idp: DevIdentityProvider, azp: str) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": idp.kid}
    return f"{b64url_json(header)}.{b64url_json(idp.claims(USER, azp=azp))}."


def hs256_with_public_pem(idp: DevIdentityProvider, azp: str) -> str:
    """The classic key-confusion attack: HMAC-SHA256 keyed with the RSA public key PEM.

    Built by hand, since PyJWT refuses a PEM as an HMAC secret.
    """
    header = {"alg": "HS256", "typ": "JWT", "kid": idp.kid}
    signing_input = f"{b64url_json(header)}.{b64url_json(idp.claims(USER, azp=azp))}"
    mac = hmac.new(idp.public_pem().encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def unknown_kid(idp: DevIdentityProvider, azp: str) -> str:
    return idp.sign(idp.claims(USER, azp=azp), kid="ins_unknown_" + secrets.token_hex(6))


def missing_kid(idp: DevIdentityProvider, azp: str) -> str:
    return jwt.encode(idp.claims(USER, azp=azp), idp.private_key, algorithm="RS256", headers={"typ": "JWT"})


def tampered_payload(idp: DevIdentityProvider, azp: str) -> str:
    token = idp.mint(USER, azp=azp)
    _, claims, signature = unverified_parts(token)
    claims["sub"] = "user_someone_else"
    return f"{token.split('.')[0]}.{b64url_json(claims)}.{signature}"


def other_key_same_kid(idp: DevIdentityProvider, azp: str) -> str:
    return idp.sign(idp.claims(USER, azp=azp), kid=idp.kid, key=other_private_key())


def garbage(idp: DevIdentityProvider, azp: str) -> str:
    return "not-a-jwt"


def garbage_three_segments(idp: DevIdentityProvider, azp: str) -> str:
    return "abc.def.ghi"


def session_pending(idp: DevIdentityProvider, azp: str) -> str:
    return idp.mint(USER, azp=azp, sts="pending")


REJECTION_CASES: list[tuple[str, Builder, str]] = [
    ("expired", expired, "token-expired"),
    ("nbf-in-future", nbf_in_future, "token-not-active-yet"),
    ("iat-in-future", iat_in_future, "token-iat-in-the-future"),
    ("wrong-issuer", wrong_issuer, "token-invalid-issuer"),
    ("azp-not-allowed", azp_not_allowed, "token-invalid-authorized-parties"),
    ("azp-missing", azp_missing, "token-invalid-authorized-parties"),
    ("sid-missing", sid_missing, "token-missing-claim"),
    ("sub-missing", sub_missing, "token-missing-claim"),
    ("exp-missing", exp_missing, "token-missing-claim"),
    ("exp-as-string", exp_as_string, "token-invalid"),
    ("alg-none", alg_none, "token-invalid-algorithm"),
    ("hs256-with-public-pem", hs256_with_public_pem, "token-invalid-algorithm"),
    ("unknown-kid", unknown_kid, "token-unknown-kid"),
    ("missing-kid", missing_kid, "token-unknown-kid"),
    ("tampered-payload", tampered_payload, "token-invalid-signature"),
    ("other-key-same-kid", other_key_same_kid, "token-invalid-signature"),
    ("garbage", garbage, "token-invalid"),
    ("garbage-three-segments", garbage_three_segments, "token-invalid"),
    ("session-pending", session_pending, "token-session-pending"),
]

CASE_IDS = [name for name, _, _ in REJECTION_CASES]
