"""The dev identity provider: its HTTP contract and the tokens it mints."""

from __future__ import annotations

import time

import jwt
import pytest
import requests

from devstack.idp import DevIdentityProvider
from tests.fixtures.idp import TEST_AZP
from tests.token_cases import unverified_parts

TIMEOUT = 5


def decode(idp: DevIdentityProvider, token: str) -> dict:
    """Verify ``token`` against the IdP's published JWKS, as a relying party would."""
    key = jwt.PyJWKClient(idp.jwks_url, cache_jwk_set=False).get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256"], issuer=idp.issuer)


# ---------------------------------------------------------------- discovery


def test_health(idp: DevIdentityProvider) -> None:
    r = requests.get(f"{idp.url}/health", timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_urls(idp: DevIdentityProvider) -> None:
    assert idp.url.startswith("http://127.0.0.1:")
    assert idp.issuer == idp.url
    assert idp.jwks_url == idp.url + "/.well-known/jwks.json"
    assert idp.token_url == idp.url + "/token"


def test_jwks_is_rfc7517_and_counted(idp: DevIdentityProvider) -> None:
    before = idp.jwks_fetches
    r = requests.get(idp.jwks_url, timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    keys = r.json()["keys"]
    current = next(k for k in keys if k["kid"] == idp.kid)
    assert set(current) == {"kid", "kty", "use", "alg", "n", "e"}
    assert (current["kty"], current["use"], current["alg"], current["e"]) == ("RSA", "sig", "RS256", "AQAB")
    assert "=" not in current["n"]  # base64url without padding
    assert idp.jwks_fetches == before + 1


def test_openid_configuration(idp: DevIdentityProvider) -> None:
    config = requests.get(f"{idp.url}/.well-known/openid-configuration", timeout=TIMEOUT).json()
    assert config["issuer"] == idp.issuer
    assert config["jwks_uri"] == idp.jwks_url


def test_custom_issuer_is_used() -> None:
    with DevIdentityProvider(issuer="https://clerk.dev.local") as idp:
        assert idp.issuer == "https://clerk.dev.local"
        assert decode(idp, idp.mint("user_1"))["iss"] == "https://clerk.dev.local"


def test_unknown_path_and_method(idp: DevIdentityProvider) -> None:
    r = requests.get(f"{idp.url}/nope", timeout=TIMEOUT)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not-found"
    r = requests.get(idp.token_url, timeout=TIMEOUT)
    assert r.status_code == 405


# ---------------------------------------------------------------- minted claims


def test_default_claims_are_clerk_v2_shaped(idp: DevIdentityProvider) -> None:
    token = idp.mint("user_123")
    header, _, _ = unverified_parts(token)
    assert header == {"alg": "RS256", "typ": "JWT", "kid": idp.kid}
    claims = decode(idp, token)
    now = int(time.time())
    assert claims["sub"] == "user_123"
    assert claims["sid"].startswith("sess_") and len(claims["sid"]) > 10
    assert claims["azp"] == TEST_AZP
    assert claims["v"] == 2
    assert claims["nbf"] == claims["iat"]
    assert abs(claims["iat"] - now) <= 2
    assert claims["exp"] == claims["iat"] + 60
    assert "o" not in claims


def test_each_token_has_a_new_session_id(idp: DevIdentityProvider) -> None:
    assert decode(idp, idp.mint("user_1"))["sid"] != decode(idp, idp.mint("user_1"))["sid"]


def test_azp_omitted_without_default() -> None:
    idp = DevIdentityProvider(issuer="https://issuer.example")
    assert "azp" not in idp.claims("user_1")
    assert idp.claims("user_1", azp="https://app.example")["azp"] == "https://app.example"


def test_org_claim_drops_org_prefix(idp: DevIdentityProvider) -> None:
    assert decode(idp, idp.mint("user_1", org_id="org_1", org_role="org:admin"))["o"] == {
        "id": "org_1",
        "rol": "admin",
    }
    assert decode(idp, idp.mint("user_1", org_id="org_1"))["o"] == {"id": "org_1", "rol": "member"}
    with pytest.raises(ValueError):
        idp.mint("user_1", org_role="admin")


def test_mint_overrides_replace_and_none_removes(idp: DevIdentityProvider) -> None:
    claims = jwt.decode(
        idp.mint("user_1", azp="https://x.example", ttl=30, sid=None, sts="pending", iss="https://other"),
        options={"verify_signature": False},
    )
    assert "sid" not in claims
    assert claims["sts"] == "pending"
    assert claims["iss"] == "https://other"
    assert claims["azp"] == "https://x.example"
    assert claims["exp"] == claims["iat"] + 30


def test_claims_overrides(idp: DevIdentityProvider) -> None:
    claims = idp.claims("user_1", azp=None, custom="x")
    assert "azp" not in claims and claims["custom"] == "x" and claims["sub"] == "user_1"


def test_public_pem_matches_private_key(idp: DevIdentityProvider) -> None:
    token = idp.mint("user_1")
    assert jwt.decode(token, idp.public_pem(), algorithms=["RS256"], options={"verify_aud": False})["sub"]
    assert idp.public_pem().startswith("-----BEGIN PUBLIC KEY-----")


# ---------------------------------------------------------------- /token


def test_token_endpoint(idp: DevIdentityProvider) -> None:
    r = requests.post(
        idp.token_url,
        json={
            "user_id": "user_abc",
            "org_id": "org_7",
            "org_role": "admin",
            "azp": "https://a.example",
            "ttl_seconds": 120,
        },
        timeout=TIMEOUT,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] == "user_abc"
    claims = decode(idp, body["token"])
    assert claims["sub"] == "user_abc"
    assert claims["o"] == {"id": "org_7", "rol": "admin"}
    assert claims["azp"] == "https://a.example"
    assert body["expires_at"] == claims["exp"] == claims["iat"] + 120


def test_token_endpoint_defaults(idp: DevIdentityProvider) -> None:
    body = requests.post(idp.token_url, json={"user_id": "u-1_x"}, timeout=TIMEOUT).json()
    claims = decode(idp, body["token"])
    assert claims["azp"] == TEST_AZP
    assert claims["exp"] - claims["iat"] == 60
    assert "o" not in claims


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "a" * 129}, "user_id"),
        ({"user_id": "bad id"}, "user_id"),
        ({"user_id": "user/1"}, "user_id"),
        ({"user_id": 42}, "user_id"),
        ({"user_id": "u", "org_id": "org 1"}, "org_id"),
        ({"user_id": "u", "org_role": "admin"}, "org_role"),
        ({"user_id": "u", "org_id": "o", "org_role": "ad min"}, "org_role"),
        ({"user_id": "u", "azp": 5}, "azp"),
        ({"user_id": "u", "ttl_seconds": 0}, "ttl_seconds"),
        ({"user_id": "u", "ttl_seconds": "60"}, "ttl_seconds"),
        ({"user_id": "u", "ttl_seconds": True}, "ttl_seconds"),
        ({"user_id": "u", "ttl_seconds": 10**9}, "ttl_seconds"),
    ],
)
def test_token_endpoint_rejects_bad_input(idp: DevIdentityProvider, body: dict, field: str) -> None:
    r = requests.post(idp.token_url, json=body, timeout=TIMEOUT)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["field"] == field
    assert err["code"] == "invalid-field"


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b'"user_1"'])
def test_token_endpoint_rejects_non_object_bodies(idp: DevIdentityProvider, raw: bytes) -> None:
    r = requests.post(idp.token_url, data=raw, headers={"Content-Type": "application/json"}, timeout=TIMEOUT)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid-request"


def test_user_id_of_128_chars_is_allowed(idp: DevIdentityProvider) -> None:
    r = requests.post(idp.token_url, json={"user_id": "a" * 128}, timeout=TIMEOUT)
    assert r.status_code == 200


# ---------------------------------------------------------------- CORS


def test_cors_preflight(idp: DevIdentityProvider) -> None:
    r = requests.options(
        idp.token_url,
        headers={
            "Origin": "http://localhost:8001",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
        timeout=TIMEOUT,
    )
    assert r.status_code in (200, 204)
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "content-type" in r.headers["Access-Control-Allow-Headers"].lower()


def test_cors_headers_on_responses_and_errors(idp: DevIdentityProvider) -> None:
    ok = requests.post(idp.token_url, json={"user_id": "u"}, headers={"Origin": "http://x"}, timeout=TIMEOUT)
    bad = requests.post(idp.token_url, json={}, headers={"Origin": "http://x"}, timeout=TIMEOUT)
    jwks = requests.get(idp.jwks_url, timeout=TIMEOUT)
    for r in (ok, bad, jwks):
        assert r.headers["Access-Control-Allow-Origin"] == "*"


# ---------------------------------------------------------------- rotation and lifecycle


def test_rotate_keeps_old_keys_by_default(private_idp: DevIdentityProvider) -> None:
    idp = private_idp
    old_kid, old_token = idp.kid, idp.mint("user_1")
    new_kid = idp.rotate()
    assert new_kid == idp.kid != old_kid
    kids = [k["kid"] for k in idp.jwks()["keys"]]
    assert kids == [new_kid, old_kid]
    assert decode(idp, old_token)["sub"] == "user_1"
    assert unverified_parts(idp.mint("user_1"))[0]["kid"] == new_kid


def test_rotate_over_http_without_keep_old(private_idp: DevIdentityProvider) -> None:
    idp = private_idp
    old_kid = idp.kid
    r = requests.post(f"{idp.url}/admin/rotate", json={"keep_old": False}, timeout=TIMEOUT)
    assert r.status_code == 200
    new_kid = r.json()["kid"]
    assert new_kid == idp.kid != old_kid
    assert [k["kid"] for k in requests.get(idp.jwks_url, timeout=TIMEOUT).json()["keys"]] == [new_kid]
    r = requests.post(f"{idp.url}/admin/rotate", json={"keep_old": "no"}, timeout=TIMEOUT)
    assert r.status_code == 400


def test_rotate_over_http_without_body(private_idp: DevIdentityProvider) -> None:
    old_kid = private_idp.kid
    r = requests.post(f"{private_idp.url}/admin/rotate", timeout=TIMEOUT)
    assert r.status_code == 200
    assert {k["kid"] for k in private_idp.jwks()["keys"]} == {r.json()["kid"], old_kid}


def test_stop_releases_the_port_and_is_idempotent() -> None:
    idp = DevIdentityProvider().start()
    url = idp.url
    assert requests.get(f"{url}/health", timeout=TIMEOUT).status_code == 200
    idp.stop()
    idp.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=TIMEOUT)


def test_start_twice_is_an_error(idp: DevIdentityProvider) -> None:
    with pytest.raises(RuntimeError):
        idp.start()


def test_url_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        _ = DevIdentityProvider().url


def test_concurrent_token_requests(idp: DevIdentityProvider) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> int:
        return requests.post(idp.token_url, json={"user_id": f"user_{i}"}, timeout=TIMEOUT).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(one, range(32))) == {200}
