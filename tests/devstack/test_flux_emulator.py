"""The Flux emulator speaks Together AI's image API: images, errors, limits, faults, admin."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image, ImageChops, ImageStat, UnidentifiedImageError

from chalicelib.flux.catalog import catalog
from devstack.flux_emulator import API_PATH, MODELS_PATH, EmulatorConfig, FluxEmulator, key_id, render_image
from devstack.prompts import PARTI_PROMPTS as PROMPTS_TSV
from tests.photos import small_photo

MODEL = "black-forest-labs/FLUX.1-schnell"
FLUX2_DEV = "black-forest-labs/FLUX.2-dev"  # takes steps, guidance, prompt_upsampling, output_format
KEY = "test-key-1"
REPO_ROOT = Path(__file__).resolve().parents[2]
KONTEXT = "black-forest-labs/FLUX.1-kontext-pro"


def _load_prompts() -> list[str]:
    with PROMPTS_TSV.open(encoding="utf-8", newline="") as fh:
        return [row["Prompt"] for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]


PROMPTS = _load_prompts()
DALI = next(p for p in PROMPTS if "Dalí" in p)
CORGI = next(p for p in PROMPTS if "corgi’s head" in p)
PROMPT_A = next(p for p in PROMPTS if p.isascii() and len(p) > 40)
PROMPT_B = next(p for p in PROMPTS if p.isascii() and len(p) > 40 and p != PROMPT_A)


def post(flux: FluxEmulator, body: Any = None, *, key: str | None = KEY, raw: bytes | None = None) -> requests.Response:
    """POST to the generation endpoint; ``key=None`` sends no Authorization header."""
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    if raw is not None:
        headers["Content-Type"] = "application/json"
        return requests.post(flux.url + API_PATH, data=raw, headers=headers, timeout=10)
    return requests.post(flux.url + API_PATH, json=body, headers=headers, timeout=10)


def gen(prompt: str = PROMPT_A, **fields: Any) -> dict[str, Any]:
    """A small, fast request body."""
    return {"model": MODEL, "prompt": prompt, "width": 128, "height": 128, "steps": 4, **fields}


def decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def error_of(response: requests.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(interval)


class ImageHost:
    """A loopback HTTP server for input images: ``add(path, body, content_type)``, ``url(path)``;
    ``/slow`` drips a byte every 0.2 s (a fetch that outlives its deadline)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path == "/slow":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.end_headers()
                    try:
                        for _ in range(100):
                            self.wfile.write(b"x")
                            self.wfile.flush()
                            time.sleep(0.2)  # the server side of a slow upstream, not a test wait
                    except OSError:
                        pass
                    return
                entry = host.files.get(self.path)
                if entry is None:
                    self.send_error(404)
                    return
                body, ctype = entry
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, path: str, body: bytes, content_type: str = "image/png") -> str:
        self.files[path] = (body, content_type)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"


@pytest.fixture(scope="module")
def images() -> Iterator[ImageHost]:
    host = ImageHost()
    host.add("/chelsea.png", small_photo("chelsea.png"))
    host.add("/coffee.jpg", small_photo("coffee.png", fmt="JPEG"), "image/jpeg")
    host.add("/astronaut.png", small_photo("astronaut.png"))
    host.add("/not-an-image.png", b"<html>this is not an image</html>", "image/png")
    try:
        yield host
    finally:
        host.server.shutdown()
        host.server.server_close()


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize(
    ("prompt", "width", "height", "fmt", "pil_format"),
    [
        (PROMPT_A, 512, 768, None, "JPEG"),
        (DALI, 768, 512, "png", "PNG"),
        (CORGI, 64, 2048, "jpeg", "JPEG"),
    ],
)
def test_base64_image_decodes_at_requested_size(flux, prompt, width, height, fmt, pil_format):
    body = gen(prompt, width=width, height=height, seed=42)
    if fmt:
        body.update(model=FLUX2_DEV, output_format=fmt)
    r = post(flux, body)
    assert r.status_code == 200, r.text
    payload = r.json()
    assert payload["object"] == "list"
    assert payload["model"] == body["model"]
    assert payload["id"]
    [item] = payload["data"]
    assert item["index"] == 0
    assert item["type"] == "b64_json"
    image = decode(item["b64_json"])
    assert image.format == pil_format
    assert image.size == (width, height)


def test_defaults_are_1024_square_jpeg(flux):
    r = post(flux, {"model": MODEL, "prompt": PROMPT_A})
    assert r.status_code == 200, r.text
    image = decode(r.json()["data"][0]["b64_json"])
    assert (image.format, image.size) == ("JPEG", (1024, 1024))


def test_url_response_serves_the_files(flux):
    r = post(flux, gen(DALI, model=FLUX2_DEV, n=2, width=256, height=192, output_format="png", response_format="url"))
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["index"] for d in data] == [0, 1]
    images = []
    for item in data:
        assert item["type"] == "url"
        assert item["url"].startswith(flux.url + "/files/")
        assert item["url"].endswith(".png")
        got = requests.get(item["url"], timeout=10)
        assert got.status_code == 200
        assert got.headers["Content-Type"] == "image/png"
        image = Image.open(io.BytesIO(got.content))
        assert (image.format, image.size) == ("PNG", (256, 192))
        images.append(got.content)
    assert images[0] != images[1]  # the index changes the picture
    assert requests.get(flux.url + "/files/nope.png", timeout=10).status_code == 404


def test_same_input_same_bytes_different_prompt_different_picture(flux):
    body = gen(DALI, width=256, height=256, seed=7, negative_prompt="blurry")
    first = post(flux, body).json()["data"][0]["b64_json"]
    again = post(flux, body).json()["data"][0]["b64_json"]
    assert first == again

    other_prompt = post(flux, {**body, "prompt": CORGI}).json()["data"][0]["b64_json"]
    other_seed = post(flux, {**body, "seed": 8}).json()["data"][0]["b64_json"]
    assert len({first, other_prompt, other_seed}) == 3

    # "Visibly" different: a large mean per-pixel difference, not just encoder noise.
    diff = ImageChops.difference(decode(first).convert("RGB"), decode(other_prompt).convert("RGB"))
    assert sum(ImageStat.Stat(diff).mean) / 3 > 10


def test_missing_seed_picks_a_random_one(flux):
    results = {post(flux, gen(PROMPT_A)).json()["data"][0]["b64_json"] for _ in range(3)}
    assert len(results) > 1


def test_render_image_is_deterministic_and_fast():
    args = {"width": 768, "height": 768, "seed": 1, "model": MODEL}
    render_image(DALI, **args)  # warm the font cache
    start = time.perf_counter()
    one = render_image(DALI, **args)
    elapsed = time.perf_counter() - start
    assert one == render_image(DALI, **args)
    assert one != render_image(DALI, index=1, **args)
    assert elapsed < 0.2  # typically ~10 ms; generous for loaded CI machines


def test_unknown_fields_are_ignored(flux):
    body = gen(PROMPT_B, disable_safety_checker=True, something_new={"x": 1})
    r = post(flux, body)
    assert r.status_code == 200, r.text


def test_each_model_takes_its_own_parameters(flux, images):
    ref = images.url("/chelsea.png")
    bodies = [
        gen(PROMPT_B, negative_prompt="blurry"),
        gen(PROMPT_B, aspect_ratio="16:9", width=None, height=None),
        gen(
            PROMPT_B,
            model=FLUX2_DEV,
            guidance=4.5,
            prompt_upsampling=False,
            output_format="png",
            reference_images=[ref],
            image_loras=[{"path": "https://example.invalid/lora", "scale": 0.8}],
        ),
        gen(
            PROMPT_B,
            model="black-forest-labs/FLUX.1-kontext-pro",
            aspect_ratio="1:1",
            width=None,
            height=None,
            image_url=ref,
        ),
        {
            "model": "google/flash-image-2.5",
            "prompt": PROMPT_B,
            "width": 256,
            "height": 256,
            "reference_images": [ref],
        },
    ]
    for body in bodies:
        r = post(flux, {k: v for k, v in body.items() if v is not None})
        assert r.status_code == 200, r.text
    wide = post(flux, {k: v for k, v in bodies[1].items() if v is not None}).json()["data"][0]["b64_json"]
    assert decode(wide).size == (1344, 768)  # the ratio's standard size


# --------------------------------------------------------------------------- image inputs


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute per-channel difference (0..255) of two images at ``a``'s size."""
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB").resize(a.size))
    return sum(ImageStat.Stat(diff).mean) / 3


def fetched(host: ImageHost, path: str) -> Image.Image:
    return Image.open(io.BytesIO(host.files[path][0])).convert("RGB")


def test_an_edit_is_drawn_from_the_fetched_image_url(flux, images):
    outputs = {}
    for path in ("/chelsea.png", "/coffee.jpg"):
        body = gen(PROMPT_A, model=KONTEXT, width=256, height=256, steps=28, seed=5, image_url=images.url(path))
        r = post(flux, body)
        assert r.status_code == 200, r.text
        outputs[path] = decode(r.json()["data"][0]["b64_json"])
        assert outputs[path].size == (256, 256)  # the requested size, not the input's
    chelsea, coffee = fetched(images, "/chelsea.png"), fetched(images, "/coffee.jpg")
    # Each result is its own input tinted: far closer to it than to the other input.
    assert mean_diff(outputs["/chelsea.png"], chelsea) < mean_diff(outputs["/chelsea.png"], coffee) / 2
    assert mean_diff(outputs["/coffee.jpg"], coffee) < mean_diff(outputs["/coffee.jpg"], chelsea) / 2
    # Deterministic: the same request gives the same bytes.
    again = post(
        flux,
        gen(PROMPT_A, model=KONTEXT, width=256, height=256, steps=28, seed=5, image_url=images.url("/chelsea.png")),
    )
    assert (
        again.json()["data"][0]["b64_json"]
        == post(
            flux,
            gen(PROMPT_A, model=KONTEXT, width=256, height=256, steps=28, seed=5, image_url=images.url("/chelsea.png")),
        ).json()["data"][0]["b64_json"]
    )


def test_references_are_inset_in_order(flux, images):
    body = {
        "model": "black-forest-labs/FLUX.2-flex",
        "prompt": PROMPT_B,
        "width": 256,
        "height": 256,
        "steps": 8,
        "image_url": images.url("/chelsea.png"),
        "reference_images": [images.url("/coffee.jpg"), images.url("/astronaut.png")],
    }
    r = post(flux, body)
    assert r.status_code == 200, r.text
    out = decode(r.json()["data"][0]["b64_json"]).convert("RGB")
    first, second = out.crop((0, 0, 64, 64)), out.crop((64, 0, 128, 64))
    coffee, astronaut = fetched(images, "/coffee.jpg"), fetched(images, "/astronaut.png")
    assert mean_diff(first, coffee) < mean_diff(first, astronaut)
    assert mean_diff(second, astronaut) < mean_diff(second, coffee)
    assert flux.stats()["by_status"] == {"200": 1}


@pytest.mark.parametrize(
    ("field", "path", "config"),
    [
        ("image_url", "/not-an-image.png", {}),
        ("image_url", "/missing.png", {}),
        ("reference_images", "/not-an-image.png", {}),
        ("image_url", "/chelsea.png", {"image_fetch_max_bytes": 1000}),
        ("image_url", "/slow", {"image_fetch_seconds": 0.5}),
        ("image_url", "closed-port", {}),
        ("image_url", "file:///etc/passwd", {}),
    ],
)
def test_an_input_that_cannot_be_fetched_or_is_no_image_is_a_400(flux, images, field, path, config):
    if config:
        flux.configure(**config)
    if path == "closed-port":
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/a.png"
    else:
        url = path if "://" in path else images.url(path)
    body = {
        "model": "black-forest-labs/FLUX.2-pro",
        "prompt": PROMPT_A,
        "width": 256,
        "height": 256,
        field: url if field == "image_url" else [images.url("/chelsea.png"), url],
    }
    started = time.monotonic()
    r = post(flux, body)
    assert r.status_code == 400, r.text
    error = error_of(r)
    assert (error["param"], error["type"], error["code"]) == (field, "invalid_request_error", "invalid_image_url")
    assert time.monotonic() - started < 8  # the wall-clock deadline held (the slow URL drips for 20 s)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (gen(model=FLUX2_DEV, negative_prompt="blurry"), "negative_prompt"),
        (gen(guidance=4.5), "guidance"),
        (gen(guidance_scale=3.5), "guidance_scale"),
        (gen(output_format="png"), "output_format"),
        (gen(prompt_upsampling=True), "prompt_upsampling"),
        (gen(image_url="https://example.invalid/a.png"), "image_url"),
        (gen(reference_images=["https://example.invalid/a.png"]), "reference_images"),
        (gen(model=FLUX2_DEV, aspect_ratio="1:1"), "aspect_ratio"),
        (gen(model="black-forest-labs/FLUX.2-pro"), "steps"),
        (gen(model=FLUX2_DEV, image_loras=[{"path": "https://example.invalid/l", "scale": 1}] * 3), "image_loras"),
        (
            {
                "model": "google/flash-image-2.5",
                "prompt": PROMPT_A,
                "reference_images": ["https://example.invalid/a"] * 4,
            },
            "reference_images",
        ),
        (gen(model="black-forest-labs/FLUX.1-schnell-Free"), "model"),
        (gen(model="black-forest-labs/FLUX.1-dev"), "model"),
        (gen(model="stabilityai/stable-diffusion-xl-base-1.0"), "model"),
    ],
)
def test_parameters_a_model_does_not_take_and_unknown_or_retired_models_are_400(flux, body, param):
    r = post(flux, body)
    assert r.status_code == 400, r.text
    error = error_of(r)
    assert (error["param"], error["type"]) == (param, "invalid_request_error")


def test_models_lists_the_catalog_as_image_models(flux):
    r = requests.get(flux.url + MODELS_PATH, headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert r.status_code == 200
    listed = r.json()
    assert isinstance(listed, list) and all(m["object"] == "model" for m in listed)
    images = [m["id"] for m in listed if m["type"] == "image"]
    assert images == [m.id for m in catalog().current]
    assert any(m["type"] != "image" for m in listed)
    assert "black-forest-labs/FLUX.1-schnell-Free" not in images
    assert requests.get(flux.url + MODELS_PATH, timeout=10).status_code == 401


def test_a_delisted_model_is_gone_from_the_list_and_refused(flux):
    flux.configure(delisted_models=["google/flash-image-2.5"])
    listed = requests.get(flux.url + MODELS_PATH, headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
    assert "google/flash-image-2.5" not in {m["id"] for m in listed}
    r = post(flux, {"model": "google/flash-image-2.5", "prompt": PROMPT_B, "width": 256, "height": 256})
    assert r.status_code == 400 and error_of(r)["code"] == "model_not_available"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer "}, {"Authorization": f"Basic {KEY}"}, {"Authorization": "Bearer nope"}],
)
def test_missing_or_unknown_key_is_401(flux, headers):
    r = requests.post(flux.url + API_PATH, json=gen(), headers=headers, timeout=10)
    assert r.status_code == 401
    error = error_of(r)
    assert error["code"] == "invalid_api_key"
    assert error["type"] in ("invalid_request_error", "authentication_error")
    assert "nope" not in r.text


def test_out_of_credits_is_402_and_comes_after_auth_before_validation(flux):
    flux.configure(out_of_credits=["test-key-2"])
    r = post(flux, {"prompt": ""}, key="test-key-2")  # invalid body, but credits are checked first
    assert r.status_code == 402
    assert error_of(r)["code"] == "insufficient_quota"
    assert post(flux, gen(), key="test-key-1").status_code == 200
    assert post(flux, {"prompt": ""}, key="bad").status_code == 401


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL}, "prompt"),
        ({"prompt": "a cat"}, "model"),
        (gen(prompt=123), "prompt"),
        (gen(prompt="   "), "prompt"),
        (gen(model=["FLUX"]), "model"),
        (gen(width="512"), "width"),
        (gen(height=512.5), "height"),
        (gen(steps=True), "steps"),
        (gen(n=1.0), "n"),
        (gen(seed="42"), "seed"),
        (gen(negative_prompt=5), "negative_prompt"),
        (gen(model=FLUX2_DEV, guidance="high"), "guidance"),
        (gen(model=FLUX2_DEV, prompt_upsampling="yes"), "prompt_upsampling"),
        (gen(model=FLUX2_DEV, output_format=1), "output_format"),
        (gen(model=FLUX2_DEV, response_format=None, output_format=["png"]), "output_format"),
    ],
)
def test_bad_types_and_missing_fields_are_400(flux, body, param):
    r = post(flux, body)
    assert r.status_code == 400, r.text
    error = error_of(r)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"', b""])
def test_non_object_body_is_400(flux, raw):
    r = post(flux, raw=raw)
    assert r.status_code == 400
    error_of(r)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (gen(width=1000), "width"),
        (gen(width=48), "width"),
        (gen(height=2064), "height"),
        (gen(steps=0), "steps"),
        (gen(steps=51), "steps"),
        (gen(n=0), "n"),
        (gen(n=5), "n"),
        (gen(model=FLUX2_DEV, output_format="gif"), "output_format"),
        (gen(response_format="b64_json"), "response_format"),
        (gen(aspect_ratio="5:4", width=None, height=None), "aspect_ratio"),
    ],
)
def test_out_of_range_values_are_422(flux, body, param):
    r = post(flux, body)
    assert r.status_code == 422, r.text
    assert error_of(r)["param"] == param


@pytest.mark.parametrize("model", [m.id for m in catalog().current])
def test_every_catalog_model_is_accepted(flux, model):
    body = {"model": model, "prompt": PROMPT_A, "width": 64, "height": 64}
    r = post(flux, body)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == model


def test_reject_substring_is_a_422_content_policy_violation(flux):
    r = post(flux, gen(f"{DALI} __REJECT__"))
    assert r.status_code == 422
    error = error_of(r)
    assert (error["code"], error["param"]) == ("content_policy_violation", "prompt")
    flux.configure(reject_substring="robotic")
    assert post(flux, gen(DALI)).status_code == 422
    assert post(flux, gen(f"{PROMPT_A} __REJECT__")).status_code == 200


# --------------------------------------------------------------------------- rate limit


def test_rate_limit_429_with_retry_after_then_recovers(flux):
    flux.configure(rate_limit_per_minute=3, time_scale=120.0)  # a 0.5 s window
    ok = post(flux, gen(n=3, width=64, height=64))
    assert ok.status_code == 200
    assert ok.headers["x-ratelimit-remaining"] == "0"

    limited = post(flux, gen(width=64, height=64))
    assert limited.status_code == 429
    error = error_of(limited)
    assert error["type"] == "rate_limit_error"
    retry_after = float(limited.headers["Retry-After"])
    assert 0 < retry_after <= 0.5
    assert limited.headers["x-ratelimit-remaining"] == "0"

    # Per key: another key still has its full budget.
    assert post(flux, gen(width=64, height=64), key="test-key-2").status_code == 200

    # Retry-After is honest: after waiting it, the request goes through.
    time.sleep(retry_after)
    assert post(flux, gen(width=64, height=64)).status_code == 200
    # ... and the window keeps recovering.
    wait_until(lambda: post(flux, gen(n=2, width=64, height=64)).status_code == 200, timeout=5)

    stats = flux.stats()["by_key"][key_id(KEY)]
    assert stats["by_status"]["429"] >= 1
    assert stats["images"] == 3 + 1 + 2  # 429s consumed nothing


def test_rate_limit_real_time_retry_after_is_an_integer(flux):
    flux.configure(rate_limit_per_minute=1)
    assert post(flux, gen(width=64, height=64)).status_code == 200
    limited = post(flux, gen(width=64, height=64))
    assert limited.status_code == 429
    assert limited.headers["Retry-After"].isdigit()
    assert 1 <= int(limited.headers["Retry-After"]) <= 60


def test_rate_limit_is_atomic_under_concurrency(flux):
    flux.configure(rate_limit_per_minute=5)
    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(lambda _: post(flux, gen(width=64, height=64)).status_code, range(12)))
    assert sorted(statuses) == [200] * 5 + [429] * 7
    stats = flux.stats()
    assert stats["requests"] == 12
    assert stats["images"] == 5


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("field", "status", "error_type"),
    [("p429", 429, "rate_limit_error"), ("p500", 500, "server_error"), ("p503", 503, "server_error")],
)
def test_error_fault_at_probability_one(flux, field, status, error_type):
    flux.configure(**{field: 1.0})
    for _ in range(3):
        r = post(flux, gen())
        assert r.status_code == status
        assert error_of(r)["type"] == error_type
    if status == 429:
        assert float(r.headers["Retry-After"]) >= 1
    assert flux.stats()["faults"] == {str(status): 3}
    assert flux.stats()["images"] == 0


def test_timeout_fault_hangs_then_504(flux):
    flux.configure(ptimeout=1.0, hang_seconds=0.3)
    start = time.monotonic()
    r = post(flux, gen())
    assert r.status_code == 504
    assert time.monotonic() - start >= 0.3
    assert error_of(r)["code"] == "timeout"


@pytest.mark.parametrize("response_format", ["base64", "url"])
def test_corrupt_fault_is_200_with_undecodable_bytes(flux, response_format):
    flux.configure(pcorrupt=1.0)
    r = post(flux, gen(DALI, seed=3, response_format=response_format))
    assert r.status_code == 200
    [item] = r.json()["data"]
    if response_format == "base64":
        blob = base64.b64decode(item["b64_json"])
    else:
        blob = requests.get(item["url"], timeout=10).content
    assert blob
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(blob))
    assert flux.stats()["faults"] == {"corrupt": 1}


def test_auth_and_validation_come_before_faults(flux):
    flux.configure(p500=1.0)
    assert post(flux, gen(), key="wrong").status_code == 401
    assert post(flux, gen(width=1000)).status_code == 422
    assert post(flux, gen()).status_code == 500


def test_fault_seed_makes_fault_sequences_reproducible(flux):
    def run() -> list[int]:
        return [post(flux, gen(width=64, height=64)).status_code for _ in range(12)]

    flux.reset(fault_seed=1234, p500=0.5)
    first = run()
    flux.reset(fault_seed=1234, p500=0.5)
    assert run() == first
    assert set(first) == {200, 500}


def test_latency_is_added(flux):
    flux.configure(latency_ms=150)
    start = time.monotonic()
    assert post(flux, gen(width=64, height=64)).status_code == 200
    assert time.monotonic() - start >= 0.15


# --------------------------------------------------------------------------- stats and admin


def test_stats_count_requests_images_and_statuses_by_key_id(flux):
    assert post(flux, gen(n=2, width=64, height=64)).status_code == 200
    assert post(flux, gen(width=64, height=64), key="test-key-3").status_code == 200
    assert post(flux, gen(width=1000), key="test-key-3").status_code == 422
    assert post(flux, gen(), key="intruder").status_code == 401

    stats = requests.get(flux.url + "/admin/stats", timeout=10).json()
    assert stats == flux.stats()
    assert stats["requests"] == 4
    assert stats["images"] == 3
    assert stats["by_status"] == {"200": 2, "422": 1, "401": 1}
    assert stats["by_key"] == {
        key_id(KEY): {"requests": 1, "images": 2, "by_status": {"200": 1}},
        key_id("test-key-3"): {"requests": 2, "images": 1, "by_status": {"200": 1, "422": 1}},
    }
    text = json.dumps(stats)
    assert "test-key" not in text and "intruder" not in text

    flux.reset()
    assert flux.stats()["requests"] == 0


def test_stats_are_thread_safe(flux):
    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(lambda i: post(flux, gen(f"{PROMPTS[i]}", width=64, height=64)).status_code, range(40)))
    assert codes == [200] * 40
    stats = flux.stats()
    assert (stats["requests"], stats["images"], stats["by_status"]) == (40, 40, {"200": 40})


def test_admin_config_get_update_and_reset(flux):
    admin = flux.url + "/admin"
    assert requests.get(flux.url + "/health", timeout=10).json() == {"status": "ok"}
    config = requests.get(admin + "/config", timeout=10).json()
    assert config["keys"] == ["test-key-1", "test-key-2", "test-key-3", "test-key-4"]
    assert config["reject_substring"] == "__REJECT__"

    r = requests.post(admin + "/config", json={"keys": ["fresh-key"], "p503": 1.0}, timeout=10)
    assert r.status_code == 200
    assert r.json()["keys"] == ["fresh-key"] and r.json()["p503"] == 1.0
    assert flux.config.p503 == 1.0
    assert post(flux, gen()).status_code == 401
    assert post(flux, gen(), key="fresh-key").status_code == 503

    for bad in ({"p500": 2}, {"nonsense": 1}, {"keys": "fresh-key"}, {"time_scale": 0}, [1]):
        assert requests.post(admin + "/config", json=bad, timeout=10).status_code == 400
    assert flux.config.keys == ["fresh-key"]  # failed updates changed nothing

    r = requests.post(admin + "/reset", timeout=10)
    assert r.status_code == 200
    assert flux.config == EmulatorConfig(keys=["test-key-1", "test-key-2", "test-key-3", "test-key-4"])
    assert flux.stats()["requests"] == 0
    assert post(flux, gen()).status_code == 200

    r = requests.post(admin + "/reset", json={"rate_limit_per_minute": 7}, timeout=10)
    assert r.json()["rate_limit_per_minute"] == 7


def test_reset_overrides_and_validation(flux):
    flux.reset(time_scale=60.0, out_of_credits=[KEY])
    assert flux.config.time_scale == 60.0
    assert post(flux, gen()).status_code == 402
    with pytest.raises(ValueError):
        flux.reset(p429=-0.1)
    with pytest.raises(ValueError):
        flux.reset(unknown=1)
    flux.reset()
    assert flux.config.out_of_credits == []


# --------------------------------------------------------------------------- key probes and markers


def get_models(flux: FluxEmulator, key: str | None = KEY) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return requests.get(flux.url + MODELS_PATH, headers=headers, timeout=10)


def test_models_endpoint_is_authenticated_and_not_counted(flux):
    r = get_models(flux)
    assert r.status_code == 200
    assert all(m["object"] == "model" for m in r.json())
    assert MODEL in {m["id"] for m in r.json() if m["type"] == "image"}
    assert get_models(flux, key=None).status_code == 401
    assert get_models(flux, key="nope").status_code == 401
    assert flux.stats()["requests"] == 0


def test_a_revoked_key_is_403_everywhere_and_the_others_are_not(flux):
    flux.configure(revoked=["test-key-2"])
    for response in (post(flux, gen(), key="test-key-2"), get_models(flux, key="test-key-2")):
        assert response.status_code == 403
        assert error_of(response)["type"] == "authentication_error"
    assert post(flux, gen()).status_code == 200 and get_models(flux).status_code == 200
    assert flux.stats()["by_key"][key_id("test-key-2")]["by_status"] == {"403": 1}


def test_forbid_marker_is_a_403_request_error_while_the_key_is_fine(flux):
    r = post(flux, gen(PROMPT_A + " __FORBID__"))
    assert r.status_code == 403
    error = error_of(r)
    assert (error["type"], error["param"]) == ("invalid_request_error", "prompt")
    assert get_models(flux).status_code == 200
    assert post(flux, gen()).status_code == 200


def test_waf_marker_is_a_403_html_page(flux):
    r = post(flux, gen("__WAF__ " + PROMPT_B))
    assert r.status_code == 403
    assert r.headers["Content-Type"].startswith("text/html") and "<html>" in r.text


@pytest.mark.parametrize("status", [400, 401, 404, 413, 429, 500, 502, 503])
def test_status_marker_answers_that_status(flux, status):
    r = post(flux, gen(f"{PROMPT_A} __STATUS_{status}__"))
    assert r.status_code == status
    error_of(r)
    assert ("Retry-After" in r.headers) == (status == 429)
    assert flux.stats()["faults"] == {"marker": 1} and flux.stats()["images"] == 0


def test_garbage_marker_is_a_200_that_is_not_json(flux):
    r = post(flux, gen("__STATUS_GARBAGE__ " + PROMPT_A))
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()


def test_markers_can_be_disabled(flux):
    flux.configure(status_marker="", forbid_substring="", waf_substring="")
    for marker in ("__STATUS_500__", "__FORBID__", "__WAF__"):
        assert post(flux, gen(f"{PROMPT_A} {marker}")).status_code == 200


def test_503_capacity_answers_carry_a_scaled_retry_after(flux):
    flux.configure(p503=1.0, retry_after_503=6.0, time_scale=2.0)
    r = post(flux, gen())
    assert r.status_code == 503 and r.headers["Retry-After"] == "3.00"
    assert error_of(r)["code"] == "service_unavailable"


def test_every_answer_carries_the_rate_limit_headers(flux):
    flux.configure(rate_limit_per_minute=3, time_scale=60.0)  # a 1 s window
    first = post(flux, gen())
    assert (first.headers["x-ratelimit-limit"], first.headers["x-ratelimit-remaining"]) == ("3", "2")
    assert 0 < float(first.headers["x-ratelimit-reset"]) <= 1.0
    refused = post(flux, gen(PROMPT_A + " __STATUS_400__"))  # an error answer has them too
    assert refused.status_code == 400 and refused.headers["x-ratelimit-remaining"] == "2"
    post(flux, gen())
    post(flux, gen())
    limited = post(flux, gen())
    assert limited.status_code == 429
    assert limited.headers["x-ratelimit-remaining"] == "0" and float(limited.headers["x-ratelimit-reset"]) > 0
    assert "x-ratelimit-limit" not in post(flux, gen(), key="nope").headers  # no key, no limits


def test_bursts_of_429s_tighten_the_limit_until_a_quiet_window(flux):
    flux.configure(rate_limit_per_minute=4, time_scale=60.0, tighten_after_429s=3, tighten_factor=0.5)
    answers = [post(flux, gen()) for _ in range(8)]
    assert [a.status_code for a in answers].count(429) == 4
    assert answers[-1].headers["x-ratelimit-limit"] == "2"  # tightened after the third 429
    assert post(flux, gen(), key="test-key-2").headers["x-ratelimit-limit"] == "4"  # per key
    # a 400 answer consumes nothing and shows the limit: it comes back after a quiet window
    probe = gen(PROMPT_A + " __STATUS_400__")
    wait_until(lambda: post(flux, probe).headers["x-ratelimit-limit"] == "4", timeout=5.0, interval=0.1)
    assert post(flux, gen()).status_code == 200


def test_config_from_env():
    config = EmulatorConfig.from_env(
        {
            "FLUX_EMULATOR_KEYS": "a, b,,c",
            "FLUX_EMULATOR_RATE_LIMIT": "60",
            "FLUX_EMULATOR_TIME_SCALE": "60",
            "FLUX_EMULATOR_LATENCY_MS": "25",
            "FLUX_EMULATOR_FAULTS": "429=0.1,500=0,503=0.1,timeout=0,corrupt=0.02",
            "FLUX_EMULATOR_OUT_OF_CREDITS": "b",
            "FLUX_EMULATOR_REVOKED": "c",
        }
    )
    assert config.keys == ["a", "b", "c"]
    assert (config.rate_limit_per_minute, config.time_scale, config.latency_ms) == (60, 60.0, 25.0)
    assert (config.p429, config.p500, config.p503, config.ptimeout, config.pcorrupt) == (0.1, 0, 0.1, 0, 0.02)
    assert config.out_of_credits == ["b"]
    assert config.revoked == ["c"]
    assert EmulatorConfig.from_env({}) == EmulatorConfig()
    for bad in (
        {"FLUX_EMULATOR_FAULTS": "404=0.5"},
        {"FLUX_EMULATOR_FAULTS": "500=2"},
        {"FLUX_EMULATOR_RATE_LIMIT": "x"},
    ):
        with pytest.raises(ValueError):
            EmulatorConfig.from_env(bad)


# --------------------------------------------------------------------------- official SDK and CLI


def test_official_together_sdk_talks_to_the_emulator(flux, images):
    from together import AuthenticationError, BadRequestError, RateLimitError, Together

    # together>=2 (Stainless) posts to "/v1/images/generations" relative to base_url, so the
    # base URL is the emulator root; the old "<root>/v1" form would request /v1/v1/...
    client = Together(api_key=KEY, base_url=flux.url, max_retries=0)
    result = client.images.generate(
        model=MODEL,
        prompt=DALI,
        width=512,
        height=384,
        steps=4,
        seed=11,
        n=2,
        response_format="base64",
    )
    assert result.object == "list" and len(result.data) == 2
    assert [d.index for d in result.data] == [0, 1]
    assert decode(result.data[0].b64_json).size == (512, 384)

    as_url = client.images.generate(model=MODEL, prompt=CORGI, width=256, height=256, response_format="url")
    assert Image.open(io.BytesIO(requests.get(as_url.data[0].url, timeout=10).content)).size == (256, 256)

    bad = Together(api_key="not-a-key", base_url=flux.url, max_retries=0)
    with pytest.raises(AuthenticationError) as excinfo:
        bad.images.generate(model=MODEL, prompt=DALI, width=256, height=256, steps=4)
    assert excinfo.value.status_code == 401

    # The catalog's parameters, as the SDK sends them (named where it has them, else extra_body).
    flux2 = client.images.generate(
        model=FLUX2_DEV,
        prompt=CORGI,
        width=256,
        height=256,
        steps=8,
        output_format="png",
        reference_images=[images.url("/chelsea.png")],
        image_loras=[{"path": "https://example.invalid/lora", "scale": 0.8}],
        extra_body={"guidance": 4.5, "prompt_upsampling": False},
        response_format="base64",
    )
    assert decode(flux2.data[0].b64_json).format == "PNG"
    kontext = client.images.generate(
        model="black-forest-labs/FLUX.1-kontext-pro",
        prompt=CORGI,
        image_url=images.url("/coffee.jpg"),
        extra_body={"aspect_ratio": "9:16"},
        response_format="base64",
    )
    assert decode(kontext.data[0].b64_json).size == (768, 1344)
    with pytest.raises(BadRequestError) as refused:
        client.images.generate(model=MODEL, prompt=DALI, width=256, height=256, output_format="png")
    assert refused.value.status_code == 400
    with pytest.raises(BadRequestError):
        client.images.generate(model="black-forest-labs/FLUX.1-schnell-Free", prompt=DALI)
    # together 3.x's models.list() is the project API (/v2); Together's model list is GET /v1/models.
    listed = client.get("/v1/models", cast_to=object)
    image_ids = [m["id"] for m in listed if m["type"] == "image"]
    assert image_ids == [m.id for m in catalog().current]

    flux.configure(p429=1.0)
    with pytest.raises(RateLimitError):
        client.images.generate(model=MODEL, prompt=DALI, width=256, height=256, steps=4)


def test_module_runs_standalone_with_env_config():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "FLUX_EMULATOR_KEYS": "cli-key", "FLUX_EMULATOR_FAULTS": "503=1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack.flux_emulator", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            try:
                return requests.get(url + "/health", timeout=1).status_code == 200
            except requests.ConnectionError:
                assert proc.poll() is None, "emulator process exited"
                return False

        wait_until(healthy, timeout=10, interval=0.05)
        headers = {"Authorization": "Bearer cli-key"}
        r = requests.post(url + API_PATH, json=gen(), headers=headers, timeout=10)
        assert r.status_code == 503
        assert requests.get(url + "/admin/config", timeout=10).json()["keys"] == ["cli-key"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
