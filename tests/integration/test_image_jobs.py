"""Batch jobs with images in, end to end on the local stack: uploads verified by the uploads
worker, ``POST /v1/jobs`` with ``collection_images``, ``image_ids`` and ``sets``, the jobs worker
generating each item from its own inputs (the Flux emulator fetches the presigned GETs).
Real photos from ../shared/data/images/, scaled down with Pillow here.
"""

from __future__ import annotations

import io

import pytest
import requests
from PIL import Image, ImageOps

from devstack.prompts import first
from tests import openapi_check
from tests.fixtures.worker import check_job
from tests.photos import small_photo, unlikeness

PROMPTS = first(8)
KONTEXT = "black-forest-labs/FLUX.1-kontext-pro"
FLASH = "google/flash-image-2.5"
SMALL = {"width": 256, "height": 256}
NAMES = ["astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "horse"]


def upload(api, user: str, data: bytes, collection: str | None = None) -> str:
    body = {"filename": "p.png", "content_type": "image/png", "size_bytes": len(data)}
    if collection:
        body["collection"] = collection
    reply = api.post("/v1/uploads", user=user, json_body=body)
    assert reply.status == 201, reply.body
    sent = requests.post(reply.json["url"], data=reply.json["fields"], files={"file": ("p.png", data)}, timeout=30)
    assert sent.status_code in (200, 201, 204), sent.text
    return reply.json["upload_id"]


def ten_photos() -> list[bytes]:
    """Nine real photos and a mirrored one: ten visibly different inputs."""
    photos = [small_photo(f"{name}.png") for name in NAMES]
    with Image.open(io.BytesIO(photos[3])) as img:
        buf = io.BytesIO()
        ImageOps.mirror(img).save(buf, format="PNG")
    return [*photos, buf.getvalue()]


def wait_ready(api, worker, user: str, ids: list[str]) -> dict[str, bytes]:
    """Wait for the uploads worker to verify every upload; their stripped copies by id."""

    def verdicts():
        bodies = [api.get(f"/v1/uploads/{i}", user=user).json for i in ids]
        return bodies if all(b["status"] == "ready" for b in bodies) else None

    bodies = worker.wait_for(verdicts, timeout_s=90, what="(uploads verified)")
    return {b["id"]: requests.get(b["url"], timeout=10).content for b in bodies}


def rgb(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


def items_of(api, user: str, job_id: str) -> list[dict]:
    reply = api.get(f"/v1/jobs/{job_id}/items?limit=100", user=user)
    assert reply.status == 200, reply.body
    openapi_check.check("/v1/jobs/{job_id}/items", "GET", 200, reply.json)
    return reply.json["items"]


def test_one_prompt_over_a_collection_makes_one_image_per_upload_from_its_own_input(api, worker, flux):
    worker.start()
    ids = [upload(api, "shop", data, collection="products") for data in ten_photos()]
    stripped = wait_ready(api, worker, "shop", ids)
    reply = api.post(
        "/v1/jobs",
        user="shop",
        json_body={"prompt": PROMPTS[0], "collection_images": "products", "model": KONTEXT, **SMALL},
    )
    assert reply.status == 202, reply.body
    job_id = reply.json["job_id"]
    assert reply.json["total"] == 10
    worker.wait_finished("shop", job_id, timeout_s=180)
    state = check_job("shop", job_id)
    assert [i.status for i in state["items"]] == ["succeeded"] * 10
    items = items_of(api, "shop", job_id)
    assert sorted(item["inputs"]["image"]["id"] for item in items) == sorted(ids)  # each upload once
    inputs = {i: rgb(data) for i, data in stripped.items()}
    for item in items:
        own = item["inputs"]["image"]["id"]
        image = api.get(f"/v1/images/{item['image']['id']}", user="shop").json
        assert image["inputs"]["image"]["id"] == own and image["job_id"] == job_id
        out = rgb(requests.get(image["url"], timeout=10).content)
        distances = {i: unlikeness(out, pic) for i, pic in inputs.items()}
        assert min(distances, key=distances.get) == own  # derived from its own input, not another's
    job = api.get(f"/v1/jobs/{job_id}", user="shop").json
    assert job["source"] == "collection_images" and job["status"] == "completed"


def test_sets_make_n_images_per_set_from_each_sets_references(api, worker, flux):
    worker.start()
    photos = ten_photos()
    ids = [upload(api, "sets", data) for data in photos[:4]]
    wait_ready(api, worker, "sets", ids)
    body = {
        "model": FLASH,
        **SMALL,
        "n": 2,
        "sets": [
            {"prompt": PROMPTS[1], "image_ids": [ids[0], ids[1]]},
            {"prompt": PROMPTS[2], "image_ids": [ids[2], ids[3]]},
        ],
    }
    reply = api.post("/v1/jobs", user="sets", json_body=body)
    assert reply.status == 202, reply.body
    assert reply.json["total"] == 4
    job_id = reply.json["job_id"]
    worker.wait_finished("sets", job_id, timeout_s=120)
    check_job("sets", job_id)
    items = items_of(api, "sets", job_id)
    assert [i["status"] for i in items] == ["succeeded"] * 4
    assert [i["prompt"] for i in items] == [PROMPTS[1], PROMPTS[1], PROMPTS[2], PROMPTS[2]]
    assert [[r["id"] for r in i["inputs"]["references"]] for i in items] == [ids[:2], ids[:2], ids[2:], ids[2:]]
    seeds = {i["seed"] for i in items}
    assert len(seeds) == 4  # n images per set, each its own seed
    for item in items:
        image = api.get(f"/v1/images/{item['image']['id']}", user="sets").json
        assert [r["id"] for r in image["inputs"]["references"]] == [r["id"] for r in item["inputs"]["references"]]
        assert all(len(r["sha256"]) == 64 for r in image["inputs"]["references"])


def test_image_ids_are_all_checked_up_front_naming_the_index(api, worker, flux):
    from chalicelib.db import JobItemModel, JobModel
    from chalicelib.db.jobs import IdempotencyModel

    worker.start()
    mine = [upload(api, "alice", data) for data in ten_photos()[:2]]
    theirs = upload(api, "mallory", small_photo("horse.png"))
    wait_ready(api, worker, "alice", mine)
    cases = [
        ({"prompt": PROMPTS[3], "model": KONTEXT, "image_ids": [mine[0], mine[1], theirs]}, 404, "image_ids[2]"),
        (
            {
                "model": FLASH,
                "sets": [{"prompt": PROMPTS[4], "image_ids": [mine[0]]}, {"prompt": PROMPTS[4], "image_ids": [theirs]}],
            },
            404,
            "sets[1].image_ids[0]",
        ),
        ({"prompt": PROMPTS[3], "model": KONTEXT, "collection_images": "nothing-here"}, 404, "collection_images"),
        ({"prompt": PROMPTS[3], "image_ids": mine}, 400, "image_ids"),  # the default model takes no image
        ({"model": KONTEXT, "sets": [{"prompt": PROMPTS[4], "image_ids": mine}]}, 400, "sets[0].image_ids"),
        ({"model": FLASH, "sets": [{"prompt": PROMPTS[4], "image_ids": mine * 2}]}, 400, "sets[0].image_ids"),
        ({"prompt": PROMPTS[3], "model": KONTEXT, "image_ids": [mine[0], "nope"]}, 400, "image_ids[1]"),
        ({"prompt": PROMPTS[3], "model": KONTEXT, "image_ids": mine * 501}, 400, "image_ids"),
        ({"prompt": PROMPTS[3], "model": KONTEXT, "image_ids": mine, "prompts": ["x"]}, 400, "prompts"),
        ({"model": FLASH, "n": 600, "sets": [{"prompt": PROMPTS[4], "image_ids": [mine[0]]}] * 2}, 400, "n"),
    ]
    for body, status, field in cases:
        reply = api.post("/v1/jobs", user="alice", json_body={**SMALL, **body})
        assert reply.status == status, (body, reply.body)
        assert reply.json["error"]["field"] == field, (body, reply.body)
    keyed = api.post(
        "/v1/jobs", user="alice", json_body={**SMALL, **cases[0][0]}, headers={"Idempotency-Key": "img-job-1"}
    )
    assert keyed.status == 404 and keyed.json["error"]["field"] == "image_ids[2]"
    assert sum(1 for _ in IdempotencyModel.scan()) == 0  # the claimed key was released
    assert not list(JobModel.query("alice")) and sum(1 for _ in JobItemModel.scan()) == 0
    assert api.get("/v1/me/usage", user="alice").json["used"] == 0
    assert flux.stats()["requests"] == 0


@pytest.mark.parametrize("model", [KONTEXT, FLASH])
def test_image_ids_become_the_edited_image_or_the_one_reference(api, worker, flux, model):
    worker.start()
    ids = [upload(api, "auto", data) for data in ten_photos()[:2]]
    wait_ready(api, worker, "auto", ids)
    reply = api.post(
        "/v1/jobs", user="auto", json_body={"prompt": PROMPTS[5], "model": model, "image_ids": ids, **SMALL}
    )
    assert reply.status == 202, reply.body
    worker.wait_finished("auto", reply.json["job_id"], timeout_s=120)
    items = items_of(api, "auto", reply.json["job_id"])
    role = "image" if model == KONTEXT else "references"
    got = [i["inputs"]["image"]["id"] if role == "image" else i["inputs"]["references"][0]["id"] for i in items]
    assert got == ids and all(i["status"] == "succeeded" for i in items)
