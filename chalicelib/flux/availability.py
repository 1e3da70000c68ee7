"""Which catalog models the upstream still offers: the hourly check and its shared result.

One concern: keep the catalog honest between catalog updates. The scheduled handler
(:func:`check_upstream`) asks Together's own ``GET /v1/models`` (entries whose
``type`` is ``"image"``; Together's models API reference) through the key pool, and
stores in DynamoDB (:class:`~chalicelib.db.CatalogStatusModel`, one item shared by
every Lambda instance) which catalog models it no longer lists. Requests for those
models are refused with 400 ``model-unavailable`` (:func:`require_available`) instead
of failing upstream. Each process reads the shared item at most every
``MODEL_AVAILABILITY_REFRESH_SECONDS``.

Safety rules (an odd upstream answer never takes models away):

* the call has a wall-clock deadline (:data:`CHECK_DEADLINE_S`) and a size cap
  (:data:`MAX_ANSWER_BYTES`); a timeout, an error status, a body that is not a JSON
  list of models, a list without image models, or a list that would take *every*
  catalog model away is a failed check: the previous result stays and the error is
  recorded for the admin page;
* checks run at most once per :data:`MIN_CHECK_INTERVAL_S` whatever invokes them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # requests is imported where a call is made
    import requests

from chalicelib.flux.catalog import ModelRetiredError, catalog, default_model
from chalicelib.settings import get_settings
from chalicelib.timefmt import iso8601

logger = logging.getLogger(__name__)

STATUS_ITEM = "upstream"
CHECK_DEADLINE_S = 10.0  # seconds for the whole GET /v1/models, body included
MAX_ANSWER_BYTES = 4 * 1024 * 1024  # bytes; Together's full model list is a few hundred KiB
MIN_CHECK_INTERVAL_S = 55 * 60  # seconds; the schedule is hourly, with slack for jitter
MAX_KEYS_TRIED = 2  # keys tried per check (the next one after a 429 / 5xx / timeout)


class CheckFailed(Exception):
    """The upstream's model list could not be used (message is safe to store and show)."""


@dataclass(frozen=True)
class Snapshot:
    """The shared check result as this process last read it.

    Attributes:
        unavailable: catalog model ids the upstream no longer lists.
        upstream_models: image model ids the upstream listed (sorted).
        checked_at: epoch seconds of the last successful check (0: never).
        attempted_at: epoch seconds of the last attempt (0: never).
        error: why the last attempt failed, or None.
    """

    unavailable: frozenset[str] = frozenset()
    upstream_models: tuple[str, ...] = ()
    checked_at: float = 0.0
    attempted_at: float = 0.0
    error: str | None = None


_lock = threading.Lock()
_snapshot = Snapshot()
_read_at = float("-inf")  # time.monotonic() of the last DynamoDB read


def _read() -> Snapshot:
    from chalicelib.db import CatalogStatusModel

    try:
        item = CatalogStatusModel.get(STATUS_ITEM)
    except CatalogStatusModel.DoesNotExist:
        return Snapshot()
    return Snapshot(
        unavailable=frozenset(item.unavailable or ()),
        upstream_models=tuple(item.upstream_models or ()),
        checked_at=float(item.checked_at or 0),
        attempted_at=float(item.attempted_at or 0),
        error=item.error,
    )


def snapshot(force: bool = False) -> Snapshot:
    """The shared check result, re-read from DynamoDB when older than the refresh interval.

    A failed read keeps the last snapshot (at first: every model available) and is logged.
    """
    global _snapshot, _read_at
    now = time.monotonic()
    if not force and now - _read_at < get_settings().model_availability_refresh_seconds:
        return _snapshot
    try:
        fresh = _read()
    except Exception:  # noqa: BLE001 - availability must not take generation down
        logger.warning("could not read the catalog status; keeping the last snapshot")
        fresh = _snapshot
    with _lock:
        _snapshot, _read_at = fresh, now
    return fresh


def reset() -> None:
    """Forget the process snapshot (tests)."""
    global _snapshot, _read_at
    with _lock:
        _snapshot, _read_at = Snapshot(), float("-inf")


def unavailable_models() -> frozenset[str]:
    """Ids of catalog models the upstream no longer lists (see :func:`snapshot`)."""
    return snapshot().unavailable


def require_available(model_id: str) -> None:
    """Refuse a model the upstream no longer lists.

    Raises:
        ModelRetiredError: 400 ``model-unavailable`` (field ``model``), naming the default
            model as the replacement when that one is available.
    """
    missing = unavailable_models()
    if model_id not in missing:
        return
    fallback = default_model().id
    raise ModelRetiredError(
        model_id,
        fallback if fallback not in missing and fallback != model_id else None,
        code="model-unavailable",
        why="is not offered by the upstream at the moment",
    )


def _fetch(session: requests.Session, url: str, key: str, deadline: float) -> list[Any]:
    """GET the upstream's model list within ``deadline`` (monotonic) and :data:`MAX_ANSWER_BYTES`.

    Raises:
        CheckFailed: timeout, error status, oversize or non-JSON body. A 429 carries
            ``retry_after`` (seconds or None) as its second argument.
    """
    left = deadline - time.monotonic()
    if left <= 0.1:
        raise CheckFailed("deadline exhausted")
    import requests  # on first use: the first response needs no HTTP client but boto3's

    from chalicelib import outbound
    from chalicelib.flux.client import BodyLimitExceeded, read_bounded

    try:
        with (
            outbound.deadline(deadline) as watch,
            session.get(
                url, headers={"Authorization": f"Bearer {key}"}, timeout=(min(3.05, left), left), stream=True
            ) as resp,
        ):
            if resp.status_code != 200:
                raise CheckFailed(f"upstream answered {resp.status_code}", resp.headers.get("Retry-After"))
            try:
                raw = read_bounded(resp, MAX_ANSWER_BYTES, deadline)
            except BodyLimitExceeded as exc:
                if exc.which == "size":
                    raise CheckFailed(f"model list exceeds {MAX_ANSWER_BYTES} bytes") from None
                raise CheckFailed(f"model list took over {CHECK_DEADLINE_S:g} s") from None
            if watch.fired:  # cut in the headers: the answer read as one the server ended
                raise CheckFailed(f"model list took over {CHECK_DEADLINE_S:g} s")
    except requests.RequestException as exc:
        raise CheckFailed(f"model list request failed ({type(exc).__name__})") from None
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        raise CheckFailed("model list is not JSON") from None
    if isinstance(body, dict) and isinstance(body.get("data"), list):
        body = body["data"]
    if not isinstance(body, list):
        raise CheckFailed("model list is not a JSON list")
    return body


def upstream_image_models(client: Any = None) -> set[str]:
    """Image model ids from the upstream's ``GET /v1/models``, through the key pool.

    Args:
        client: a :class:`~chalicelib.flux.client.FluxClient` (default: the process-wide one);
            its session, base URL and key pool are used.

    Raises:
        CheckFailed: no usable key, or no usable answer from up to :data:`MAX_KEYS_TRIED` keys.
    """
    from chalicelib.flux.client import get_flux_client, normalize_base_url
    from chalicelib.flux.exceptions import FluxError

    client = client or get_flux_client()
    url = normalize_base_url(client.settings.together_base_url) + "/models"
    deadline = time.monotonic() + CHECK_DEADLINE_S
    last = "no attempt"
    for _ in range(MAX_KEYS_TRIED):
        try:
            lease = client.pool.acquire()
        except FluxError as exc:
            raise CheckFailed(f"no usable key: {exc.code}") from None
        try:
            entries = _fetch(client.session, url, lease.key, deadline)
        except CheckFailed as exc:
            last = client.pool.redact(str(exc.args[0]))
            if last.startswith("upstream answered 429"):
                from chalicelib.flux.client import parse_retry_after

                retry = exc.args[1] if len(exc.args) > 1 else None
                client.pool.report_rate_limited(lease.key_id, parse_retry_after(retry))
            continue
        return {
            str(e["id"])
            for e in entries
            if isinstance(e, dict) and e.get("type") == "image" and isinstance(e.get("id"), str)
        }
    raise CheckFailed(last)


def _save(**fields: Any) -> None:
    from chalicelib.db import CatalogStatusModel

    CatalogStatusModel(STATUS_ITEM, **fields).save()


def check_upstream(*, client: Any = None, force: bool = False) -> dict[str, Any]:
    """The scheduled check: compare the catalog with the upstream's list and share the result.

    Args:
        client: the Flux client to call through (default: the process-wide one).
        force: run even if the last attempt was less than :data:`MIN_CHECK_INTERVAL_S` ago.

    Returns:
        A report: ``{"skipped": bool, "ok": bool, "unavailable": [ids], "upstream_models": n,
        "error": str | None}``.
    """
    previous = snapshot(force=True)
    now = time.time()
    if not force and now - previous.attempted_at < MIN_CHECK_INTERVAL_S:
        return {"skipped": True, "ok": True, "unavailable": sorted(previous.unavailable), "error": None}
    current = [m.id for m in catalog().current]
    try:
        listed = upstream_image_models(client)
        if not listed:
            raise CheckFailed("the upstream listed no image models")
        missing = [m for m in current if m not in listed]
        if len(missing) == len(current):
            raise CheckFailed("the upstream listed none of the catalog's models")
    except CheckFailed as exc:
        error = str(exc.args[0])[:300]
        logger.warning("catalog check failed: %s", error)
        _save(
            unavailable=sorted(previous.unavailable),
            upstream_models=list(previous.upstream_models),
            checked_at=previous.checked_at,
            attempted_at=now,
            error=error,
        )
        snapshot(force=True)
        return {"skipped": False, "ok": False, "unavailable": sorted(previous.unavailable), "error": error}
    _save(unavailable=missing, upstream_models=sorted(listed), checked_at=now, attempted_at=now, error=None)
    if missing:
        logger.warning("catalog models the upstream no longer lists: %s", ", ".join(missing))
    snapshot(force=True)
    return {"skipped": False, "ok": True, "unavailable": missing, "upstream_models": len(listed), "error": None}


def status_json() -> dict[str, Any]:
    """``GET /v1/admin/models``: the catalog against the upstream's list.

    Returns:
        ``{"checked_at", "attempted_at" (ISO 8601 or None), "error", "catalog_checked",
        "models": [{"id", "name", "in_catalog", "retired", "listed_upstream", "available"}],
        "upstream_only": [ids listed upstream but not in the catalog]}``.
    """
    snap = snapshot(force=True)
    listed = set(snap.upstream_models)
    known = snap.checked_at > 0
    cat = catalog()
    rows = [
        {
            "id": m.id,
            "name": m.name,
            "retired": m.retired,
            "replacement": m.replacement,
            "listed_upstream": (m.id in listed) if known else None,
            "available": not m.retired and m.id not in snap.unavailable,
            "price_per_mp": None if m.retired else m.price_per_mp,
        }
        for m in cat.models
    ]
    ids = {m.id for m in cat.models}

    def iso(ts: float) -> str | None:
        return iso8601(ts) if ts else None

    return {
        "catalog_checked": cat.checked,
        "checked_at": iso(snap.checked_at),
        "attempted_at": iso(snap.attempted_at),
        "error": snap.error,
        "models": rows,
        "upstream_only": sorted(listed - ids),
    }
