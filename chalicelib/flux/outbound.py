"""A wall-clock deadline for ``requests`` calls to Together and the URLs it answers with.

``requests``' ``timeout`` bounds each socket operation, not the exchange: a server that
sends a byte a little more often than the read timeout keeps a call alive for as long as it
likes, in the status line and headers as well as in the body, and the deadline checks
between body chunks (:func:`~chalicelib.flux.client.read_bounded`) never get a turn while
one 64 KiB read is still filling. The API's Lambda would then be killed at its own timeout
with the user's charge still held.

This module closes that gap with public ``urllib3`` and ``requests`` extension points:

- :func:`bounded_session` is a ``requests.Session`` whose connections, after sending a
  request, hand their socket to the calling thread's watch (an ``urllib3`` connection
  class set through the pool manager's ``pool_classes_by_scheme``);
- :func:`deadline` is that watch: when its deadline passes, a timer shuts down every socket
  the block's requests used, which wakes a blocked receive with an error (a shutdown, unlike
  a close, reaches a receive that another thread is blocked in). The connection is then
  dropped by the pool (it reads as closed), never reused.

The connect and the TLS handshake are bounded by the connect timeout as whole calls
(CPython applies a socket timeout to a whole ``connect`` and ``do_handshake``).

Example::

    session = bounded_session(pool_maxsize=10, user_agent="promptcanvas/1")
    with deadline(time.monotonic() + 20) as watch:
        with session.get(url, timeout=(3.05, 20), stream=True) as resp:
            body = read_bounded(resp, 1 << 20, time.monotonic() + 20)
    # on requests.RequestException: watch.fired says whether the deadline cut it
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import requests

_local = threading.local()


class Watch:
    """The sockets one :func:`deadline` block has used, and whether its deadline has cut them.

    Attributes:
        fired: the deadline passed while the block was running; every socket it had used
            was shut down (a request failing now failed because of the deadline).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.fired = False

    def attach(self, sock: socket.socket | None) -> None:
        """Watch ``sock`` (shut it down at once if the deadline has already passed)."""
        if sock is None:
            return
        with self._lock:
            if not self.fired:
                self._sockets.append(sock)
                return
        _shut(sock)

    def fire(self) -> None:
        """The deadline: shut down every socket attached so far, and any attached later."""
        with self._lock:
            self.fired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed or never connected
        pass


@contextmanager
def deadline(at: float) -> Iterator[Watch]:
    """Hold every request the calling thread sends on a :func:`bounded_session` inside this
    block to ``at`` (``time.monotonic()`` seconds): then its sockets are shut down, and a
    receive still waiting fails with a ``requests`` connection error. Blocks nest; the
    innermost one watches.

    Yields:
        The block's :class:`Watch`; ``fired`` tells a deadline from another failure.
    """
    watch = Watch()
    timer = threading.Timer(max(0.0, at - time.monotonic()), watch.fire)
    timer.daemon = True
    outer = getattr(_local, "watch", None)
    _local.watch = watch
    timer.start()
    try:
        yield watch
    finally:
        timer.cancel()
        _local.watch = outer


def _attach(sock: Any) -> None:
    watch = getattr(_local, "watch", None)
    if watch is not None:
        watch.attach(sock)


_POOLS: dict[str, Any] | None = None


def _pool_classes() -> dict[str, Any]:
    """``{"http": pool class, "https": pool class}`` whose connections attach their socket to
    the calling thread's watch after sending each request (built on first use: ``urllib3``
    comes with ``requests``, which the first response does not import)."""
    global _POOLS
    if _POOLS is None:
        import urllib3.connection
        import urllib3.connectionpool

        class WatchedHTTPConnection(urllib3.connection.HTTPConnection):
            def request(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
                super().request(*args, **kwargs)
                _attach(self.sock)

        class WatchedHTTPSConnection(urllib3.connection.HTTPSConnection):
            def request(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
                super().request(*args, **kwargs)
                _attach(self.sock)

        class WatchedHTTPPool(urllib3.connectionpool.HTTPConnectionPool):
            ConnectionCls = WatchedHTTPConnection

        class WatchedHTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
            ConnectionCls = WatchedHTTPSConnection

        _POOLS = {"http": WatchedHTTPPool, "https": WatchedHTTPSPool}
    return _POOLS


def bounded_session(pool_maxsize: int, user_agent: str) -> requests.Session:
    """A ``requests.Session`` whose requests a :func:`deadline` block can cut: no retries,
    ``pool_maxsize`` connections per host, the ``User-Agent`` header ``user_agent``.

    Args:
        pool_maxsize: connections kept per host (the threads that may call at once).
        user_agent: the header's value (Together's CDN refuses a blank one).
    """
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool_maxsize, max_retries=0)
    adapter.poolmanager.pool_classes_by_scheme = dict(_pool_classes())
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = user_agent
    return session
