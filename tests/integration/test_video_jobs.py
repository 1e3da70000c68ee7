"""Video jobs (``POST /v1/jobs`` with ``kind: "video"``) end to end on the local stack: one
video per item through the same jobs machinery (counters, cancel, retry, ZIP), exactly one
upstream submit and one stored file per item under redelivered messages and upstream
failures, and each video's cost on its item and the job."""

from __future__ import annotations

import io
import json
import zipfile

import boto3
import pytest
import requests

from tests import openapi_check
from tests.fixtures.worker import check_job
from tests.integration.test_videos import PROMPTS, SMALL
from tests.polling import wait_for

VIDEO_JOB = {"kind": "video", **SMALL, "seconds": 5}


@pytest.fixture
def fast_videos(flux, worker):
    """Renders take 0.3 s; polls start after 1 s."""
    flux.configure(time_scale=100.0, video_render_seconds=30.0)
    worker.configure(VIDEO_POLL_MIN_SECONDS=1, VIDEO_POLL_MAX_SECONDS=2)
    return worker


def stored_videos(user: str) -> list[str]:
    from chalicelib.settings import get_settings

    listed = boto3.client("s3").list_objects_v2(Bucket=get_settings().images_bucket, Prefix=f"users/{user}/videos/")
    return sorted(o["Key"] for o in listed.get("Contents", []))


def items_of(api, user: str, job_id: str) -> list[dict]:
    reply = api.get(f"/v1/jobs/{job_id}/items", user=user)
    assert reply.status == 200, reply.body
    openapi_check.check("/v1/jobs/{job_id}/items", "GET", 200, reply.json)
    return reply.json["items"]


def test_a_ten_video_batch_stores_exactly_ten_videos_under_redelivery_and_failures(api, fast_videos, flux):
    """Submits meet 500s, download URLs expire fast, and every item and video message is
    delivered three times: still ten upstream jobs, ten files, ten succeeded items."""
    from chalicelib import queue
    from chalicelib.jobs.state import item_message, query_items

    flux.configure(p500=0.3, fault_seed=7, video_url_ttl_seconds=30.0)
    reply = api.post("/v1/jobs", user="vj1", json_body={**VIDEO_JOB, "prompts": PROMPTS[20:30], "name": "clips"})
    assert reply.status == 202, reply.body
    openapi_check.check("/v1/jobs", "POST", 202, reply.json)
    job_id = reply.json["job_id"]
    assert reply.json["total"] == 10
    queue.send_messages([item_message(i) for i in query_items(job_id)] * 2)  # redelivered item messages
    fast_videos.start()
    fast_videos.wait_finished("vj1", job_id, timeout_s=120)

    job = api.get(f"/v1/jobs/{job_id}", user="vj1").json
    openapi_check.check("/v1/jobs/{job_id}", "GET", 200, job)
    assert job["status"] == "completed" and job["kind"] == "video", job
    assert job["counts"] == {"queued": 0, "running": 0, "succeeded": 10, "failed": 0}
    items = items_of(api, "vj1", job_id)
    assert [i["prompt"] for i in items] == PROMPTS[20:30]
    assert all(i["image"] is None and i["video"]["status"] == "completed" for i in items)
    assert all(i["video"]["cost_usd"] > 0 for i in items)
    assert job["actual_usd"] == pytest.approx(sum(i["video"]["cost_usd"] for i in items))
    assert flux.stats()["videos"]["submitted"] == 10
    ids = [i["video"]["id"] for i in items]
    assert stored_videos("vj1") == sorted(f"users/vj1/videos/{v}.mp4" for v in ids)
    for video_id in ids:  # each is a video of the caller's, with its cost
        video = api.get(f"/v1/videos/{video_id}", user="vj1").json
        assert video["status"] == "completed" and video["cost_usd"] > 0
    assert api.get("/v1/me/usage", user="vj1").json["used"] == 10
    check_job("vj1", job_id)

    # the job's ZIP holds the ten videos and a manifest
    archive = api.post(f"/v1/jobs/{job_id}/archive", user="vj1", json_body={})
    assert archive.status in (201, 202), archive.body
    body = wait_for(
        lambda: (lambda a: a if a["status"] == "ready" else None)(
            api.get(f"/v1/archives/{archive.json['archive_id']}", user="vj1").json
        ),
        timeout_s=60,
        what="(archive ready)",
    )
    with zipfile.ZipFile(io.BytesIO(requests.get(body["url"], timeout=30).content)) as zf:
        names = zf.namelist()
        assert sorted(n for n in names if n.endswith(".mp4")) == sorted(
            f"{n:04d}-{v}.mp4" for n, v in enumerate(ids, start=1)
        )
        manifest = zf.read("manifest.csv").decode()
    assert PROMPTS[20].split(",")[0] in manifest
    bad = api.post(f"/v1/jobs/{job_id}/archive", user="vj1", json_body={"format": "imagefolder"})
    assert bad.status == 400 and bad.json["error"]["field"] == "format"
    assert api.get(f"/v1/jobs/{job_id}/items", user="someone-else").status == 404


def test_one_prompt_over_my_images_makes_a_video_of_each_with_its_poster(api, fast_videos):
    images = []
    for prompt in PROMPTS[30:32]:
        made = api.post("/v1/images", user="vj2", json_body={"prompt": prompt, "width": 256, "height": 256})
        assert made.status == 201, made.body
        images.append(made.json["images"][0]["id"])
    # someone else's image is a 404 naming it; nothing is written or charged
    other = api.post("/v1/images", user="vj2-other", json_body={"prompt": PROMPTS[33], "width": 256, "height": 256})
    stolen = api.post(
        "/v1/jobs",
        user="vj2",
        json_body={**VIDEO_JOB, "prompt": "slow pan", "image_ids": [other.json["images"][0]["id"]]},
    )
    assert stolen.status == 404 and stolen.json["error"]["field"] == "image_ids[0]"
    used = api.get("/v1/me/usage", user="vj2").json["used"]
    reply = api.post(
        "/v1/jobs", user="vj2", json_body={**VIDEO_JOB, "prompt": "a slow camera pan", "image_ids": images}
    )
    assert reply.status == 202, reply.body
    job_id = reply.json["job_id"]
    fast_videos.start()
    fast_videos.wait_finished("vj2", job_id, timeout_s=90)
    assert api.get(f"/v1/jobs/{job_id}", user="vj2").json["status"] == "completed"
    items = items_of(api, "vj2", job_id)
    assert [i["inputs"]["image"]["id"] for i in items] == images
    assert all(i["video"]["poster_url"] for i in items)  # the input image is the poster
    for item, image_id in zip(items, images, strict=True):
        video = api.get(f"/v1/videos/{item['video']['id']}", user="vj2").json
        assert video["image_id"] == image_id and video["status"] == "completed"
    assert api.get("/v1/me/usage", user="vj2").json["used"] == used + 2
    check_job("vj2", job_id)


def test_a_failed_video_fails_its_item_refunded_and_retry_renders_it_again(api, fast_videos, flux):
    prompts = [PROMPTS[40], PROMPTS[41] + " __VIDEO_FAIL__"]
    job_id = api.post("/v1/jobs", user="vj3", json_body={**VIDEO_JOB, "prompts": prompts}).json["job_id"]
    fast_videos.start()
    fast_videos.wait_finished("vj3", job_id, timeout_s=90)
    job = api.get(f"/v1/jobs/{job_id}", user="vj3").json
    assert job["status"] == "completed_with_errors" and job["errors_by_reason"] == {"upstream-failed": 1}, job
    failed = items_of(api, "vj3", job_id)[1]
    assert failed["status"] == "failed" and failed["video"]["status"] == "failed"
    assert api.get("/v1/me/usage", user="vj3").json["used"] == 1  # the failed one was refunded once
    submitted = flux.stats()["videos"]["submitted"]

    assert api.post(f"/v1/jobs/{job_id}/retry", user="vj3").status == 202
    wait_for(
        lambda: (
            api.get(f"/v1/jobs/{job_id}", user="vj3").json["status"] == "completed_with_errors"
            and flux.stats()["videos"]["submitted"] == submitted + 1
        ),
        timeout_s=60,
        what="(the retried video rendered and failed again)",
    )
    assert api.get("/v1/me/usage", user="vj3").json["used"] == 1
    check_job("vj3", job_id)


def test_cancelling_a_video_job_before_it_runs_refunds_every_item(api, flux):
    job_id = api.post("/v1/jobs", user="vj4", json_body={**VIDEO_JOB, "prompt": PROMPTS[50], "count": 3}).json["job_id"]
    assert api.get("/v1/me/usage", user="vj4").json["used"] == 3
    cancelled = api.post(f"/v1/jobs/{job_id}/cancel", user="vj4")
    assert cancelled.status == 200 and cancelled.json["status"] == "cancelled"
    assert cancelled.json["counts"]["failed"] == 3
    assert api.get("/v1/me/usage", user="vj4").json["used"] == 0
    assert flux.stats()["videos"]["submitted"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**VIDEO_JOB, "prompts": ["a cat"], "n": 2}, "n"),
        ({**VIDEO_JOB, "prompts": ["a cat"], "seconds": 7}, "seconds"),
        ({**VIDEO_JOB, "prompts": ["a cat"], "model": "no/such-model"}, "model"),
        ({**VIDEO_JOB, "prompts": ["a cat", ""]}, "prompts[1]"),
        (
            {
                "kind": "video",
                "prompt": "a cat",
                "image_ids": ["01J00000000000000000000000"],
                "model": "Wan-AI/Wan2.2-T2V-A14B",
            },
            "image_ids",
        ),
        ({"prompts": ["a cat"], "seconds": 5}, "seconds"),
        ({"kind": "film", "prompts": ["a cat"]}, "kind"),
    ],
)
def test_video_job_requests_the_model_cannot_take_are_400_naming_the_field(api, body, field):
    reply = api.post("/v1/jobs", user="vj5", json_body=body)
    assert reply.status == 400, reply.body
    assert reply.json["error"]["field"] == field
    assert api.get("/v1/jobs", user="vj5").json["jobs"] == []


def test_a_video_job_is_estimated_per_video(api):
    reply = api.post("/v1/estimates", user="vj6", json_body={**VIDEO_JOB, "prompts": PROMPTS[60:63]})
    assert reply.status == 200, reply.body
    openapi_check.check("/v1/estimates", "POST", 200, reply.json)
    assert reply.json["videos"] == 3 and reply.json["seconds"] == 5
    assert reply.json["usd"] == pytest.approx(3 * reply.json["price_per_video"])


def test_a_video_job_calls_its_webhook_when_it_finishes(api, fast_videos):
    from tests.integration.test_webhooks import Receiver

    fast_videos.configure(ALLOW_LOOPBACK_WEBHOOKS="1")
    with Receiver([204]) as receiver:
        body = {**VIDEO_JOB, "prompts": PROMPTS[70:72], "webhook_url": receiver.url}
        job_id = api.post("/v1/jobs", user="vj7", json_body=body).json["job_id"]
        fast_videos.start()
        wait_for(lambda: receiver.received, timeout_s=90, what="(the job's webhook)")
    payload = json.loads(receiver.received[0][1])
    assert payload["type"] == "job.completed"
    assert payload["data"]["job_id"] == job_id and payload["data"]["counts"]["succeeded"] == 2


def test_a_dead_lettered_video_message_fails_the_video_and_its_item_at_the_next_sweep(api, worker):
    """Nothing moves a video whose message went to the DLQ: the recovery sweep fails it then
    (refunded once, its job item ``dead-lettered``) instead of waiting for its deadline."""
    from chalicelib.jobs import recovery
    from chalicelib.queue import queue_url
    from chalicelib.services.videos import video_message
    from chalicelib.settings import get_settings

    job_id = api.post("/v1/jobs", user="vj8", json_body={**VIDEO_JOB, "prompts": [PROMPTS[80]]}).json["job_id"]
    worker.start(queues={get_settings().jobs_queue_name})
    item = wait_for(
        lambda: (i := items_of(api, "vj8", job_id)[0])["video"] and i, timeout_s=30, what="(the video started)"
    )
    worker.stop()  # the video's message chain dies here: its last message is dead-lettered
    video_id = item["video"]["id"]
    boto3.client("sqs").send_message(
        QueueUrl=queue_url(get_settings().jobs_dlq_name),
        MessageBody=json.dumps(video_message("vj8", video_id, job_id, item["item_id"])),
    )
    assert recovery.sweep(dry_run=True).as_dict()["counts"]["videos_dead_lettered"] == 1
    assert api.get(f"/v1/videos/{video_id}", user="vj8").json["status"] != "failed"
    report = recovery.sweep().as_dict()
    assert report["counts"]["videos_dead_lettered"] == 1, report
    video = api.get(f"/v1/videos/{video_id}", user="vj8").json
    assert video["status"] == "failed" and video["error"]["code"] == "dead-lettered"
    job = api.get(f"/v1/jobs/{job_id}", user="vj8").json
    assert job["status"] == "failed" and job["errors_by_reason"] == {"dead-lettered": 1}, job
    assert api.get("/v1/me/usage", user="vj8").json["used"] == 0  # refunded once
    check_job("vj8", job_id)
