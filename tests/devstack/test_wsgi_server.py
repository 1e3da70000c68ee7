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
