"""The hourly check of the catalog against the upstream's own GET /v1/models, end to end:
the scheduled handler (invoked as Lambda would), the Flux emulator's model list, the shared
result in DynamoDB (moto), and the API refusing what the upstream no longer lists."""

from __future__ import annotations

import os

import pytest

from chalicelib.flux import availability
from devstack.prompts import parti_prompts
from tests import openapi_check
from tests.fixtures.api import admin_token

PROMPTS = parti_prompts()[:10]
FLASH = "google/flash-image-2.5"
SCHNELL = "black-forest-labs/FLUX.1-schnell"
SMALL = {"width": 256, "height": 256}


def run_scheduled_check() -> dict:
    """Invoke the ``check_model_catalog`` handler with a CloudWatch scheduled event."""
    from chalice.test import Client

    import app as app_module

    project_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with Client(app_module.app, stage_name="local", project_dir=project_dir) as client:
        event = client.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
        )
        return client.lambda_.invoke("check_model_catalog", event).payload


def admin_status(api, idp, monkeypatch) -> dict:
    """The admin page's view of the catalog, as an admin of the configured admin organization."""
    reply = api.get("/v1/admin/models", token=admin_token(idp, monkeypatch))
    assert reply.status == 200, reply.body
    openapi_check.check("/v1/admin/models", "GET", 200, reply.json)
    return reply.json


def test_a_model_the_upstream_no_longer_lists_is_refused_until_it_is_back(api, flux, idp, monkeypatch):
    flux.configure(delisted_models=[FLASH])
    report = run_scheduled_check()
    assert report["ok"] and report["unavailable"] == [FLASH]

    reply = api.post("/v1/images", user="u", json_body={"prompt": PROMPTS[0], "model": FLASH, **SMALL})
    assert reply.status == 400
    error = reply.json["error"]
    assert (error["code"], error["field"]) == ("model-unavailable", "model")
    assert FLASH in error["message"] and SCHNELL in error["message"]
    job = api.post("/v1/jobs", user="u", json_body={"prompts": PROMPTS[:2], "model": FLASH, **SMALL})
    assert job.status == 400 and job.json["error"]["code"] == "model-unavailable"
    assert flux.stats()["requests"] == 0  # refused before any generation upstream

    models = {m["id"]: m for m in api.get("/v1/models", user="u").json["models"]}
    assert models[FLASH]["available"] is False and models[SCHNELL]["available"] is True

    status = admin_status(api, idp, monkeypatch)
    rows = {r["id"]: r for r in status["models"]}
    assert (rows[FLASH]["listed_upstream"], rows[FLASH]["available"]) == (False, False)
    assert (rows[SCHNELL]["listed_upstream"], rows[SCHNELL]["available"]) == (True, True)
    assert rows["black-forest-labs/FLUX.1-schnell-Free"]["retired"] is True
    assert status["checked_at"] and status["error"] is None
    assert api.get("/v1/admin/models", user="not-admin").status == 403

    flux.configure(delisted_models=[])
    assert availability.check_upstream(force=True)["unavailable"] == []
    reply = api.post("/v1/images", user="u", json_body={"prompt": PROMPTS[1], "model": FLASH, **SMALL})
    assert reply.status == 201, reply.body


def test_the_check_runs_at_most_hourly(api, flux):
    flux.configure(delisted_models=[FLASH])
    assert run_scheduled_check()["unavailable"] == [FLASH]
    flux.configure(delisted_models=[])
    again = run_scheduled_check()
    assert again["skipped"] is True and again["unavailable"] == [FLASH]


def test_a_failed_check_keeps_the_last_result_and_tells_the_admin(api, flux, idp, monkeypatch):
    flux.configure(delisted_models=[FLASH])
    assert availability.check_upstream(force=True)["unavailable"] == [FLASH]

    flux.configure(delisted_models=[], keys=["another-key"])  # every key now answers 401
    failed = availability.check_upstream(force=True)
    assert failed["ok"] is False and "401" in failed["error"] and "test-key" not in failed["error"]
    assert availability.unavailable_models() == {FLASH}
    assert admin_status(api, idp, monkeypatch)["error"] == failed["error"]


@pytest.mark.parametrize("case", ["lists-none-of-ours", "oversize", "deadline"])
def test_an_odd_upstream_answer_takes_no_model_away(api, flux, monkeypatch, case):
    from chalicelib.flux.catalog import catalog

    if case == "lists-none-of-ours":
        flux.configure(delisted_models=[m.id for m in catalog().current])
    elif case == "oversize":
        flux.configure(delisted_models=[FLASH])
        monkeypatch.setattr(availability, "MAX_ANSWER_BYTES", 512)
    else:
        flux.configure(delisted_models=[FLASH])
        monkeypatch.setattr(availability, "CHECK_DEADLINE_S", 0.0)
    report = availability.check_upstream(force=True)
    assert report["ok"] is False and report["error"]
    assert availability.unavailable_models() == frozenset()
    flux.configure(delisted_models=[])
    reply = api.post("/v1/images", user="u", json_body={"prompt": PROMPTS[2], "model": SCHNELL, **SMALL})
    assert reply.status == 201, reply.body
