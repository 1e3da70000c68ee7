"""The web client in a real browser against the local stack: sign-in, generate, gallery, batch, ZIP, isolation.

Every test fails on a console error, an uncaught page error, a failed request or an HTTP error response
(see ``conftest.watch_page``); a test that provokes one on purpose allows exactly that. Screenshots go to
``test-artifacts/`` at 1280 px and 390 px.
"""

from __future__ import annotations

import csv
import io
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from devstack.prompts import PARTI_PROMPTS, parti_prompts

pytestmark = pytest.mark.skipif(not PARTI_PROMPTS.exists(), reason=f"PartiPrompts not found at {PARTI_PROMPTS}")


# --------------------------------------------------------------------------------------------- helpers


def parti(min_chars: int = 40, skip: int = 0) -> str:
    """A real PartiPrompts prompt (long enough to be a sentence)."""
    return [p for p in parti_prompts() if len(p) >= min_chars and "\n" not in p][skip]


def sign_in(page: Any, user_id: str, *, admin: bool = False) -> None:
    expect(page.get_by_role("heading", name="Sign in to PromptCanvas")).to_be_visible()
    page.get_by_label("User id").fill(user_id)
    if admin:
        page.get_by_label("Sign in as an organization admin").check()
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    expect(page.locator("#whoami")).to_contain_text(user_id)


def sign_out(page: Any) -> None:
    page.locator("#whoami").get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to PromptCanvas")).to_be_visible()


def go(page: Any, link: str, heading: str | None = None) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=link, exact=True).click()
    expect(page.get_by_role("heading", name=heading or link, exact=True, level=1)).to_be_visible()


def expect_loaded(page: Any, img: Any) -> None:
    """The <img> is visible and decoded (not a broken image). Generation on a busy machine may
    take longer than the default 5 s."""
    expect(img).to_be_visible(timeout=30_000)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle(), timeout=15_000)


def generate(page: Any, prompt: str) -> Any:
    """Generate one image from ``prompt`` on the Generate screen; returns the result <img>."""
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_role("button", name="Generate", exact=True).click()
    image = page.locator(".result-panel").get_by_role("img", name=prompt)
    expect_loaded(page, image)
    return image


def assert_fits_width(page: Any) -> None:
    """No horizontal scrolling: the layout fits the viewport."""
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than the {page.viewport_size['width']}px viewport"


A11Y_PROBLEMS_JS = """() => {
  const named = (el) =>
    (el.labels && el.labels.length) || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby");
  const problems = [];
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (el.type !== "hidden" && !named(el)) problems.push(`unlabelled ${el.tagName.toLowerCase()} ${el.name || el.id}`);
  }
  for (const img of document.querySelectorAll("img:not([alt])")) {
    problems.push(`img without alt: ${img.src.slice(0, 80)}`);
  }
  for (const img of document.querySelectorAll(".image-grid img, .result img, dialog img")) {
    if (!img.alt.trim()) problems.push(`content image with empty alt: ${img.src.slice(0, 80)}`);
  }
  for (const b of document.querySelectorAll("button, a[href]")) {
    if (!(b.textContent.trim() || b.getAttribute("aria-label"))) {
      problems.push(`control without a name: ${b.outerHTML.slice(0, 80)}`);
    }
  }
  return problems;
}"""


def assert_accessible_basics(page: Any) -> None:
    """Labels on every control, alt text on every image, a name on every button and link."""
    problems = page.evaluate(A11Y_PROBLEMS_JS)
    assert not problems, problems


PROGRESS_RECORDER_JS = """el => {
  el.progressSeen = [el.dataset.progress];
  new MutationObserver(() => el.progressSeen.push(el.dataset.progress))
    .observe(el, {attributes: true, attributeFilter: ["data-progress"]});
}"""


STATUS_RECORDER_JS = """el => {
  el.statusSeen = [el.dataset.status];
  new MutationObserver(() => el.statusSeen.push(el.dataset.status))
    .observe(el, {attributes: true, attributeFilter: ["data-status"]});
}"""


def emulator(stack: Any, **config: Any) -> None:
    """Change the Flux emulator's behaviour (``POST /admin/config``), e.g. ``latency_ms``."""
    base = stack.info["flux_base_url"].removesuffix("/v1")
    requests.post(base + "/admin/config", json=config, timeout=10).raise_for_status()


def assert_counters_add_up(stack: Any, user_id: str, job_id: str) -> None:
    """The API's counters of a job add up to its total, none negative."""
    job = stack.api("GET", f"/v1/jobs/{job_id}", user_id).json()
    assert sum(job["counts"].values()) == job["total"], job
    assert min(job["counts"].values()) >= 0, job


def job_routes_exist(stack: Any) -> bool:
    reply = stack.api("GET", "/v1/jobs", "probe-user")
    return reply.status_code == 200 and "jobs" in reply.json()


def write_parti_tsv(path: Path, n: int, skip: int = 200) -> list[str]:
    """A real PartiPrompts slice: the header and ``n`` rows, every column, as a .tsv file."""
    with PARTI_PROMPTS.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    header, body = rows[0], [r for r in rows[1 + skip :] if r and r[0].strip()][:n]
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    writer.writerow(header)
    writer.writerows(body)
    path.write_text(out.getvalue(), encoding="utf-8")
    return [r[header.index("Prompt")].strip() for r in body]


# --------------------------------------------------------------------------------------------- tests


def test_sign_in_generate_gallery_lightbox_download_delete(open_page, shot, stack):
    prompt = parti(skip=3)
    page = open_page(1280)
    shot(page, "signin")
    sign_in(page, "alice")
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)  # not an admin

    image = generate(page, prompt)
    seed = page.locator(".result .meta-inline dd.mono").first.inner_text()
    recent = page.get_by_role("group", name="Your recent prompts")
    expect(recent.get_by_role("button", name=f"Use recent prompt: {prompt}")).to_be_visible()
    shot(page, "generate")

    # "Generate again with this seed" keeps the seed.
    page.get_by_role("button", name="Generate again with this seed").click()
    expect(page.get_by_role("status").filter(has_text="Generated an image.")).to_be_visible()
    expect_loaded(page, image)
    assert page.locator(".result .meta-inline dd.mono").first.inner_text() == seed

    # The result's download is the original image file.
    with page.expect_download() as download:
        page.locator(".result").get_by_role("link", name="Download").click()
    assert re.fullmatch(r"[0-9A-Z]{26}\.(jpg|png)", download.value.suggested_filename)

    go(page, "Gallery")
    tiles = page.get_by_role("button", name=f"Open image: {prompt}")
    expect(tiles).to_have_count(2)
    expect_loaded(page, tiles.first.get_by_role("img"))
    shot(page, "gallery")
    page.get_by_role("button", name="List", exact=True).click()
    expect(page.locator(".image-grid.list-view")).to_be_visible()
    shot(page, "gallery-list")
    page.get_by_role("button", name="Grid", exact=True).click()

    # Keyboard: open the lightbox with Enter, close it with Escape.
    tiles.first.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Image details")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_text(prompt)).to_be_visible()
    expect(dialog.get_by_text(seed, exact=True)).to_be_visible()
    expect_loaded(page, dialog.get_by_role("img", name=prompt))
    shot(page, "lightbox")
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)

    # Delete one image from the lightbox.
    tiles.first.click()
    dialog.get_by_role("button", name="Delete").click()
    confirm = page.get_by_role("dialog", name="Delete image?")
    confirm.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status").filter(has_text="Image deleted.")).to_be_visible()
    expect(tiles).to_have_count(1)
    remaining = stack.api("GET", "/v1/images", "alice").json()["images"]
    assert [i["prompt"] for i in remaining].count(prompt) == 1
    page.watch.assert_clean()


def test_user_b_never_sees_user_a_images(open_page, stack):
    prompt_a = parti(skip=11)
    created = stack.api("POST", "/v1/images", "iso-user-a", json={"prompt": prompt_a})
    assert created.status_code == 201, created.text
    image_id = created.json()["images"][0]["id"]

    page = open_page(1280)
    sign_in(page, "iso-user-b")
    go(page, "Gallery")
    expect(page.get_by_role("heading", name="No images yet")).to_be_visible()
    expect(page.get_by_role("img", name=prompt_a)).to_have_count(0)
    assert image_id not in page.content()
    assert stack.api("GET", f"/v1/images/{image_id}", "iso-user-b").status_code == 404

    # The same browser, signed in as A, does show it: the empty gallery above was B's, not a broken one.
    sign_out(page)
    sign_in(page, "iso-user-a")
    go(page, "Gallery")
    expect_loaded(page, page.get_by_role("button", name=f"Open image: {prompt_a}").get_by_role("img"))
    page.watch.assert_clean()


def test_api_errors_are_shown_by_their_message(open_page, stack):
    page = open_page(1280)
    page.watch.allow(r"HTTP 422: POST .*/v1/images$")
    page.watch.allow(r"status of 422")
    sign_in(page, "carol")
    page.get_by_label("Prompt", exact=True).fill("a poster that says __REJECT__ in big letters")
    page.get_by_role("button", name="Generate", exact=True).click()
    alert = page.locator(".result-panel").get_by_role("alert")
    expect(alert).to_be_visible()
    message = alert.inner_text()
    assert message.strip() and "HTTP" not in message, message
    expect(page.get_by_role("button", name="Generate", exact=True)).to_be_enabled()
    page.watch.assert_clean()


def test_an_invalid_session_returns_to_sign_in(open_page, stack):
    page = open_page(1280)
    page.watch.allow(r"HTTP 401: GET .*/v1/")
    page.watch.allow(r"status of 401")
    # The identity provider hands out a token the API rejects (as an expired one would be).
    page.route(
        stack.info["auth"]["token_url"],
        lambda route: route.fulfill(
            status=200,
            content_type="application/json",
            headers={"Access-Control-Allow-Origin": "*"},
            json={"token": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "expires_at": int(time.time()) + 60},
        ),
    )
    sign_in(page, "dave")
    expect(page.get_by_role("heading", name="Sign in to PromptCanvas")).to_be_visible()
    expect(page.get_by_role("alert").filter(has_text="Your session has expired")).to_be_visible()
    page.unroute(stack.info["auth"]["token_url"])
    page.get_by_label("User id").fill("dave")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", name="Generate", level=1)).to_be_visible()
    page.watch.assert_clean()


def test_admin_sees_key_health(open_page, shot, stack):
    page = open_page(1280)
    sign_in(page, "root", admin=True)
    go(page, "Admin", "Admin: key health")
    rows = page.get_by_role("region", name="Keys").locator("table tbody tr")
    expect(rows).to_have_count(4)
    expect(rows.first.get_by_role("cell").first).to_be_visible()
    expect(page.get_by_text(re.compile(r"\d of 4 keys healthy"))).to_be_visible()

    # The model catalog against the upstream's own list, model by model.
    catalog = page.get_by_role("region", name="Model catalog vs upstream")
    admin_token = stack.token("root", org_id="org_dev", org_role="admin")
    status = requests.get(
        stack.api_url + "/v1/admin/models", headers={"Authorization": f"Bearer {admin_token}"}, timeout=30
    ).json()
    expect(catalog.locator("table tbody tr")).to_have_count(len(status["models"]) + len(status["upstream_only"]))
    free = catalog.get_by_role("row", name=re.compile("FLUX.1-schnell-Free"))
    expect(free.get_by_text("retired", exact=True)).to_be_visible()
    expect(free.get_by_text("black-forest-labs/FLUX.1-schnell", exact=True)).to_be_visible()
    expect(catalog.get_by_role("status")).to_contain_text(f"Catalog of {status['catalog_checked']}")
    shot(page, "admin")
    page.watch.assert_clean()


def test_the_form_shows_only_the_parameters_of_the_chosen_model(open_page, shot, stack):
    prompt = parti(skip=30)
    page = open_page(1280)
    sign_in(page, "form-user")
    catalog = {m["id"]: m for m in stack.api("GET", "/v1/models", "form-user").json()["models"]}
    model = page.get_by_label("Model", exact=True)
    labels = {
        "negative_prompt": "Negative prompt",
        "guidance": "Guidance",
        "prompt_upsampling": "Prompt upsampling",
        "output_format": "Output format",
        "aspect_ratio": "Aspect ratio",
        "steps": "Steps",
    }

    def shown_for(model_id: str) -> None:
        model.select_option(model_id)
        taken = catalog[model_id]["parameters"]
        for name, label in labels.items():
            control = page.get_by_label(label, exact=True)
            if name in taken:
                expect(control).to_be_visible()
            else:
                expect(control).to_be_hidden()

    expect(model).to_have_value("black-forest-labs/FLUX.1-schnell")  # the default
    expect(page.get_by_label("Steps", exact=True)).to_have_value("4")
    for model_id in catalog:
        shown_for(model_id)

    # FLUX.2 [dev]: guidance and PNG reach the stored image; nothing it does not take is sent.
    shown_for("black-forest-labs/FLUX.2-dev")
    page.get_by_label("Guidance", exact=True).fill("4.5")
    page.get_by_label("Output format", exact=True).select_option("png")
    page.get_by_label("Size", exact=True).select_option("832x1248")
    expect(page.locator(".model-price")).to_contain_text("per image")
    shot(page, "generate-flux2")
    generate(page, prompt)
    [image] = [i for i in stack.api("GET", "/v1/images", "form-user").json()["images"] if i["prompt"] == prompt]
    assert image["model"] == "black-forest-labs/FLUX.2-dev"
    assert (image["guidance"], image["content_type"], image["width"], image["height"]) == (4.5, "image/png", 832, 1248)
    assert image["cost_usd"] > 0

    # Kontext takes an aspect ratio instead of a size: the model picks the pixels.
    shown_for("black-forest-labs/FLUX.1-kontext-pro")
    page.get_by_label("Aspect ratio", exact=True).select_option("16:9")
    expect(page.get_by_label("Size", exact=True)).to_be_disabled()
    expect(page.get_by_label("Steps", exact=True)).to_have_value("28")
    page.watch.assert_clean()


def test_phone_width_390(open_page, shot, stack):
    prompt = parti(skip=20)
    page = open_page(390, 844)
    assert_accessible_basics(page)
    sign_in(page, "mobile-user")
    assert_fits_width(page)
    assert_accessible_basics(page)
    shot(page, "generate-empty")
    generate(page, prompt)
    assert_fits_width(page)
    assert_accessible_basics(page)
    shot(page, "generate")
    go(page, "Gallery")
    tile = page.get_by_role("button", name=f"Open image: {prompt}")
    expect_loaded(page, tile.get_by_role("img"))
    assert_fits_width(page)
    assert_accessible_basics(page)
    shot(page, "gallery")
    tile.click()
    expect(page.get_by_role("dialog", name="Image details")).to_be_visible()
    assert_accessible_basics(page)
    shot(page, "lightbox")
    page.keyboard.press("Escape")
    for link, heading in (("Batch", "Batch"), ("Jobs", "Jobs"), ("Account", "Account")):
        go(page, link, heading)
        page.wait_for_load_state("networkidle")
        assert_fits_width(page)
        assert_accessible_basics(page)
        shot(page, link.lower())
    expect(page.get_by_text("of 1000 images")).to_be_visible()
    expect(page.get_by_text("1 of 1000 images")).to_be_visible()
    page.get_by_role("button", name="Reveal").click()
    expect(page.get_by_label("Signing secret")).to_have_value(re.compile(r"^whsec_[A-Za-z0-9+/=]{20,}$"))
    expect(page.get_by_role("button", name="Copy")).to_be_enabled()

    # The narrowest supported width.
    page.set_viewport_size({"width": 360, "height": 740})
    for link, heading in (("Generate", "Generate"), ("Gallery", "Gallery"), ("Batch", "Batch"), ("Account", "Account")):
        go(page, link, heading)
        page.wait_for_load_state("networkidle")
        assert_fits_width(page)
    page.watch.assert_clean()


def test_batch_from_tsv_progress_gallery_and_zip(open_page, shot, stack, tmp_path):
    if not job_routes_exist(stack):
        pytest.skip("the batch job routes (POST/GET /v1/jobs ...) are not in app.py yet")
    tsv = tmp_path / "parti-10.tsv"
    prompts = write_parti_tsv(tsv, 10)
    collection = f"parti-{int(time.time())}"

    page = open_page(1280)
    sign_in(page, "batch-user")
    go(page, "Batch")
    page.locator("label", has_text="Upload file").click()
    page.get_by_label("Prompt file").set_input_files(str(tsv))
    summary = page.get_by_role("complementary", name="Batch summary")
    expect(summary.get_by_role("status")).to_have_text("10 prompts ready")
    expect(summary.get_by_role("alert")).to_be_hidden()
    page.get_by_label("Collection").fill(collection)
    page.get_by_label("Job name").fill("PartiPrompts × 10")
    shot(page, "batch")
    summary.get_by_role("button", name="Start batch · 10 images").click()

    # The job screen: live progress until 100 %, never going backwards.
    expect(page.get_by_role("heading", name="PartiPrompts × 10", level=1)).to_be_visible()
    screen = page.locator("section.screen-job")
    screen.evaluate(PROGRESS_RECORDER_JS)
    expect(screen).to_have_attribute("data-progress", "100", timeout=60_000)
    seen = [int(v) for v in screen.evaluate("el => el.progressSeen")]
    assert seen == sorted(seen) and seen[-1] == 100, seen
    assert_counters_add_up(stack, "batch-user", page.url.rsplit("/", 1)[-1])
    expect(screen).to_have_attribute("data-status", "completed")
    expect(page.locator(".progress-label .percent")).to_have_text("100%")
    expect(page.locator(".stat-ok dd")).to_have_text("10")
    images = page.get_by_role("list", name="Finished images").get_by_role("img")
    expect(images).to_have_count(10)
    for prompt in prompts[:3]:
        expect_loaded(page, page.get_by_role("list", name="Finished images").get_by_role("img", name=prompt))
    shot(page, "job")

    go(page, "Jobs")
    row = page.locator(".job-row").filter(has_text="PartiPrompts × 10")
    expect(row.get_by_text("10 / 10 finished")).to_be_visible()
    expect(row.get_by_text("completed", exact=True)).to_be_visible()
    expect(page.locator("section.screen-jobs")).to_have_attribute("data-autorefresh", "false")
    shot(page, "jobs")

    # The gallery, filtered by the batch's collection, holds the 10 images.
    go(page, "Gallery")
    page.get_by_label("Collection").select_option(collection)
    tiles = page.locator(".image-grid > li")
    expect(tiles).to_have_count(10)
    for prompt in prompts:
        expect(page.get_by_role("button", name=f"Open image: {prompt}")).to_have_count(1)

    # Loaded by cursor as you scroll (2 a page here, in a short window).
    page.set_viewport_size({"width": 1280, "height": 360})
    page.goto(f"{stack.web_url}/#/gallery?collection={collection}&limit=2")
    expect(page.get_by_role("button", name="Load more")).to_be_visible()
    first = tiles.count()
    assert 2 <= first < 10, first
    deadline = time.monotonic() + 20  # each page is one API call; under a loaded CI they queue
    while tiles.count() < 10 and time.monotonic() < deadline:
        page.mouse.wheel(0, 3000)
        page.wait_for_timeout(150)
    expect(tiles).to_have_count(10)
    expect(page.get_by_text("That's all: 10 images.")).to_be_visible()
    page.set_viewport_size({"width": 1280, "height": 900})

    # Multi-select all and download them as a ZIP of 10 images.
    page.get_by_role("checkbox", name=f"Select image: {prompts[0]}").check()
    bar = page.get_by_role("region", name="Selection")
    expect(bar).to_contain_text("1 image selected")
    bar.get_by_role("button", name="Select all loaded").click()
    expect(bar).to_contain_text("10 images selected")
    shot(page, "gallery-selected")
    with page.expect_download(timeout=60_000) as download:
        bar.get_by_role("button", name="Download", exact=True).click()
    path = download.value.path()
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        image_names = [n for n in names if re.search(r"\.(jpe?g|png|webp)$", n, re.I)]
        assert len(image_names) == 10, names
        for name in image_names:
            assert archive.read(name)[:3] in (b"\xff\xd8\xff", b"\x89PN"), name
    page.watch.assert_clean()


def test_failed_prompts_show_their_error_and_retry(open_page, shot, stack):
    if not job_routes_exist(stack):
        pytest.skip("the batch job routes are not in app.py yet")
    good = parti(skip=30)
    page = open_page(1280)
    sign_in(page, "retry-user")
    go(page, "Batch")
    page.get_by_label("Prompts", exact=True).fill(f"{good}\n\n  a protest banner reading __REJECT__  \n")
    summary = page.get_by_role("complementary", name="Batch summary")
    expect(summary.get_by_role("status")).to_have_text("2 prompts ready")
    summary.get_by_role("button", name="Start batch · 2 images").click()
    screen = page.locator("section.screen-job")
    expect(screen).to_have_attribute("data-status", "completed_with_errors", timeout=60_000)
    expect(page.locator(".stat-ok dd")).to_have_text("1")
    expect(page.locator(".stat-bad dd")).to_have_text("1")
    failed = page.get_by_role("region", name="Failed prompts")
    expect(failed).to_contain_text("__REJECT__")
    expect(page.get_by_text(re.compile(r"upstream rejected: 1"))).to_be_visible()
    expect_loaded(page, page.get_by_role("list", name="Finished images").get_by_role("img", name=good))
    shot(page, "job-with-errors")

    # Retry runs the failed prompt again (the emulator refuses it again).
    screen.evaluate(STATUS_RECORDER_JS)
    page.get_by_role("button", name="Retry failed").click()
    expect(page.get_by_role("status").filter(has_text="Retrying 1 failed prompt")).to_be_visible()
    page.wait_for_function("el => el.statusSeen.length > 1", arg=screen.element_handle())
    expect(screen).to_have_attribute("data-status", "completed_with_errors", timeout=60_000)
    seen = screen.evaluate("el => el.statusSeen")
    assert {"queued", "running"} & set(seen), seen
    expect(page.get_by_role("button", name="Retry failed")).to_be_visible()
    expect(failed).to_contain_text("content safety filter")
    expect(page.locator(".stat-ok dd")).to_have_text("1")
    page.watch.assert_clean()


def test_jobs_list_refreshes_while_active_and_cancel(open_page, stack):
    if not job_routes_exist(stack):
        pytest.skip("the batch job routes are not in app.py yet")
    page = open_page(1280)
    sign_in(page, "cancel-user")
    go(page, "Batch")
    page.locator("label", has_text="One prompt × count").click()
    page.get_by_label("Prompt", exact=True).fill(parti(skip=40))
    page.get_by_label("Count", exact=True).fill("100")
    page.get_by_label("Job name").fill("slow job")
    emulator(stack, latency_ms=2000)
    try:
        page.get_by_role("button", name="Start batch · 100 images").click()
        screen = page.locator("section.screen-job")
        expect(screen).to_have_attribute("data-status", re.compile("^(queued|running)$"))

        # The list refreshes every 5 s while a job is active.
        go(page, "Jobs")
        jobs = page.locator("section.screen-jobs")
        expect(jobs).to_have_attribute("data-autorefresh", "true")
        expect(page.get_by_text("Refreshing every 5 s while jobs run")).to_be_visible()

        page.get_by_role("link", name="slow job").click()
        page.get_by_role("button", name="Cancel job").click()
        page.get_by_role("dialog", name="Cancel this job?").get_by_role("button", name="Cancel job").click()
        expect(screen).to_have_attribute("data-status", "cancelled", timeout=30_000)
        expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()
        expect(page.locator(".stat-bad dd")).not_to_have_text("0", timeout=30_000)  # queued prompts were cancelled
        expect(page.get_by_text(re.compile(r"^cancelled: \d+$"))).to_be_visible()  # errors by reason
    finally:
        emulator(stack, latency_ms=0)

    # ...and stops when no job is.
    go(page, "Jobs")
    expect(jobs).to_have_attribute("data-autorefresh", "false")
    expect(page.get_by_text("Refreshing every 5 s while jobs run")).to_have_count(0)
    page.get_by_label("Status").select_option("cancelled")
    expect(page.locator(".job-row")).to_have_count(1)
    page.get_by_label("Status").select_option("completed")
    expect(page.get_by_role("heading", name="No completed jobs")).to_be_visible()

    # Pagination (1 job a page here): a second, quick job makes two pages.
    quick = stack.api("POST", "/v1/jobs", "cancel-user", json={"prompts": [parti(skip=41)], "name": "quick job"})
    assert quick.status_code == 202, quick.text
    page.goto(f"{stack.web_url}/#/jobs?limit=1")
    pager = page.get_by_role("navigation", name="Jobs pages")
    expect(page.locator(".job-row")).to_have_count(1)
    expect(page.locator(".job-row")).to_contain_text("quick job")
    expect(pager.get_by_role("button", name="← Newer")).to_be_disabled()
    pager.get_by_role("button", name="Older →").click()
    expect(page.locator(".job-row")).to_contain_text("slow job")
    expect(pager).to_contain_text("Page 2")
    pager.get_by_role("button", name="← Newer").click()
    expect(page.locator(".job-row")).to_contain_text("quick job")
    page.watch.assert_clean()
