"""The Api layer's hardening, end to end on the local stack (moto, Flux emulator, dev IdP over HTTP):
configured admins only, the cookie Origin rule (CSRF), request media types, the per-user write
rate limit and a /health that neither calls AWS on every hit nor reveals anything."""

from __future__ import annotations

import json

from chalicelib.settings import get_settings
from devstack.prompts import first
from tests import openapi_check
from tests.fixtures.api import WEB_ORIGIN
from tests.polling import wait_for

SMALL = {"width": 256, "height": 256}
EVIL_ORIGIN = "https://evil.example"


def parti(i: int) -> str:
    """The ``i``-th PartiPrompts prompt."""
    return first(i + 1)[i]


def configure(monkeypatch, **env: str) -> None:
    """Set app environment variables and make the app read them again."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def used(api, user: str) -> int:
    return api.get("/v1/me/usage", user=user).json["used"]


def assert_error(reply, status: int, code: str) -> None:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.header("Content-Type") == "application/json"
    assert reply.json["error"]["code"] == code


# --- admin: granted by configuration only ------------------------------------------------------


def test_a_self_made_org_admin_is_not_admin_and_nothing_configured_means_nobody(api, idp):
    self_made = idp.mint("user_mallory", azp=WEB_ORIGIN, org_id="org_mallory", org_role="admin")
    assert_error(api.get("/v1/admin/keys", token=self_made), 403, "forbidden")
    dev_admin = idp.mint("user_dev", azp=WEB_ORIGIN, org_id="org_dev", org_role="admin")
    assert_error(api.get("/v1/admin/keys", token=dev_admin), 403, "forbidden")


def test_admin_org_and_admin_user_ids_are_allowed(api, idp, monkeypatch):
    configure(monkeypatch, CLERK_ADMIN_ORG_ID="org_ours", CLERK_ADMIN_USER_IDS="user_root")
    ours = idp.mint("user_ops", azp=WEB_ORIGIN, org_id="org_ours", org_role="admin")
    reply = api.get("/v1/admin/keys", token=ours)
    assert reply.status == 200 and len(reply.json["keys"]) == 4
    openapi_check.check("/v1/admin/keys", "GET", 200, reply.json)
    assert api.get("/v1/admin/keys", user="user_root").status == 200
    member = idp.mint("user_m", azp=WEB_ORIGIN, org_id="org_ours", org_role="member")
    assert_error(api.get("/v1/admin/keys", token=member), 403, "forbidden")
    self_made = idp.mint("user_mallory", azp=WEB_ORIGIN, org_id="org_mallory", org_role="admin")
    assert_error(api.get("/v1/admin/keys", token=self_made), 403, "forbidden")
    assert_error(api.get("/v1/admin/keys", user="user_rooted"), 403, "forbidden")


# --- CSRF: cookie-authenticated writes need an allowed Origin ------------------------------------


def test_cross_site_cookie_post_is_403_and_charges_nothing(api, user_token):
    cookie = f"__session={user_token('victim')}"
    body = json.dumps({"prompt": parti(0), **SMALL})
    reply = api.post(
        "/v1/images",
        body=body,
        headers={"cookie": cookie, "origin": EVIL_ORIGIN, "content-type": "text/plain; application/json"},
    )
    assert_error(reply, 403, "origin-not-allowed")
    assert reply.header("Access-Control-Allow-Origin") is None
    no_origin = api.post(
        "/v1/images", body=body, headers={"cookie": cookie, "origin": None, "content-type": "application/json"}
    )
    assert_error(no_origin, 403, "origin-not-allowed")
    null_origin = api.post(
        "/v1/images", body=body, headers={"cookie": cookie, "origin": "null", "content-type": "application/json"}
    )
    assert_error(null_origin, 403, "origin-not-allowed")
    delete = api.delete("/v1/images/img_x", headers={"cookie": cookie, "origin": EVIL_ORIGIN})
    assert_error(delete, 403, "origin-not-allowed")
    assert used(api, "victim") == 0
    assert api.get("/v1/images", user="victim").json["images"] == []


def test_cookie_post_from_the_allowed_origin_and_bearer_without_origin_work(api, user_token):
    cookie = f"__session={user_token('alice')}"
    same_site = api.post(
        "/v1/images", json_body={"prompt": parti(1), **SMALL}, headers={"cookie": cookie, "origin": WEB_ORIGIN}
    )
    assert same_site.status == 201, same_site.body
    bearer = api.post("/v1/images", user="bob", json_body={"prompt": parti(2), **SMALL}, headers={"origin": None})
    assert bearer.status == 201, bearer.body
    assert used(api, "alice") == 1 and used(api, "bob") == 1
    # Reads with the cookie stay open cross-site (the CORS allow-list keeps the answer from the page).
    assert api.get("/v1/images", headers={"cookie": cookie, "origin": EVIL_ORIGIN}).status == 200


# --- request media types --------------------------------------------------------------------------


def test_only_application_json_is_accepted_whatever_the_auth_source(api):
    body = json.dumps({"prompt": parti(3), **SMALL})
    for ctype in (
        "text/plain; application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonx",
        None,
    ):
        reply = api.post("/v1/images", user="typed", body=body, headers={"content-type": ctype})
        assert_error(reply, 415, "unsupported-media-type")
        assert reply.json["error"]["field"] == "Content-Type"
    openapi_check.check("/v1/images", "POST", 415, reply.json)
    assert_error(
        api.post(
            "/v1/archives",
            user="typed",
            body=json.dumps({"image_ids": ["img_1"]}),
            headers={"content-type": "text/plain"},
        ),
        415,
        "unsupported-media-type",
    )
    assert_error(
        api.post(
            "/v1/jobs",
            user="typed",
            body=json.dumps({"prompts": [parti(4)]}),
            headers={"content-type": "text/plain; application/json"},
        ),
        415,
        "unsupported-media-type",
    )
    assert used(api, "typed") == 0
    ok = api.post("/v1/images", user="typed", body=body, headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status == 201, ok.body
    assert used(api, "typed") == 1
    # A preflight is answered by us whatever Content-Type it carries (Chalice would answer 415 itself).
    preflight = api.request("OPTIONS", "/v1/images", headers={"content-type": "text/plain"})
    assert preflight.status == 204 and preflight.header("Access-Control-Allow-Origin") == WEB_ORIGIN


# --- per-user write rate limit --------------------------------------------------------------------


def _limited(api, user: str) -> object:
    """Write until the limit answers (at most a window's worth plus a rollover)."""
    for _ in range(6):
        reply = api.delete("/v1/images/img_none", user=user)
        if reply.status == 429:
            return reply
        assert reply.status == 404, reply.body
    return None


def test_mutating_routes_are_rate_limited_per_user(api, monkeypatch):
    configure(monkeypatch, MUTATION_RATE_LIMIT_PER_MINUTE="2")
    limited = _limited(api, "hasty")
    assert limited is not None, "no 429 after more than two writes in a minute"
    assert_error(limited, 429, "rate-limited")
    assert 1 <= int(limited.header("Retry-After")) <= 60
    assert "Retry-After" in limited.header("Access-Control-Expose-Headers")
    openapi_check.check("/v1/images/{image_id}", "DELETE", 429, limited.json)
    # Another user is not affected; reads are not counted.
    assert api.delete("/v1/images/img_none", user="patient").status == 404
    assert api.get("/v1/images", user="hasty").status == 200
    # Every mutating route gets it, the job routes too.
    job = api.post("/v1/jobs/job_none/cancel", user="hasty")
    assert job.status in (404, 429)


def test_refused_requests_are_not_counted(api, monkeypatch):
    configure(monkeypatch, MUTATION_RATE_LIMIT_PER_MINUTE="1")
    for _ in range(3):
        reply = api.post("/v1/archives", user="typo", body="{}", headers={"content-type": "text/plain"})
        assert_error(reply, 415, "unsupported-media-type")
    assert api.delete("/v1/images/img_none", user="typo").status == 404


# --- /health --------------------------------------------------------------------------------------


def test_health_is_cached_and_reveals_nothing(api, monkeypatch):
    from chalicelib.db import ImageModel

    reply = api.get("/health", headers={"origin": None})
    assert reply.status == 200 and reply.json == {"status": "ok"}
    openapi_check.check("/health", "GET", 200, reply.json)
    ImageModel.delete_table()  # DynamoDB is now broken for the app
    for _ in range(5):  # answered from memory: no AWS call sees the missing table
        again = api.get("/health")
        assert again.status == 200 and again.json == {"status": "ok"}
    configure(monkeypatch, HEALTH_CACHE_SECONDS="0.2")
    degraded = wait_for(lambda: (r := api.get("/health")).status == 503 and r, timeout_s=10)
    assert degraded.json == {"status": "degraded"}
    openapi_check.check("/health", "GET", 503, degraded.json)
    assert "promptcanvas" not in degraded.body.decode() and "version" not in degraded.body.decode()
