"""A wall-clock deadline for outbound HTTP: Together, the URLs it answers with, and the JWKS GET.

``requests``' ``timeout`` bounds each socket operation, not the exchange: a server that
sends a byte a little more often than the read timeout keeps a call alive for as long as it
likes, in the status line and headers as well as in the body, and the deadline checks
between body chunks (:func:`~chalicelib.flux.client.read_bounded`) never get a turn while
one 64 KiB read is still filling. The API's Lambda would then be killed at its own timeout
with the user's charge still held.

This module closes that gap with ``urllib3`` and ``requests`` extension points:

- :func:`bounded_session` is a ``requests.Session`` whose pools (set through the pool
  managers' ``pool_classes_by_scheme``, a proxy's manager included) make connections that
  join the calling thread's watch when they send a request, and leave it when they go back
  to their pool (``HTTPConnectionPool._put_conn``, the one private hook used), so a
  connection another request has taken since is never cut;
- :func:`deadline` is that watch: when its deadline passes, a timer shuts down the socket of
  every connection the block is still using, which wakes a blocked receive with an error (a
  shutdown, unlike a close, reaches a receive that another thread is blocked in). The pool
  then finds the connection closed and never reuses it. A caller on ``http.client`` (the
  JWKS GET, :func:`chalicelib.auth.jwks.fetch_jwks`) hands its connection to the block's
  :meth:`Watch.attach` itself.

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
    """The connections one :func:`deadline` block is using, and whether its deadline has cut them.

    A connection is watched from the moment it sends a request in the block until it goes
    back to its pool (another request, in any thread, may take it from there) or the
    block ends; only then may the deadline cut it.

    Attributes:
        fired: the deadline passed while the block was running; every connection it was
            using was shut down (a request failing now failed because of the deadline).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conns: dict[Any, Any] = {}  # connection -> its socket when it sent (an answer that
        # ends with the connection takes the socket over and the connection forgets it)
        self._closed = False
        self.fired = False

    def attach(self, conn: Any) -> None:
        """Watch ``conn`` (an ``urllib3`` connection); shut it at once if the deadline has passed."""
        with self._lock:
            if self._closed:
                return
            if self.fired:
                _shut(conn.sock)
                return
            self._conns[conn] = conn.sock
            conn._outbound_watch = self

    def detach(self, conn: Any) -> None:
        """Stop watching ``conn`` (it went back to its pool)."""
        with self._lock:
            self._conns.pop(conn, None)
            if getattr(conn, "_outbound_watch", None) is self:
                conn._outbound_watch = None

    def fire(self) -> None:
        """The deadline: shut down every connection in use, and any attached later (not once
        the block has ended)."""
        with self._lock:  # held while shutting: a detach or the block's end waits for it
            if self._closed:
                return
            self.fired = True
            for sock in self._conns.values():
                _shut(sock)

    def close(self) -> None:
        """The block ended: nothing is cut from now on."""
        with self._lock:
            self._closed = True
            for conn in self._conns:
                if getattr(conn, "_outbound_watch", None) is self:
                    conn._outbound_watch = None
            self._conns.clear()


def _shut(sock: Any) -> None:
    """Shut down ``sock``. The base class's ``shutdown`` is called even on an ``SSLSocket``:
    its own drops the TLS object under a reader in another thread, which then fails with
    ``ValueError`` instead of reading an end."""
    if sock is None:
        return
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, TypeError):  # already closed, never connected, or not a socket
        pass


@contextmanager
def deadline(at: float) -> Iterator[Watch]:
    """Hold every request the calling thread sends on a :func:`bounded_session` inside this
    block to ``at`` (``time.monotonic()`` seconds): then the connections still in use are
    shut down, and a receive still waiting fails with a ``requests`` connection error (or,
    inside the status line and headers, reads as an answer the server ended: check
    ``fired``). Blocks nest; the innermost one watches.

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
        watch.close()
        timer.cancel()
        _local.watch = outer


def _attach(conn: Any) -> None:
    watch = getattr(_local, "watch", None)
    if watch is not None:
        watch.attach(conn)


def _detach(conn: Any) -> None:
    watch = getattr(conn, "_outbound_watch", None)
    if watch is not None:
        watch.detach(conn)


_ADAPTER: Any = None


def _adapter_class() -> Any:
    """An ``HTTPAdapter`` whose pool managers (the direct one and any proxy's) make pools of
    watched connections: each connection joins the calling thread's watch when it sends a
    request and leaves it when it goes back to its pool. Built on first use: ``urllib3``
    comes with ``requests``, which the first response does not import."""
    global _ADAPTER
    if _ADAPTER is None:
        import urllib3.connection
        import urllib3.connectionpool
        from requests.adapters import HTTPAdapter

        class WatchedHTTPConnection(urllib3.connection.HTTPConnection):
            def request(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
                try:
                    super().request(*args, **kwargs)
                finally:  # urllib3 reads an answer even after a send it could not finish
                    _attach(self)

        class WatchedHTTPSConnection(urllib3.connection.HTTPSConnection):
            def request(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
                try:
                    super().request(*args, **kwargs)
                finally:
                    _attach(self)

        class WatchedHTTPPool(urllib3.connectionpool.HTTPConnectionPool):
            ConnectionCls = WatchedHTTPConnection

            def _put_conn(self, conn: Any) -> None:
                _detach(conn)
                super()._put_conn(conn)

        class WatchedHTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
            ConnectionCls = WatchedHTTPSConnection

            def _put_conn(self, conn: Any) -> None:
                _detach(conn)
                super()._put_conn(conn)

        pools = {"http": WatchedHTTPPool, "https": WatchedHTTPSPool}

        class WatchedAdapter(HTTPAdapter):
            def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
                super().init_poolmanager(*args, **kwargs)
                self.poolmanager.pool_classes_by_scheme = dict(pools)

            def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
                manager = super().proxy_manager_for(proxy, **kwargs)
                if not proxy.lower().startswith("socks"):  # a SOCKS manager has pool classes of its own
                    manager.pool_classes_by_scheme = dict(pools)
                return manager

        _ADAPTER = WatchedAdapter
    return _ADAPTER


def bounded_session(pool_maxsize: int, user_agent: str) -> requests.Session:
    """A ``requests.Session`` whose requests a :func:`deadline` block can cut: no retries,
    ``pool_maxsize`` connections per host, the ``User-Agent`` header ``user_agent``.

    Args:
        pool_maxsize: connections kept per host (the threads that may call at once).
        user_agent: the header's value (Together's CDN refuses a blank one).
    """
    import requests

    session = requests.Session()
    adapter = _adapter_class()(pool_connections=2, pool_maxsize=pool_maxsize, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = user_agent
    return session
