"""Uploads end to end on the local stack: presigned POST to moto's S3 → S3 event → uploads
queue → the worker (the dev stack's poller) → a verified upload. Real photos from
../shared/data/images/ (next to the repository).
"""

from __future__ import annotations

import base64
import io
import json
import struct
import time
import zipfile
from pathlib import Path

import boto3
import pytest
import requests
from PIL import Image

from chalicelib.settings import get_settings
from tests import openapi_check

PHOTOS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "images"


def photo(name: str) -> bytes:
    return (PHOTOS / name).read_bytes()


def as_format(name: str, fmt: str, long_side: int | None = None, **save: object) -> bytes:
    """A real photo re-encoded as ``fmt`` (optionally scaled down)."""
    with Image.open(PHOTOS / name) as img:
        img.load()
        out = img if fmt == "PNG" else img.convert("RGB")
        if long_side:
            out = out.copy()
            out.thumbnail((long_side, long_side))
        buf = io.BytesIO()
        out.save(buf, format=fmt, **save)
        return buf.getvalue()


def jpeg_with_exif(orientation: int | None = 6) -> bytes:
    """chelsea.png as a JPEG carrying EXIF (and by default Orientation 6: rotate 90° clockwise to display)."""
    exif = Image.Exif()
    exif[0x010F] = "Canon"  # Make
    exif[0x0131] = "secret-camera-software"  # Software
    if orientation is not None:
        exif[0x0112] = orientation
    with Image.open(PHOTOS / "chelsea.png") as img:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="JPEG", quality=90, exif=exif, comment=b"gps 52.1,4.3")
        return buf.getvalue()


def announce(api, user: str, data: bytes, content_type: str, filename: str = "photo.png", **extra):
    return api.post(
        "/v1/uploads",
        user=user,
        json_body={"filename": filename, "content_type": content_type, "size_bytes": len(data), **extra},
    )


def post_to_s3(ticket: dict, data: bytes, filename: str = "file") -> requests.Response:
    reply = requests.post(ticket["url"], data=ticket["fields"], files={"file": (filename, data)}, timeout=30)
    assert reply.status_code in (200, 201, 204), reply.text
    return reply


def upload(api, user: str, data: bytes, content_type: str, filename: str = "photo.png", **extra) -> str:
    reply = announce(api, user, data, content_type, filename, **extra)
    assert reply.status == 201, reply.body
    post_to_s3(reply.json, data, filename)
    return reply.json["upload_id"]


def wait_verdict(api, worker, user: str, upload_id: str, timeout_s: float = 60.0) -> dict:
    def done():
        body = api.get(f"/v1/uploads/{upload_id}", user=user).json
        return body if body["status"] in ("ready", "rejected") else None

    return worker.wait_for(done, timeout_s=timeout_s, what=f"(upload {upload_id} verdict)")


def keys_under(prefix: str) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=get_settings().images_bucket, Prefix=prefix)
    return [o["Key"] for o in listing.get("Contents", [])]


def used_bytes(api, user: str) -> int:
    return api.get("/v1/uploads", user=user).json["storage"]["used_bytes"]


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny valid-looking PNG whose header declares ``width`` x ``height`` pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\0" + b"\0" * 3 * 1000
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * 100)) + chunk(b"IEND", b"")


# --- the presigned POST ----------------------------------------------------------------------------


def test_the_signed_policy_pins_key_type_and_size(api):
    data = photo("astronaut.png")
    before = time.time()
    reply = announce(api, "pol", data, "image/png", collection="refs")
    assert reply.status == 201, reply.body
    openapi_check.check("/v1/uploads", "POST", 201, reply.json)
    ticket = reply.json
    fields = ticket["fields"]
    policy = json.loads(base64.b64decode(fields["policy"]))
    conditions = policy["conditions"]
    key = f"uploads/pol/{ticket['upload_id']}"
    assert fields["key"] == key
    assert {"key": key} in conditions
    assert {"bucket": get_settings().images_bucket} in conditions
    assert {"Content-Type": "image/png"} in conditions and fields["Content-Type"] == "image/png"
    assert ["content-length-range", 1, len(data)] in conditions
    assert {"x-amz-server-side-encryption": "AES256"} in conditions
    assert not any(isinstance(c, list) and c[0] == "starts-with" for c in conditions), "no open-ended field"
    expires = policy["expiration"]
    from datetime import datetime

    expiry = datetime.strptime(expires, "%Y-%m-%dT%H:%M:%SZ").timestamp() - time.timezone
    assert before + 500 <= expiry <= time.time() + 700  # UPLOAD_POST_EXPIRES_SECONDS = 600
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256" and fields["x-amz-signature"]
    zip_policy = json.loads(
        base64.b64decode(announce(api, "pol", b"x" * 1000, "application/zip", "a.zip").json["fields"]["policy"])
    )
    assert ["content-length-range", 1, 1000] in zip_policy["conditions"]
    assert {"Content-Type": "application/zip"} in zip_policy["conditions"]


def body_with(**changes: object) -> dict:
    return {"filename": "a.png", "content_type": "image/png", "size_bytes": 12, **changes}


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        (body_with(content_type="image/gif"), "content_type", "unsupported-content-type"),
        (body_with(content_type="image/svg+xml"), "content_type", "unsupported-content-type"),
        (body_with(size_bytes=20 * 1024 * 1024 + 1), "size_bytes", "file-too-large"),
        (body_with(content_type="application/zip", size_bytes=500 * 1024 * 1024 + 1), "size_bytes", "file-too-large"),
        (body_with(size_bytes=0), "size_bytes", "invalid-request"),
        (body_with(size_bytes="12"), "size_bytes", "invalid-request"),
        (body_with(filename=""), "filename", "invalid-request"),
        (body_with(filename="a\x00.png"), "filename", "invalid-request"),
        (body_with(collection="../x"), "collection", "invalid-request"),
        (body_with(key="uploads/x"), "key", "unknown-field"),
    ],
)
def test_bad_announcements_are_400_naming_the_field(api, body, field, code):
    reply = api.post("/v1/uploads", user="val", json_body=body)
    assert reply.status == 400, reply.body
    assert reply.json["error"]["field"] == field
    assert reply.json["error"]["code"] == code
    openapi_check.check("/v1/uploads", "POST", 400, reply.json)
    assert used_bytes(api, "val") == 0


# --- verification by the worker --------------------------------------------------------------------


def test_png_and_jpeg_become_ready_stripped_with_thumbnails(api, worker):
    worker.start()
    png = photo("astronaut.png")  # carries a text comment and a colour profile
    jpeg = jpeg_with_exif()
    png_id = upload(api, "ann", png, "image/png", "astronaut.png", collection="refs")
    jpeg_id = upload(api, "ann", jpeg, "image/jpeg", "cat photo.jpg", collection="refs")

    got_png = wait_verdict(api, worker, "ann", png_id)
    got_jpeg = wait_verdict(api, worker, "ann", jpeg_id)
    openapi_check.check("/v1/uploads/{upload_id}", "GET", 200, got_png)
    assert got_png["status"] == "ready", got_png
    assert (got_png["width"], got_png["height"]) == (512, 512)
    assert got_png["content_type"] == "image/png" and got_png["collection"] == "refs"
    assert got_jpeg["status"] == "ready", got_jpeg
    assert (got_jpeg["width"], got_jpeg["height"]) == (300, 451), "EXIF orientation applied to the pixels"

    stripped = requests.get(got_jpeg["url"], timeout=10).content
    with Image.open(io.BytesIO(stripped)) as img:
        assert img.format == "JPEG" and img.size == (300, 451)
        assert not img.getexif() and "exif" not in img.info and "comment" not in img.info
    assert b"secret-camera-software" not in stripped and b"gps 52.1" not in stripped
    png_copy = requests.get(got_png["url"], timeout=10).content
    with Image.open(io.BytesIO(png_copy)) as img:
        assert img.format == "PNG" and "Comment" not in img.info
    thumb = requests.get(got_png["thumbnail_url"], timeout=10).content
    with Image.open(io.BytesIO(thumb)) as img:
        assert img.format == "WEBP" and max(img.size) == 256

    assert keys_under("uploads/ann/") == [], "sources are deleted once verified"
    stored = sorted(keys_under("users/ann/uploads/"))
    assert len(stored) == 4
    assert used_bytes(api, "ann") == got_png["bytes"] + got_jpeg["bytes"]
    listing = api.get("/v1/uploads?collection=refs", user="ann")
    openapi_check.check("/v1/uploads", "GET", 200, listing.json)
    assert [u["id"] for u in listing.json["uploads"]] == [jpeg_id, png_id]


def test_a_text_file_sent_as_png_is_rejected(api, worker):
    worker.start()
    text = b"this is not an image, whatever the Content-Type says\n" * 20
    upload_id = upload(api, "txt", text, "image/png", "notes.png")
    got = wait_verdict(api, worker, "txt", upload_id)
    assert got["status"] == "rejected"
    assert got["error"]["code"] == "not-an-image"
    assert got["url"] is None and got["thumbnail_url"] is None
    assert keys_under("uploads/txt/") == [] and keys_under("users/txt/") == []
    assert used_bytes(api, "txt") == 0, "the reservation goes back"


def test_a_decompression_bomb_is_rejected_without_decoding(api, worker):
    worker.start()
    bomb = png_bomb(60_000, 60_000)  # 3.6 gigapixels declared in a few kilobytes
    assert len(bomb) < 10_000
    upload_id = upload(api, "bomb", bomb, "image/png", "bomb.png")
    got = wait_verdict(api, worker, "bomb", upload_id)
    assert got["status"] == "rejected"
    assert got["error"]["code"] == "too-many-pixels"
    # just over the configured bound, under Pillow's own limit: still ours to refuse
    moderate = png_bomb(7000, 6000)
    upload_id = upload(api, "bomb", moderate, "image/png", "big.png")
    assert wait_verdict(api, worker, "bomb", upload_id)["error"]["code"] == "too-many-pixels"


def test_an_object_larger_than_announced_is_rejected(api, worker):
    """moto does not enforce content-length-range; the worker re-checks the real size."""
    worker.start()
    data = photo("coffee.png")
    reply = api.post(
        "/v1/uploads", user="big", json_body={"filename": "c.png", "content_type": "image/png", "size_bytes": 1000}
    )
    post_to_s3(reply.json, data)
    got = wait_verdict(api, worker, "big", reply.json["upload_id"])
    assert got["status"] == "rejected" and got["error"]["code"] == "file-too-large"
    assert used_bytes(api, "big") == 0


def test_objects_at_keys_no_upload_owns_are_deleted(api, worker):
    """A client may POST with another ``key`` than signed (moto does not check): the worker
    only accepts keys of existing pending uploads and deletes everything else."""
    worker.start()
    ticket = announce(api, "kk", photo("coins.png"), "image/png").json
    forged = dict(ticket["fields"], key="uploads/kk/01ARZ3NDEKTSV4RRFFQ69G5FAV")
    stray = dict(ticket["fields"], key="uploads/kk/../../users/other/images/x.png")
    requests.post(ticket["url"], data=forged, files={"file": ("a", photo("coins.png"))}, timeout=10)
    requests.post(ticket["url"], data=stray, files={"file": ("a", photo("coins.png"))}, timeout=10)
    worker.wait_for(lambda: not keys_under("uploads/"), timeout_s=30, what="(stray sources deleted)")
    assert api.get(f"/v1/uploads/{ticket['upload_id']}", user="kk").json["status"] == "pending"


# --- owners, listing, deleting, quota ---------------------------------------------------------------


def test_another_users_upload_is_404(api, worker):
    worker.start()
    upload_id = upload(api, "owner", photo("horse.png"), "image/png", "horse.png", collection="mine")
    assert wait_verdict(api, worker, "owner", upload_id)["status"] == "ready"
    for method in ("GET", "DELETE"):
        reply = api.request(method, f"/v1/uploads/{upload_id}", user="intruder")
        assert reply.status == 404, (method, reply.body)
        assert reply.json["error"]["code"] == "not-found"
    assert api.get("/v1/uploads", user="intruder").json["uploads"] == []
    assert api.get("/v1/uploads?collection=mine", user="intruder").json["uploads"] == []
    cursor_of_owner = api.get("/v1/uploads?limit=1", user="owner").json
    assert cursor_of_owner["uploads"][0]["id"] == upload_id
    assert api.get("/v1/uploads/not-a-ulid", user="owner").status == 404


def test_delete_removes_objects_and_gives_bytes_back(api, worker):
    worker.start()
    upload_id = upload(api, "del", photo("grass.png"), "image/png")
    assert wait_verdict(api, worker, "del", upload_id)["status"] == "ready"
    assert used_bytes(api, "del") > 0 and keys_under("users/del/uploads/")
    assert api.delete(f"/v1/uploads/{upload_id}", user="del").status == 204
    assert api.get(f"/v1/uploads/{upload_id}", user="del").status == 404
    assert keys_under("users/del/") == [] and used_bytes(api, "del") == 0


def test_storage_quota_is_enforced_and_given_back(api, worker):
    worker.configure(UPLOAD_QUOTA_BYTES=600_000)
    data = photo("coffee.png")  # 466,706 bytes
    first = announce(api, "quota", data, "image/png")
    assert first.status == 201
    second = announce(api, "quota", data, "image/png")
    assert second.status == 403, second.body
    assert second.json["error"] == {
        "code": "storage-quota-exceeded",
        "message": second.json["error"]["message"],
        "field": "size_bytes",
    }
    openapi_check.check("/v1/uploads", "POST", 403, second.json)
    too_big = announce(api, "quota", b"x" * 700_000, "application/zip", "a.zip")
    assert too_big.status == 403
    assert api.delete(f"/v1/uploads/{first.json['upload_id']}", user="quota").status == 204
    assert announce(api, "quota", data, "image/png").status == 201


def test_verify_on_first_use_without_the_worker(api):
    """Generation calls ``ready_upload``: a pending upload whose file has arrived is verified
    then and there, and upstream gets a short-lived presigned GET of the stripped copy."""
    from chalicelib.errors import DomainError
    from chalicelib.http import error_status
    from chalicelib.services import uploads

    ticket = announce(api, "gen", photo("camera.png"), "image/png").json
    upload_id = ticket["upload_id"]
    with pytest.raises(DomainError) as pending:
        uploads.ready_upload("gen", upload_id)
    assert error_status(pending.value.code) == 409 and pending.value.code == "upload-pending"
    post_to_s3(ticket, photo("camera.png"))
    item = uploads.ready_upload("gen", upload_id)
    assert item.status == "ready" and (item.width, item.height) == (512, 512)
    url = uploads.upstream_url(item)
    assert "X-Amz-Expires=300" in url and item.s3_key in url and "uploads/gen/" not in url
    with Image.open(io.BytesIO(requests.get(url, timeout=10).content)) as img:
        assert img.size == (512, 512)
    upright = jpeg_with_exif(orientation=None)  # no rotation: re-saved with its own quantisation tables
    ticket = announce(api, "gen", upright, "image/jpeg", "cat.jpg").json
    post_to_s3(ticket, upright)
    cat = uploads.ready_upload("gen", ticket["upload_id"])
    assert (cat.width, cat.height) == (451, 300)
    stripped = requests.get(uploads.upstream_url(cat), timeout=10).content
    assert b"secret-camera-software" not in stripped and b"gps 52.1" not in stripped
    with Image.open(io.BytesIO(stripped)) as img:
        assert not img.getexif() and "comment" not in img.info
    with pytest.raises(DomainError) as other:
        uploads.ready_upload("someone-else", upload_id)
    assert error_status(other.value.code) == 404
    bad = announce(api, "gen", b"plain text", "image/png").json
    post_to_s3(bad, b"plain text")
    with pytest.raises(DomainError) as rejected:
        uploads.ready_upload("gen", bad["upload_id"])
    assert error_status(rejected.value.code) == 422 and rejected.value.code == "upload-rejected"


# --- bulk upload: a ZIP ---------------------------------------------------------------------------


def twenty_photos() -> list[tuple[str, bytes]]:
    names = sorted(p.name for p in PHOTOS.glob("*.png"))
    files = []
    for i in range(20):
        name = names[i % len(names)]
        stem = name.rsplit(".", 1)[0]
        if i % 3 == 0:
            files.append((f"set/{stem}-{i}.png", as_format(name, "PNG", 200)))
        elif i % 3 == 1:
            files.append((f"set/{stem}-{i}.jpg", as_format(name, "JPEG", 200, quality=85)))
        else:
            files.append((f"set/nested/{stem}-{i}.webp", as_format(name, "WEBP", 200, quality=80)))
    return files


def build_zip(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def test_a_zip_is_unpacked_with_per_file_results(api, worker):
    worker.start()
    photos = twenty_photos()
    members = [
        *photos,
        ("readme.txt", b"these are my reference photos\n"),
        ("../evil.png", photo("horse.png")),
        ("flat.png", b"\0" * 3_000_000),  # compresses ~1000:1
        ("__MACOSX/set/._coins-4.png", b"\0\x05\x16\x07"),
    ]
    archive = build_zip(members)
    zip_id = upload(api, "bulk", archive, "application/zip", "photos.zip", collection="dataset")
    got = wait_verdict(api, worker, "bulk", zip_id, timeout_s=120)
    openapi_check.check("/v1/uploads/{upload_id}", "GET", 200, got)
    assert got["status"] == "ready", got
    by_name = {f["name"]: f for f in got["files"]}
    assert len(got["files"]) == len(members)
    assert got["file_counts"] == {"ready": 20, "rejected": 3, "skipped": 1}
    assert by_name["readme.txt"]["status"] == "rejected"
    assert by_name["readme.txt"]["error"]["code"] == "not-an-image"
    assert by_name["../evil.png"]["error"]["code"] == "unsafe-path"
    assert by_name["flat.png"]["error"]["code"] == "suspicious-compression-ratio"
    assert by_name["__MACOSX/set/._coins-4.png"]["status"] == "skipped"
    children = [by_name[name]["upload_id"] for name, _ in photos]
    assert all(by_name[name]["status"] == "ready" for name, _ in photos)

    listing = []
    cursor = ""
    while True:
        page = api.get(f"/v1/uploads?collection=dataset&limit=100{cursor}", user="bulk").json
        listing += page["uploads"]
        if not page["next_cursor"]:
            break
        cursor = f"&cursor={page['next_cursor']}"
    images = {u["id"]: u for u in listing if u["kind"] == "image"}
    assert set(images) == set(children)
    webp = next(u for u in images.values() if u["filename"].endswith(".webp"))
    assert webp["content_type"] == "image/webp" and webp["parent_id"] == zip_id
    assert all(u["status"] == "ready" and u["width"] and u["thumbnail_url"] for u in images.values())
    assert not any(".." in k for k in keys_under("users/")), "no member name reaches a key"
    assert keys_under("uploads/bulk/") == []
    assert used_bytes(api, "bulk") == sum(u["bytes"] for u in images.values()), "only stored images count"


def test_a_zip_with_too_many_files_or_not_a_zip_is_rejected(api, worker):
    worker.configure(ZIP_MAX_MEMBERS=3)
    worker.start()
    archive = build_zip([(f"p{i}.png", as_format("coins.png", "PNG", 64)) for i in range(4)])
    many = upload(api, "zz", archive, "application/zip", "many.zip")
    got = wait_verdict(api, worker, "zz", many)
    assert got["status"] == "rejected" and got["error"]["code"] == "too-many-files"
    fake = upload(api, "zz", photo("coins.png"), "application/zip", "fake.zip")
    got = wait_verdict(api, worker, "zz", fake)
    assert got["status"] == "rejected" and got["error"]["code"] == "not-a-zip"
    assert used_bytes(api, "zz") == 0 and keys_under("uploads/zz/") == []


def test_zip_members_are_read_with_ranged_gets(api, monkeypatch):
    """The ZIP is never read whole: each member comes through bounded ranged GETs."""
    from chalicelib.storage import uploads as upload_store

    monkeypatch.setattr(upload_store, "RANGE_CHUNK_BYTES", 64 * 1024)
    archive = build_zip([(f"p{i}.png", photo("astronaut.png")) for i in range(3)])
    boto3.client("s3").put_object(Bucket=get_settings().images_bucket, Key="tmp/test.zip", Body=archive)
    raw = upload_store.RangedObject("tmp/test.zip", len(archive))
    with zipfile.ZipFile(io.BufferedReader(raw, buffer_size=64 * 1024)) as zf:
        assert [zf.read(i) == photo("astronaut.png") for i in zf.namelist()] == [True] * 3
    assert raw.requests >= len(archive) // (64 * 1024)


# --- cleanup sweeps -------------------------------------------------------------------------------


def test_cleanup_sweeps_cover_uploads(api):
    """The orphan sweep deletes upload objects no item owns and settles stale pending uploads
    (verifying those whose S3 event was lost); the retention sweep deletes old uploads."""
    from datetime import UTC, datetime, timedelta

    from chalicelib.services import uploads
    from chalicelib.services.cleanup_runs import sweep_orphans
    from chalicelib.services.upload_cleanup import sweep_upload_retention

    bucket = get_settings().images_bucket
    s3 = boto3.client("s3")
    ready = announce(api, "sweep", photo("brick.png"), "image/png").json
    post_to_s3(ready, photo("brick.png"))
    uploads.ready_upload("sweep", ready["upload_id"])
    never_sent = announce(api, "sweep", photo("gravel.png"), "image/png").json
    event_lost = announce(api, "sweep", photo("coins.png"), "image/png").json
    post_to_s3(event_lost, photo("coins.png"))  # no worker runs: the event is never processed
    stuck = announce(api, "sweep", b"z" * 2000, "application/zip", "stuck.zip").json
    from chalicelib.db import UploadModel

    stuck_item = UploadModel.get("sweep", stuck["upload_id"])
    stuck_item.update(  # a worker took the lease, then crashed on every delivery
        actions=[UploadModel.status.set("processing"), UploadModel.lease_until.set(time.time())]
    )
    orphan = "users/sweep/uploads/01ARZ3NDEKTSV4RRFFQ69G5FAV.png"
    s3.put_object(Bucket=bucket, Key=orphan, Body=b"left behind by a crash")
    reserved = used_bytes(api, "sweep")

    later = datetime.now(UTC) + timedelta(hours=2)
    dry = sweep_orphans(now=later, dry_run=True)[-1]
    assert dry.counts["would_delete_objects"] == 1 and dry.counts["would_settle"] == 3
    assert orphan in keys_under("users/sweep/uploads/")

    report = sweep_orphans(now=later)[-1]
    assert report.sweep == "upload_orphans"
    assert report.counts["objects_deleted"] == 1, report.counts
    assert report.counts["rejected_not_received"] == 1 and report.counts["verified_late"] == 1
    assert report.counts["rejected_unpack_failed"] == 1
    assert api.get(f"/v1/uploads/{stuck['upload_id']}", user="sweep").json["error"]["code"] == "unpack-failed"
    assert orphan not in keys_under("users/sweep/uploads/")
    assert api.get(f"/v1/uploads/{never_sent['upload_id']}", user="sweep").json["error"]["code"] == "not-received"
    late = api.get(f"/v1/uploads/{event_lost['upload_id']}", user="sweep").json
    assert late["status"] == "ready" and (late["width"], late["height"]) == (384, 303)
    assert used_bytes(api, "sweep") < reserved, "the never-sent reservation went back"
    kept = api.get(f"/v1/uploads/{ready['upload_id']}", user="sweep").json
    assert kept["status"] == "ready" and requests.get(kept["url"], timeout=10).status_code == 200

    retention = sweep_upload_retention(now=later + timedelta(days=2), retention_days=1)
    assert retention.counts["uploads_deleted"] == 4, retention.counts
    assert api.get("/v1/uploads", user="sweep").json["uploads"] == []
    assert keys_under("users/sweep/") == [] and keys_under("uploads/sweep/") == []
    assert used_bytes(api, "sweep") == 0


def test_the_zip_central_directory_is_counted_before_it_is_parsed():
    """A ZIP's entry count comes from its (ZIP64) end record, so a crafted central directory of
    millions of entries is refused before ``zipfile`` would load it into memory."""
    from chalicelib.services.upload_zip import central_directory

    for entries in (3, 70_000):  # 70,000 needs the ZIP64 end record
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for i in range(entries):
                zf.writestr(f"f{i}.png", b"")
        data = buf.getvalue()
        counted, cd_bytes = central_directory(io.BytesIO(data), len(data))
        assert counted == entries and 0 < cd_bytes < len(data)
    with pytest.raises(zipfile.BadZipFile):
        central_directory(io.BytesIO(photo("coins.png")), len(photo("coins.png")))


def test_members_neither_stored_nor_deflated_are_refused_before_they_are_read(app_env):
    """bzip2 and LZMA members (their decoders fail on bad data with OSError / LZMAError, which
    a read from S3 raises too) are refused from the central directory alone."""
    from chalicelib.services.upload_zip import MemberRejected, check_member

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.png", photo("coins.png"), compress_type=zipfile.ZIP_STORED)
        zf.writestr("b.png", photo("coins.png"), compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("c.png", photo("coins.png"), compress_type=zipfile.ZIP_BZIP2)
        zf.writestr("d.png", photo("coins.png"), compress_type=zipfile.ZIP_LZMA)
    infos = zipfile.ZipFile(io.BytesIO(buf.getvalue())).infolist()
    check_member(infos[0])
    check_member(infos[1])
    for info in infos[2:]:
        with pytest.raises(MemberRejected) as caught:
            check_member(info)
        assert caught.value.code == "unsupported-compression"


def _crafted_zip64(entries: int, eocd_entries: int, decoy: bool) -> bytes:
    """A central directory of ``entries`` empty members, a ZIP64 end record with the real
    counts right before its locator (where ``zipfile`` reads it), and an end record that says
    ``eocd_entries``; with ``decoy``, the locator points at a second ZIP64 record claiming one."""
    cd = b"".join(
        struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, len(n), 0, 0, 0, 0, 0, 0) + n
        for n in (b"%x.png" % i for i in range(entries))
    )
    head = b""
    if decoy:
        head = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 1, 1, 46, 0)
    real = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, len(cd), len(head))
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, 0 if decoy else len(head) + len(cd), 1)
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, eocd_entries, eocd_entries, 46, len(head), 0)
    return head + cd + real + locator + eocd


@pytest.mark.parametrize(("eocd_entries", "decoy"), [(1, False), (0xFFFF, True)])
def test_the_count_is_the_one_zipfile_will_parse_whatever_the_end_record_says(eocd_entries, decoy):
    """A crafted archive must not show the count check one central directory and ``zipfile``
    another: the ZIP64 record is read where ``zipfile`` reads it, right before its locator."""
    from chalicelib.services.upload_zip import central_directory

    data = _crafted_zip64(3_000, eocd_entries, decoy)
    counted, cd_bytes = central_directory(io.BytesIO(data), len(data))
    parsed = zipfile.ZipFile(io.BytesIO(data)).infolist()
    assert counted == len(parsed) == 3_000 and cd_bytes > 3_000 * 46


def test_a_zip_is_unpacked_in_turns_without_duplicates(api, worker):
    """With ZIP_SLICE_SECONDS=0 every turn unpacks one member and queues a continuation, so a big
    ZIP never holds a worker; the member ids make every turn skip what is done."""
    worker.configure(ZIP_SLICE_SECONDS=0)
    worker.start()
    photos = twenty_photos()[:8]
    archive = build_zip([*photos, ("notes.txt", b"not an image")])
    zip_id = upload(api, "turns", archive, "application/zip", "eight.zip", collection="turns")
    got = wait_verdict(api, worker, "turns", zip_id, timeout_s=120)
    assert got["status"] == "ready", got
    assert got["file_counts"] == {"ready": 8, "rejected": 1, "skipped": 0}
    assert [f["name"] for f in got["files"]] == [name for name, _ in photos] + ["notes.txt"]
    children = [
        u for u in api.get("/v1/uploads?collection=turns&limit=100", user="turns").json["uploads"] if u["parent_id"]
    ]
    assert sorted(u["id"] for u in children) == sorted(f["upload_id"] for f in got["files"] if f["status"] == "ready")
    assert used_bytes(api, "turns") == sum(u["bytes"] for u in children)
