"""Share links end to end on the local stack (moto, Flux emulator, dev IdP over HTTP):
create, list, revoke, expiry, ownership, public pages, rate limits, escaping, sweeps."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import pytest
import requests

from chalicelib.services import shares as shares_service
from devstack.prompts import first
from tests import openapi_check
from tests.polling import wait_for

SMALL = {"width": 256, "height": 256}


def make_image(api, user: str, prompt: str, collection: str | None = None) -> dict:
    body = {"prompt": prompt, **SMALL}
    if collection:
        body["collection"] = collection
    reply = api.post("/v1/images", user=user, json_body=body)
    assert reply.status == 201, reply.body
    return reply.json["images"][0]


def share(api, user: str, image_id: str, **body) -> dict:
    reply = api.post(f"/v1/images/{image_id}/shares", user=user, json_body=body)
    assert reply.status == 201, reply.body
    return reply.json


def path_of(url: str) -> str:
    return "/s/" + url.rsplit("/s/", 1)[1]


def open_share(api, url: str, ip: str | None = None):
    return api.get(path_of(url), headers={"origin": None})


@pytest.fixture
def prompts() -> list[str]:
    return first(6)


def test_share_an_image_opens_signed_out_with_image_prompt_and_headers(api, prompts):
    image = make_image(api, "alice", prompts[0])
    created = share(api, "alice", image["id"])
    assert set(created) >= {"share_id", "url", "expires_at"}
    code = created["url"].rsplit("/s/", 1)[1]
    assert re.fullmatch(r"[0-9A-Za-z]{16}", code)  # 95 bits of base62
    expires = datetime.fromisoformat(created["expires_at"].replace("Z", "+00:00"))
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)

    page = open_share(api, created["url"])
    assert page.status == 200, page.body
    text = page.body.decode()
    assert page.header("Content-Type").startswith("text/html")
    assert html.escape(prompts[0]) in text
    assert 'property="og:title"' in text and 'property="og:image"' in text
    (src,) = re.findall(r'<img src="([^"]+)"', text)
    got = requests.get(html.unescape(src), timeout=10)  # the presigned URL works, signed out
    assert got.status_code == 200 and got.content[:2] in (b"\xff\xd8", b"\x89P")
    assert "X-Amz-Expires=300" in html.unescape(src)
    csp = page.header("Content-Security-Policy")
    assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'none'" in csp
    assert page.header("X-Content-Type-Options") == "nosniff"
    assert page.header("Referrer-Policy") == "no-referrer"
    assert page.header("Cache-Control") == "private, max-age=0, must-revalidate"


def test_each_view_mints_a_fresh_presigned_url_and_counts(api, prompts):
    image = make_image(api, "alice", prompts[1])
    created = share(api, "alice", image["id"])
    for _ in range(3):
        assert open_share(api, created["url"]).status == 200
    (listed,) = api.get("/v1/shares", user="alice").json["shares"]
    assert listed["share_id"] == created["share_id"] and listed["views"] == 3
    assert listed["url"] == created["url"] and listed["target_type"] == "image"
    assert listed["target_id"] == image["id"] and listed["last_viewed_at"]


def test_revoke_stops_the_link_at_once(api, prompts):
    image = make_image(api, "alice", prompts[2])
    created = share(api, "alice", image["id"])
    assert open_share(api, created["url"]).status == 200
    assert api.delete(f"/v1/shares/{created['share_id']}", user="alice").status == 204
    gone = open_share(api, created["url"])
    assert gone.status == 404 and gone.header("Content-Type").startswith("text/html")
    assert gone.header("Cache-Control") == "no-store"
    assert api.get("/v1/shares", user="alice").json["shares"] == []
    assert api.delete(f"/v1/shares/{created['share_id']}", user="alice").status == 404


def test_other_users_images_and_shares_are_404(api, prompts):
    image = make_image(api, "alice", prompts[0])
    stolen = api.post(f"/v1/images/{image['id']}/shares", user="mallory", json_body={})
    assert stolen.status == 404 and stolen.json["error"]["code"] == "not-found"
    created = share(api, "alice", image["id"])
    assert api.delete(f"/v1/shares/{created['share_id']}", user="mallory").status == 404
    assert api.get("/v1/shares", user="mallory").json["shares"] == []
    assert open_share(api, created["url"]).status == 200  # still alice's, still live
    other = api.post("/v1/collections/nope/shares", user="mallory", json_body={})
    assert other.status == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"expires_in_s": 0}, "expires_in_s"),
        ({"expires_in_s": 90 * 86400 + 1}, "expires_in_s"),
        ({"expires_in_s": "60"}, "expires_in_s"),
        ({"expires_in_s": True}, "expires_in_s"),
        ({"expires": 60}, "expires"),
    ],
)
def test_bad_lifetimes_are_400(api, prompts, body, field):
    image = make_image(api, "alice", prompts[0])
    reply = api.post(f"/v1/images/{image['id']}/shares", user="alice", json_body=body)
    assert reply.status == 400 and reply.json["error"]["field"] == field


def test_maximum_lifetime_is_90_days(api, prompts):
    image = make_image(api, "alice", prompts[0])
    created = share(api, "alice", image["id"], expires_in_s=90 * 86400)
    expires = datetime.fromisoformat(created["expires_at"].replace("Z", "+00:00"))
    assert expires - datetime.now(UTC) > timedelta(days=89)


def test_expired_link_is_404_and_swept(api, prompts):
    image = make_image(api, "alice", prompts[3])
    short = share(api, "alice", image["id"], expires_in_s=1)
    long = share(api, "alice", image["id"])
    wait_for(lambda: open_share(api, short["url"]).status == 404, timeout_s=10, what="short link expired")
    assert open_share(api, long["url"]).status == 200
    assert [s["share_id"] for s in api.get("/v1/shares", user="alice").json["shares"]] == [long["share_id"]]

    from chalicelib.services import cleanup

    report = cleanup.sweep_shares(now=datetime.now(UTC))
    assert report.counts["shares_deleted"] == 1 and report.complete
    later = cleanup.sweep_shares(now=datetime.now(UTC) + timedelta(days=8))
    assert later.counts["shares_deleted"] == 1
    assert open_share(api, long["url"]).status == 404


def test_sweep_dry_run_deletes_nothing(api, prompts):
    image = make_image(api, "alice", prompts[3])
    created = share(api, "alice", image["id"])
    from chalicelib.services import cleanup

    report = cleanup.sweep_shares(now=datetime.now(UTC) + timedelta(days=8), dry_run=True)
    assert report.counts["would_delete_shares"] == 1
    assert open_share(api, created["url"]).status == 200


def test_deleting_the_image_revokes_its_links(api, prompts):
    image = make_image(api, "alice", prompts[4])
    created = share(api, "alice", image["id"])
    assert api.delete(f"/v1/images/{image['id']}", user="alice").status == 204
    assert api.get("/v1/shares", user="alice").json["shares"] == []  # revoked by the delete, not on a view
    assert open_share(api, created["url"]).status == 404


def test_deleting_a_collections_last_image_revokes_its_links(api, prompts):
    one = make_image(api, "alice", prompts[0], collection="brief")
    two = make_image(api, "alice", prompts[1], collection="brief")
    link = api.post("/v1/collections/brief/shares", user="alice", json_body={}).json
    assert api.delete(f"/v1/images/{one['id']}", user="alice").status == 204
    assert open_share(api, link["url"]).status == 200  # one image left: still a collection
    assert api.delete(f"/v1/images/{two['id']}", user="alice").status == 204
    assert api.get("/v1/shares", user="alice").json["shares"] == []
    make_image(api, "alice", prompts[2], collection="brief")  # the same name again: a new collection
    assert open_share(api, link["url"]).status == 404


def test_scheduled_share_sweep_runs(api, prompts):
    import os

    from chalice.test import Client

    import app as app_module

    image = make_image(api, "alice", prompts[0])
    share(api, "alice", image["id"], expires_in_s=1)
    wait_for(lambda: api.get("/v1/shares", user="alice").json["shares"] == [], timeout_s=10, what="link expired")
    project_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runs: list[dict] = []
    with Client(app_module.app, stage_name="local", project_dir=project_dir) as client:
        event = client.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
        )

        def swept() -> bool:
            runs.append(client.lambda_.invoke("cleanup_shares", event).payload)
            return runs[-1]["counts"].get("shares_deleted") == 1

        # a run cut short by its time budget on a busy machine leaves the rest to the next run
        wait_for(swept, timeout_s=20, what="(the sweep deletes the expired link)")
    assert all(run["sweep"] == "shares" for run in runs), runs
    assert sum(run["counts"].get("shares_deleted", 0) for run in runs) == 1, runs


def test_prompt_is_html_escaped(api):
    hostile = '<script>alert(1)</script> "quoted" & <img src=x onerror=alert(2)>'
    image = make_image(api, "alice", hostile, collection="xss")
    created = share(api, "alice", image["id"])
    text = open_share(api, created["url"]).body.decode()
    assert "<script>" not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "&quot;quoted&quot;" in text
    grid = api.post("/v1/collections/xss/shares", user="alice", json_body={})
    text = open_share(api, grid.json["url"]).body.decode()
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_collection_link_shows_a_grid(api, prompts):
    for prompt in prompts[:3]:
        make_image(api, "alice", prompt, collection="parti picks")
    make_image(api, "alice", prompts[4], collection="other")
    reply = api.post("/v1/collections/parti picks/shares", user="alice", json_body={"expires_in_s": 3600})
    assert reply.status == 201, reply.body
    assert reply.json["target_type"] == "collection" and reply.json["target_id"] == "parti picks"
    page = open_share(api, reply.json["url"])
    assert page.status == 200
    text = page.body.decode()
    assert text.count("<li>") == 3 and "parti picks" in text
    for prompt in prompts[:3]:
        assert html.escape(prompt) in text
    assert html.escape(prompts[4]) not in text
    missing = api.post("/v1/collections/never made/shares", user="alice", json_body={})
    assert missing.status == 404
    # the path segment as an HTTP client sends it (chalice local passes it on undecoded)
    escaped = api.post("/v1/collections/parti%20picks/shares", user="alice", json_body={})
    assert escaped.status == 201, escaped.body
    assert escaped.json["target_id"] == "parti picks"


def test_unknown_and_malformed_codes_are_the_same_404(api):
    a = api.get("/s/" + shares_service.new_code(), headers={"origin": None})
    b = api.get("/s/not-a-code", headers={"origin": None})
    assert a.status == b.status == 404
    assert a.body == b.body


def test_per_code_rate_limit_is_429(api, prompts, monkeypatch):
    monkeypatch.setenv("SHARE_VIEWS_PER_CODE_PER_MINUTE", "3")
    monkeypatch.setenv("SHARE_VIEWS_PER_IP_PER_MINUTE", "100")
    from chalicelib.settings import get_settings

    get_settings.cache_clear()
    image = make_image(api, "alice", prompts[5])
    created = share(api, "alice", image["id"])
    other = share(api, "alice", image["id"])
    statuses = [open_share(api, created["url"]).status for _ in range(4)]
    if statuses[-1] != 429:  # the minute turned over between hits: a fresh window
        statuses = [open_share(api, created["url"]).status for _ in range(4)]
    assert statuses[-1] == 429
    limited = open_share(api, created["url"])
    assert limited.status == 429 and 1 <= int(limited.header("Retry-After")) <= 60
    assert limited.header("Content-Type").startswith("text/html")
    assert open_share(api, other["url"]).status == 200  # another code is not limited
    # unknown codes are counted the same way, so a 429 says nothing about validity
    unknown = "/s/" + shares_service.new_code()
    replies = [api.get(unknown, headers={"origin": None}).status for _ in range(8)]
    assert 429 in replies


def test_per_ip_rate_limit_is_429_across_codes(api, prompts, monkeypatch):
    monkeypatch.setenv("SHARE_VIEWS_PER_IP_PER_MINUTE", "5")
    from chalicelib.settings import get_settings

    get_settings.cache_clear()
    replies = [api.get("/s/" + shares_service.new_code(), headers={"origin": None}).status for _ in range(12)]
    assert 429 in replies and replies[0] == 404


def test_share_answers_match_the_openapi_document(api, prompts):
    image = make_image(api, "alice", prompts[0])
    reply = api.post(f"/v1/images/{image['id']}/shares", user="alice", json_body={"expires_in_s": 600})
    openapi_check.check("/v1/images/{image_id}/shares", "POST", 201, reply.json)
    assert open_share(api, reply.json["url"]).status == 200
    listing = api.get("/v1/shares", user="alice")
    openapi_check.check("/v1/shares", "GET", 200, listing.json)
    bad = api.post(f"/v1/images/{image['id']}/shares", user="alice", json_body={"expires_in_s": -1})
    openapi_check.check("/v1/images/{image_id}/shares", "POST", 400, bad.json)
    empty = api.post(f"/v1/images/{image['id']}/shares", user="alice")  # no body at all: the defaults
    assert empty.status == 201
    wrong_type = api.post(
        f"/v1/images/{image['id']}/shares", user="alice", body="{}", headers={"content-type": "text/plain"}
    )
    assert wrong_type.status == 415
