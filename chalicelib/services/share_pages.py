"""The public share pages (``GET /s/{code}``): small HTML documents and their headers.

Everything user-controlled (prompts, collection names, URLs) is HTML-escaped with
``html.escape(quote=True)``, in text and in attribute values alike. The page carries no
script; its one inline style is allowed by hash. Headers on every answer (200, 404, 429):

- ``Content-Security-Policy``: ``default-src 'none'``; images only from the presigned URLs'
  origin; the inline style by its sha256; no base, forms or framing;
- ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` (the page URL is the
  secret; presigned image URLs must not leak it), ``X-Frame-Options: DENY``;
- ``Cache-Control: private, max-age=0, must-revalidate`` for a page: no shared cache (CloudFront)
  keeps it, and a browser asks again on every open, so each view is counted, gets fresh
  presigned URLs, and a revoked link stops showing at once (the page carries no validator, so
  the revalidation is a full fetch); ``no-store`` for 404 and 429.

Errors are small HTML pages too (a browser user opens these links), with ``Retry-After`` on 429.
Sources: OWASP XSS Prevention Cheat Sheet (output encoding), MDN "Content-Security-Policy",
The Open Graph protocol (og:title, og:type, og:image).
"""

from __future__ import annotations

import base64
import hashlib
from html import escape
from typing import Any
from urllib.parse import urlsplit

from chalicelib.services.shares import SharedView
from chalicelib.settings import get_settings
from chalicelib.storage import objects

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:0;background:#111;color:#eee}"
    "main{max-width:960px;margin:0 auto;padding:1.5rem}"
    "img,video{max-width:100%;height:auto;display:block;border-radius:6px}"
    ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:.75rem;"
    "list-style:none;padding:0}"
    "figcaption,p{color:#bbb}footer{margin-top:2rem;font-size:.85rem;color:#888}"
)
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
SITE = "PromptCanvas"
MAX_TITLE_CHARS = 120
PAGE_CACHE_CONTROL = "private, max-age=0, must-revalidate"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def security_headers(img_origin: str | None = None, *, media: bool = False) -> dict[str, str]:
    """The headers every share answer carries (see the module doc); ``media``: the page plays
    a video from ``img_origin`` too (``media-src``)."""
    img_src = f"img-src {img_origin}" if img_origin else "img-src 'none'"
    if media and img_origin:
        img_src += f"; media-src {img_origin}"
    csp = (
        f"default-src 'none'; {img_src}; style-src 'sha256-{STYLE_HASH}'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )
    return {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


def _document(title: str, body: str, head_extra: str = "") -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{escape(title)}</title>{head_extra}<style>{STYLE}</style></head>"
        f"<body><main>{body}<footer>Shared with {SITE}</footer></main></body></html>"
    )


def _short(text: str) -> str:
    return text if len(text) <= MAX_TITLE_CHARS else text[: MAX_TITLE_CHARS - 1] + "…"


def render(view: SharedView) -> tuple[int, str, dict[str, str]]:
    """A 200 page for ``view``: ``(status, html, headers)``. Presigned URLs are minted
    here, per view, valid ``SHARE_PRESIGN_EXPIRES_SECONDS``."""
    ttl = get_settings().share_presign_expires_seconds
    if view.video is not None:
        return _render_video(view.video, ttl)
    urls = [objects.presign_get(img.s3_key, expires_s=ttl) for img in view.images]
    thumbs = [objects.presign_get(img.thumb_key, expires_s=ttl) for img in view.images]
    e = escape
    if view.kind == "image":
        image = view.images[0]
        title = _short(image.prompt)
        og = (
            f'<meta property="og:type" content="website"><meta property="og:site_name" content="{SITE}">'
            f'<meta property="og:title" content="{e(title)}"><meta property="og:image" content="{e(urls[0])}">'
            f'<meta property="og:image:width" content="{int(image.width)}">'
            f'<meta property="og:image:height" content="{int(image.height)}">'
            f'<meta property="og:image:alt" content="{e(title)}">'
        )
        body = (
            f'<figure><img src="{e(urls[0])}" alt="{e(image.prompt)}" width="{int(image.width)}" '
            f'height="{int(image.height)}"><figcaption class="prompt">{e(image.prompt)}</figcaption></figure>'
            f"<p>{e(image.model)} · {int(image.width)}×{int(image.height)}</p>"
        )
    else:
        title = _short(view.title)
        og = (
            f'<meta property="og:type" content="website"><meta property="og:site_name" content="{SITE}">'
            f'<meta property="og:title" content="{e(title)}"><meta property="og:image" content="{e(thumbs[0])}">'
        )
        cells = "".join(
            f'<li><a href="{e(url)}"><img src="{e(thumb)}" alt="{e(img.prompt)}" loading="lazy"></a>'
            f'<p class="prompt">{e(img.prompt)}</p></li>'
            for img, url, thumb in zip(view.images, urls, thumbs, strict=True)
        )
        body = f'<h1>{e(view.title)}</h1><ul class="grid">{cells}</ul>'
    headers = {**security_headers(_origin(urls[0])), "Cache-Control": PAGE_CACHE_CONTROL}
    return 200, _document(f"{title} · {SITE}", body, og), headers


def _render_video(video: Any, ttl: int) -> tuple[int, str, dict[str, str]]:
    """The page of a shared video: a ``<video>`` player (the poster when there is one, else the
    browser's first frame) with the prompt; the file and poster are presigned per view."""
    e = escape
    url = objects.presign_get(video.s3_key, expires_s=ttl)
    poster = objects.presign_get(video.poster_key, expires_s=ttl) if video.poster_key else None
    title = _short(video.prompt or video.model)
    og = (
        f'<meta property="og:type" content="video.other"><meta property="og:site_name" content="{SITE}">'
        f'<meta property="og:title" content="{e(title)}"><meta property="og:video" content="{e(url)}">'
        f'<meta property="og:video:type" content="video/mp4">'
    )
    poster_attr = f' poster="{e(poster)}"' if poster else ""
    body = (
        f'<figure><video src="{e(url)}"{poster_attr} controls muted playsinline preload="metadata" '
        f'aria-label="{e(title)}"></video><figcaption class="prompt">{e(video.prompt or "")}</figcaption></figure>'
        f"<p>{e(video.model)}</p>"
    )
    headers = {**security_headers(_origin(url), media=True), "Cache-Control": PAGE_CACHE_CONTROL}
    return 200, _document(f"{title} · {SITE}", body, og), headers


def not_found() -> tuple[int, str, dict[str, str]]:
    """The 404 page: unknown, expired and revoked links look the same."""
    body = "<h1>Link not found</h1><p>This share link does not exist, has expired or was revoked.</p>"
    return 404, _document(f"Not found · {SITE}", body), {**security_headers(), "Cache-Control": "no-store"}


def rate_limited(retry_after: int) -> tuple[int, str, dict[str, str]]:
    """The 429 page with ``Retry-After`` (seconds)."""
    body = f"<h1>Too many requests</h1><p>Please try again in {int(retry_after)} seconds.</p>"
    headers = {**security_headers(), "Cache-Control": "no-store", "Retry-After": str(int(retry_after))}
    return 429, _document(f"Too many requests · {SITE}", body), headers


def page(code: str, source_ip: str) -> tuple[int, str, dict[str, str]]:
    """``GET /s/{code}``: ``(status, html, headers)``; 200, 404 or 429 (see :func:`shares.view`)."""
    from chalicelib.services import shares

    try:
        return render(shares.view(code, source_ip))
    except shares.ShareRateLimited as exc:
        return rate_limited(exc.retry_after)
    except shares.ShareNotFound:
        return not_found()
