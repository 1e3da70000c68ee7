"""The Videos tab in Debian's Chromium against the local stack: a video from text and another from
one of the user's images, a status while they render, and a <video> player whose playback advances.

Fails on any console error, page error, failed request or HTTP error response (``conftest.watch_page``),
so a CSP that blocks the presigned video URL, or a clip Chromium cannot decode, fails it.
"""

from __future__ import annotations

from typing import Any

import requests
from playwright.sync_api import expect

from tests.browser.test_web_client import go, sign_in

PROMPT = "A tiny wooden boat drifting across a calm lake at sunrise"  # PartiPrompts-style scene


def fast_renders(stack: Any) -> None:
    """Video jobs on the stack's emulator take 3 s."""
    root = stack.info["flux_base_url"].removesuffix("/v1")
    requests.post(root + "/admin/config", json={"video_render_seconds": 3.0}, timeout=10).raise_for_status()


def expect_plays(page: Any, card: Any) -> None:
    """The card's <video> loads, plays, and its currentTime moves forward."""
    video = card.locator("video")
    expect(video).to_be_visible()
    handle = video.element_handle()
    page.wait_for_function("v => v.readyState >= 2 && v.videoWidth > 0", arg=handle, timeout=20_000)
    page.evaluate("v => v.play()", handle)
    page.wait_for_function("v => v.currentTime > 0.3 && !v.error", arg=handle, timeout=20_000)


def test_text_and_image_to_video_play_in_chromium(open_page, shot, stack):
    fast_renders(stack)
    page = open_page(1280)
    sign_in(page, "video-maker")
    go(page, "Videos")
    expect(page.locator("#video-model")).to_have_value("pixverse/pixverse-v5")
    page.get_by_label("Prompt", exact=True).fill(PROMPT)
    page.locator("#video-submit").click()
    expect(page.locator("#video-status")).to_contain_text("Rendering", timeout=15_000)
    expect(page.locator("#video-status")).to_contain_text("ready", timeout=60_000)
    first = page.locator('.video-card[data-status="completed"]').first
    expect(first.locator(".video-cost")).to_contain_text("cost $")
    expect_plays(page, first)
    shot(page, "videos-text")

    # "Animate this image": one of the user's generated images is the first frame and the poster.
    image = stack.api(
        "POST", "/v1/images", "video-maker", json={"prompt": "a red lighthouse on a cliff", "width": 256, "height": 256}
    ).json()["images"][0]
    page.goto(f"{stack.web_url}/#/videos?image={image['id']}")
    expect(page.locator("#video-image")).to_have_value(image["id"])
    page.get_by_label("Prompt", exact=True).fill("The lighthouse beam sweeps through the night fog")
    page.locator("#video-submit").click()
    expect(page.locator("#video-status")).to_contain_text("ready", timeout=60_000)
    cards = page.locator('.video-card[data-status="completed"]')
    expect(cards).to_have_count(2)
    animated = cards.first
    assert animated.locator("video").get_attribute("poster")
    expect_plays(page, animated)
    shot(page, "videos-image")
    listed = stack.api("GET", "/v1/videos", "video-maker").json()["videos"]
    assert [v["image_id"] for v in listed] == [image["id"], None]
    assert all(v["cost_usd"] > 0 for v in listed)
    assert stack.api("GET", "/v1/videos", "someone-else").json()["videos"] == []
    # The share page of the animated video plays it too (its own CSP must allow the presigned MP4).
    link = stack.api("POST", f"/v1/videos/{listed[0]['video_id']}/shares", "video-maker", json={}).json()
    page.goto(link["url"])
    expect_plays(page, page.locator("main"))
    shot(page, "videos-share")


def test_a_video_jobs_page_plays_its_videos(open_page, shot, stack):
    """A batch of videos (``POST /v1/jobs`` with ``kind: "video"``): the job page shows a player
    per finished item, with its cost, and offers the ZIP but not the image dataset."""
    fast_renders(stack)
    body = {
        "kind": "video",
        "model": "pixverse/pixverse-v5",
        "prompts": [PROMPT, "A paper kite rising over a windy beach"],
        "name": "two clips",
    }
    job = stack.api("POST", "/v1/jobs", "video-batcher", json=body).json()
    page = open_page(1280)
    sign_in(page, "video-batcher")
    page.goto(f"{stack.web_url}/#/jobs/{job['job_id']}")
    expect(page.locator("#job-images-title")).to_have_text("Videos")
    tiles = page.locator(".video-tile")
    expect(tiles).to_have_count(2, timeout=60_000)
    expect(tiles.first.locator(".tile-caption")).to_contain_text("cost $")
    expect_plays(page, tiles.first)
    expect(page.locator('select[name="archive_format"] option[value="imagefolder"]')).to_have_count(0)
    shot(page, "video-job")
