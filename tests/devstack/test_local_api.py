"""The dev stack's API server: chalice's own CLI, with TCP_NODELAY on each connection."""

from __future__ import annotations

import socket
import threading
from http.server import HTTPServer

import pytest
from chalice import local

import devstack.local_api  # noqa: F401  (sets the handler's switch)


class _Probe(local.ChaliceRequestHandler):
    """The dev server's handler class: runs its ``setup`` on the accepted connection and
    records the ``TCP_NODELAY`` option it left there (instead of serving a request)."""

    seen: list[int] = []

    def __init__(self, request, client_address, server):
        self.request = request
        self.client_address = client_address
        self.server = server
        self.setup()
        self.seen.append(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        self.finish()


@pytest.mark.timeout(30)
def test_each_accepted_connection_has_nagle_off():
    server = HTTPServer(("127.0.0.1", 0), _Probe)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    with socket.create_connection(server.server_address, timeout=10):
        thread.join(10)
    server.server_close()
    assert _Probe.seen and _Probe.seen[0] != 0
