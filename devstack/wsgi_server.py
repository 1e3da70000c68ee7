"""A keep-alive WSGI server for the dev stack's stand-ins (waitress).

werkzeug's development server, which ``moto.server.ThreadedMotoServer`` and ``make_server``
use, answers every request with ``Connection: close`` (its handler cannot drain a request
body before the next request line) and starts a thread per connection. So every SDK call
to a stand-in paid a new TCP connection, a new server thread and a teardown, which AWS's
endpoints, keeping connections open for the SDK's pool, do not: measured on ``POST
/v1/images``, a fifth of the API process's busy time went to opening and closing them.

waitress keeps HTTP/1.1 connections open, answers ``Expect: 100-continue`` (the SDK's S3
uploads send it), sets ``TCP_NODELAY`` on accepted sockets, and runs requests on a fixed
pool of threads: :data:`THREADS`, since an SQS ``ReceiveMessage`` long poll holds one for up
to 20 s. Source: waitress docs, "Arguments to waitress.serve".
"""

from __future__ import annotations

import logging
import threading
from typing import Any

#: Request threads per server: every long poll of every poller at once, with room to spare.
THREADS = 96
#: Open connections per server (each SDK client pools up to ``http_pool_size`` of them).
CONNECTION_LIMIT = 2000
#: Seconds an idle kept-alive connection stays open (the SDK drops its own after 60 s idle).
CHANNEL_TIMEOUT_S = 300


class KeepAliveServer:
    """A WSGI application served on ``host:port`` (0: a free port) from a daemon thread.

    Args:
        app: the WSGI application.
        host: the address to listen on.
        port: the port (0 picks a free one; :attr:`port` tells which).
        threads: request threads (:data:`THREADS`).

    Example:
        >>> server = KeepAliveServer(app, "127.0.0.1", 0).start()
        >>> server.url  # 'http://127.0.0.1:41234'
        >>> server.stop()
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, threads: int = THREADS) -> None:
        from waitress.server import create_server

        logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "task queue depth" under load
        self._server = create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            connection_limit=CONNECTION_LIMIT,
            channel_timeout=CHANNEL_TIMEOUT_S,
            asyncore_use_poll=True,  # no select() limit of 1,024 descriptors
            ident="devstack",
            clear_untrusted_proxy_headers=True,
        )
        self.host = host
        self.port = int(self._server.effective_port)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> KeepAliveServer:
        """Serve from a daemon thread; returns self."""
        self._thread = threading.Thread(target=self._run, name=f"wsgi-{self.port}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._server.run()
        except (OSError, ValueError):  # the listening socket was closed by stop()
            pass

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop listening, close open connections and the request threads (waits up to
        ``timeout_s`` seconds for the serving thread)."""
        self._server.close()
        self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=timeout_s)
        for channel in list(self._server._map.values()):
            try:
                channel.close()
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout_s)
