"""Bring your own Together key, against the real local stack (moto with KMS, the Flux
emulator, the dev identity provider): saving (verified upstream, sealed with KMS), using
it (its own pool of one, no quota, no fallback to the shared keys), a 401/402 on it
(refused up front, jobs paused, the shared pool untouched), resuming, and the key never
reaching a response, a log or DynamoDB in the clear."""

from __future__ import annotations

import json
import logging

import boto3
import pytest

from chalicelib.settings import get_settings
from devstack.flux_emulator import key_id
from devstack.prompts import first
from tests import openapi_check
from tests.fixtures.api import TEST_KEYS, admin_token
from tests.fixtures.worker import check_job, wait_for

SMALL = {"width": 256, "height": 256}
OWN_KEY = "byok-alice-7f3a9c21d4e8b6"
OTHER_KEY = "byok-alice-second-5b2e81"


def save_key(api, user: str, key: str):
    return api.put("/v1/me/together-key", user=user, json_body={"key": key})


def raw_items(table: str) -> str:
    """Every item of a table as DynamoDB stores it, as one JSON string."""
    name = get_settings().table_prefix + table
    items = boto3.client("dynamodb").scan(TableName=name)["Items"]
    return json.dumps(items)


def shared_key_rows() -> dict[str, dict]:
    """The shared pool's key-health rows, by key id."""
    from chalicelib.db.keys import KeyHealthModel

    ids = {key_id(k) for k in TEST_KEYS}
    return {row.key_id: row.attribute_values for row in KeyHealthModel.scan() if row.key_id in ids}


def test_saving_a_key_verifies_it_seals_it_and_never_shows_it(api, flux, caplog):
    caplog.set_level(logging.DEBUG)
    saved = save_key(api, "alice", OWN_KEY)
    assert saved.status == 200, saved.body
    assert set(saved.json) == {"key_id", "last4", "verified_at"}
    assert saved.json["key_id"] == key_id(OWN_KEY) and saved.json["last4"] == OWN_KEY[-4:]
    assert saved.header("Cache-Control") == "no-store"
    openapi_check.check("/v1/me/together-key", "PUT", 200, saved.json)
    shown = api.get("/v1/me/together-key", user="alice")
    assert shown.status == 200
    assert {k: shown.json[k] for k in saved.json} == saved.json
    assert shown.json["status"] == "active"
    openapi_check.check("/v1/me/together-key", "GET", 200, shown.json)
    # DynamoDB holds only the KMS envelope
    users = raw_items("users")
    assert OWN_KEY not in users and "kms1." in users
    # another user has no key and cannot see alice's
    assert api.get("/v1/me/together-key", user="bob").status == 404
    removed = api.delete("/v1/me/together-key", user="alice")
    assert removed.status == 204
    assert api.get("/v1/me/together-key", user="alice").status == 404
    assert OWN_KEY not in raw_items("users")
    for reply in (saved, shown):
        assert OWN_KEY not in reply.body.decode()
    assert not any(OWN_KEY in rec.getMessage() for rec in caplog.records)


def test_a_key_the_upstream_refuses_is_422_and_nothing_is_saved(api, flux, caplog):
    caplog.set_level(logging.DEBUG)
    bad = "tg-not-a-real-key-0000"  # neither a configured key nor an own-key prefix: 401
    refused = save_key(api, "carol", bad)
    assert refused.status == 422 and refused.json["error"]["code"] == "together-key-refused"
    assert refused.json["error"]["field"] == "key"
    flux.configure(revoked=[OWN_KEY])  # a revoked key: 403 on GET /v1/models
    revoked = save_key(api, "carol", OWN_KEY)
    assert revoked.status == 422 and revoked.json["error"]["code"] == "together-key-refused"
    assert api.get("/v1/me/together-key", user="carol").status == 404
    for reply in (refused, revoked):
        assert bad not in reply.body.decode() and OWN_KEY not in reply.body.decode()
    assert not any(bad in rec.getMessage() or OWN_KEY in rec.getMessage() for rec in caplog.records)
    # not a key at all: 400 naming the field, and unknown fields are refused
    assert save_key(api, "carol", "short").json["error"]["field"] == "key"
    odd = api.put("/v1/me/together-key", user="carol", json_body={"key": OWN_KEY, "extra": 1})
    assert odd.status == 400 and odd.json["error"]["field"] == "extra"


def test_own_key_is_used_for_the_users_images_and_not_counted_against_the_quota(api, flux, monkeypatch):
    monkeypatch.setenv("MONTHLY_IMAGE_QUOTA", "1")
    get_settings.cache_clear()
    assert save_key(api, "dora", OWN_KEY).status == 200
    made = api.post("/v1/images", user="dora", json_body={"prompt": first(1)[0], "n": 2, **SMALL})
    assert made.status == 201, made.body
    assert [img["key_source"] for img in made.json["images"]] == ["own", "own"]
    by_key = flux.stats()["by_key"]
    assert by_key[key_id(OWN_KEY)]["images"] == 2
    assert not any(key_id(k) in by_key for k in TEST_KEYS)  # the shared pool was not used
    usage = api.get("/v1/me/usage", user="dora").json
    assert usage["used"] == 0 and usage["cost_usd"] == 0
    assert [(r["source"], r["images"]) for r in usage["spend_by_model"]] == [("own", 2)]
    openapi_check.check("/v1/me/usage", "GET", 200, usage)
    # without the key the same user is back on the shared pool and its quota
    api.delete("/v1/me/together-key", user="dora")
    shared = api.post("/v1/images", user="dora", json_body={"prompt": first(2)[1], **SMALL})
    assert shared.status == 201 and shared.json["images"][0]["key_source"] == "shared"
    assert api.get("/v1/me/usage", user="dora").json["used"] == 1


def test_a_refused_own_key_never_touches_the_shared_pool_nor_falls_back(api, flux, caplog):
    caplog.set_level(logging.DEBUG)
    assert save_key(api, "eve", OWN_KEY).status == 200
    flux.configure(revoked=[OWN_KEY])  # revoked after it was saved: 403 everywhere
    refused = api.post("/v1/images", user="eve", json_body={"prompt": first(3)[2], **SMALL})
    assert refused.status == 422, refused.body
    assert refused.json["error"]["code"] == "together-key-unusable"
    assert OWN_KEY not in refused.body.decode()
    assert not any(key_id(k) in flux.stats()["by_key"] for k in TEST_KEYS)  # no silent fallback
    assert all(row.get("state", "healthy") == "healthy" for row in shared_key_rows().values())
    assert api.get("/v1/me/together-key", user="eve").json["status"] == "refused"
    # refused up front now, without another upstream call
    before = flux.stats()["requests"]
    again = api.post("/v1/images", user="eve", json_body={"prompt": first(3)[2], **SMALL})
    assert again.json["error"]["code"] == "together-key-unusable" and flux.stats()["requests"] == before
    # other users are unaffected
    assert api.post("/v1/images", user="frank", json_body={"prompt": first(1)[0], **SMALL}).status == 201
    assert not any(OWN_KEY in rec.getMessage() for rec in caplog.records)


def test_a_402_on_the_own_key_pauses_the_job_and_a_new_key_resumes_it(api, flux, worker):
    assert save_key(api, "gina", OWN_KEY).status == 200
    flux.configure(out_of_credits=[OWN_KEY])
    reply = api.post("/v1/jobs", user="gina", json_body={"prompts": first(3), **SMALL})
    assert reply.status == 202, reply.body
    job_id = reply.json["job_id"]
    worker.start()

    def paused():
        body = api.get(f"/v1/jobs/{job_id}", user="gina").json
        return body if body["status"] == "paused" else None

    body = wait_for(paused, timeout_s=30, what="(job paused)")
    openapi_check.check("/v1/jobs/{job_id}", "GET", 200, body)
    assert body["paused"]["code"] == "together-key-out-of-credits"
    assert "402" in body["paused"]["reason"] and OWN_KEY not in json.dumps(body)
    assert body["key_source"] == "own" and body["estimated_usd"] > 0
    assert not any(key_id(k) in flux.stats()["by_key"] for k in TEST_KEYS)
    assert all(row.get("state", "healthy") == "healthy" for row in shared_key_rows().values())
    # retrying with the same refused key is refused; a new key resumes the job
    assert api.post(f"/v1/jobs/{job_id}/retry", user="gina").json["error"]["code"] == "together-key-unusable"
    assert save_key(api, "gina", OTHER_KEY).status == 200
    resumed = api.post(f"/v1/jobs/{job_id}/retry", user="gina")
    assert resumed.status == 202, resumed.body
    worker.wait_finished("gina", job_id)
    done = api.get(f"/v1/jobs/{job_id}", user="gina").json
    assert done["status"] == "completed" and done["paused"] is None
    assert done["actual_usd"] == done["estimated_usd"]
    assert flux.stats()["by_key"][key_id(OTHER_KEY)]["images"] == 3
    assert api.get("/v1/me/usage", user="gina").json["used"] == 0
    check_job("gina", job_id)


def test_estimates_answer_the_catalog_price_and_jobs_record_estimate_and_actual_cost(api, flux, worker):
    from chalicelib.flux.catalog import catalog, default_model

    spec = default_model()
    body = {"prompts": first(3), "n": 2, "width": 512, "height": 512}
    est = api.post("/v1/estimates", user="hank", json_body=body)
    assert est.status == 200, est.body
    openapi_check.check("/v1/estimates", "POST", 200, est.json)
    mp = 512 * 512 / 1e6
    assert est.json["images"] == 6 and est.json["model"] == spec.id
    assert est.json["megapixels"] == round(6 * mp, 6)
    assert est.json["price_per_mp"] == spec.price_per_mp and est.json["priced_at"] == catalog().checked
    steps = spec.steps.default if spec.steps else None
    per_image = round(mp * spec.price_per_mp * ((steps / spec.steps.default) if steps else 1), 6)
    assert abs(est.json["usd"] - 6 * per_image) < 1e-6
    # an images body is estimated too; a bad body is the 400 the job would get
    one = api.post("/v1/estimates", user="hank", json_body={"prompt": "a red fox", "n": 3, **SMALL})
    assert one.status == 200 and one.json["images"] == 3
    bad = api.post("/v1/estimates", user="hank", json_body={"prompts": ["ok"], "width": 300, "height": 256})
    assert bad.status == 400 and bad.json["error"]["field"] == "width"
    # the job records the estimate at submission and its actual cost as images complete
    job = api.post("/v1/jobs", user="hank", json_body={"prompts": first(2), **SMALL})
    job_id = job.json["job_id"]
    queued = api.get(f"/v1/jobs/{job_id}", user="hank").json
    expected = api.post("/v1/estimates", user="hank", json_body={"prompts": first(2), **SMALL}).json["usd"]
    assert queued["estimated_usd"] == expected and queued["actual_usd"] == 0
    worker.start()
    worker.wait_finished("hank", job_id)
    done = api.get(f"/v1/jobs/{job_id}", user="hank").json
    assert done["actual_usd"] == expected


def test_the_monthly_budget_refuses_work_up_front_with_the_estimate(api, flux, monkeypatch):
    monkeypatch.setenv("MONTHLY_BUDGET_USD", "0.001")
    get_settings.cache_clear()
    body = {"prompts": first(5), "width": 1024, "height": 1024}
    over = api.post("/v1/jobs", user="ivan", json_body=body)
    assert over.status == 429, over.body
    error = over.json["error"]
    assert error["code"] == "budget-exceeded"
    assert error["estimate"]["images"] == 5 and error["estimate"]["usd"] > 0.001
    assert error["budget"]["limit_usd"] == 0.001
    assert api.get("/v1/jobs", user="ivan").json["jobs"] == []
    assert api.get("/v1/me/usage", user="ivan").json["used"] == 0
    image = api.post("/v1/images", user="ivan", json_body={"prompt": "a lighthouse", "width": 1024, "height": 1024})
    assert image.status == 429 and image.json["error"]["code"] == "budget-exceeded"
    # a small request fits, and is held against the budget
    small = api.post("/v1/images", user="ivan", json_body={"prompt": "a lighthouse", **SMALL})
    assert small.status == 201
    usage = api.get("/v1/me/usage", user="ivan").json
    assert usage["budget_usd"] == 0.001 and 0 < usage["committed_usd"] <= 0.001
    assert usage["cost_usd"] == pytest.approx(small.json["images"][0]["cost_usd"])  # charged with the hold
    # own-key usage does not count against it
    assert save_key(api, "ivan", OWN_KEY).status == 200
    assert api.post("/v1/jobs", user="ivan", json_body=body).status == 202


def test_admin_sees_spend_per_key_never_a_key(api, flux, idp, monkeypatch):
    assert save_key(api, "jill", OWN_KEY).status == 200
    assert api.post("/v1/images", user="jill", json_body={"prompt": "a kite", **SMALL}).status == 201
    assert api.post("/v1/images", user="kurt", json_body={"prompt": "a boat", **SMALL}).status == 201
    assert api.get("/v1/admin/spend", user="jill").status == 403
    spend = api.get("/v1/admin/spend", token=admin_token(idp, monkeypatch))
    assert spend.status == 200, spend.body
    openapi_check.check("/v1/admin/spend", "GET", 200, spend.json)
    rows = {(r["source"], r["key_id"]): r for r in spend.json["keys"]}
    assert rows[("own", key_id(OWN_KEY))]["images"] == 1
    assert sum(r["images"] for (source, _), r in rows.items() if source == "shared") == 1
    assert len([1 for source, _ in rows if source == "shared"]) == len(TEST_KEYS)
    text = spend.body.decode()
    assert OWN_KEY not in text and not any(k in text for k in TEST_KEYS) and "jill" not in text


def test_removing_the_key_pauses_an_own_key_job_instead_of_using_the_shared_pool(api, flux):
    import json as _json

    from chalicelib.db import JobItemModel
    from chalicelib.jobs import state as job_state
    from chalicelib.jobs import worker as w

    assert save_key(api, "lena", OWN_KEY).status == 200
    job_id = api.post("/v1/jobs", user="lena", json_body={"prompts": first(1), **SMALL}).json["job_id"]
    assert api.delete("/v1/me/together-key", user="lena").status == 204
    message = job_state.item_message(JobItemModel.get(job_id, "0000"))
    assert message["key_source"] == "own"
    record = {"messageId": "m-1", "receiptHandle": "rh", "body": _json.dumps(message), "attributes": {}}
    assert w.handle_event({"Records": [record]}) == {"batchItemFailures": []}  # handled: the job is paused
    body = api.get(f"/v1/jobs/{job_id}", user="lena").json
    assert body["status"] == "paused" and body["paused"]["code"] == "together-key-removed"
    assert body["counts"]["queued"] == 1
    assert flux.stats()["requests"] == 0  # nothing went upstream, on any key
    # a message without the hint (sent before it existed) finds the item's source after the lease
    del message["key_source"]
    record["body"] = _json.dumps(message)
    assert w.handle_event({"Records": [record]}) == {"batchItemFailures": []}
    assert flux.stats()["requests"] == 0
    assert JobItemModel.get(job_id, "0000").status == "queued"


def test_a_worker_that_began_before_a_resume_does_not_pause_the_job_again(api, flux):
    import json as _json
    import time as _time

    from chalicelib.db import JobItemModel
    from chalicelib.jobs import state as job_state
    from chalicelib.jobs import worker as w

    assert save_key(api, "mona", OWN_KEY).status == 200
    flux.configure(out_of_credits=[OWN_KEY])
    job_id = api.post("/v1/jobs", user="mona", json_body={"prompts": first(1), **SMALL}).json["job_id"]
    message = job_state.item_message(JobItemModel.get(job_id, "0000"))
    record = {"messageId": "m-1", "receiptHandle": "rh", "body": _json.dumps(message), "attributes": {}}
    began = _time.time()  # a second worker begins on the old key before the user resumes
    assert w.handle_event({"Records": [record]}) == {"batchItemFailures": []}
    assert api.get(f"/v1/jobs/{job_id}", user="mona").json["status"] == "paused"
    assert save_key(api, "mona", OTHER_KEY).status == 200
    assert api.post(f"/v1/jobs/{job_id}/retry", user="mona").status == 202
    # the late worker meets the old key's 402 after the resume: it does not pause the job again
    late = w.pause_for("mona", job_id, "out_of_credits", began)
    assert isinstance(late, job_state.Later) and late.note == "resumed"
    assert api.get(f"/v1/jobs/{job_id}", user="mona").json["paused"] is None


def month_counters(user: str) -> dict[str, float]:
    from datetime import UTC, datetime

    from chalicelib.db import UsageModel

    try:
        item = UsageModel.get(user, datetime.now(UTC).strftime("%Y-%m"), consistent_read=True)
    except UsageModel.DoesNotExist:
        return {"images": 0, "generations": 0, "cost_usd": 0.0}
    return {
        "images": int(item.count or 0),
        "generations": int(item.generations or 0),
        "cost_usd": float(item.cost_usd or 0),
    }


def test_the_shared_pool_charge_made_beside_the_key_lookup_is_given_back_to_an_own_key_user(api, flux, monkeypatch):
    """The admit charges the shared pool's quota while the own key is read at the same time; an
    own-key user's request ends counted once against the rate limits, with nothing charged."""
    monkeypatch.setenv("MONTHLY_IMAGE_QUOTA", "10")
    get_settings.cache_clear()
    assert save_key(api, "ezra", OWN_KEY).status == 200
    before = month_counters("ezra")
    made = api.post("/v1/images", user="ezra", json_body={"prompt": first(3)[2], "n": 2, **SMALL})
    assert made.status == 201, made.body
    assert [img["key_source"] for img in made.json["images"]] == ["own", "own"]
    after = month_counters("ezra")
    assert after == {**before, "generations": before["generations"] + 1}


def test_a_key_that_cannot_be_read_leaves_nothing_charged(api, flux, monkeypatch):
    from chalicelib.db import UserModel

    monkeypatch.setenv("MONTHLY_IMAGE_QUOTA", "10")
    get_settings.cache_clear()
    UserModel("fern").update(actions=[UserModel.together_key_sealed.set("not-an-envelope")])
    made = api.post("/v1/images", user="fern", json_body={"prompt": first(4)[3], **SMALL})
    assert made.status >= 500, made.body
    assert set(made.json) == {"error"}
    counters = month_counters("fern")
    assert (counters["images"], counters["cost_usd"]) == (0, 0.0)
