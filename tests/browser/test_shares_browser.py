"""Browser tests for share links: share an image from the gallery, open the link in a fresh browser
context with no sign-in, manage links on the Shares screen (copy, view counts), revoke, and see 404."""

from __future__ import annotations

import html

import requests
from playwright.sync_api import expect

from tests.browser.test_web_client import expect_loaded, generate, go, parti, sign_in


def test_share_an_image_open_it_signed_out_then_revoke(open_page, shot, stack):
    prompt = parti(skip=11)
    page = open_page(1280)
    sign_in(page, "sharer")
    generate(page, prompt)

    # Share from the gallery's lightbox: the link is shown and can be copied.
    go(page, "Gallery")
    page.get_by_role("button", name=f"Open image: {prompt}").first.click()
    dialog = page.get_by_role("dialog", name="Image details")
    dialog.get_by_role("button", name="Share", exact=True).click()
    link_field = dialog.get_by_role("textbox", name="Share link")
    expect(link_field).to_be_visible()
    url = link_field.input_value()
    assert "/s/" in url
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.web_url)
    dialog.get_by_role("button", name="Copy Share link").click()
    expect(page.get_by_role("status").filter(has_text="Link copied.")).to_have_count(1)
    assert page.evaluate("navigator.clipboard.readText()") == url
    shot(page, "share-lightbox")
    page.keyboard.press("Escape")

    # A fresh browser context, never signed in, opens the link: the image and its prompt.
    visitor = open_page(1280)
    visitor.goto(url)
    expect(visitor.get_by_text(prompt, exact=True)).to_be_visible()
    expect_loaded(visitor, visitor.get_by_role("img", name=prompt))
    og = visitor.locator('meta[property="og:title"]').get_attribute("content")
    assert og and html.unescape(og).startswith(prompt[:40])
    shot(visitor, "share-page")
    visitor.watch.assert_clean()

    # The Shares screen lists it with its view count; revoke it there.
    go(page, "Shares")
    item = page.locator(".share-item")
    expect(item).to_have_count(1)
    expect(item.get_by_role("textbox")).to_have_value(url)
    expect(item.locator(".share-views")).to_have_text("1 view")
    shot(page, "shares")
    item.get_by_role("button", name="Revoke", exact=False).click()
    page.get_by_role("dialog", name="Revoke link?").get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("status").filter(has_text="Link revoked.")).to_have_count(1)
    expect(page.get_by_text("No share links")).to_be_visible()
    page.watch.assert_clean()

    # The link now answers 404, in the browser too.
    assert requests.get(url, timeout=10).status_code == 404
    visitor.watch.allow(r"(HTTP 404: GET|status of 404).*/s/[0-9A-Za-z]{16}")  # the expected 404 page
    response = visitor.goto(url)
    assert response is not None and response.status == 404
    expect(visitor.get_by_role("heading", name="Link not found")).to_be_visible()
