"""The jobs-queue worker end to end: real SQS (moto), the SQS poller, the Flux emulator.

Each scenario ends with :func:`check_job`: counters add up and match the items, every
failed item has a reason, no item has two images, no object lacks metadata.
"""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile

import boto3
import pytest
import requests
from urllib3 import encode_multipart_formdata

from chalicelib.db import ImageModel, JobItemModel
from chalicelib.jobs import state as job_state
from chalicelib.jobs import worker as w
from chalicelib.queue import queue_url
from chalicelib.settings import get_settings
from devstack.prompts import PARTI_PROMPTS, first, parti_prompts
from tests import openapi_check
from tests.fixtures.worker import check_job, wait_for

SMALL = {"width": 256, "height": 256}


def submit(api, user: str, body: dict) -> str:
    reply = api.post("/v1/jobs", user=user, json_body={**SMALL, **body})
    assert reply.status == 202, reply.body
    return reply.json["job_id"]


def objects_under(prefix: str) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    bucket = get_settings().images_bucket
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def record(body: dict, message_id: str = "m-1", receives: int = 1) -> dict:
    """A Lambda SQS record (the receipt handle is never used on these paths)."""
    return {
        "messageId": message_id,
        "receiptHandle": "rh-" + message_id,
        "body": json.dumps(body),
        "attributes": {"ApproximateReceiveCount": str(receives)},
    }


def test_the_same_message_delivered_three_times_makes_one_image(api, worker, flux):
    worker.configure(ITEM_LEASE_SECONDS=10)  # longer than one generation takes on a busy machine
    job_id = submit(api, "dup", {"prompts": ["a lone lighthouse"], "seed": 11})
    item = JobItemModel.get(job_id, "0000")
    sqs = boto3.client("sqs")
    for _ in range(2):  # the submit sent one; two more copies of the very same body
        sqs.send_message(QueueUrl=queue_url(), MessageBody=json.dumps(job_state.item_message(item)))
    worker.visibility(2)
    worker.start()
    worker.wait_finished("dup", job_id)
    wait_for(lambda: worker.queue_depth() == 0, timeout_s=20, what="(all three copies handled)")
    # and once more, straight into the handler, three times with one messageId
    answer = w.handle_event({"Records": [record(job_state.item_message(item), "same")] * 3})
    assert answer == {"batchItemFailures": []}
    state = check_job("dup", job_id)
    assert len(state["images"]) == 1
    assert int(state["items"][0].attempts) == 1
    assert flux.stats()["images"] == 1  # generated once
    assert len(objects_under("users/dup/")) == 2  # original + thumbnail


def test_a_jobs_spend_adds_up_to_its_images_costs(api, worker, flux):
    """Twelve images (more than one SQS batch): the month's spend by model and the job's
    actual_usd both add up to the stored images' costs, each image counted once."""
    worker.start()
    job_id = submit(api, "spender", {"prompts": first(12)})
    worker.wait_finished("spender", job_id)
    state = check_job("spender", job_id)
    assert len(state["images"]) == 12
    costs = round(sum(float(i.cost_usd) for i in state["images"]), 6)
    assert costs > 0
    usage = api.get("/v1/me/usage", user="spender").json
    assert [(r["source"], r["images"]) for r in usage["spend_by_model"]] == [("shared", 12)]
    assert usage["spend_by_model"][0]["usd"] == pytest.approx(costs, abs=1e-6)
    assert usage["cost_usd"] == pytest.approx(costs, abs=1e-6)
    assert api.get(f"/v1/jobs/{job_id}", user="spender").json["actual_usd"] == pytest.approx(costs, abs=1e-6)


def test_crash_between_upload_and_metadata_leaves_one_image_and_no_orphan(api, worker, flux):
    worker.configure(ITEM_LEASE_SECONDS=1)
    job_id = submit(api, "crash", {"prompts": ["a paper crane", "a glass bird"], "seed": 5})
    # a worker takes item 0, generates and uploads, then dies before the metadata write
    lease = job_state.lease_item(JobItemModel.get(job_id, "0000"))
    assert isinstance(lease, job_state.ItemLease)
    staged = w.upload_objects(lease, w.generate_image(lease))
    uploaded = objects_under("users/crash/")
    assert len(uploaded) == 2 and not list(ImageModel.query("crash"))
    # another dies after the metadata write, before completing item 1
    lease1 = job_state.lease_item(JobItemModel.get(job_id, "0001"))
    w.write_metadata(lease1, w.upload_objects(lease1, w.generate_image(lease1)))
    assert flux.stats()["images"] == 2
    wait_for(lambda: time.time() > max(lease.item.lease_until, lease1.item.lease_until), what="(leases to expire)")
    # the original messages are redelivered to a live worker
    worker.visibility(1)
    worker.start()
    worker.wait_finished("crash", job_id)
    state = check_job("crash", job_id)
    assert [i.status for i in state["items"]] == ["succeeded", "succeeded"]
    assert [int(i.attempts) for i in state["items"]] == [2, 2]
    assert len(state["images"]) == 2
    after = objects_under("users/crash/")
    assert len(after) == 4  # two images, original + thumbnail each: no orphan
    assert after[staged.keys[0]] == uploaded[staged.keys[0]]  # the retry rewrote the same object
    assert flux.stats()["images"] == 3  # item 1 was not generated again


def test_cancel_in_the_middle_then_retry_the_failed_items(api, worker, flux):
    flux.reset(latency_ms=150)
    worker.configure(WORKER_THREADS=1)
    prompts = parti_prompts()[:12]
    # submitted as a slice of the PartiPrompts TSV, as it is
    form, content_type = encode_multipart_formdata(
        [
            ("offset", "0"),
            ("limit", "12"),
            ("width", "256"),
            ("height", "256"),
            ("file", ("parti_prompts.tsv", PARTI_PROMPTS.read_bytes(), "text/tab-separated-values")),
        ]
    )
    reply = api.post("/v1/jobs", user="cancel", body=form, headers={"content-type": content_type})
    assert reply.status == 202 and reply.json["total"] == 12, reply.body
    job_id = reply.json["job_id"]
    worker.start(concurrency=2)
    wait_for(lambda: worker.job("cancel", job_id).succeeded_count >= 3, what="(some items to succeed)")
    running = api.get("/v1/jobs?status=running", user="cancel").json["jobs"]
    assert [j["job_id"] for j in running] == [job_id] and running[0]["started_at"]
    reply = api.post(f"/v1/jobs/{job_id}/cancel", user="cancel")
    cancelled_at = time.time()
    assert reply.status == 200 and reply.json["status"] == "cancelled"
    requests_at_cancel = flux.stats()["requests"]
    running_at_cancel = reply.json["counts"]["running"]
    finished = worker.wait_finished("cancel", job_id)
    assert finished.status == "cancelled"
    state = check_job("cancel", job_id)
    started_late = [i.item_id for i in state["items"] if i.started_at and i.started_at > cancelled_at]
    assert started_late == []  # nothing started after cancel returned
    assert flux.stats()["requests"] - requests_at_cancel <= running_at_cancel + 4
    failed = [i for i in state["items"] if i.status == "failed"]
    assert failed and all(i.error_code == "cancelled" for i in failed)
    succeeded = len(state["items"]) - len(failed)
    assert api.get("/v1/me/usage", user="cancel").json["used"] == succeeded  # cancelled ones refunded
    # retry: only the failed items, under their own item ids
    retried = api.post(f"/v1/jobs/{job_id}/retry", user="cancel")
    assert retried.status == 202, retried.body
    openapi_check.check("/v1/jobs/{job_id}/retry", "POST", 202, retried.json)
    assert retried.json["status"] in ("queued", "running") and retried.json["counts"]["failed"] == 0
    worker.wait_finished("cancel", job_id)
    state = check_job("cancel", job_id)
    assert all(i.status == "succeeded" for i in state["items"])
    assert sorted(i.item_id for i in state["items"]) == [f"{n:04d}" for n in range(12)]
    job = api.get(f"/v1/jobs/{job_id}", user="cancel").json
    assert job["status"] == "completed" and job["progress"] == 1.0 and job["errors_by_reason"] == {}
    assert api.get("/v1/me/usage", user="cancel").json["used"] == 12
    assert api.post(f"/v1/jobs/{job_id}/retry", user="cancel").status == 409
    assert api.post(f"/v1/jobs/{job_id}/cancel", user="cancel").status == 409
    # and the job's ZIP holds its 12 images in prompt order
    archive = api.post(f"/v1/jobs/{job_id}/archive", user="cancel")
    assert archive.status == 201, archive.body
    openapi_check.check("/v1/jobs/{job_id}/archive", "POST", 201, archive.json)
    with zipfile.ZipFile(io.BytesIO(requests.get(archive.json["url"], timeout=10).content)) as zf:
        assert zf.testzip() is None
        rows = list(csv.DictReader(io.StringIO(zf.read("manifest.csv").decode())))
    assert [r["prompt"] for r in rows] == prompts
    by_id = {i.image_id: i for i in state["items"]}
    assert all(int(r["seed"]) == int(by_id[r["file"][5:31]].seed) for r in rows)


def test_sixty_items_under_upstream_faults(api, worker, flux):
    flux.reset(p500=0.06, p503=0.06, p429=0.12, pcorrupt=0.03, fault_seed=20240601)
    worker.configure(WORKER_THREADS=5)
    worker.visibility(5)
    prompts = parti_prompts()[100:160]
    job_id = submit(api, "faults", {"prompts": prompts, "collection": "faulty"})
    worker.start()
    seen_running = wait_for(lambda: api.get(f"/v1/jobs/{job_id}", user="faults").json, what="(job)")
    assert seen_running["total"] == 60
    job = worker.wait_finished("faults", job_id, timeout_s=120)
    state = check_job("faults", job_id)
    stats = flux.stats()
    assert sum(stats["faults"].values()) > 8  # the faults really happened
    for item in state["items"]:
        assert item.status in ("succeeded", "failed")
        assert item.status == "succeeded" or item.error_code
    assert job.status in ("completed", "completed_with_errors")
    assert int(job.succeeded_count) == len(state["images"]) >= 54
    body = api.get(f"/v1/jobs/{job_id}", user="faults").json
    assert sum(body["counts"].values()) == 60 and body["started_at"] and body["finished_at"]
    listed = api.get("/v1/collections", user="faults").json
    openapi_check.check("/v1/collections", "GET", 200, listed)
    assert listed["collections"] == [{"name": "faulty", "image_count": len(state["images"])}]


def test_all_keys_cooling_moves_visibility_and_spends_no_attempt(api, worker, flux, monkeypatch):
    # every key: 1 image per 15 s window, so 4 keys serve 4 images and then the rate-limit
    # headers say "none left for up to 15 s": beyond the in-process pacing wait (2 s)
    flux.reset(rate_limit_per_minute=1, time_scale=4)
    cooling: list[float] = []  # the delays the handler asked for because every key was cooling
    deferrals: list[float] = []  # the delays the visibility was moved by
    real_defer, real_process = w.defer, w.process_message

    def spy_defer(record, delay_s):
        deferrals.append(delay_s)
        return real_defer(record, delay_s)

    def spy_process(body, deadline):
        result = real_process(body, deadline)
        if isinstance(result, w.Later) and result.note == "keys-cooling":
            cooling.append(result.delay_s)
        return result

    monkeypatch.setattr(w, "defer", spy_defer)
    monkeypatch.setattr(w, "process_message", spy_process)
    job_id = submit(api, "cool", {"prompts": [f"a small boat, variant {i}" for i in range(6)]})
    started = time.monotonic()
    worker.start()
    worker.wait_finished("cool", job_id, timeout_s=90)
    state = check_job("cool", job_id)
    assert all(i.status == "succeeded" for i in state["items"])
    assert all(int(i.attempts) == 1 for i in state["items"])  # cooling spent no attempt
    # visibility moved to the free slot (15 s and up to 1 s of jitter); a second caller sent away
    # at once comes back one combined spacing (15 s / 4 keys) after the first. (SQS delivers at
    # least once: a redelivered copy is sent away until its item's lease ends, not counted here.)
    assert cooling and all(2 < d <= 21.5 for d in cooling)
    assert all(d in deferrals for d in cooling)
    assert time.monotonic() - started < 45  # about two rate windows, not a visibility timeout


def test_short_pacing_waits_in_process_without_429s_or_deferrals(api, worker, flux, monkeypatch):
    # every key: 1 image per 1 s window; the headers pace the 5th and 6th images in process
    flux.reset(rate_limit_per_minute=1, time_scale=60)
    notes: list[str] = []
    real_process = w.process_message

    def spy(body, deadline):
        result = real_process(body, deadline)
        if isinstance(result, w.Later):
            notes.append(result.note)
        return result

    monkeypatch.setattr(w, "process_message", spy)
    job_id = submit(api, "pace", {"prompts": [f"a small boat, variant {i}" for i in range(6)]})
    worker.start()
    worker.wait_finished("pace", job_id, timeout_s=60)
    state = check_job("pace", job_id)
    assert all(i.status == "succeeded" and int(i.attempts) == 1 for i in state["items"])
    assert "keys-cooling" not in notes  # (a redelivered copy may still wait for its lease)


class _ImageLinkUpstream:
    """A Together stand-in on loopback whose 200 answers carry an image URL (or inline bytes)
    that it chooses: ``link`` for the URL, ``b64`` for base64 image data."""

    def __init__(self) -> None:
        import base64
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        upstream = self
        self.link: str | None = None
        self.b64: str | None = None

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                item = {"index": 0, "type": "url", "url": upstream.link}
                if upstream.b64 is not None:
                    item = {"index": 0, "type": "b64_json", "b64_json": upstream.b64}
                body = json.dumps({"id": "x", "object": "list", "data": [item]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.encode = base64.b64encode
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_failed_image_download_is_transient_and_only_a_corrupt_image_is_permanent(api, worker):
    """The image URL of a 200 cannot be fetched (connection refused): the item is put back
    with a back-off, not failed as corrupt-image (whose message also says "image"). Bytes
    that do not decode still fail the item as corrupt-image."""
    import socket

    prompts = parti_prompts()[500:502]
    upstream = _ImageLinkUpstream()
    try:
        with socket.socket() as sock:  # a loopback port nobody listens on
            sock.bind(("127.0.0.1", 0))
            closed_port = sock.getsockname()[1]
        upstream.link = f"http://127.0.0.1:{closed_port}/files/image.jpg"
        worker.configure(TOGETHER_BASE_URL=upstream.url, FLUX_DEADLINE_SECONDS=4)
        job_id = submit(api, "links", {"prompts": prompts})
        deadline = time.monotonic() + 60
        result = w.run_item(JobItemModel.get(job_id, "0000"), deadline)
        assert isinstance(result, job_state.Later) and result.note == "upstream-failed", result
        item = JobItemModel.get(job_id, "0000", consistent_read=True)
        assert item.status == "queued" and item.error_code is None and int(item.attempts) == 1
        upstream.b64 = upstream.encode(b"these bytes are no image at all").decode()
        result = w.run_item(JobItemModel.get(job_id, "0001"), deadline)
        assert isinstance(result, job_state.Done) and result.note == "corrupt", result
        assert JobItemModel.get(job_id, "0001", consistent_read=True).error_code == "corrupt-image"
    finally:
        upstream.close()
