"""Image in, image out: ``POST /v1/images`` with ``image_id``, ``reference_image_ids`` and
``mask_id``, end to end on the local stack (uploads by presigned POST to moto's S3, the Flux
emulator fetching the presigned GETs over loopback). Real photos from ../shared/data/images/,
scaled down with Pillow here.
"""

from __future__ import annotations

import hashlib
import io

import pytest
import requests
from PIL import Image, ImageChops, ImageDraw, ImageStat

from devstack.prompts import first
from tests import openapi_check
from tests.photos import small_photo, unlikeness

PROMPTS = first(12)
KONTEXT = "black-forest-labs/FLUX.1-kontext-pro"
FLEX = "black-forest-labs/FLUX.2-flex"
SCHNELL = "black-forest-labs/FLUX.1-schnell"
SMALL = {"width": 256, "height": 256}
A, B, C, D = (f"01J00000000000000000000{c}ZZ" for c in "ABCD")  # well-formed ids nobody owns


def upload(api, user: str, data: bytes, content_type: str = "image/png", **extra) -> str:
    """Announce, then POST the file to S3 (moto); verification happens on first use."""
    reply = api.post(
        "/v1/uploads",
        user=user,
        json_body={"filename": "in.png", "content_type": content_type, "size_bytes": len(data), **extra},
    )
    assert reply.status == 201, reply.body
    ticket = reply.json
    sent = requests.post(ticket["url"], data=ticket["fields"], files={"file": ("in.png", data)}, timeout=30)
    assert sent.status_code in (200, 201, 204), sent.text
    return ticket["upload_id"]


def fetch(url: str) -> bytes:
    reply = requests.get(url, timeout=10)
    assert reply.status_code == 200
    return reply.content


def decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute per-channel difference (0..255), ``b`` resized to ``a``."""
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB").resize(a.size))
    return sum(ImageStat.Stat(diff).mean) / 3


def generate(api, user: str, **body) -> dict:
    reply = api.post("/v1/images", user=user, json_body=body)
    assert reply.status == 201, reply.body
    openapi_check.check("/v1/images", "POST", 201, reply.json)
    return reply.json["images"][0]


def stripped_of(api, user: str, upload_id: str) -> bytes:
    """The bytes handed upstream: the upload's stripped copy."""
    return fetch(api.get(f"/v1/uploads/{upload_id}", user=user).json["url"])


def test_edit_an_upload_records_its_input_and_derives_from_it(api, flux):
    cat = upload(api, "ed", small_photo("chelsea.png"))
    coffee = upload(api, "ed", small_photo("coffee.png", fmt="JPEG"), "image/jpeg")
    image = generate(api, "ed", prompt=PROMPTS[0], model=KONTEXT, image_id=cat, **SMALL)
    cat_bytes, coffee_bytes = stripped_of(api, "ed", cat), small_photo("coffee.png")
    assert api.get(f"/v1/uploads/{coffee}", user="ed").json["status"] == "pending"  # never used, not verified
    assert image["inputs"] == {
        "image": {"id": cat, "source": "upload", "sha256": hashlib.sha256(cat_bytes).hexdigest()},
        "references": [],
        "mask": None,
    }
    got = api.get(f"/v1/images/{image['id']}", user="ed")
    assert got.status == 200 and got.json["inputs"] == image["inputs"]
    openapi_check.check("/v1/images/{image_id}", "GET", 200, got.json)
    out = decoded(fetch(image["url"]))
    assert out.size == (256, 256)
    assert unlikeness(out, decoded(cat_bytes)) < unlikeness(out, decoded(coffee_bytes)) / 2
    # a text-to-image result records no inputs
    plain = generate(api, "ed", prompt=PROMPTS[1], model=SCHNELL, **SMALL)
    assert plain["inputs"] is None


def test_edit_one_of_my_own_generated_images(api, flux):
    first_image = generate(api, "iter", prompt=PROMPTS[2], model=SCHNELL, seed=3, **SMALL)
    edited = generate(api, "iter", prompt=PROMPTS[3], model=KONTEXT, image_id=first_image["id"], **SMALL)
    original = fetch(first_image["url"])
    assert edited["inputs"]["image"] == {
        "id": first_image["id"],
        "source": "image",
        "sha256": hashlib.sha256(original).hexdigest(),
    }
    other = generate(api, "iter", prompt=PROMPTS[4], model=SCHNELL, seed=99, **SMALL)
    out = decoded(fetch(edited["url"]))
    assert unlikeness(out, decoded(original)) < unlikeness(out, decoded(fetch(other["url"])))


def test_reference_images_go_upstream_in_order(api, flux):
    coffee = upload(api, "refs", small_photo("coffee.png"))
    astronaut = upload(api, "refs", small_photo("astronaut.png"))
    image = generate(
        api, "refs", prompt=PROMPTS[5], model=FLEX, steps=8, reference_image_ids=[coffee, astronaut], **SMALL
    )
    assert [r["id"] for r in image["inputs"]["references"]] == [coffee, astronaut]
    assert image["inputs"]["image"] is None
    out = decoded(fetch(image["url"]))
    coffee_img, astronaut_img = decoded(stripped_of(api, "refs", coffee)), decoded(stripped_of(api, "refs", astronaut))
    # the emulator draws the first reference as the picture and insets the others along the top
    assert mean_diff(out, coffee_img) < mean_diff(out, astronaut_img)
    inset = out.crop((0, 0, 64, 64))
    assert mean_diff(inset, astronaut_img) < mean_diff(inset, coffee_img)


def test_a_mask_keeps_every_pixel_outside_it_exactly(api, flux):
    photo = small_photo("chelsea.png")
    cat = upload(api, "mask", photo)
    with Image.open(io.BytesIO(photo)) as img:
        size = img.size
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle((size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4), fill=255)
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    mask_id = upload(api, "mask", buf.getvalue())
    image = generate(api, "mask", prompt=PROMPTS[6], model=KONTEXT, image_id=cat, mask_id=mask_id, **SMALL)
    assert image["inputs"]["mask"]["id"] == mask_id
    base = decoded(stripped_of(api, "mask", cat))
    out = decoded(fetch(image["url"]))
    assert out.size == base.size == size
    outside = ImageChops.invert(mask)  # 255 where the input must be kept
    diff = ImageChops.difference(out, base)
    for band in diff.split():  # every band of every pixel outside the mask: exactly the input's
        assert ImageChops.multiply(band, outside).getbbox() is None
    changed_inside = ImageChops.multiply(diff.convert("L").point(lambda v: 255 if v else 0), mask)
    inside = ImageStat.Stat(mask).sum[0] / 255
    changed = ImageStat.Stat(changed_inside).sum[0] / 255
    assert inside and changed > inside * 0.5  # the edit shows inside the mask


def test_another_users_ids_are_not_found_naming_the_field(api, flux):
    mine = upload(api, "owner", small_photo("coffee.png"))
    theirs = upload(api, "intruder-own", small_photo("chelsea.png"))
    their_image = generate(api, "owner", prompt=PROMPTS[7], model=SCHNELL, **SMALL)
    cases = [
        ({"model": KONTEXT, "image_id": mine}, "image_id"),
        ({"model": KONTEXT, "image_id": their_image["id"]}, "image_id"),
        ({"model": FLEX, "steps": 8, "reference_image_ids": [theirs, mine]}, "reference_image_ids[1]"),
        ({"model": KONTEXT, "image_id": theirs, "mask_id": mine}, "mask_id"),
        ({"model": KONTEXT, "image_id": "01J0000000000000000000000Z"}, "image_id"),
    ]
    before = api.get("/v1/me/usage", user="intruder-own").json["used"]
    for body, field in cases:
        reply = api.post("/v1/images", user="intruder-own", json_body={"prompt": PROMPTS[8], **SMALL, **body})
        assert reply.status == 404, (body, reply.body)
        assert reply.json["error"]["code"] == "not-found"
        assert reply.json["error"]["field"] == field
    assert api.get("/v1/me/usage", user="intruder-own").json["used"] == before
    assert flux.stats()["requests"] == 1  # only the owner's own text-to-image call went upstream


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": SCHNELL, "image_id": A}, "image_id"),
        ({"model": KONTEXT, "reference_image_ids": [A]}, "reference_image_ids"),
        ({"model": "google/flash-image-2.5", "reference_image_ids": [A, B, C, D]}, "reference_image_ids"),
        ({"model": "black-forest-labs/FLUX.2-dev", "image_id": A}, "image_id"),
    ],
)
def test_a_model_that_does_not_take_the_input_is_a_400_naming_the_field(api, flux, body, field):
    reply = api.post("/v1/images", user="wrong", json_body={"prompt": PROMPTS[9], **SMALL, **body})
    assert reply.status == 400, reply.body
    assert reply.json["error"]["field"] == field
    assert reply.json["error"]["code"] == "unsupported-parameter"
    assert body["model"] in reply.json["error"]["message"]
    assert flux.stats()["requests"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"image_id": 7}, "image_id"),
        ({"image_id": ""}, "image_id"),
        ({"image_id": "../uploads/x"}, "image_id"),
        ({"reference_image_ids": A}, "reference_image_ids"),
        ({"reference_image_ids": []}, "reference_image_ids"),
        ({"reference_image_ids": [A, A]}, "reference_image_ids"),
        ({"reference_image_ids": [A, 3]}, "reference_image_ids[1]"),
        ({"mask_id": A}, "mask_id"),
    ],
)
def test_malformed_input_fields_are_400(api, flux, body, field):
    reply = api.post("/v1/images", user="bad", json_body={"prompt": PROMPTS[10], "model": FLEX, **SMALL, **body})
    assert reply.status == 400, reply.body
    assert reply.json["error"]["field"] == field


def test_an_upload_that_is_not_ready_is_refused_naming_the_field(api, flux):
    reply = api.post(
        "/v1/uploads",
        user="early",
        json_body={"filename": "a.png", "content_type": "image/png", "size_bytes": 1000},
    )
    pending = reply.json["upload_id"]
    early = api.post(
        "/v1/images", user="early", json_body={"prompt": PROMPTS[11], "model": KONTEXT, "image_id": pending, **SMALL}
    )
    assert early.status == 409 and early.json["error"] == {
        "code": "upload-pending",
        "message": early.json["error"]["message"],
        "field": "image_id",
    }
    junk = upload(api, "early", b"definitely not an image")
    rejected = api.post(
        "/v1/images", user="early", json_body={"prompt": PROMPTS[11], "model": KONTEXT, "image_id": junk, **SMALL}
    )
    assert rejected.status == 422 and rejected.json["error"]["code"] == "upload-rejected"
    assert rejected.json["error"]["field"] == "image_id"
    assert flux.stats()["requests"] == 0
