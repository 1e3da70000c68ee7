"""The webhook request line is ASCII: a URL stored before webhook URLs were checked ASCII at
submit fails its delivery as ``bad-request`` (a recorded attempt), never with an exception
that would leave the claimed attempt unrecorded."""

from __future__ import annotations

import pytest

from chalicelib.services import webhook_http


@pytest.mark.parametrize("url", ["https://example.com/hook/€", "https://example.com/?q=日本"])
def test_a_non_ascii_url_is_a_bad_request(url: str) -> None:
    with pytest.raises(webhook_http.DeliveryError) as caught:
        webhook_http._request_bytes(url, "example.com", 443, "https", b"{}", {"content-type": "application/json"})
    assert caught.value.reason == "bad-request"


def test_an_ascii_url_makes_the_request_line_and_headers() -> None:
    data = webhook_http._request_bytes("https://example.com/a%20b?x=1", "example.com", 443, "https", b"{}", {})
    assert data.startswith(b"POST /a%20b?x=1 HTTP/1.1\r\nHost: example.com\r\n") and data.endswith(b"\r\n\r\n{}")
