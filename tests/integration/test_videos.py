"""Videos end to end on the local stack: POST /v1/videos validated against the model, the
worker submitting exactly once and polling through delayed SQS messages, the file streamed
into S3 with Together's cost, owner-only reads and deletes."""

from __future__ import annotations

import csv
import io

import av
import boto3
import pytest
import requests

from devstack.prompts import PARTI_PROMPTS
from tests import openapi_check
from tests.polling import wait_for


def _prompts() -> list[str]:
    with PARTI_PROMPTS.open(encoding="utf-8", newline="") as fh:
        return [row["Prompt"] for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]


PROMPTS = [p for p in _prompts() if p.isascii() and 20 < len(p) < 200]
SMALL = {"model": "pixverse/pixverse-v5", "width": 360, "height": 360}


@pytest.fixture
def fast_videos(flux, worker):
    """Renders take 0.3 s; polls start after 1 s; the worker runs."""
    flux.configure(time_scale=100.0, video_render_seconds=30.0)
    worker.configure(VIDEO_POLL_MIN_SECONDS=1, VIDEO_POLL_MAX_SECONDS=2)
    worker.start()
    return worker


def finished(api, user, video_id, timeout_s=40.0):
    def check():
        body = api.get(f"/v1/videos/{video_id}", user=user).json
        return body if body["status"] in ("completed", "failed") else None

    return wait_for(check, timeout_s=timeout_s, what=f"video {video_id} ends")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": PROMPTS[0], "model": "google/veo-3.0", "width": 360, "height": 360}, "width"),
        ({"prompt": PROMPTS[0], "model": "minimax/hailuo-02", "seconds": 7}, "seconds"),
        ({"prompt": PROMPTS[0], "model": "openai/sora-2", "fps": 24}, "fps"),
        (
            {
                "prompt": PROMPTS[0],
                "model": "google/veo-3.0",
                "image_id": "01J00000000000000000000000",
                "last_image_id": "01J00000000000000000000001",
            },
            "last_image_id",
        ),
        (
            {"prompt": PROMPTS[0], "model": "google/veo-3.0", "reference_image_ids": ["01J00000000000000000000000"]},
            "reference_image_ids",
        ),
        ({"prompt": PROMPTS[0], "model": "Wan-AI/Wan2.2-I2V-A14B"}, "image_id"),
        ({"prompt": PROMPTS[0], "model": "no/such-model"}, "model"),
        ({"prompt": PROMPTS[0], "colour": "red"}, "colour"),
        ({"prompt": PROMPTS[0], "collection": "../etc"}, "collection"),
    ],
)
def test_requests_the_model_cannot_take_are_400_naming_the_field(api, body, field):
    reply = api.post("/v1/videos", user="user_v1", json_body=body)
    assert reply.status == 400, reply.json
    assert reply.json["error"]["field"] == field
    assert api.get("/v1/videos", user="user_v1").json["videos"] == []


def test_someone_elses_image_is_a_404_and_nothing_is_charged(api):
    reply = api.post(
        "/v1/videos",
        user="user_v2",
        json_body={"prompt": PROMPTS[1], **SMALL, "image_id": "01J00000000000000000000000"},
    )
    assert reply.status == 404
    assert api.get("/v1/me/usage", user="user_v2").json["used"] == 0


def test_text_to_video_is_stored_with_its_cost_and_is_owner_only(api, fast_videos, flux):
    reply = api.post("/v1/videos", user="user_v3", json_body={"prompt": PROMPTS[2], **SMALL, "collection": "clips"})
    assert reply.status == 202
    video = reply.json
    assert video["status"] == "queued" and video["estimated_cost_usd"] > 0
    openapi_check.check("/v1/videos", "POST", 202, video)
    assert reply.header("Location") == f"/v1/videos/{video['video_id']}"
    done = finished(api, "user_v3", video["video_id"])
    assert done["status"] == "completed", done
    openapi_check.check("/v1/videos/{video_id}", "GET", 200, done)
    assert done["cost_usd"] == pytest.approx(0.3)  # what the emulator reported for pixverse 5 s
    data = requests.get(done["url"], timeout=10).content
    assert len(data) == done["bytes"]
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in container.decode(video=0)) >= 8
    assert flux.stats()["videos"]["submitted"] == 1

    assert api.get(f"/v1/videos/{video['video_id']}", user="user_other").status == 404
    assert api.delete(f"/v1/videos/{video['video_id']}", user="user_other").status == 404
    assert [v["video_id"] for v in api.get("/v1/videos?collection=clips", user="user_v3").json["videos"]] == [
        video["video_id"]
    ]
    assert api.get("/v1/videos", user="user_other").json["videos"] == []
    openapi_check.check("/v1/videos", "GET", 200, api.get("/v1/videos", user="user_v3").json)
    openapi_check.check("/v1/videos/models", "GET", 200, api.get("/v1/videos/models", user="user_v3").json)
    assert api.delete(f"/v1/videos/{video['video_id']}", user="user_v3").status == 204
    assert api.get(f"/v1/videos/{video['video_id']}", user="user_v3").status == 404


def test_an_upstream_failure_fails_the_video_with_a_reason_and_refunds(api, fast_videos):
    body = {"prompt": PROMPTS[3] + " __VIDEO_FAIL__", **SMALL}
    video = api.post("/v1/videos", user="user_v4", json_body=body).json
    done = finished(api, "user_v4", video["video_id"])
    assert done["status"] == "failed" and done["error"]["code"] == "generation_failed"
    assert api.get("/v1/me/usage", user="user_v4").json["used"] == 0


def test_redelivered_messages_submit_once_and_store_one_file(api, fast_videos, flux):
    """Every video's message is sent three more times (as SQS may redeliver it) while
    submits meet 500s and download URLs expire fast: still one upstream job and one file
    per video."""
    from chalicelib import queue
    from chalicelib.services.videos import video_message

    flux.configure(p500=0.3, fault_seed=3, video_url_ttl_seconds=30.0)
    ids = []
    for prompt in PROMPTS[4:7]:
        video = api.post("/v1/videos", user="user_v5", json_body={"prompt": prompt, **SMALL}).json
        ids.append(video["video_id"])
        queue.send_messages([video_message("user_v5", video["video_id"])] * 3)
    for video_id in ids:
        assert finished(api, "user_v5", video_id, timeout_s=60)["status"] == "completed"
    assert flux.stats()["videos"]["submitted"] == 3
    s3 = boto3.client("s3")
    from chalicelib.settings import get_settings

    listed = s3.list_objects_v2(Bucket=get_settings().images_bucket, Prefix="users/user_v5/videos/")
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in listed.get("Contents", [])) == sorted(f"{i}.mp4" for i in ids)


def test_the_deadline_fails_a_video_that_never_finishes(api, fast_videos, flux):
    flux.configure(video_render_seconds=1e9)
    fast_videos.configure(VIDEO_DEADLINE_SECONDS=3, VIDEO_POLL_MIN_SECONDS=1, VIDEO_POLL_MAX_SECONDS=1)
    video = api.post("/v1/videos", user="user_v6", json_body={"prompt": PROMPTS[8], **SMALL}).json
    done = finished(api, "user_v6", video["video_id"], timeout_s=30)
    assert done["status"] == "failed" and done["error"]["code"] == "deadline"


def test_a_finished_video_can_be_shared_and_the_page_plays_it(api, fast_videos):
    video = api.post("/v1/videos", user="user_v7", json_body={"prompt": PROMPTS[9], **SMALL}).json
    reply = api.post(f"/v1/videos/{video['video_id']}/shares", user="user_v7", json_body={})
    assert reply.status == 400  # still queued: nothing to show yet
    assert finished(api, "user_v7", video["video_id"])["status"] == "completed"
    assert api.post(f"/v1/videos/{video['video_id']}/shares", user="user_other", json_body={}).status == 404
    link = api.post(f"/v1/videos/{video['video_id']}/shares", user="user_v7", json_body={})
    assert link.status == 201 and link.json["target_type"] == "video"
    openapi_check.check("/v1/videos/{video_id}/shares", "POST", 201, link.json)
    path = "/s/" + link.json["url"].rsplit("/s/", 1)[1]
    page = api.get(path)
    assert page.status == 200
    html = page.body.decode()
    assert "<video " in html and "controls" in html and PROMPTS[9][:20] in html
    src = html.split('<video src="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    assert "media-src" in page.header("Content-Security-Policy")
    assert requests.get(src, timeout=10).content[4:8] == b"ftyp"  # an MP4
    assert api.delete(f"/v1/videos/{video['video_id']}", user="user_v7").status == 204
    assert api.get(path).status == 404


def test_a_video_holds_its_estimate_against_the_budget_and_a_failure_releases_it(api, fast_videos, monkeypatch):
    from chalicelib.settings import get_settings

    monkeypatch.setenv("MONTHLY_BUDGET_USD", "0.1")
    get_settings.cache_clear()
    over = api.post("/v1/videos", user="user_v8", json_body={"prompt": PROMPTS[11], **SMALL})
    assert over.status == 429 and over.json["error"]["code"] == "budget-exceeded", over.body
    openapi_check.check("/v1/videos", "POST", 429, over.json)
    assert over.json["error"]["estimate"]["videos"] == 1 and over.json["error"]["estimate"]["usd"] > 0.1
    assert api.get("/v1/me/usage", user="user_v8").json["used"] == 0

    monkeypatch.setenv("MONTHLY_BUDGET_USD", "10")
    get_settings.cache_clear()
    fast_videos.configure(MONTHLY_BUDGET_USD=10)
    video = api.post("/v1/videos", user="user_v8", json_body={"prompt": PROMPTS[11] + " __VIDEO_FAIL__", **SMALL})
    assert video.status == 202, video.body
    usage = api.get("/v1/me/usage", user="user_v8").json
    assert usage["committed_usd"] == pytest.approx(video.json["estimated_cost_usd"])
    assert finished(api, "user_v8", video.json["video_id"])["status"] == "failed"
    usage = api.get("/v1/me/usage", user="user_v8").json
    assert usage["used"] == 0 and usage["committed_usd"] == 0
