"""The model catalog over the API, end to end on the local stack (moto, Flux emulator, dev IdP):
GET /v1/models, per-model validation of POST /v1/images and POST /v1/jobs, retired models,
the price every stored image records and the month's cost."""

from __future__ import annotations

import pytest
from urllib3 import encode_multipart_formdata

from chalicelib.flux.catalog import catalog, image_cost
from devstack.prompts import parti_prompts
from tests import openapi_check

PROMPTS = parti_prompts()[:40]
SCHNELL = "black-forest-labs/FLUX.1-schnell"
SCHNELL_FREE = "black-forest-labs/FLUX.1-schnell-Free"
F2_PRO = "black-forest-labs/FLUX.2-pro"
F2_DEV = "black-forest-labs/FLUX.2-dev"
KONTEXT_PRO = "black-forest-labs/FLUX.1-kontext-pro"
SMALL = {"width": 256, "height": 256}


def upstream_requests(flux) -> int:
    return flux.stats()["requests"]


def usage(api, user: str) -> dict:
    return api.get("/v1/me/usage", user=user).json


def test_models_serves_the_catalog_with_capabilities(api):
    reply = api.get("/v1/models", user="m")
    assert reply.status == 200
    openapi_check.check("/v1/models", "GET", 200, reply.json)
    body = reply.json
    assert [m["id"] for m in body["models"]] == [m.id for m in catalog().current]
    assert body["default"] == SCHNELL
    assert {r["id"]: r["replacement"] for r in body["retired"]}[SCHNELL_FREE] == SCHNELL
    by_id = {m["id"]: m for m in body["models"]}
    assert by_id[SCHNELL]["parameters"] == ["width", "height", "aspect_ratio", "steps", "negative_prompt"]
    assert by_id[F2_DEV]["image_inputs"]["image_loras"] == 2
    assert all(m["available"] for m in body["models"])


def test_the_default_model_is_flux_schnell_and_every_image_records_its_price(api, flux):
    reply = api.post("/v1/images", user="price", json_body={"prompt": PROMPTS[0], "steps": 8, **SMALL})
    assert reply.status == 201, reply.body
    [image] = reply.json["images"]
    assert image["model"] == SCHNELL and image["steps"] == 8
    expected = image_cost(SCHNELL, 256, 256, 8)
    assert expected > 0 and image["cost_usd"] == pytest.approx(expected)
    assert api.get(f"/v1/images/{image['id']}", user="price").json["cost_usd"] == pytest.approx(expected)

    second = api.post(
        "/v1/images", user="price", json_body={"prompt": PROMPTS[1], "model": F2_PRO, "n": 2, **SMALL}
    ).json["images"]
    assert [i["cost_usd"] for i in second] == [pytest.approx(image_cost(F2_PRO, 256, 256, None))] * 2
    month = usage(api, "price")
    openapi_check.check("/v1/me/usage", "GET", 200, month)
    assert month["used"] == 3
    assert month["cost_usd"] == pytest.approx(expected + 2 * image_cost(F2_PRO, 256, 256, None))
    assert usage(api, "someone-else")["cost_usd"] == 0


def test_the_retired_free_model_is_a_400_naming_the_replacement_and_nothing_upstream(api, flux):
    reply = api.post("/v1/images", user="free", json_body={"prompt": PROMPTS[2], "model": SCHNELL_FREE})
    assert reply.status == 400
    error = reply.json["error"]
    assert (error["code"], error["field"]) == ("model-retired", "model")
    assert SCHNELL in error["message"]
    assert upstream_requests(flux) == 0 and usage(api, "free")["used"] == 0


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"model": F2_PRO, "negative_prompt": "blurry"}, "negative_prompt"),
        ({"model": SCHNELL, "guidance": 4.0}, "guidance"),
        ({"model": SCHNELL, "output_format": "png"}, "output_format"),
        ({"model": F2_DEV, "aspect_ratio": "16:9"}, "aspect_ratio"),
        ({"model": F2_PRO, "steps": 20}, "steps"),
        ({"model": KONTEXT_PRO, "prompt_upsampling": True}, "prompt_upsampling"),
        ({"guidance_scale": 3.5}, "guidance_scale"),
    ],
)
def test_a_parameter_the_model_does_not_take_is_a_400_never_dropped(api, flux, fields, field):
    reply = api.post("/v1/images", user="strict", json_body={"prompt": PROMPTS[3], **fields})
    assert reply.status == 400, reply.body
    error = reply.json["error"]
    assert (error["code"], error["field"]) == ("unsupported-parameter", field)
    assert field in error["message"]
    if "model" in fields:
        assert fields["model"] in error["message"]
    assert upstream_requests(flux) == 0 and usage(api, "strict")["used"] == 0


def test_parameters_a_model_takes_reach_the_upstream(api, flux):
    reply = api.post(
        "/v1/images",
        user="takes",
        json_body={
            "prompt": PROMPTS[4],
            "model": F2_DEV,
            "guidance": 4.5,
            "steps": 12,
            "prompt_upsampling": False,
            "output_format": "png",
            **SMALL,
        },
    )
    assert reply.status == 201, reply.body
    [image] = reply.json["images"]
    assert (image["model"], image["guidance"], image["content_type"]) == (F2_DEV, 4.5, "image/png")

    wide = api.post(
        "/v1/images", user="takes", json_body={"prompt": PROMPTS[5], "model": "kontext-pro", "aspect_ratio": "9:16"}
    )
    assert wide.status == 201, wide.body
    [image] = wide.json["images"]
    assert (image["model"], image["width"], image["height"], image["steps"]) == (KONTEXT_PRO, 768, 1344, 28)
    assert image["cost_usd"] == pytest.approx(image_cost(KONTEXT_PRO, 768, 1344, 28))


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"model": SCHNELL_FREE}, "model-retired", "model"),
        ({"model": F2_PRO, "negative_prompt": "text"}, "unsupported-parameter", "negative_prompt"),
        ({"guidance": 2.0}, "unsupported-parameter", "guidance"),
    ],
)
def test_every_job_shape_is_validated_against_the_model(api, flux, fields, code, field):
    for shape in ({"prompts": PROMPTS[:3]}, {"prompt": PROMPTS[6], "count": 3}):
        reply = api.post("/v1/jobs", user="jobs", json_body={**shape, **fields, **SMALL})
        assert reply.status == 400, reply.body
        assert (reply.json["error"]["code"], reply.json["error"]["field"]) == (code, field)
    parts = [(k, str(v)) for k, v in {**fields, **SMALL}.items()]
    parts.append(("file", ("prompts.txt", "\n".join(PROMPTS[:3]).encode(), "text/plain")))
    body, content_type = encode_multipart_formdata(parts)
    reply = api.post("/v1/jobs", user="jobs", body=body, headers={"content-type": content_type})
    assert reply.status == 400, reply.body
    assert (reply.json["error"]["code"], reply.json["error"]["field"]) == (code, field)
    assert usage(api, "jobs")["used"] == 0 and api.get("/v1/jobs", user="jobs").json["jobs"] == []


def test_a_job_keeps_the_parameters_its_model_takes(api):
    fields = {"model": F2_DEV, "guidance": 3.0, "prompt_upsampling": True, "output_format": "png", **SMALL}
    reply = api.post("/v1/jobs", user="jobparams", json_body={"prompts": PROMPTS[7:9], **fields})
    assert reply.status == 202, reply.body
    job = api.get(f"/v1/jobs/{reply.json['job_id']}", user="jobparams").json
    assert {k: job["params"][k] for k in fields} == fields

    parts = [("model", "schnell"), ("aspect_ratio", "16:9"), ("negative_prompt", "blurry")]
    parts.append(("file", ("prompts.txt", "\n".join(PROMPTS[9:11]).encode(), "text/plain")))
    body, content_type = encode_multipart_formdata(parts)
    reply = api.post("/v1/jobs", user="jobparams", body=body, headers={"content-type": content_type})
    assert reply.status == 202, reply.body
    params = api.get(f"/v1/jobs/{reply.json['job_id']}", user="jobparams").json["params"]
    assert (params["model"], params["aspect_ratio"], params["negative_prompt"]) == (SCHNELL, "16:9", "blurry")


def test_batch_images_record_their_price_and_add_to_the_month(api, worker):
    fields = {"model": KONTEXT_PRO, "steps": 14, **SMALL}
    reply = api.post("/v1/jobs", user="batchcost", json_body={"prompts": PROMPTS[11:14], **fields})
    assert reply.status == 202, reply.body
    worker.start()
    worker.wait_finished("batchcost", reply.json["job_id"])
    images = api.get("/v1/images", user="batchcost").json["images"]
    each = image_cost(KONTEXT_PRO, 256, 256, 14)
    assert len(images) == 3 and all(i["cost_usd"] == pytest.approx(each) for i in images)
    # the worker writes a batch's costs to the month when its invocation ends (usage.batched_costs),
    # which can be just after the job's last counter move finished it: wait for that write
    month = worker.wait_for(  # (a batch split over invocations writes in parts)
        lambda: (u := usage(api, "batchcost"))["cost_usd"] == pytest.approx(3 * each) and u,
        timeout_s=10,
        what="(the batch's costs in the month)",
    )
    assert month["cost_usd"] == pytest.approx(3 * each)
