"""Image in, image out in a real browser against the local stack: a PNG and a JPEG made with Pillow are
uploaded on the Images tab, one is edited on Generate (input and output side by side), one prompt runs
over the collection on Batch (count and cost estimate first; the job shows each input beside its
output), and the job's ImageFolder export downloads from the job screen.

Fails on any console error, page error, failed request or HTTP error response (``conftest.watch_page``).
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from PIL import Image, ImageDraw
from playwright.sync_api import expect

from tests.browser.test_uploads_web import row
from tests.browser.test_web_client import PROGRESS_RECORDER_JS, expect_loaded, go, parti, sign_in

EDIT_MODEL = "black-forest-labs/FLUX.1-kontext-pro"


def picture(fmt: str, colour: tuple[int, int, int]) -> bytes:
    """A 256x256 picture (a disc on a plain ground) encoded as ``fmt`` by Pillow."""
    img = Image.new("RGB", (256, 256), (240, 240, 240))
    ImageDraw.Draw(img).ellipse((48, 48, 208, 208), fill=colour)
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def upload_two(page: Any, collection: str) -> None:
    go(page, "Images")
    page.get_by_label("Collection").fill(collection)
    page.locator("#images-files").set_input_files(
        [
            {"name": "disc.png", "mimeType": "image/png", "buffer": picture("PNG", (200, 40, 40))},
            {"name": "disc.jpg", "mimeType": "image/jpeg", "buffer": picture("JPEG", (40, 40, 200))},
        ]
    )
    for name in ("disc.png", "disc.jpg"):
        expect(row(page, name)).to_have_attribute("data-status", "ready", timeout=60_000)
    expect(page.locator(".upload-card")).to_have_count(2, timeout=20_000)


def test_upload_png_and_jpeg_then_edit_one(open_page, shot, stack):
    user = "image-editor"
    page = open_page(1280)
    sign_in(page, user)
    upload_two(page, "discs")
    uploads = {u["filename"]: u["id"] for u in stack.api("GET", "/v1/uploads?collection=discs", user).json()["uploads"]}

    # Edit one upload: Generate opens with it, switches to a model that edits, shows input and output.
    page.get_by_role("button", name="Edit disc.png").click()
    expect(page.get_by_role("heading", name="Generate", exact=True, level=1)).to_be_visible()
    expect(page.locator(".edit-current")).to_contain_text("Editing: disc.png")
    catalog = stack.api("GET", "/v1/models", user).json()["models"]
    editors = [m["id"] for m in catalog if (m.get("image_inputs") or {}).get("image_url")]
    expect(page.get_by_label("Model")).to_have_value(editors[0])  # the first model that edits an image
    prompt = parti(skip=5)
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_role("button", name="Generate", exact=True).click()
    pair = page.locator(".result-pair")
    expect(pair).to_have_count(1, timeout=60_000)
    expect_loaded(page, pair.get_by_role("img", name="disc.png"))
    expect_loaded(page, pair.get_by_role("img", name=prompt))
    newest = stack.api("GET", "/v1/images?limit=1", user).json()["images"][0]
    detail = stack.api("GET", f"/v1/images/{newest['id']}", user).json()
    assert detail["inputs"]["image"]["id"] == uploads["disc.png"], detail
    shot(page, "generate-edit")
    page.watch.assert_clean()


def test_batch_over_collection_shows_pairs_and_downloads_imagefolder(open_page, shot, stack):
    user = "collection-batcher"
    page = open_page(1280)
    sign_in(page, user)
    upload_two(page, "discs")
    uploads = {u["filename"]: u["id"] for u in stack.api("GET", "/v1/uploads?collection=discs", user).json()["uploads"]}

    # One prompt over the collection: the count and the cost estimate before starting.
    go(page, "Batch")
    page.locator("label", has_text="One prompt over uploaded images").click()
    over = parti(skip=6)
    page.get_by_label("Prompt for every image").fill(over)
    page.get_by_label("Images from").fill("discs")
    expect(page.locator(".over-count")).to_have_text("2 ready images in “discs”.", timeout=20_000)
    page.get_by_label("Model").select_option(EDIT_MODEL)
    summary = page.get_by_role("complementary", name="Batch summary")
    expect(summary.locator(".batch-summary")).to_have_text("2 images ready")
    catalog = stack.api("GET", "/v1/models", user).json()
    model = next(m for m in catalog["models"] if m["id"] == EDIT_MODEL)
    size = page.get_by_label("Size").input_value()
    width, height = (int(v) for v in size.split("x"))
    each = width * height / 1e6 * model["price_per_mp"]  # at the default steps
    expect(summary.locator(".batch-cost")).to_contain_text(f"(2 images × ${each:#.2g})")  # formatUsd
    shot(page, "batch-collection")
    summary.get_by_role("button", name="Start batch · 2 images").click()

    screen = page.locator("section.screen-job")
    expect(screen).to_be_visible(timeout=30_000)  # the job is submitted first; slow on a busy machine
    screen.evaluate(PROGRESS_RECORDER_JS)
    expect(screen).to_have_attribute("data-progress", "100", timeout=90_000)
    expect(screen).to_have_attribute("data-status", "completed")
    tiles = page.locator(".tile-with-input")
    expect(tiles).to_have_count(2, timeout=20_000)
    for name in ("disc.png", "disc.jpg"):
        expect_loaded(page, tiles.get_by_role("img", name=f"Input: {name}"))
    shot(page, "job-pairs")

    # The ImageFolder download: train/ with inputs, outputs and metadata.jsonl pairing them.
    page.get_by_label("Archive format").select_option("imagefolder")
    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("button", name="Download", exact=True).click()
    assert download.value.suggested_filename.endswith("-imagefolder.zip")
    with zipfile.ZipFile(download.value.path()) as zf:
        names = zf.namelist()
        rows = [json.loads(line) for line in zf.read("train/metadata.jsonl").decode().splitlines()]
    assert len(rows) == 2 and all("file_name" not in r for r in rows), rows
    inputs = sorted(r["input_file_name"].rsplit(".", 1)[0] for r in rows)
    assert inputs == sorted(f"input-{uploads[n]}" for n in ("disc.png", "disc.jpg")), rows
    for r in rows:
        assert r["prompt"] == over and r["model"] == EDIT_MODEL
        assert f"train/{r['input_file_name']}" in names and f"train/{r['output_file_name']}" in names
    page.watch.assert_clean()
