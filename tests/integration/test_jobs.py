"""Batch jobs over the API: submitting (JSON and prompt files), validation, idempotency,
quota, reading, ownership. The worker does not run here; see test_worker*.py."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from pynamodb.exceptions import TransactWriteError
from urllib3 import encode_multipart_formdata

from chalicelib.settings import get_settings
from devstack.prompts import PARTI_PROMPTS, parti_prompts
from tests import openapi_check
from tests.fixtures.worker import check_job

SMALL = {"width": 256, "height": 256}


def multipart(fields: dict[str, object], filename: str, content: bytes, ctype: str = "text/plain"):
    """(body, headers) of a multipart/form-data request with one ``file`` part."""
    parts: list[tuple[str, object]] = [(k, str(v)) for k, v in fields.items()]
    parts.append(("file", (filename, content, ctype)))
    body, content_type = encode_multipart_formdata(parts)
    return body, {"content-type": content_type}


def table_count(model) -> int:
    return sum(1 for _ in model.scan())


def queue_depth() -> int:
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=get_settings().jobs_queue_name)["QueueUrl"]
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


def purge_jobs_queue() -> None:
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=get_settings().jobs_queue_name)["QueueUrl"]
    while got := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]
        )


def nothing_written(api, user: str) -> None:
    from chalicelib.db import JobItemModel, JobModel
    from chalicelib.db.jobs import IdempotencyModel

    assert table_count(JobModel) == 0
    assert table_count(JobItemModel) == 0
    assert table_count(IdempotencyModel) == 0
    assert queue_depth() == 0
    assert api.get("/v1/me/usage", user=user).json["used"] == 0


# --- validation -------------------------------------------------------------------------------

BAD_JSON = [
    ({"prompts": [], **SMALL}, "prompts"),
    ({"prompts": [f"p{i}" for i in range(1001)], **SMALL}, "prompts"),
    ({"prompts": "a cat", **SMALL}, "prompts"),
    ({"prompts": ["ok", "  ", "ok"], **SMALL}, "prompts[1]"),
    ({"prompts": ["ok", 7], **SMALL}, "prompts[1]"),
    ({"prompts": ["ok"], "colour": "red"}, "colour"),
    ({"prompt": "a cat", "count": 0}, "count"),
    ({"prompt": "a cat", "count": 1001}, "count"),
    ({"prompt": "a cat", "count": 400, "n": 3}, "count"),
    ({"prompt": "a cat", "prompts": ["x"]}, "prompt"),
    ({"count": 3}, "prompts"),
    ({"prompts": ["ok"], "width": 300, "height": 256}, "width"),
    ({"prompts": ["ok"], "model": "nope"}, "model"),
    ({"prompts": ["ok"], "collection": "bad/name"}, "collection"),
    ({"prompts": ["ok"], "name": 5}, "name"),
    ({"prompts": ["ok"], "webhook_url": "ftp://example.com/hook"}, "webhook_url"),
    ({"prompts": ["ok"], "webhook_url": "https://user@example.com/hook"}, "webhook_url"),
    ({"prompts": ["ok"], "webhook_url": ""}, "webhook_url"),
    ({"prompts": ["ok"], "name": None}, "name"),
]
# Well-formed by the document, refused on what no schema can say: 422.
REFUSED_JSON = [
    ({"prompts": ["ok"], "webhook_url": "http://example.com/hook"}, "webhook_url"),
    ({"prompts": ["ok"], "webhook_url": "https://10.1.2.3/hook"}, "webhook_url"),
]


def test_bad_json_is_a_400_naming_the_field_with_nothing_written(api):
    for body, field in BAD_JSON:
        reply = api.post("/v1/jobs", user="val", json_body=body)
        assert reply.status == 400, (field, reply.body)
        assert reply.json["error"]["field"] == field, reply.json
        openapi_check.check("/v1/jobs", "POST", 400, reply.json)
    for body, field in REFUSED_JSON:
        reply = api.post("/v1/jobs", user="val", json_body=body)
        assert reply.status == 422 and reply.json["error"]["code"] == "webhook-url-refused", reply.body
        assert reply.json["error"]["field"] == field
    nothing_written(api, "val")


BAD_FILES = [  # (fields, file name, content, content type, field, status): 422 when the form is well formed
    ({}, "image.png", b"\x89PNG\r\n\x1a\n\x00\x00", "image/png", "file", 400),
    ({}, "prompts.txt", b"\xff\xfe\x00a\x00b", "text/plain", "file", 422),
    ({}, "prompts.txt", b"\n\n  \n", "text/plain", "file", 422),
    ({}, "prompts.csv", b"title,score\nx,1\n", "text/csv", "file", 422),
    ({}, "prompts.csv", b'prompt\n"unterminated\n', "text/csv", "file", 422),
    ({"limit": 0}, "prompts.txt", b"a\nb\n", "text/plain", "limit", 400),
    ({"offset": 5}, "prompts.txt", b"a\nb\n", "text/plain", "offset", 422),
    ({"width": "wide"}, "prompts.txt", b"a\n", "text/plain", "width", 400),
    ({"width": " 512"}, "prompts.txt", b"a\n", "text/plain", "width", 400),
    ({"model": ""}, "prompts.txt", b"a\n", "text/plain", "model", 400),
    ({"collection": " trips"}, "prompts.txt", b"a\n", "text/plain", "collection", 400),
    ({"colour": "red"}, "prompts.txt", b"a\n", "text/plain", "colour", 400),
    ({}, "prompts.txt", ("x" * 2001 + "\n").encode(), "text/plain", "file", 422),
]


def test_bad_prompt_files_and_bodies_are_4xx_naming_the_field(api):
    for fields, filename, content, ctype, field, status in BAD_FILES:
        body, headers = multipart(fields, filename, content, ctype)
        reply = api.post("/v1/jobs", user="val", body=body, headers=headers)
        assert reply.status == status, (filename, field, reply.body)
        assert reply.json["error"]["field"] == field, reply.json
        openapi_check.check("/v1/jobs", "POST", status, reply.json)
    body, headers = multipart({}, "parti_prompts.tsv", PARTI_PROMPTS.read_bytes(), "text/tab-separated-values")
    reply = api.post("/v1/jobs", user="val", body=body, headers=headers)
    assert reply.status == 422 and reply.json["error"]["field"] == "file"
    assert "offset and limit" in reply.json["error"]["message"]
    no_file, hdrs = encode_multipart_formdata([("name", "x")])
    reply = api.post("/v1/jobs", user="val", body=no_file, headers={"content-type": hdrs})
    assert reply.status == 400 and reply.json["error"]["field"] == "file"
    reply = api.post("/v1/jobs", user="val", body=b"not json", headers={"content-type": "application/json"})
    assert reply.status == 400 and reply.json["error"]["code"] == "invalid-json"
    reply = api.post("/v1/jobs", user="val", body=b"a cat", headers={"content-type": "text/plain"})
    assert reply.status == 415 and reply.json["error"]["code"] == "unsupported-media-type"
    reply = api.post(
        "/v1/jobs", user="val", body=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert reply.status == 400 and reply.json["error"]["code"] == "invalid-multipart"
    nothing_written(api, "val")


# --- submitting -------------------------------------------------------------------------------


def test_submit_a_list_then_read_job_and_items(api):
    prompts = parti_prompts()[:7]
    reply = api.post(
        "/v1/jobs",
        user="alice",
        json_body={"prompts": prompts, **SMALL, "seed": 42, "name": "  seven   prompts ", "collection": "parti"},
    )
    assert reply.status == 202, reply.body
    openapi_check.check("/v1/jobs", "POST", 202, reply.json)
    assert reply.json["status"] == "queued" and reply.json["total"] == 7
    assert reply.header("Location") == f"/v1/jobs/{reply.json['job_id']}"
    job_id = reply.json["job_id"]
    job = api.get(f"/v1/jobs/{job_id}", user="alice")
    assert job.status == 200
    openapi_check.check("/v1/jobs/{job_id}", "GET", 200, job.json)
    assert job.json["name"] == "seven prompts" and job.json["collection"] == "parti"
    assert job.json["counts"] == {"queued": 7, "running": 0, "succeeded": 0, "failed": 0}
    assert job.json["progress"] == 0 and job.json["eta_seconds"] is None
    assert job.json["params"]["width"] == 256 and "prompt" not in job.json["params"]
    pages, cursor = [], None
    while True:
        page = api.get(f"/v1/jobs/{job_id}/items?limit=3" + (f"&cursor={cursor}" if cursor else ""), user="alice")
        assert page.status == 200, page.body
        openapi_check.check("/v1/jobs/{job_id}/items", "GET", 200, page.json)
        pages += page.json["items"]
        cursor = page.json["next_cursor"]
        if not cursor:
            break
    assert [i["prompt"] for i in pages] == prompts
    assert [i["seed"] for i in pages] == [42 + i for i in range(7)]
    assert all(i["status"] == "queued" and i["image"] is None and i["attempts"] == 0 for i in pages)
    assert queue_depth() == 7  # one message per item
    assert api.get("/v1/me/usage", user="alice").json["used"] == 7  # charged at submit
    check_job("alice", job_id)
    # one prompt many times, n images each: one item per image, each with its own seed
    reply = api.post("/v1/jobs", user="alice", json_body={"prompt": "a lighthouse", "count": 5, "n": 2, **SMALL})
    assert reply.status == 202 and reply.json["total"] == 10
    items = api.get(f"/v1/jobs/{reply.json['job_id']}/items", user="alice").json["items"]
    assert {i["prompt"] for i in items} == {"a lighthouse"}
    assert len({i["seed"] for i in items}) == 10


def test_idempotency_key_returns_the_same_job(api):
    body = {"prompts": ["one", "two", "three"], **SMALL}
    key = {"Idempotency-Key": "retry-me-1"}
    first = api.post("/v1/jobs", user="idem", json_body=body, headers=key)
    assert first.status == 202
    again = api.post("/v1/jobs", user="idem", json_body=body, headers=key)
    assert again.status == 202 and again.json["job_id"] == first.json["job_id"]
    assert again.header("Idempotent-Replayed") == "true"
    listed = api.get("/v1/jobs", user="idem").json["jobs"]
    assert [j["job_id"] for j in listed] == [first.json["job_id"]]
    assert queue_depth() == 3 and api.get("/v1/me/usage", user="idem").json["used"] == 3
    other = api.post("/v1/jobs", user="idem", json_body={**body, "prompts": ["four"]}, headers=key)
    assert other.status == 422 and other.json["error"]["code"] == "idempotency-key-reused"
    # the same key is another user's own key
    theirs = api.post("/v1/jobs", user="someone", json_body=body, headers=key)
    assert theirs.status == 202 and theirs.json["job_id"] != first.json["job_id"]
    bad = api.post("/v1/jobs", user="idem", json_body=body, headers={"Idempotency-Key": "x" * 300})
    assert bad.status == 400 and bad.json["error"]["field"] == "Idempotency-Key"


def test_enqueue_failures_are_retried_and_replays_finish_them(api, monkeypatch):
    from chalicelib import queue
    from chalicelib.jobs import submit as jobs_submit

    # a partially failed SendMessageBatch: the failed entries are sent again, none twice
    sqs = queue.client("sqs")
    real_batch = sqs.send_message_batch
    failed_once: set[str] = set()

    def partial(**kw):
        entries = kw["Entries"]
        bad = [e for e in entries if e["Id"] not in failed_once][:3]
        failed_once.update(e["Id"] for e in bad)
        resp = real_batch(**{**kw, "Entries": [e for e in entries if e not in bad]})
        resp["Failed"] = [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError"} for e in bad]
        return resp

    with monkeypatch.context() as patch:
        patch.setattr(sqs, "send_message_batch", partial)
        reply = api.post("/v1/jobs", user="sqs", json_body={"prompt": "x", "count": 23, **SMALL})
    assert reply.status == 202
    assert queue_depth() == 23
    assert api.get(f"/v1/jobs/{reply.json['job_id']}", user="sqs").json["counts"]["queued"] == 23
    purge_jobs_queue()
    # SQS down during the submit: the job is written, and a replay with its key sends the messages
    calls = {"n": 0}
    real_send = queue.send_messages

    def down_once(bodies, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise queue.QueueError("SQS is down")
        return real_send(bodies, **kw)

    monkeypatch.setattr(jobs_submit, "send_messages", down_once)
    body, key = {"prompts": ["a", "b"], **SMALL}, {"Idempotency-Key": "k-enqueue"}
    first = api.post("/v1/jobs", user="idem2", json_body=body, headers=key)
    assert first.status == 202 and queue_depth() == 0  # job written, enqueue pending
    again = api.post("/v1/jobs", user="idem2", json_body=body, headers=key)
    assert again.json["job_id"] == first.json["job_id"] and queue_depth() == 2


# --- prompt files -----------------------------------------------------------------------------


def test_prompt_files_partiprompts_tsv_as_it_is_txt_and_csv(api):
    raw = PARTI_PROMPTS.read_bytes()
    fields = {"offset": 1232, "limit": 200, "name": "PartiPrompts 1233-1432", **SMALL, "steps": 2}
    body, headers = multipart(fields, Path(PARTI_PROMPTS).name, raw, "text/tab-separated-values")
    reply = api.post("/v1/jobs", user="parti", body=body, headers=headers)
    assert reply.status == 202, reply.body
    assert reply.json["total"] == 200
    job_id = reply.json["job_id"]
    job = api.get(f"/v1/jobs/{job_id}", user="parti").json
    assert job["source"] == "file" and job["params"]["steps"] == 2 and job["name"] == "PartiPrompts 1233-1432"
    got, cursor = [], None
    while True:
        page = api.get(f"/v1/jobs/{job_id}/items?limit=100" + (f"&cursor={cursor}" if cursor else ""), user="parti")
        got += [i["prompt"] for i in page.json["items"]]
        cursor = page.json["next_cursor"]
        if not cursor:
            break
    assert got == parti_prompts()[1232:]  # real prompts, quoting and non-ASCII intact
    assert any('"' in p for p in got) and any(not p.isascii() for p in got)
    assert queue_depth() == 200
    # .txt: one prompt a line; .csv: the prompt column, other columns ignored
    text = "a red fox\n\n  a blue whale  \nDalí’s clock\n"
    body, headers = multipart({"collection": "files", **SMALL}, "mine.txt", text.encode())
    txt = api.post("/v1/jobs", user="files", body=body, headers=headers)
    assert txt.status == 202 and txt.json["total"] == 3
    items = api.get(f"/v1/jobs/{txt.json['job_id']}/items", user="files").json["items"]
    assert [i["prompt"] for i in items] == ["a red fox", "a blue whale", "Dalí’s clock"]
    csv_text = 'id,prompt,notes\n1,"a cat, sleeping",x\n2,,empty\n3,a dog,y\n'
    body, headers = multipart({"offset": 1, **SMALL}, "mine.csv", csv_text.encode(), "text/csv")
    csv_reply = api.post("/v1/jobs", user="files", body=body, headers=headers)
    assert csv_reply.status == 202 and csv_reply.json["total"] == 1
    items = api.get(f"/v1/jobs/{csv_reply.json['job_id']}/items", user="files").json["items"]
    assert [i["prompt"] for i in items] == ["a dog"]


# --- reading and ownership --------------------------------------------------------------------


def test_list_jobs_newest_first_with_filters(api):
    ids = []
    for i, collection in enumerate(["a", "b", "a"]):
        reply = api.post("/v1/jobs", user="lister", json_body={"prompt": f"p{i}", **SMALL, "collection": collection})
        ids.append(reply.json["job_id"])
    everything = api.get("/v1/jobs", user="lister")
    openapi_check.check("/v1/jobs", "GET", 200, everything.json)
    assert [j["job_id"] for j in everything.json["jobs"]] == list(reversed(ids))
    only_a = api.get("/v1/jobs?collection=a", user="lister").json["jobs"]
    assert [j["job_id"] for j in only_a] == [ids[2], ids[0]]
    page1 = api.get("/v1/jobs?limit=2", user="lister").json
    page2 = api.get(f"/v1/jobs?limit=2&cursor={page1['next_cursor']}", user="lister").json
    assert [j["job_id"] for j in page1["jobs"] + page2["jobs"]] == list(reversed(ids))
    assert api.get("/v1/jobs?status=queued", user="lister").json["jobs"][0]["job_id"] == ids[2]
    assert api.get("/v1/jobs?status=completed", user="lister").json["jobs"] == []
    bad = api.get("/v1/jobs?status=done", user="lister")
    assert bad.status == 400 and bad.json["error"]["field"] == "status"
    bad = api.get("/v1/jobs?cursor=nope", user="lister")
    assert bad.status == 400 and bad.json["error"]["field"] == "cursor"
    # a cursor is a position in the caller's own jobs: another user's cursor pages nothing of theirs
    theirs = api.get(f"/v1/jobs?cursor={page1['next_cursor']}", user="intruder")
    assert theirs.status == 200 and theirs.json == {"jobs": [], "next_cursor": None}


def test_another_users_job_is_404_everywhere_and_quota_is_all_or_nothing(api, worker):
    job_id = api.post("/v1/jobs", user="owner", json_body={"prompts": ["mine"], **SMALL}).json["job_id"]
    for method, path in [
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/items"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("POST", f"/v1/jobs/{job_id}/retry"),
        ("POST", f"/v1/jobs/{job_id}/archive"),
        ("GET", "/v1/jobs/not-a-job-id"),
    ]:
        reply = api.request(method, path, user="stranger")
        assert reply.status == 404, (method, path, reply.body)
        assert reply.json["error"]["code"] == "not-found"
    assert api.get("/v1/jobs", user="stranger").json["jobs"] == []
    assert api.get(f"/v1/jobs/{job_id}", user="owner").status == 200
    # the quota is charged for the whole job at submit, or not at all
    worker.configure(MONTHLY_IMAGE_QUOTA=10)
    ok = api.post("/v1/jobs", user="quota", json_body={"prompt": "x", "count": 8, **SMALL})
    assert ok.status == 202
    over = api.post("/v1/jobs", user="quota", json_body={"prompt": "x", "count": 3, **SMALL})
    assert over.status == 429 and over.json["error"]["code"] == "quota-exceeded"
    assert api.get("/v1/me/usage", user="quota").json["used"] == 8
    assert len(api.get("/v1/jobs", user="quota").json["jobs"]) == 1


def test_cancel_before_anything_ran_refunds_everything(api):
    reply = api.post("/v1/jobs", user="canceller", json_body={"prompt": "x", "count": 6, **SMALL})
    job_id = reply.json["job_id"]
    cancelled = api.post(f"/v1/jobs/{job_id}/cancel", user="canceller")
    assert cancelled.status == 200, cancelled.body
    openapi_check.check("/v1/jobs/{job_id}/cancel", "POST", 200, cancelled.json)
    assert cancelled.json["status"] == "cancelled"
    assert cancelled.json["counts"] == {"queued": 0, "running": 0, "succeeded": 0, "failed": 6}
    assert cancelled.json["errors_by_reason"] == {"cancelled": 6}
    assert cancelled.json["finished_at"] is not None
    assert api.get("/v1/me/usage", user="canceller").json["used"] == 0
    assert api.post(f"/v1/jobs/{job_id}/cancel", user="canceller").status == 200  # idempotent
    items = api.get(f"/v1/jobs/{job_id}/items?status=failed", user="canceller").json["items"]
    assert len(items) == 6 and all(i["error"]["code"] == "cancelled" for i in items)
    assert api.get("/v1/jobs?status=cancelled", user="canceller").json["jobs"][0]["job_id"] == job_id
    check_job("canceller", job_id)


def test_openapi_documents_the_job_routes():
    from openapi_spec_validator import validate

    spec = json.loads((Path(__file__).resolve().parents[2] / "chalicelib" / "openapi.json").read_text())
    validate(spec)
    for path in [
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/items",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/retry",
        "/v1/jobs/{job_id}/archive",
        "/v1/collections",
        "/v1/collections/{name}/archive",
        "/v1/archives",
        "/v1/archives/{archive_id}",
        "/v1/me/webhook-secret",
    ]:
        assert path in spec["paths"], path


def real_prompts(start: int, n: int) -> list[str]:
    """``n`` prompts of /work/shared/data/parti_prompts.tsv from row ``start``."""
    import csv

    with Path("/work/shared/data/parti_prompts.tsv").open(encoding="utf-8", newline="") as fh:
        rows = [r["Prompt"].strip() for r in csv.DictReader(fh, delimiter="\t") if r["Prompt"].strip()]
    return rows[start : start + n]


def test_a_refund_goes_to_the_month_that_was_charged(api):
    """A job charged in one month and cancelled in the next gives the images back to the
    month it was charged, not to the current one."""
    from chalicelib.db import JobItemModel, UsageModel
    from chalicelib.services import usage

    reply = api.post("/v1/jobs", user="monthly", json_body={**SMALL, "prompts": real_prompts(200, 3)})
    assert reply.status == 202, reply.body
    job_id = reply.json["job_id"]
    now = usage.current_month()
    assert int(UsageModel.get("monthly", now).count) == 3
    items = list(JobItemModel.query(job_id))
    assert {i.charged_period for i in items} == {now}
    # the month turns: the charge belongs to the month it was made in
    charged = "2026-10" if now != "2026-10" else "2026-09"
    UsageModel("monthly", charged, count=3).save()
    UsageModel("monthly", now, count=1).save()  # one image generated this month
    for item in items:
        item.update(actions=[JobItemModel.charged_period.set(charged)])
    assert api.post(f"/v1/jobs/{job_id}/cancel", user="monthly").status == 200
    assert int(UsageModel.get("monthly", charged).count) == 0
    assert int(UsageModel.get("monthly", now).count) == 1
    assert api.get("/v1/me/usage", user="monthly").json["used"] == 1


def test_a_committed_put_that_botocore_retried_is_a_success(app_env):
    """botocore retries a put whose answer was lost although it committed; the retry fails
    its attribute_not_exists condition on the item the first attempt wrote. Simulated by
    running the same write twice against moto: the second must succeed, keep the objects
    and count the image once."""
    import io

    from PIL import Image
    from ulid import ULID

    from chalicelib.db import ImageModel, JobModel
    from chalicelib.db.images import collection_counts
    from chalicelib.flux.catalog import parse_generation_params
    from chalicelib.jobs import submit as jobs_submit
    from chalicelib.services import images

    prompt = real_prompts(400, 1)[0]
    params = parse_generation_params({"prompt": prompt, **SMALL})
    out = io.BytesIO()
    Image.new("RGB", (256, 256), (40, 90, 160)).save(out, format="JPEG")
    image_id = str(ULID())
    write = dict(seed=7, key_id="0123456789ab", upstream_ms=12, collection="retried", image_id=image_id)
    first = images.store_image("retrier", params, out.getvalue(), **write)
    again = images.store_image("retrier", params, out.getvalue(), **write)
    assert again.image_id == first.image_id
    s3 = boto3.client("s3")
    bucket = get_settings().images_bucket
    for key in (first.s3_key, first.thumb_key):
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] > 0  # objects survived
    assert ImageModel.get("retrier", image_id).s3_key == first.s3_key
    assert collection_counts("retrier") == {"retried": 1}
    # a different image under the same id is still refused
    with pytest.raises(TransactWriteError):
        images.store_image("retrier", params, out.getvalue(), **dict(write, seed=8))
    assert collection_counts("retrier") == {"retried": 1}

    body = json.dumps({"prompts": real_prompts(401, 2), **SMALL}).encode()
    sub = jobs_submit.parse_request("application/json", body)
    job_id = str(ULID())
    job, items = jobs_submit._write_job("retrier", job_id, sub, None, "2026-11")
    replayed, _ = jobs_submit._write_job("retrier", job_id, sub, None, "2026-11")
    assert replayed.job_id == job.job_id and int(replayed.total) == 2
    assert int(JobModel.get("retrier", job_id).total) == 2
