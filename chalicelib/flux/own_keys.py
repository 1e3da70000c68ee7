"""Users' own Together keys ("bring your own key"): verification and per-user key pools.

One concern: talk to the upstream with a key a user brought, without touching the shared
key pool.

* :func:`verify_key` asks ``GET {base}/models`` with the key (Together's cheapest
  authenticated call): at most :data:`VERIFY_DEADLINE_S` of wall clock for the whole
  exchange and at most :data:`MAX_ANSWER_BYTES` of the answer read. 2xx: the key works;
  401/403: refused (Together's answer for an invalid or revoked key); anything else
  (timeout, 5xx, 429, an oversize answer): not verified either way.
* :func:`own_pool` is a :class:`~chalicelib.flux.keypool.KeyPool` of that one key whose
  ids carry the prefix ``"own#{user_id}#"``: its health (cooldowns, ``disabled`` after a
  confirmed 401/403, ``out_of_credits`` after a 402), its pacing and its counters live in
  key-health rows of its own. The shared pool's rows are never read or written for it,
  and a user's pool has no other key, so nothing falls back to the shared keys.
* :func:`own_client` is a :class:`~chalicelib.flux.client.FluxClient` over that pool
  (sharing the process-wide client's HTTP connections).

Sources: Together error codes, https://docs.together.ai/docs/error-codes (401 invalid
key, 402 out of credits); Together models API, ``GET /v1/models``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import requests

from chalicelib import outbound
from chalicelib.flux.client import (
    CONNECT_TIMEOUT_S,
    BodyLimitExceeded,
    FluxClient,
    get_flux_client,
    normalize_base_url,
    read_bounded,
)
from chalicelib.flux.keypool import TERMINAL_STATES, KeyPool, key_id
from chalicelib.settings import get_settings

VERIFY_DEADLINE_S = 5.0  # seconds for the whole GET /v1/models of a verification
MAX_ANSWER_BYTES = 4 * 1024 * 1024  # bytes of the model list read at most
MAX_CACHED_POOLS = 256  # per-user pools kept in one process (least recently used dropped)
OWN_PREFIX = "own#"


class KeyRefused(Exception):
    """The upstream refused the key (401/403). ``status``: its HTTP status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the upstream refused the key ({status})")
        self.status = status


class KeyUnverified(Exception):
    """The key could be neither confirmed nor refused (timeout, connection error, 429,
    5xx, an oversize answer). The message names the cause, never the key."""


def row_prefix(user_id: str) -> str:
    """The id prefix of ``user_id``'s own key in the key-health table: ``"own#{user_id}#"``."""
    return f"{OWN_PREFIX}{user_id}#"


def public_key_id(pool_key_id: str) -> str:
    """The 12-hex-digit :func:`~chalicelib.flux.keypool.key_id` part of a pool's key id
    (``"own#user_1#0a1b2c3d4e5f"`` → ``"0a1b2c3d4e5f"``; a shared id is returned as is)."""
    return pool_key_id.rsplit("#", 1)[-1]


def is_own(pool_key_id: str | None) -> bool:
    """Whether a recorded key id is a user's own key (:func:`row_prefix`)."""
    return bool(pool_key_id) and str(pool_key_id).startswith(OWN_PREFIX)


def verify_key(key: str, *, session: requests.Session | None = None) -> None:
    """Check ``key`` against the upstream with ``GET {TOGETHER_BASE_URL}/models``.

    Wall clock: :data:`VERIFY_DEADLINE_S` for connect, answer and body together; at most
    :data:`MAX_ANSWER_BYTES` are read (the list itself is not needed: the status says it).

    Raises:
        KeyRefused: 401 or 403.
        KeyUnverified: any other status, a timeout, a connection error, an oversize answer.
    """
    url = normalize_base_url(get_settings().together_base_url) + "/models"
    http = session or get_flux_client().session
    deadline = time.monotonic() + VERIFY_DEADLINE_S
    try:
        with (
            outbound.deadline(deadline) as watch,
            http.get(
                url,
                headers={"Authorization": f"Bearer {key}"},
                timeout=(CONNECT_TIMEOUT_S, VERIFY_DEADLINE_S),
                stream=True,
                allow_redirects=False,
            ) as resp,
        ):
            status = resp.status_code
            if status in (401, 403):
                raise KeyRefused(status)
            if not 200 <= status < 300:
                raise KeyUnverified(f"the upstream answered {status}")
            try:
                read_bounded(resp, MAX_ANSWER_BYTES, deadline)
            except BodyLimitExceeded as exc:
                limit = f"{MAX_ANSWER_BYTES} bytes" if exc.which == "size" else f"{VERIFY_DEADLINE_S:g} s"
                raise KeyUnverified(f"the upstream's answer exceeded {limit}") from None
            if watch.fired:  # cut in the headers: the answer read as one the server ended
                raise KeyUnverified(f"the upstream's answer exceeded {VERIFY_DEADLINE_S:g} s")
    except requests.RequestException as exc:
        raise KeyUnverified(f"the upstream could not be reached ({type(exc).__name__})") from None


@dataclass(frozen=True)
class OwnKeyHealth:
    """How a user's own key stands in its pool.

    Attributes:
        state: ``healthy`` | ``cooling`` | ``disabled`` | ``out_of_credits``.
        usable: a send may go now (healthy, no cooldown running).
        reason: why it is out (``"401: ..."``, ``"402: ..."``; redacted), or None.
    """

    state: str
    usable: bool
    reason: str | None

    @property
    def terminal(self) -> bool:
        """Refused or out of credits: stays out until the user saves a key again."""
        return self.state in TERMINAL_STATES


_pools: OrderedDict[tuple[str, str], KeyPool] = OrderedDict()
_pools_lock = threading.Lock()


def own_pool(user_id: str, key: str) -> KeyPool:
    """The key pool of ``user_id``'s own ``key`` (one key, ids under :func:`row_prefix`),
    cached per process (at most :data:`MAX_CACHED_POOLS`, least recently used dropped)."""
    cache_key = (user_id, key_id(key))
    with _pools_lock:
        pool = _pools.get(cache_key)
        if pool is not None:
            _pools.move_to_end(cache_key)
            return pool
    pool = KeyPool(get_settings(), keys=[key], id_prefix=row_prefix(user_id))
    with _pools_lock:
        pool = _pools.setdefault(cache_key, pool)
        _pools.move_to_end(cache_key)
        while len(_pools) > MAX_CACHED_POOLS:
            _pools.popitem(last=False)
    return pool


def own_client(user_id: str, key: str) -> FluxClient:
    """A Flux client that uses only ``user_id``'s own ``key`` (:func:`own_pool`)."""
    return FluxClient(get_settings(), pool=own_pool(user_id, key), session=get_flux_client().session)


def health(user_id: str, key: str) -> OwnKeyHealth:
    """The own key's health as its pool sees it (re-read from DynamoDB when stale)."""
    report = own_pool(user_id, key).health_report()[0]
    return OwnKeyHealth(state=report["state"], usable=bool(report["usable"]), reason=report["reason"])


def reset(user_id: str, key: str) -> None:
    """Make the own key healthy again (it was just verified): clears a ``disabled`` or
    ``out_of_credits`` state and any cooldown, in its own row only."""
    pool = own_pool(user_id, key)
    pool.refresh(force=True)
    pool.reset_key(pool.key_ids[0])


def reset_pools() -> None:
    """Forget every cached per-user pool (tests)."""
    with _pools_lock:
        _pools.clear()
