"""The stand-ins' keep-alive server: connections stay open, and idle ones hold no thread."""

from __future__ import annotations

import http.client

import pytest

from devstack.wsgi_server import KeepAliveServer


def _app(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)) or b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def server():
    running = KeepAliveServer(_app, threads=4).start()
    yield running
    running.stop()


@pytest.mark.timeout(30)
def test_one_connection_serves_request_after_request(server):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    conn.request("GET", "/")
    first = conn.getresponse()
    assert first.read() == b"ok"
    assert (first.getheader("Connection") or "").lower() != "close"
    sock = conn.sock
    conn.request("POST", "/", body=b"again", headers={"Expect": "100-continue"})
    second = conn.getresponse()
    assert second.status == 200 and second.read() == b"again"
    assert conn.sock is sock  # the same TCP connection: nothing was reopened
    conn.close()


@pytest.mark.timeout(30)
def test_many_connections_stay_open_and_idle_ones_hold_no_request_thread(server):
    idle = []
    for _ in range(20):  # five times the server's 4 request threads, twice cheroot's default limit
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("GET", "/")
        reply = conn.getresponse()
        assert reply.read() == b"ok"
        assert (reply.getheader("Connection") or "").lower() != "close"  # kept open, not dropped
        idle.append(conn)
    fresh = http.client.HTTPConnection(server.host, server.port, timeout=5)
    fresh.request("GET", "/")
    assert fresh.getresponse().read() == b"ok"
    for conn in [*idle, fresh]:
        conn.close()


def _varied_app(environ, start_response):
    """``/empty``: 204 without a body; ``/stream``: a body in three chunks, no length; else ``ok``."""
    path = environ["PATH_INFO"]
    if path == "/empty":
        start_response("204 No Content", [])
        return []
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"one ", b"two ", b"three"])
    if path == "/fail":
        raise RuntimeError("the application failed")
    return _app(environ, start_response)


class _CountingWriter:
    """Wraps a connection's socket writer and records each write (a send, a TCP segment)."""

    def __init__(self, raw, sends):
        self._raw, self._sends = raw, sends

    def write(self, data):
        self._sends.append(bytes(data))
        return self._raw.write(data)

    def __getattr__(self, name):
        return getattr(self._raw, name)


@pytest.mark.timeout(30)
def test_a_response_leaves_in_one_send_and_bodiless_streamed_and_failed_ones_still_arrive(monkeypatch):
    from devstack import wsgi_server

    sends: list[bytes] = []
    holding_init = wsgi_server._HeadHoldingWriter.__init__

    def counting_init(self, raw):
        holding_init(self, _CountingWriter(raw, sends))

    monkeypatch.setattr(wsgi_server._HeadHoldingWriter, "__init__", counting_init)
    server = KeepAliveServer(_varied_app, threads=2).start()
    try:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"ok"
        assert len(sends) == 1 and sends[0].startswith(b"HTTP/1.1 200") and sends[0].endswith(b"\r\n\r\nok")
        conn.request("GET", "/empty")
        reply = conn.getresponse()
        assert reply.status == 204 and reply.read() == b""
        conn.request("GET", "/stream")
        reply = conn.getresponse()
        assert reply.status == 200 and reply.read() == b"one two three"
        conn.request("GET", "/")  # the connection is still in step after each kind
        assert conn.getresponse().read() == b"ok"
        conn.close()
        failing = http.client.HTTPConnection(server.host, server.port, timeout=10)
        failing.request("GET", "/fail")
        assert failing.getresponse().status == 500
        failing.close()
    finally:
        server.stop()
