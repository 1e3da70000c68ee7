"""Clerk's signing keys from its JWKS URL, cached across warm Lambda invocations.

Clerk publishes its instance's public keys at ``{Frontend API URL}/.well-known/jwks.json`` (Clerk docs,
"Manual JWT verification", step "Get your instance's public key":
https://clerk.com/docs/guides/sessions/manual-jwt-verification). Clerk's SDKs fetch that set and cache
it per ``kid`` (clerk-sdk-python ``security/verifytoken.py`` ``_get_remote_jwt_key``; Clerk JS
``verifyToken`` ``jwksCacheTtlInMs``, default 5 minutes). This module does the same, with rules the
SDKs do not have:

- **TTL**: a fetched set is fresh for ``cache_seconds`` (``JWKS_CACHE_SECONDS``, default 300 s).
- **Rate limit**: at most one fetch per ``min_refetch_interval_seconds`` (default 10 s), counting
  failed attempts too. A token with a made-up ``kid`` therefore cannot make every request fetch
  (the Python SDK fetches on every cache miss; ``PyJWKClient`` rate-limits only after a *successful*
  fetch, so a down endpoint is hit on every request).
- **Stale on error**: when a refresh fails (or is rate-limited) the keys already held keep verifying,
  past their TTL. ``PyJWKClient``'s ``JWKSetCache`` drops the whole set at expiry, so one failed
  refresh after 5 minutes would reject every token. A *successful* refresh replaces the set, so a key
  Clerk stops publishing stops verifying.
- **A wall-clock deadline and a size cap**: a fetch ends within ``fetch_timeout_seconds``
  (``JWKS_FETCH_TIMEOUT_SECONDS``, default 3 s) whatever the server does, and reads at most
  :data:`MAX_JWKS_BYTES`; no retries (the SDK retries up to 10 times, longer than API Gateway's 29 s).
- **Explicit User-Agent**: see :data:`FETCH_HEADERS`.
- **Only RS256 signing keys**: RSA, ``use`` ``sig`` or absent, ``alg`` ``RS256`` or absent, at least
  2048 bits, with a ``kid``; anything else in the set is ignored.

PyJWT's ``PyJWKSet`` parses the set (it skips unusable keys). The GET is :func:`fetch_jwks`, not
``PyJWKClient.fetch_data``: that one reads the whole body (``json.load``) with only a per-read socket
timeout, so a server that drip-feeds bytes or sends megabytes would hold the verification lock, and
every request of the instance behind it, for as long as it liked. ``fetch_jwks`` keeps its rules
(http/https only, no redirects, explicit headers) and adds the deadline and the cap.

Errors raised are :class:`~chalicelib.auth.exceptions.AuthError` (401): ``token-unknown-kid`` when the
key id is not in a successfully fetched set, ``jwks-unavailable`` when no set could be loaded.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from jwt import PyJWKSet

from chalicelib import outbound
from chalicelib.auth.exceptions import JWKS_UNAVAILABLE, TOKEN_UNKNOWN_KID, AuthError

log = logging.getLogger(__name__)

DEFAULT_MIN_REFETCH_INTERVAL_SECONDS = 10.0
MIN_RSA_KEY_BITS = 2048
MAX_KEYS = 50  # a JWKS is a handful of keys; more is not Clerk's
# urllib's default "Python-urllib/3.x" User-Agent is blocked by some WAFs/CDNs in front of JWKS
# endpoints (jpadilla/pyjwt issue #1121), so PyJWKClient gets explicit headers.
FETCH_HEADERS = {"User-Agent": "promptcanvas-api/1 (jwks)", "Accept": "application/json"}


class JwksFetchError(Exception):
    """The JWKS could not be fetched or held no usable key (internal; callers get AuthError)."""


#: The most bytes a JWK Set may have. Clerk's holds one or two RSA keys, under 1 KiB each.
MAX_JWKS_BYTES = 64 * 1024
_READ_CHUNK = 8 * 1024
_TLS: ssl.SSLContext | None = None  # one per process: loading the CA store costs about 50 ms of CPU


def _tls_context() -> ssl.SSLContext:
    """The process-wide client TLS context (system trust store, host-name checks)."""
    global _TLS
    if _TLS is None:
        _TLS = ssl.create_default_context()
    return _TLS


def _left(deadline: float) -> float:
    """Seconds until ``deadline`` (``time.monotonic()``).

    Raises:
        JwksFetchError: it has passed.
    """
    left = deadline - time.monotonic()
    if left <= 0:
        raise JwksFetchError("fetch failed: deadline")
    return left


def fetch_jwks(url: str, timeout_seconds: float) -> dict[str, Any]:
    """GET the JWK Set at ``url``: http/https only, no redirects, headers :data:`FETCH_HEADERS`.

    The whole exchange ends within ``timeout_seconds`` of wall-clock time. The TCP connect
    and the TLS handshake get the time left as their timeouts (CPython applies a socket
    timeout to a whole ``connect`` and ``do_handshake`` call); then the connection is held
    to the deadline by :func:`chalicelib.outbound.deadline`, which shuts its socket down when
    the deadline passes and so wakes a receive that a drip-feeding server keeps alive. At
    most :data:`MAX_JWKS_BYTES` of body are read.

    Args:
        url: the JWKS URL.
        timeout_seconds: the deadline of the whole fetch, in seconds.

    Returns:
        The JSON object.

    Raises:
        JwksFetchError: a URL that is not http(s), a network or TLS error, the deadline, a
            status other than 200 (a redirect too), a body over the cap, or one that is not
            a JSON object.
    """
    deadline = time.monotonic() + timeout_seconds
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # an unclosed IPv6 bracket, a port that is not a number
        raise JwksFetchError("the JWKS URL is not http(s)") from None
    if parts.scheme not in ("http", "https") or not host:
        raise JwksFetchError("the JWKS URL is not http(s)")
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    sock: socket.socket | None = None
    conn: http.client.HTTPConnection | None = None
    with outbound.deadline(deadline) as watch:
        try:
            sock = socket.create_connection((host, port), timeout=_left(deadline))
            if parts.scheme == "https":
                sock.settimeout(_left(deadline))
                sock = _tls_context().wrap_socket(sock, server_hostname=host)
                # its context goes unused (the socket is wrapped), but one is made if none is given
                conn = http.client.HTTPSConnection(host, port, context=_tls_context())
            else:
                conn = http.client.HTTPConnection(host, port)
            conn.sock = sock  # connected above, within the deadline
            watch.attach(conn)  # shut at once if the deadline has already passed
            conn.request("GET", target, headers=FETCH_HEADERS)
            response = conn.getresponse()
            if response.status != 200:
                raise JwksFetchError(f"fetch failed: HTTP {response.status}")
            body = bytearray()
            while chunk := response.read1(_READ_CHUNK):
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise JwksFetchError(f"the JWKS is over {MAX_JWKS_BYTES} bytes")
                _left(deadline)
        except (OSError, http.client.HTTPException, UnicodeError) as exc:  # UnicodeError: a host IDNA refuses
            late = time.monotonic() > deadline
            raise JwksFetchError("fetch failed: deadline" if late else f"fetch failed: {type(exc).__name__}") from exc
        finally:
            if conn is not None:
                conn.close()  # the socket and the response
            elif sock is not None:
                sock.close()
    _left(deadline)  # a cut in the headers or a body without a length reads as the server's end
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser goes
        raise JwksFetchError("the JWKS is not JSON") from exc
    if not isinstance(data, dict):
        raise JwksFetchError("JWKS is not a JSON object")
    return data


def parse_signing_keys(data: dict[str, Any]) -> dict[str, RSAPublicKey]:
    """The RS256 signing keys of a JWK Set, by ``kid``.

    Raises:
        JwksFetchError: the set holds no usable RS256 signing key.
    """
    try:
        jwk_set = PyJWKSet.from_dict(data)
    except Exception as exc:  # PyJWKSetError
        raise JwksFetchError(f"unusable JWKS: {type(exc).__name__}") from exc
    keys: dict[str, RSAPublicKey] = {}
    for jwk in jwk_set.keys:
        if not jwk.key_id or not isinstance(jwk.key_id, str):
            continue
        if jwk.key_type != "RSA" or jwk.public_key_use not in ("sig", None) or jwk.algorithm_name != "RS256":
            continue
        key = jwk.key
        if isinstance(key, RSAPrivateKey):  # a JWKS should never carry "d"; use only the public half
            key = key.public_key()
        if not isinstance(key, RSAPublicKey) or key.key_size < MIN_RSA_KEY_BITS:
            continue
        keys.setdefault(jwk.key_id, key)
        if len(keys) >= MAX_KEYS:
            break
    if not keys:
        raise JwksFetchError("JWKS holds no RS256 signing key")
    return keys


class JwksKeySource:
    """The signing keys published at one JWKS URL, cached and rate-limited (thread-safe).

    Args:
        url: the JWKS URL (``Settings.jwks_url``).
        cache_seconds: how long a fetched set is fresh, in seconds.
        fetch_timeout_seconds: timeout of one fetch, in seconds.
        min_refetch_interval_seconds: minimum seconds between two fetch attempts (successful or not).
        clock: monotonic clock in seconds (tests pass a fake one).
        fetcher: ``(url, timeout_seconds) -> JWKS dict``; default :func:`fetch_jwks`.

    Attributes:
        fetch_attempts: fetches tried so far (observability and tests).
    """

    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float = 300.0,
        fetch_timeout_seconds: float = 3.0,
        min_refetch_interval_seconds: float = DEFAULT_MIN_REFETCH_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        fetcher: Callable[[str, float], dict[str, Any]] = fetch_jwks,
    ) -> None:
        self.url = url
        self.cache_seconds = cache_seconds
        self.fetch_timeout_seconds = fetch_timeout_seconds
        self.min_refetch_interval_seconds = min_refetch_interval_seconds
        self._clock = clock
        self._fetcher = fetcher
        self._lock = threading.Lock()
        self._keys: dict[str, RSAPublicKey] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch attempt, successful or not
        self.fetch_attempts = 0

    @property
    def kids(self) -> tuple[str, ...]:
        """The key ids held now (fresh or stale)."""
        with self._lock:
            return tuple(self._keys)

    def get_key(self, kid: str) -> RSAPublicKey:
        """The public key for ``kid``, fetching the set when needed and allowed.

        A fresh cached key is returned without a fetch. Otherwise (unknown ``kid`` or a stale set) the
        set is refetched unless a fetch was attempted less than ``min_refetch_interval_seconds`` ago;
        a stale key is still returned when that refetch fails or is not allowed.

        Raises:
            AuthError: ``token-unknown-kid`` (the set was loaded and has no such key) or
                ``jwks-unavailable`` (no set could be loaded, or the refetch for this ``kid`` failed).
        """
        with self._lock:
            now = self._clock()
            key = self._keys.get(kid)
            fresh = self._fetched_at is not None and now - self._fetched_at < self.cache_seconds
            if key is not None and fresh:
                return key
            if self._may_fetch(now):
                failed = not self._refresh(now)
                key = self._keys.get(kid)
                if key is not None:
                    return key
                raise AuthError(JWKS_UNAVAILABLE if failed else TOKEN_UNKNOWN_KID)
            if key is not None:  # stale, and a fetch was just tried: keep using it
                return key
            raise AuthError(TOKEN_UNKNOWN_KID if self._fetched_at is not None else JWKS_UNAVAILABLE)

    def _may_fetch(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.min_refetch_interval_seconds

    def _refresh(self, now: float) -> bool:
        """Fetch and replace the set; on failure keep the old one. True on success (lock held)."""
        self._attempted_at = now
        self.fetch_attempts += 1
        try:
            keys = parse_signing_keys(self._fetcher(self.url, self.fetch_timeout_seconds))
        except JwksFetchError as exc:
            log.warning("JWKS refresh failed (%s); keeping %d cached key(s)", exc, len(self._keys))
            return False
        self._keys = keys
        self._fetched_at = self._clock()
        return True


_SOURCES: dict[str, JwksKeySource] = {}
_SOURCES_LOCK = threading.Lock()


def key_source_for(
    url: str,
    *,
    cache_seconds: float,
    fetch_timeout_seconds: float,
    min_refetch_interval_seconds: float = DEFAULT_MIN_REFETCH_INTERVAL_SECONDS,
) -> JwksKeySource:
    """The process-wide :class:`JwksKeySource` for ``url`` (one per URL; a warm Lambda keeps it).

    A later call with other timings updates them on the existing source and keeps its keys.
    """
    with _SOURCES_LOCK:
        source = _SOURCES.get(url)
        if source is None:
            source = _SOURCES[url] = JwksKeySource(
                url,
                cache_seconds=cache_seconds,
                fetch_timeout_seconds=fetch_timeout_seconds,
                min_refetch_interval_seconds=min_refetch_interval_seconds,
            )
        else:
            source.cache_seconds = cache_seconds
            source.fetch_timeout_seconds = fetch_timeout_seconds
            source.min_refetch_interval_seconds = min_refetch_interval_seconds
        return source


def reset_key_sources() -> None:
    """Forget every cached JWKS (tests)."""
    with _SOURCES_LOCK:
        _SOURCES.clear()
