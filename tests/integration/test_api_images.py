"""The authenticated image API, end to end on the local stack (moto, Flux emulator, dev IdP over HTTP)."""

from __future__ import annotations

import io
import math

import boto3
import pytest
import requests
from PIL import Image

from chalicelib.flux.pacing import PACE_MARGIN
from chalicelib.settings import get_settings
from devstack.prompts import first, non_ascii
from tests import openapi_check
from tests.fixtures.api import WEB_ORIGIN
from tests.token_cases import CASE_IDS, REJECTION_CASES

SMALL = {"width": 256, "height": 256}


def objects_under(prefix: str) -> list[str]:
    s3 = boto3.client("s3")
    listing = s3.list_objects_v2(Bucket=get_settings().images_bucket, Prefix=prefix)
    return [o["Key"] for o in listing.get("Contents", [])]


def usage_of(api, user: str) -> int:
    return api.get("/v1/me/usage", user=user).json["used"]


def charged_nothing(api, user: str) -> bool:
    """No image, no cost and no spend by model on ``user``'s month (a refunded request)."""
    usage = api.get("/v1/me/usage", user=user).json
    return (usage["used"], usage["cost_usd"], usage["spend_by_model"]) == (0, 0, [])


# --- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "build", "code"), REJECTION_CASES, ids=CASE_IDS)
def test_every_token_rejection_is_a_401_with_its_code(api, idp, name, build, code):
    reply = api.get("/v1/images", token=build(idp, WEB_ORIGIN))
    assert reply.status == 401, reply.body
    assert reply.json["error"]["code"] == code
    assert reply.header("WWW-Authenticate") == 'Bearer error="invalid_token"'


def test_missing_token_is_401_token_missing(api):
    reply = api.get("/v1/images")
    assert reply.status == 401
    assert reply.json["error"]["code"] == "token-missing"
    assert reply.header("WWW-Authenticate").startswith("Bearer")


def test_session_cookie_is_accepted(api, user_token):
    reply = api.get("/v1/images", headers={"cookie": f"__session={user_token('cookie-user')}"})
    assert reply.status == 200
    assert reply.json == {"images": [], "next_cursor": None}


def test_every_v1_route_requires_a_token(api):
    import app as app_module

    for path, methods in app_module.app.routes.items():
        if not path.startswith("/v1"):
            continue
        concrete = path.replace("{", "").replace("}", "")
        for method in methods:
            if method == "OPTIONS":
                continue
            reply = api.request(method, concrete, json_body={} if method == "POST" else None)
            assert reply.status == 401, (method, path, reply.status)


# --- CORS -----------------------------------------------------------------------------------------


def test_cors_preflight_and_allow_list(api):
    pre = api.request("OPTIONS", "/v1/images", headers={"origin": WEB_ORIGIN, "access-control-request-method": "POST"})
    assert pre.status == 204
    assert pre.header("Access-Control-Allow-Origin") == WEB_ORIGIN
    assert pre.header("Access-Control-Allow-Credentials") == "true"
    assert "Authorization" in pre.header("Access-Control-Allow-Headers")
    evil = api.get("/v1/images", user="u1", headers={"origin": "https://evil.example"})
    assert evil.header("Access-Control-Allow-Origin") is None
    ok = api.get("/v1/images", user="u1")
    assert ok.header("Access-Control-Allow-Origin") == WEB_ORIGIN


# --- generation -------------------------------------------------------------------------------


def test_generate_stores_a_real_image_and_reproduces_by_seed(api, flux):
    prompt = first(30)[-1]
    reply = api.post("/v1/images", user="alice", json_body={"prompt": prompt, **SMALL, "collection": "tests"})
    assert reply.status == 201, reply.body
    openapi_check.check("/v1/images", "POST", 201, reply.json)
    image = reply.json["images"][0]
    assert image["prompt"] == prompt and image["width"] == 256 and image["model"]
    original = requests.get(image["url"], timeout=5).content
    with Image.open(io.BytesIO(original)) as img:
        assert img.size == (256, 256)
        assert not img.getexif()  # metadata stripped
    with Image.open(io.BytesIO(requests.get(image["thumbnail_url"], timeout=5).content)) as thumb:
        assert thumb.format == "WEBP" and max(thumb.size) == 256
    again = api.post("/v1/images", user="alice", json_body={"prompt": prompt, **SMALL, "seed": image["seed"]})
    assert again.status == 201
    assert requests.get(again.json["images"][0]["url"], timeout=5).content == original
    assert usage_of(api, "alice") == 2
    recent = api.get("/v1/prompts/recent", user="alice").json["prompts"]
    assert recent[0]["prompt"] == prompt and recent[0]["uses"] == 2


def test_twenty_partiprompts_end_to_end_including_non_ascii(api):
    prompts = first(16) + non_ascii(4)
    assert any("Dalí" in p or "’" in p or "“" in p for p in prompts)
    ids = []
    for prompt in prompts:
        reply = api.post("/v1/images", user="parti", json_body={"prompt": prompt, **SMALL})
        assert reply.status == 201, (prompt, reply.body)
        assert reply.json["images"][0]["prompt"] == prompt
        ids.append(reply.json["images"][0]["id"])
    listed, cursor = [], None
    while True:
        page = api.get("/v1/images?limit=7" + (f"&cursor={cursor}" if cursor else ""), user="parti")
        assert page.status == 200
        openapi_check.check("/v1/images", "GET", 200, page.json)
        listed += [i["id"] for i in page.json["images"]]
        cursor = page.json["next_cursor"]
        if not cursor:
            break
    assert listed == list(reversed(ids))  # newest first, every image exactly once
    assert len(objects_under("users/parti/")) == 40  # original + thumbnail each


def test_collection_filter(api):
    api.post("/v1/images", user="col", json_body={"prompt": "a cat", **SMALL, "collection": "cats"})
    api.post("/v1/images", user="col", json_body={"prompt": "a dog", **SMALL, "collection": "dogs"})
    cats = api.get("/v1/images?collection=cats", user="col").json["images"]
    assert [i["prompt"] for i in cats] == ["a cat"]


def test_n_images_each_with_its_own_reproducible_seed(api):
    reply = api.post("/v1/images", user="multi", json_body={"prompt": "three apples", **SMALL, "n": 3, "seed": 7})
    assert reply.status == 201
    assert len(reply.json["images"]) == 3
    assert len({i["seed"] for i in reply.json["images"]}) == 3


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "a\x07bell"}, "prompt"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({"prompt": "ok", "steps": 500}, "steps"),
        ({"prompt": "ok", "width": 300, "height": 256}, "width"),
        ({"prompt": "ok", "n": 9}, "n"),
        ({"prompt": "ok", "model": "dall-e"}, "model"),
        ({"prompt": "ok", "surprise": 1}, "surprise"),
        ({"prompt": "ok", "collection": "../etc"}, "collection"),
        ({}, "prompt"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_writes_nothing(api, flux, body, field):
    reply = api.post("/v1/images", user="val", json_body=body)
    assert reply.status == 400, reply.body
    assert reply.json["error"]["field"] == field
    openapi_check.check("/v1/images", "POST", 400, reply.json)
    assert flux.stats()["requests"] == 0
    assert usage_of(api, "val") == 0


def test_malformed_and_oversized_bodies(api):
    assert (
        api.post("/v1/images", user="val", body="{not json", headers={"content-type": "application/json"}).json[
            "error"
        ]["code"]
        == "invalid-json"
    )
    assert api.post("/v1/images", user="val", body="[1]", headers={"content-type": "application/json"}).status == 400
    big = api.post("/v1/images", user="val", json_body={"prompt": "x", "negative_prompt": "y" * 70000})
    assert big.status == 413 and big.json["error"]["code"] == "body-too-large"
    assert api.get("/v1/images?limit=0", user="val").json["error"]["field"] == "limit"
    assert api.get("/v1/images?cursor=garbage", user="val").json["error"]["code"] == "invalid-cursor"


# --- ownership ------------------------------------------------------------------------------------


def test_other_users_images_are_404_for_get_and_delete(api):
    image = api.post("/v1/images", user="owner", json_body={"prompt": "a lighthouse", **SMALL}).json["images"][0]
    assert api.get(f"/v1/images/{image['id']}", user="intruder").status == 404
    assert api.delete(f"/v1/images/{image['id']}", user="intruder").status == 404
    assert api.get("/v1/images", user="intruder").json["images"] == []
    # a cursor is a position in the caller's own images: the owner's cursor pages nothing of theirs
    api.post("/v1/images", user="owner", json_body={"prompt": "another", **SMALL})
    cursor = api.get("/v1/images?limit=1", user="owner").json["next_cursor"]
    theirs = api.get(f"/v1/images?cursor={cursor}", user="intruder")
    assert theirs.status == 200 and theirs.json == {"images": [], "next_cursor": None}
    mine = api.get(f"/v1/images/{image['id']}", user="owner")
    assert mine.status == 200
    openapi_check.check("/v1/images/{image_id}", "GET", 200, mine.json)


def test_delete_removes_objects_and_metadata(api):
    image = api.post("/v1/images", user="del", json_body={"prompt": "a paper boat", **SMALL}).json["images"][0]
    assert len(objects_under("users/del/")) == 2
    assert api.delete(f"/v1/images/{image['id']}", user="del").status == 204
    assert api.get(f"/v1/images/{image['id']}", user="del").status == 404
    assert objects_under("users/del/") == []


# --- upstream failures, quota, rate limit -------------------------------------------------------------


def test_all_keys_cooling_is_503_with_retry_after_and_refunds(api, flux):
    flux.reset(rate_limit_per_minute=1)  # each key serves one image a minute
    for i in range(4):
        assert api.post("/v1/images", user="warm", json_body={"prompt": f"warm {i}", **SMALL}).status == 201
    reply = api.post("/v1/images", user="cool", json_body={"prompt": "a bonsai tree", **SMALL})
    assert reply.status == 503, reply.body
    assert reply.json["error"]["code"] == "keys-cooling"
    # the window is a minute; the pacer adds PACE_MARGIN to every wait it derives from it
    assert 1 <= int(reply.header("Retry-After")) <= math.ceil(60 * (1 + PACE_MARGIN))
    assert charged_nothing(api, "cool")
    assert objects_under("users/cool/") == []


def test_upstream_rejection_is_422_without_retry(api, flux):
    reply = api.post("/v1/images", user="rej", json_body={"prompt": "__REJECT__ this", **SMALL})
    assert reply.status == 422
    assert reply.json["error"]["code"] == "upstream-rejected"
    assert flux.stats()["requests"] == 1
    assert charged_nothing(api, "rej")


def test_corrupt_images_are_retried_then_failed_with_nothing_stored(api, flux):
    flux.reset(pcorrupt=1.0)
    reply = api.post("/v1/images", user="bad", json_body={"prompt": "a glass of water", **SMALL})
    assert reply.status == 502
    assert flux.stats()["requests"] > 1
    assert objects_under("users/bad/") == []
    assert api.get("/v1/images", user="bad").json["images"] == []
    assert charged_nothing(api, "bad")


def test_metadata_write_failure_leaves_no_object_and_refunds(api):
    from chalicelib.db import ImageModel

    ImageModel.delete_table()  # the metadata write will fail for real
    try:
        reply = api.post("/v1/images", user="half", json_body={"prompt": "a kite", **SMALL})
        assert reply.status == 502
        assert objects_under("users/half/") == []
        assert charged_nothing(api, "half")
    finally:
        ImageModel.create_table(wait=True)


def test_quota_and_rate_limit(api, monkeypatch):
    monkeypatch.setenv("MONTHLY_IMAGE_QUOTA", "2")
    get_settings.cache_clear()
    assert api.post("/v1/images", user="quota", json_body={"prompt": "one", **SMALL, "n": 2}).status == 201
    over = api.post("/v1/images", user="quota", json_body={"prompt": "two", **SMALL})
    assert over.status == 429 and over.json["error"]["code"] == "quota-exceeded"
    monkeypatch.setenv("MONTHLY_IMAGE_QUOTA", "100")
    monkeypatch.setenv("RATE_LIMIT_PER_MINUTE", "1")
    get_settings.cache_clear()
    api.post("/v1/images", user="rate", json_body={"prompt": "one", **SMALL})
    limited = api.post("/v1/images", user="rate", json_body={"prompt": "two", **SMALL})
    if limited.status != 429:  # the minute window rolled over between the two calls
        limited = api.post("/v1/images", user="rate", json_body={"prompt": "three", **SMALL})
    assert limited.status == 429 and limited.json["error"]["code"] == "rate-limited"
    assert 1 <= int(limited.header("Retry-After")) <= 60


# --- meta and admin ---------------------------------------------------------------------------------


def test_health_models_and_admin_keys(api, idp, monkeypatch):
    health = api.get("/health")
    assert health.status == 200 and health.json == {"status": "ok"}
    openapi_check.check("/health", "GET", 200, health.json)
    models = api.get("/v1/models", user="m").json
    assert models["default"] in {m["id"] for m in models["models"]}
    assert api.get("/v1/admin/keys", user="not-admin").status == 403
    monkeypatch.setenv("CLERK_ADMIN_ORG_ID", "org_1")
    get_settings.cache_clear()
    admin_token = idp.mint("boss", azp=WEB_ORIGIN, org_id="org_1", org_role="admin")
    keys = api.get("/v1/admin/keys", token=admin_token)
    assert keys.status == 200
    openapi_check.check("/v1/admin/keys", "GET", 200, keys.json)
    assert len(keys.json["keys"]) == 4
    assert "test-key" not in keys.body.decode()


def test_limits_follow_the_settings(api, monkeypatch):
    default = api.get("/v1/limits", user="lim")
    assert default.status == 200
    openapi_check.check("/v1/limits", "GET", 200, default.json)
    assert default.json["jobs"] == {"max_items": 1000, "max_body_bytes": 2 * 1024 * 1024}
    monkeypatch.setenv("JOBS_MAX_ITEMS", "40")
    monkeypatch.setenv("JOBS_MAX_BODY_BYTES", str(512 * 1024))
    get_settings.cache_clear()
    tightened = api.get("/v1/limits", user="lim").json
    assert tightened["jobs"] == {"max_items": 40, "max_body_bytes": 512 * 1024}
    assert tightened["prompt"]["max_chars"] == default.json["prompt"]["max_chars"]
    assert api.get("/v1/limits").status == 401


def test_openapi_document_matches_the_routes(api):
    import app as app_module

    spec = api.get("/v1/openapi.json", user="doc").json
    documented = {(p, m.upper()) for p, ops in spec["paths"].items() for m in ops}
    routed = {(p, m) for p, methods in app_module.app.routes.items() for m in methods if m != "OPTIONS"}
    assert documented == routed


def test_persistent_429s_are_a_503_not_an_upstream_failure(api, flux):
    flux.reset(p429=1.0)  # every answer is a 429 with a 1 s Retry-After
    reply = api.post("/v1/images", user="sat", json_body={"prompt": "a windmill", **SMALL})
    assert reply.status == 503, reply.body
    assert reply.json["error"]["code"] == "keys-cooling"
    assert int(reply.header("Retry-After")) >= 1
    assert usage_of(api, "sat") == 0


def test_retention_sets_a_ttl_backstop_on_image_metadata(api, monkeypatch):
    import time as _time

    from chalicelib.db import ImageModel

    plain = api.post("/v1/images", user="ttl", json_body={"prompt": "a snowman", **SMALL}).json["images"][0]
    assert ImageModel.get("ttl", plain["id"]).expires_at is None  # 0 days: kept forever
    monkeypatch.setenv("IMAGE_RETENTION_DAYS", "30")
    get_settings.cache_clear()
    kept = api.post("/v1/images", user="ttl", json_body={"prompt": "a snowman", **SMALL}).json["images"][0]
    expires = ImageModel.get("ttl", kept["id"]).expires_at.timestamp()
    assert abs(expires - (_time.time() + 31 * 86400)) < 120
