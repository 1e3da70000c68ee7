"""Clerk session-token verification against the dev IdP over HTTP (the JWKS is fetched for real)."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator

import pytest

from chalicelib.auth import (
    AuthError,
    ClerkVerifier,
    JwksKeySource,
    Principal,
    authenticate,
    extract_token,
    extract_token_and_source,
    is_admin_role,
    reset_caches,
    verifier_for,
    verify_session_token,
)
from chalicelib.auth.exceptions import CODES
from chalicelib.auth.jwks import key_source_for
from chalicelib.http import error_headers, error_status
from chalicelib.settings import Settings
from devstack.idp import DevIdentityProvider
from tests.fixtures.idp import TEST_AZP
from tests.token_cases import CASE_IDS, REJECTION_CASES, other_private_key, unknown_kid

INVALID_TOKEN_CHALLENGE = 'Bearer error="invalid_token"'


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    reset_caches()
    yield
    reset_caches()


def settings_for(idp: DevIdentityProvider, **overrides: object) -> Settings:
    base = Settings(
        clerk_issuer=idp.issuer,
        clerk_jwks_url=idp.jwks_url,
        clerk_authorized_parties=(TEST_AZP,),
    )
    return dataclasses.replace(base, **overrides)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rejected(headers: dict[str, str], settings: Settings) -> AuthError:
    with pytest.raises(AuthError) as info:
        authenticate(headers, settings)
    return info.value


# ---------------------------------------------------------------- rejections


@pytest.mark.parametrize(("name", "build", "code"), REJECTION_CASES, ids=CASE_IDS)
def test_rejection_has_its_code(idp: DevIdentityProvider, name: str, build, code: str) -> None:
    token = build(idp, TEST_AZP)
    err = rejected(bearer(token), settings_for(idp))
    assert err.code == code, name
    assert error_status(err.code) == 401
    assert error_headers(err) == {"WWW-Authenticate": INVALID_TOKEN_CHALLENGE}
    assert token not in err.message
    body = err.body()["error"]
    assert body["code"] == code
    assert token not in str(body)


def test_rejection_codes_are_known() -> None:
    assert {code for _, _, code in REJECTION_CASES} <= CODES


def test_missing_token_is_token_missing_with_bare_challenge(idp: DevIdentityProvider) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}, {"Cookie": "a=b"}):
        err = rejected(headers, settings_for(idp))
        assert err.code == "token-missing"
        assert error_status(err.code) == 401
        assert error_headers(err) == {"WWW-Authenticate": "Bearer"}


def test_verify_session_token_raises_the_same_codes(idp: DevIdentityProvider) -> None:
    with pytest.raises(AuthError) as info:
        verify_session_token(idp.mint("user_1", azp=TEST_AZP, sts="pending"), settings_for(idp))
    assert info.value.code == "token-session-pending"


def test_leeway_is_five_seconds(idp: DevIdentityProvider) -> None:
    now = int(time.time())
    settings = settings_for(idp)
    just_expired = idp.mint("user_1", azp=TEST_AZP, iat=now - 63, nbf=now - 63, exp=now - 3)
    assert verify_session_token(just_expired, settings)["sub"] == "user_1"
    slightly_early = idp.mint("user_1", azp=TEST_AZP, iat=now + 3, nbf=now + 3, exp=now + 60)
    assert verify_session_token(slightly_early, settings)["sub"] == "user_1"
    long_expired = idp.mint("user_1", azp=TEST_AZP, iat=now - 80, nbf=now - 80, exp=now - 20)
    with pytest.raises(AuthError) as info:
        verify_session_token(long_expired, settings)
    assert info.value.code == "token-expired"


def test_issuer_and_azp_are_optional_when_not_configured(idp: DevIdentityProvider) -> None:
    settings = settings_for(idp, clerk_issuer=None, clerk_authorized_parties=())
    token = idp.sign(idp.claims("user_1", azp=None, iss="https://elsewhere.example"))
    assert verify_session_token(token, settings)["sub"] == "user_1"


def test_no_key_configured_is_jwks_unavailable(idp: DevIdentityProvider) -> None:
    err = rejected(bearer(idp.mint("user_1")), Settings())
    assert err.code == "jwks-unavailable"
    assert error_status(err.code) == 401


def test_bad_pem_is_jwks_unavailable_not_500(idp: DevIdentityProvider) -> None:
    err = rejected(bearer(idp.mint("user_1")), settings_for(idp, clerk_jwt_key="not a key"))
    assert err.code == "jwks-unavailable"


# ---------------------------------------------------------------- accepted tokens


def test_valid_token_via_bearer(idp: DevIdentityProvider) -> None:
    token = idp.mint("user_alice", azp=TEST_AZP)
    principal = authenticate(bearer(token), settings_for(idp))
    assert principal.user_id == "user_alice"
    assert principal.session_id.startswith("sess_")
    assert principal.org_id is None and principal.org_role is None
    assert principal.is_admin is False
    assert principal.claims["iss"] == idp.issuer
    assert principal.claims["v"] == 2


def test_valid_token_via_session_cookie(idp: DevIdentityProvider) -> None:
    token = idp.mint("user_bob", azp=TEST_AZP)
    headers = {"Cookie": f"theme=dark; __session={token}; __client_uat=1"}
    assert authenticate(headers, settings_for(idp)).user_id == "user_bob"


def test_header_names_and_scheme_are_case_insensitive(idp: DevIdentityProvider) -> None:
    token = idp.mint("user_carol", azp=TEST_AZP)
    assert authenticate({"AUTHORIZATION": f"bearer {token}"}, settings_for(idp)).user_id == "user_carol"
    assert authenticate({"cOoKiE": f"__session={token}"}, settings_for(idp)).user_id == "user_carol"


def test_bearer_wins_over_cookie(idp: DevIdentityProvider) -> None:
    settings = settings_for(idp)
    from_header = idp.mint("user_header", azp=TEST_AZP)
    from_cookie = idp.mint("user_cookie", azp=TEST_AZP)
    headers = {"Authorization": f"Bearer {from_header}", "Cookie": f"__session={from_cookie}"}
    assert authenticate(headers, settings).user_id == "user_header"
    # A bad bearer token is not rescued by a good cookie.
    bad = {"Authorization": "Bearer not-a-jwt", "Cookie": f"__session={from_cookie}"}
    assert rejected(bad, settings).code == "token-invalid"


def test_extract_token() -> None:
    assert extract_token({"Authorization": "Bearer abc"}) == "abc"
    assert extract_token({"authorization": "  Bearer   abc  "}) == "abc"
    assert extract_token({"Cookie": '__session="abc"'}) == "abc"
    assert extract_token({"Cookie": "__session_suffix=zzz; __session=abc"}) == "abc"
    assert extract_token({"Authorization": "Bearer ", "Cookie": "__session=abc"}) == "abc"
    assert extract_token({"Authorization": "Basic xyz"}) is None
    assert extract_token({"Cookie": "__session="}) is None
    assert extract_token({}) is None


def test_pem_mode_needs_no_network(idp: DevIdentityProvider) -> None:
    # The JWKS URL points at a closed port: PEM mode must never try it.
    settings = settings_for(idp, clerk_jwt_key=idp.public_pem(), clerk_jwks_url="http://127.0.0.1:9/jwks.json")
    before = idp.jwks_fetches
    principal = authenticate(bearer(idp.mint("user_pem", azp=TEST_AZP)), settings)
    assert principal.user_id == "user_pem"
    assert idp.jwks_fetches == before
    forged = idp.sign(idp.claims("user_pem", azp=TEST_AZP), key=other_private_key())
    assert rejected(bearer(forged), settings).code == "token-invalid-signature"


def test_pem_with_escaped_newlines_and_bare_body(idp: DevIdentityProvider) -> None:
    token = idp.mint("user_pem", azp=TEST_AZP)
    escaped = idp.public_pem().replace("\n", "\\n")
    assert verify_session_token(token, settings_for(idp, clerk_jwt_key=escaped))["sub"] == "user_pem"
    body = "".join(line for line in idp.public_pem().splitlines() if "-----" not in line)
    assert verify_session_token(token, settings_for(idp, clerk_jwt_key=body))["sub"] == "user_pem"


def test_a_self_made_org_admin_is_not_our_admin(idp: DevIdentityProvider) -> None:
    # Any user can create an organization and hold o.rol = admin in it: that alone grants nothing.
    token = idp.mint("user_a", org_id="org_mine", org_role="admin", azp=TEST_AZP)
    for settings in (settings_for(idp), settings_for(idp, clerk_admin_org_id="org_ours")):
        principal = authenticate(bearer(token), settings)
        assert (principal.org_id, principal.org_role, principal.is_admin) == ("org_mine", "admin", False)


def test_admin_from_o_rol_in_the_configured_org(idp: DevIdentityProvider) -> None:
    settings = settings_for(idp, clerk_admin_org_id="org_1")
    admin = authenticate(bearer(idp.mint("user_a", org_id="org_1", org_role="admin", azp=TEST_AZP)), settings)
    assert (admin.org_id, admin.org_role, admin.is_admin) == ("org_1", "admin", True)
    assert admin.claims["o"] == {"id": "org_1", "rol": "admin"}
    member = authenticate(bearer(idp.mint("user_m", org_id="org_1", org_role="member", azp=TEST_AZP)), settings)
    assert (member.org_id, member.org_role, member.is_admin) == ("org_1", "member", False)
    only_prefixed = settings_for(idp, clerk_admin_org_id="org_1", clerk_admin_roles=("org:admin",))
    assert authenticate(
        bearer(idp.mint("user_a", org_id="org_1", org_role="admin", azp=TEST_AZP)), only_prefixed
    ).is_admin


def test_admin_from_the_configured_user_ids(idp: DevIdentityProvider) -> None:
    settings = settings_for(idp, clerk_admin_user_ids=("user_root", "user_ops"))
    assert authenticate(bearer(idp.mint("user_root", azp=TEST_AZP)), settings).is_admin
    assert authenticate(
        bearer(idp.mint("user_ops", org_id="org_x", org_role="member", azp=TEST_AZP)), settings
    ).is_admin
    assert not authenticate(bearer(idp.mint("user_other", azp=TEST_AZP)), settings).is_admin


def test_nobody_is_admin_when_nothing_is_configured(idp: DevIdentityProvider) -> None:
    settings = settings_for(idp)
    for token in (
        idp.mint("user_a", org_id="org_1", org_role="admin", azp=TEST_AZP),
        idp.mint("user_b", azp=TEST_AZP),
        idp.sign(idp.claims("user_v1", azp=TEST_AZP, v=None, org_id="org_9", org_role="org:admin")),
    ):
        assert authenticate(bearer(token), settings).is_admin is False


def test_admin_from_v1_org_role_claim(idp: DevIdentityProvider) -> None:
    # v1 claims (no "v", flat org_id/org_role): built with claims(), since mint() writes v2's "o".
    token = idp.sign(idp.claims("user_v1", azp=TEST_AZP, v=None, org_id="org_9", org_role="org:admin"))
    principal = authenticate(bearer(token), settings_for(idp, clerk_admin_org_id="org_9", clerk_admin_roles=("admin",)))
    assert (principal.org_id, principal.org_role, principal.is_admin) == ("org_9", "org:admin", True)


def test_token_source_is_bearer_or_cookie(idp: DevIdentityProvider) -> None:
    token = idp.mint("user_s", azp=TEST_AZP)
    assert extract_token_and_source(bearer(token)) == (token, "bearer")
    assert extract_token_and_source({"Cookie": f"a=b; __session={token}"}) == (token, "cookie")
    both = {**bearer(token), "Cookie": "__session=other"}
    assert extract_token_and_source(both) == (token, "bearer")
    assert extract_token_and_source({}) == (None, None)
    settings = settings_for(idp)
    assert authenticate({"Cookie": f"__session={token}"}, settings).token_source == "cookie"
    assert authenticate(bearer(token), settings).token_source == "bearer"


def test_is_admin_role() -> None:
    assert is_admin_role("admin", ("org:admin",))
    assert is_admin_role("org:admin", ("admin",))
    assert not is_admin_role("member", ("org:admin", "admin"))
    assert not is_admin_role(None, ("admin",))
    assert not is_admin_role("org:admin", ())


def test_principal_is_frozen_and_hashable(idp: DevIdentityProvider) -> None:
    principal = authenticate(bearer(idp.mint("user_f", azp=TEST_AZP)), settings_for(idp))
    with pytest.raises(dataclasses.FrozenInstanceError):
        principal.user_id = "user_other"  # type: ignore[misc]
    assert isinstance(hash(principal), int)
    assert isinstance(principal, Principal)


# ---------------------------------------------------------------- JWKS behaviour


def test_warm_invocations_reuse_the_jwks(private_idp: DevIdentityProvider) -> None:
    settings = settings_for(private_idp)
    for user in ("user_1", "user_2", "user_3"):
        assert authenticate(bearer(private_idp.mint(user, azp=TEST_AZP)), settings).user_id == user
    assert private_idp.jwks_fetches == 1
    assert verifier_for(settings) is verifier_for(settings_for(private_idp))


def test_key_rotation_is_picked_up(private_idp: DevIdentityProvider) -> None:
    idp, clock = private_idp, FakeClock()
    verifier = ClerkVerifier(settings_for(idp), key_source=JwksKeySource(idp.jwks_url, clock=clock))
    old_token = idp.mint("user_r", azp=TEST_AZP)
    assert verifier.verify(old_token)["sub"] == "user_r"
    old_kid = idp.kid

    new_kid = idp.rotate()
    assert new_kid != old_kid
    new_token = idp.mint("user_r", azp=TEST_AZP)
    # Within the minimum refetch interval (10 s) a new kid is not fetched for ...
    with pytest.raises(AuthError) as info:
        verifier.verify(new_token)
    assert info.value.code == "token-unknown-kid"
    # ... after it, the rotated key is fetched and both keys verify.
    clock.advance(11)
    assert verifier.verify(new_token)["sub"] == "user_r"
    assert verifier.verify(old_token)["sub"] == "user_r"
    assert idp.jwks_fetches == 2


def test_key_rotation_through_the_public_api(private_idp: DevIdentityProvider) -> None:
    settings = settings_for(private_idp)
    private_idp.rotate()
    assert authenticate(bearer(private_idp.mint("user_r", azp=TEST_AZP)), settings).user_id == "user_r"


def test_rotation_without_keep_old_revokes_old_key(private_idp: DevIdentityProvider) -> None:
    idp, clock = private_idp, FakeClock()
    verifier = ClerkVerifier(settings_for(idp), key_source=JwksKeySource(idp.jwks_url, clock=clock))
    old_token = idp.mint("user_r", azp=TEST_AZP)
    assert verifier.verify(old_token)["sub"] == "user_r"
    idp.rotate(keep_old=False)
    clock.advance(301)  # past the JWKS TTL: the next use refetches, and the old kid is gone
    with pytest.raises(AuthError) as info:
        verifier.verify(old_token)
    assert info.value.code == "token-unknown-kid"


def test_unknown_kid_storm_fetches_at_most_once(private_idp: DevIdentityProvider) -> None:
    settings = settings_for(private_idp)
    before = private_idp.jwks_fetches
    for _ in range(50):
        err = rejected(bearer(unknown_kid(private_idp, TEST_AZP)), settings)
        assert err.code == "token-unknown-kid"
    assert private_idp.jwks_fetches - before <= 1
    # The real key came with that one fetch: a valid token needs no further fetch.
    assert authenticate(bearer(private_idp.mint("user_ok", azp=TEST_AZP)), settings).user_id == "user_ok"
    assert private_idp.jwks_fetches - before <= 1


def test_jwks_down_after_first_fetch_keeps_cached_keys(private_idp: DevIdentityProvider) -> None:
    idp = private_idp
    settings = settings_for(idp)
    token = idp.mint("user_d", azp=TEST_AZP)
    assert authenticate(bearer(token), settings).user_id == "user_d"
    idp.stop()
    assert authenticate(bearer(idp.mint("user_d2", azp=TEST_AZP)), settings).user_id == "user_d2"


def test_jwks_down_past_ttl_serves_stale_keys(private_idp: DevIdentityProvider) -> None:
    idp, clock = private_idp, FakeClock()
    source = JwksKeySource(idp.jwks_url, clock=clock, fetch_timeout_seconds=1)
    verifier = ClerkVerifier(settings_for(idp), key_source=source)
    assert verifier.verify(idp.mint("user_s", azp=TEST_AZP))["sub"] == "user_s"
    idp.stop()
    clock.advance(301)
    assert verifier.verify(idp.mint("user_s", azp=TEST_AZP))["sub"] == "user_s"
    assert source.fetch_attempts == 2  # the refresh was tried, failed, and the stale key served
    # A made-up kid while the JWKS is down and the refresh just failed: no new fetch, still 401.
    with pytest.raises(AuthError) as info:
        verifier.verify(unknown_kid(idp, TEST_AZP))
    assert info.value.code == "token-unknown-kid"
    assert source.fetch_attempts == 2


def test_jwks_unreachable_is_401_and_not_hammered(idp: DevIdentityProvider) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    settings = settings_for(idp, clerk_jwks_url=f"http://127.0.0.1:{dead_port}/.well-known/jwks.json")
    token = idp.mint("user_x", azp=TEST_AZP)
    for _ in range(5):
        err = rejected(bearer(token), settings)
        assert err.code == "jwks-unavailable"
        assert error_status(err.code) == 401
        assert error_headers(err) == {"WWW-Authenticate": INVALID_TOKEN_CHALLENGE}
    # One attempt; the next four fell within the minimum refetch interval.
    shared = key_source_for(
        settings.jwks_url or "",
        cache_seconds=settings.jwks_cache_seconds,
        fetch_timeout_seconds=settings.jwks_fetch_timeout_seconds,
    )
    assert shared.fetch_attempts == 1


def test_jwks_fetch_times_out_quickly(idp: DevIdentityProvider) -> None:
    with socket.socket() as hang:  # accepts TCP connections (backlog) but never answers
        hang.bind(("127.0.0.1", 0))
        hang.listen(8)
        url = f"http://127.0.0.1:{hang.getsockname()[1]}/.well-known/jwks.json"
        settings = settings_for(idp, clerk_jwks_url=url, jwks_fetch_timeout_seconds=0.3)
        started = time.monotonic()
        err = rejected(bearer(idp.mint("user_t", azp=TEST_AZP)), settings)
        elapsed = time.monotonic() - started
    assert err.code == "jwks-unavailable"
    assert elapsed < 2.5


def test_me_says_who_the_caller_is_and_whether_this_deployment_makes_them_an_admin(api, idp, user_token, monkeypatch):
    """``GET /v1/me``: the web client shows the Admin screen from ``is_admin``, so an admin of
    another organization (a role the token carries) is not shown it."""
    from tests import openapi_check
    from tests.fixtures.api import admin_token

    boss = admin_token(idp, monkeypatch)  # an admin of CLERK_ADMIN_ORG_ID
    reply = api.get("/v1/me", token=boss)
    assert reply.status == 200, reply.body
    openapi_check.check("/v1/me", "GET", 200, reply.json)
    assert reply.json == {"user_id": "boss", "org_id": "org_1", "org_role": "admin", "is_admin": True}
    elsewhere = api.get("/v1/me", token=user_token("carol", org_id="org_other", org_role="admin")).json
    assert elsewhere == {"user_id": "carol", "org_id": "org_other", "org_role": "admin", "is_admin": False}
    assert api.get("/v1/admin/keys", token=user_token("carol", org_id="org_other", org_role="admin")).status == 403
    plain = api.get("/v1/me", user="dave").json
    assert plain["is_admin"] is False and plain["org_id"] is None
    assert api.get("/v1/me").status == 401
