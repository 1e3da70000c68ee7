"""The Images tab in a real browser against the local stack: files go straight from the page to S3
(moto) with the presigned POST, the uploads worker verifies them, and the page shows each verdict.

Fails on any console error, page error, failed request or HTTP error response (``conftest.watch_page``),
so a CORS refusal of the browser's POST to S3 fails it too.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from PIL import Image
from playwright.sync_api import expect

from tests.browser.test_web_client import assert_fits_width, expect_loaded, go, sign_in

PHOTOS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "images"


def jpeg_of(name: str) -> bytes:
    with Image.open(PHOTOS / name) as img:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="JPEG", quality=88)
        return buf.getvalue()


def drop_files(page: Any, selector: str, files: list[tuple[str, str, bytes]]) -> None:
    """Drop ``(name, type, bytes)`` files on ``selector`` as a drag and drop from the desktop would."""
    payload = [{"name": n, "type": t, "b64": base64.b64encode(b).decode()} for n, t, b in files]
    transfer = page.evaluate_handle(
        """(files) => {
            const dt = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], f.name, { type: f.type }));
            }
            return dt;
        }""",
        payload,
    )
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def row(page: Any, name: str) -> Any:
    return page.locator(f'.upload-row[data-name="{name}"]')


def test_images_tab_uploads_png_and_jpeg_to_s3_and_shows_verdicts(open_page, shot, stack):
    page = open_page(1280)
    sign_in(page, "uploader")
    go(page, "Images")
    page.get_by_label("Collection").fill("refs")
    png = (PHOTOS / "astronaut.png").read_bytes()
    jpeg = jpeg_of("coffee.png")
    page.locator("#images-files").set_input_files(
        [
            {"name": "astronaut.png", "mimeType": "image/png", "buffer": png},
            {"name": "coffee.jpg", "mimeType": "image/jpeg", "buffer": jpeg},
        ]
    )
    for name, size in (("astronaut.png", "512×512 PNG"), ("coffee.jpg", "600×400 JPEG")):
        expect(row(page, name)).to_have_attribute("data-status", "ready", timeout=60_000)
        expect(row(page, name).locator(".upload-status")).to_contain_text(size)
        expect(row(page, name).locator("progress")).to_have_attribute("value", "1")
    cards = page.locator(".upload-card")
    expect(cards).to_have_count(2, timeout=20_000)
    for name in ("astronaut.png", "coffee.jpg"):
        expect_loaded(page, page.get_by_role("img", name=name))
    expect(page.locator(".storage-usage")).to_contain_text("used")

    # Drag and drop: a photo and a text file pretending to be a PNG; the server rejects the latter.
    drop_files(
        page,
        ".dropzone",
        [
            ("camera.png", "image/png", (PHOTOS / "camera.png").read_bytes()),
            ("notes.png", "image/png", b"not an image\n" * 50),
        ],
    )
    expect(row(page, "camera.png")).to_have_attribute("data-status", "ready", timeout=60_000)
    expect(row(page, "notes.png")).to_have_attribute("data-status", "rejected", timeout=60_000)
    expect(row(page, "notes.png")).to_contain_text("not a JPEG, PNG or WebP image")
    expect(cards).to_have_count(4, timeout=20_000)
    shot(page, "images-tab")

    listing = stack.api("GET", "/v1/uploads?collection=refs", "uploader").json()["uploads"]
    assert sorted((u["filename"], u["status"]) for u in listing) == [
        ("astronaut.png", "ready"),
        ("camera.png", "ready"),
        ("coffee.jpg", "ready"),
        ("notes.png", "rejected"),
    ]
    assert stack.api("GET", "/v1/uploads", "someone-else").json()["uploads"] == []


def test_images_tab_fits_a_phone(open_page, shot, stack):
    page = open_page(390, 844)
    sign_in(page, "phone-uploader")
    page.goto(stack.web_url + "/#/images")
    expect(page.get_by_role("heading", name="Images", exact=True, level=1)).to_be_visible()
    page.locator("#images-files").set_input_files(
        [{"name": "horse.png", "mimeType": "image/png", "buffer": (PHOTOS / "horse.png").read_bytes()}]
    )
    expect(row(page, "horse.png")).to_have_attribute("data-status", "ready", timeout=60_000)
    expect_loaded(page, page.get_by_role("img", name="horse.png"))
    assert_fits_width(page)
    shot(page, "images-tab")
