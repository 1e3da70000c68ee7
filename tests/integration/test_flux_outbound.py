"""The Flux client against hostile upstreams on loopback: answers drip-fed a byte at a time
(in the headers, in the body, in an image URL's download) and answers far over the cap.
Each generation must end by its deadline and read no more than the cap; ``requests``'
per-read timeouts alone would let every one of them run on."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from chalicelib import outbound
from chalicelib.flux import FluxClient, UpstreamFailedError, parse_generation_params
from chalicelib.flux.client import MAX_ANSWER_BYTES
from chalicelib.flux.exceptions import FailureKind
from chalicelib.settings import Settings
from devstack.prompts import PARTI_PROMPTS
from tests.fixtures.scripted import read_request

PROMPT = next(row.split("\t")[0] for row in PARTI_PROMPTS.read_text(encoding="utf-8").splitlines() if len(row) > 80)
DRIP_S = 10.0  # how long each drip would last if nobody hung up


def client_for(url: str, *, request_timeout_s: float = 1.0, **kwargs) -> FluxClient:
    settings = Settings(
        together_api_keys=("test-key-1",),
        together_base_url=url + "/v1",
        key_health_refresh_seconds=60.0,
        flux_request_timeout_seconds=request_timeout_s,
        flux_deadline_seconds=10.0,
        flux_default_cooldown_seconds=10.0,
    )
    return FluxClient(settings, **kwargs)


def drip(conn, server, head: bytes, byte: bytes = b"a") -> None:
    server.send(conn, head)
    for _ in range(int(DRIP_S / 0.05)):  # every byte well inside any per-read timeout
        time.sleep(0.05)
        server.send(conn, byte)


def failed_within(client: FluxClient, deadline_s: float) -> tuple[UpstreamFailedError, float]:
    started = time.monotonic()
    with pytest.raises(UpstreamFailedError) as caught:
        client.generate(parse_generation_params({"prompt": PROMPT}), deadline_s=deadline_s)
    return caught.value, time.monotonic() - started


def test_an_answer_whose_headers_drip_ends_at_the_deadline(aws, serve) -> None:
    server = serve(lambda conn, s: drip(conn, s, b"HTTP/1.1 200 OK\r\nX-Slow: "))
    err, elapsed = failed_within(client_for(f"http://127.0.0.1:{server.port}"), 1.5)
    assert elapsed < 3.0  # the deadline and scheduling slack; one drip alone lasts 10 s
    assert err.last_kind is FailureKind.TIMEOUT
    assert server.requests and b"Bearer test-key-1" in server.requests[0]


def test_an_answer_whose_body_drips_ends_at_the_deadline(aws, serve) -> None:
    head = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 900000\r\n\r\n{"data": '
    server = serve(lambda conn, s: drip(conn, s, head, b" "))
    err, elapsed = failed_within(client_for(f"http://127.0.0.1:{server.port}"), 1.5)
    assert elapsed < 3.0
    assert err.last_kind is FailureKind.TIMEOUT


def test_an_answer_over_the_cap_is_cut_off(aws, serve) -> None:
    length = 1 << 30  # announced: 1 GiB
    chunk = b"a" * (256 * 1024)

    def huge(conn, server):
        server.send(conn, f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode() + b'{"data": "')
        sent = 0
        while sent < length:
            server.send(conn, chunk)
            sent += len(chunk)

    server = serve(huge)
    err, _ = failed_within(client_for(f"http://127.0.0.1:{server.port}", request_timeout_s=5.0), 4.0)
    assert f"over {MAX_ANSWER_BYTES} bytes" in (err.last_error or "")
    tries = len(server.requests)
    # each try read at most the cap; what more went out sat in the loopback's socket buffers
    assert tries >= 1 and server.sent < tries * (MAX_ANSWER_BYTES + 16 * 1024 * 1024)


def test_an_image_url_whose_download_drips_ends_at_the_deadline(aws, serve) -> None:
    image_host = serve(lambda conn, s: drip(conn, s, b"HTTP/1.1 200 OK\r\nContent-Length: 900000\r\n\r\n\x89PNG"))
    body = json.dumps({"data": [{"index": 0, "type": "url", "url": f"http://127.0.0.1:{image_host.port}/i.png"}]})

    def answer(conn, server):
        server.send(conn, f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())

    api = serve(answer)
    client = client_for(f"http://127.0.0.1:{api.port}", response_format="url")
    err, elapsed = failed_within(client, 1.5)
    assert elapsed < 3.0
    assert image_host.requests  # the client did go for the image
    assert err.last_kind is FailureKind.IMAGE_DOWNLOAD


class _Conn:
    """What a watch needs of an urllib3 connection: its socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock


def test_the_watch_wakes_a_blocked_receive_and_shuts_what_comes_after() -> None:
    blocked, peer = socket.socketpair()
    late, late_peer = socket.socketpair()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(blocked.recv(10)))
    with blocked, peer, late, late_peer:
        reader.start()
        watch = outbound.Watch()
        watch.attach(_Conn(blocked))
        assert not watch.fired
        watch.fire()
        reader.join(2.0)
        assert not reader.is_alive() and got == [b""]  # woken as if the server had closed
        watch.attach(_Conn(late))  # after the deadline: shut at once
        assert late.recv(10) == b""


def test_a_connection_back_in_its_pool_is_not_cut_by_the_block_that_used_it(serve) -> None:
    def keep_alive(conn, server):
        server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        read_request(conn)  # the second request, on the same connection
        server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n")
        for _ in range(20):
            time.sleep(0.075)
            server.send(conn, b"b")

    server = serve(keep_alive)
    url = f"http://127.0.0.1:{server.port}/x"
    session = outbound.bounded_session(1, "PromptCanvas-test")  # one connection, shared
    first_done = threading.Event()

    def first() -> None:
        with outbound.deadline(time.monotonic() + 0.5):
            assert session.get(url, timeout=(3, 3)).content == b"ok"
            first_done.set()
            time.sleep(1.0)  # still inside its block when its deadline passes

    thread = threading.Thread(target=first)
    thread.start()
    assert first_done.wait(5)
    with outbound.deadline(time.monotonic() + 10) as second:
        body = session.get(url, timeout=(3, 3)).content  # 1.5 s of drips, across the first's deadline
    thread.join(5)
    assert body == b"b" * 20 and not second.fired
    assert len(server.requests) == 1  # one connection served both


def test_deadline_blocks_nest_and_an_unfired_one_leaves_the_session_usable(aws, flux) -> None:
    client = client_for(flux.url)
    with outbound.deadline(time.monotonic() + 60) as outer:
        with outbound.deadline(time.monotonic() + 30) as inner:
            [image] = client.generate(parse_generation_params({"prompt": PROMPT}), deadline_s=10)
        assert not inner.fired and not outer.fired
    assert image.data
    # the pooled connection was not shut: the next generation reuses it and succeeds
    [again] = client.generate(parse_generation_params({"prompt": PROMPT}), deadline_s=10)
    assert again.data


@pytest.fixture
def upstream_at(monkeypatch):
    """Point ``TOGETHER_BASE_URL`` at a scripted server for the test (caches forgotten both ways)."""
    from tests.fixtures.api import reset_app_caches

    def point(url: str) -> None:
        monkeypatch.setenv("TOGETHER_BASE_URL", url + "/v1")
        reset_app_caches()

    yield point
    monkeypatch.undo()
    reset_app_caches()


def test_an_own_key_check_against_a_dripping_upstream_ends_at_its_deadline(serve, upstream_at, monkeypatch) -> None:
    from chalicelib.flux import own_keys

    server = serve(lambda conn, s: drip(conn, s, b"HTTP/1.1 200 OK\r\nX-Slow: "))
    upstream_at(f"http://127.0.0.1:{server.port}")
    monkeypatch.setattr(own_keys, "VERIFY_DEADLINE_S", 1.0)
    started = time.monotonic()
    with pytest.raises(own_keys.KeyUnverified, match="exceeded 1 s"):
        own_keys.verify_key("sk-test-own-key", session=outbound.bounded_session(2, "PromptCanvas-test"))
    assert time.monotonic() - started < 2.5


def test_a_video_download_that_drips_ends_at_its_deadline(aws, serve, monkeypatch) -> None:
    from chalicelib.flux import video_client

    monkeypatch.setattr(video_client, "DOWNLOAD_DEADLINE_S", 1.0)
    # no Content-Length: the body runs until the server closes, so a cut must not read as its end
    server = serve(lambda conn, s: drip(conn, s, b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\n\r\n", b"\x00"))
    client = video_client.VideoClient(client_for(f"http://127.0.0.1:{server.port}").settings)
    started = time.monotonic()
    url = f"http://127.0.0.1:{server.port}/clip.mp4"
    with pytest.raises(video_client.VideoDownloadError, match="took over 1 s"), client.open_video(url) as stream:
        while stream.read(1 << 20):
            pass
    assert time.monotonic() - started < 2.5


def test_a_video_poll_whose_answer_drips_ends_at_the_request_timeout(aws, serve) -> None:
    from chalicelib.flux import key_id
    from chalicelib.flux.video_client import VideoClient, VideoJobRef

    server = serve(lambda conn, s: drip(conn, s, b"HTTP/1.1 200 OK\r\nX-Slow: "))
    images = client_for(f"http://127.0.0.1:{server.port}")
    client = VideoClient(images.settings, pool=images.pool)
    started = time.monotonic()
    with pytest.raises(UpstreamFailedError) as caught:
        client.retrieve(VideoJobRef(upstream_id="job-1", key_id=key_id("test-key-1")), "any-video-model")
    assert time.monotonic() - started < 2.5  # the request timeout is 1 s
    assert caught.value.last_kind is FailureKind.TIMEOUT
    assert server.requests[0].startswith(b"GET /v2/videos/job-1 ")
