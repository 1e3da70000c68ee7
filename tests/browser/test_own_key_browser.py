"""Browser tests for bringing your own Together key and seeing costs first: save a key on the
Account screen (checked against the Flux emulator), see it used by the next image (the emulator's
per-key stats and the image's key source), remove it; and the estimate shown on Batch before a job
is started."""

from __future__ import annotations

import time

import requests
from playwright.sync_api import expect

from devstack.flux_emulator import key_id
from tests.browser.test_web_client import generate, go, parti, sign_in


def emulator_stats(stack) -> dict:
    base = stack.info["flux_base_url"].removesuffix("/v1")
    return requests.get(base + "/admin/stats", timeout=10).json()


def test_save_an_own_key_see_it_used_then_remove_it(open_page, shot, stack):
    key = f"byok-browser-{int(time.time())}-4f9c"  # the emulator accepts "byok-" keys as users' own accounts
    user = "byok-user"
    page = open_page(1280)
    page.watch.allow(r"HTTP 404: GET .*/v1/me/together-key$")  # no key saved yet: the API's 404
    page.watch.allow(r"status of 404.*/v1/me/together-key")  # the console's line for that same 404
    sign_in(page, user)
    go(page, "Account")
    status = page.locator("#account-key-status")
    expect(status).to_have_attribute("data-status", "none")
    page.get_by_label("Together API key").fill(key)
    page.get_by_role("button", name="Save key").click()
    expect(status).to_have_attribute("data-status", "active")
    expect(page.locator("#account-key-last4")).to_have_text(key[-4:])
    expect(page.get_by_label("Together API key")).to_have_value("")
    assert key not in page.content()  # never shown back
    shot(page, "account-own-key")

    prompt = parti(skip=21)
    go(page, "Generate")
    generate(page, prompt)
    assert emulator_stats(stack)["by_key"][key_id(key)]["images"] == 1
    images = stack.api("GET", "/v1/images", user).json()["images"]
    assert [img["key_source"] for img in images if img["prompt"] == prompt] == ["own"]

    go(page, "Account")
    expect(page.locator("#account-spend tr[data-source='own']")).to_have_count(1)
    page.get_by_role("button", name="Remove key").click()
    expect(status).to_have_attribute("data-status", "none")
    assert stack.api("GET", "/v1/me/together-key", user).status_code == 404
    page.watch.assert_clean()


def test_batch_shows_the_estimate_before_starting(open_page, shot, stack):
    prompts = [parti(skip=30 + i) for i in range(3)]
    page = open_page(1280)
    sign_in(page, "estimate-user")
    go(page, "Batch")
    page.get_by_label("Prompts", exact=True).fill("\n".join(prompts))
    summary = page.get_by_role("complementary", name="Batch summary")
    estimate = summary.locator("#batch-estimate")
    expect(estimate).to_contain_text("Estimated cost: $")
    expect(estimate).to_contain_text("3 images")
    body = {"prompts": prompts}  # the form sends the API's defaults
    expected = stack.api("POST", "/v1/estimates", "estimate-user", json=body).json()
    expect(estimate).to_have_attribute("data-usd", str(expected["usd"]))
    shot(page, "batch-estimate")
    page.watch.assert_clean()
