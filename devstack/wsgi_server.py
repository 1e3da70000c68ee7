"""A keep-alive WSGI server for the dev stack's stand-ins (cheroot).

werkzeug's development server, which ``moto.server.ThreadedMotoServer`` and ``make_server``
use, answers every request with ``Connection: close`` (its handler cannot drain a request
body before the next request line) and starts a thread per connection. So every SDK call
to a stand-in paid a new TCP connection, a new server thread and a teardown, which AWS's
endpoints, keeping connections open for the SDK's pool, do not: measured on ``POST
/v1/images``, a fifth of the API process's busy time went to opening and closing them.

cheroot (CherryPy's server) keeps HTTP/1.1 connections open and watches the idle ones with
the operating system's selector, so a request costs the same however many connections the
SDK pools hold open (waitress, tried first, walks every open connection on each event: with
300 idle connections moto's CPU per request doubled). It answers ``Expect: 100-continue``
(the SDK's S3 uploads send it) and sets ``TCP_NODELAY``. Requests run on a fixed pool of
:data:`THREADS` threads, since an SQS ``ReceiveMessage`` long poll holds one for up to 20 s.
Source: cheroot docs, ``cheroot.wsgi.Server`` and ``cheroot.server.HTTPServer``.
"""

from __future__ import annotations

import threading
from typing import Any

#: Request threads per server: every long poll of every poller at once, with room to spare.
THREADS = 96
#: Seconds a kept-alive connection may stay idle (and a request may take to arrive) before
#: the server closes it; the SDK notices a closed pooled connection and opens another.
IDLE_TIMEOUT_S = 60
#: Pending connections the listening socket queues.
BACKLOG = 256
#: Connections kept open between requests. Past it cheroot answers ``Connection: close``;
#: its default of 10 is fewer than one SDK client's pool, and the dev stack has dozens.
KEEP_ALIVE_LIMIT = 4096


class _HeadHoldingWriter:
    """A connection's writer that holds a response's head (status line and headers) and sends
    it with the first bytes written after it, so a response with a body leaves in one send.

    cheroot writes the head and the body in two sends, and with ``TCP_NODELAY`` each is a TCP
    segment of its own, with its own system call and loopback delivery. Measured in paired
    runs of 400 UpdateItems against moto, one send took about 5 % off the wall time per call.
    Everything else is the wrapped writer's.
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._held = b""
        self.holding = False

    def write(self, data: bytes) -> int:
        """Hold ``data`` while :attr:`holding`, else send what is held and ``data`` together."""
        if self.holding:
            self._held += bytes(data)
            return len(data)
        if self._held:
            data, self._held = self._held + bytes(data), b""
        return self._raw.write(data)

    def release(self) -> None:
        """Send what is held (a response without a body)."""
        if self._held:
            held, self._held = self._held, b""
            self._raw.write(held)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def _connection_class() -> type:
    """cheroot's connection, whose requests send their head with their body's first bytes."""
    from cheroot.server import HTTPConnection, HTTPRequest

    class HeadWithBodyRequest(HTTPRequest):
        def send_headers(self) -> None:
            self.conn.wfile.holding = True
            try:
                super().send_headers()
            finally:
                self.conn.wfile.holding = False

        def respond(self) -> None:
            try:
                super().respond()
            finally:
                self.conn.wfile.release()

    class HeadWithBodyConnection(HTTPConnection):
        RequestHandlerClass = HeadWithBodyRequest

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.wfile = _HeadHoldingWriter(self.wfile)

    return HeadWithBodyConnection


class KeepAliveServer:
    """A WSGI application served on ``host:port`` (0: a free port) from a daemon thread.

    Args:
        app: the WSGI application.
        host: the address to listen on.
        port: the port (0 picks a free one; :attr:`port` tells which).
        threads: request threads (:data:`THREADS`).

    Raises:
        OSError: the port cannot be bound.

    Example:
        >>> server = KeepAliveServer(app, "127.0.0.1", 0).start()
        >>> server.url  # 'http://127.0.0.1:41234'
        >>> server.stop()
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, threads: int = THREADS) -> None:
        from cheroot import wsgi

        self._server = wsgi.Server(
            (host, port),
            app,
            numthreads=threads,
            server_name="devstack",
            request_queue_size=BACKLOG,
            timeout=IDLE_TIMEOUT_S,
            shutdown_timeout=1,
        )
        self._server.keep_alive_conn_limit = KEEP_ALIVE_LIMIT
        self._server.ConnectionClass = _connection_class()
        self._server.prepare()  # binds now, so the port is known before serving
        self.host = host
        self.port = int(self._server.bind_addr[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> KeepAliveServer:
        """Serve from a daemon thread; returns self."""
        self._thread = threading.Thread(target=self._server.serve, name=f"wsgi-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop listening and close the connections (waits up to ``timeout_s`` seconds for
        the serving thread; a request still running, such as a long poll, is abandoned)."""
        self._server.stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
