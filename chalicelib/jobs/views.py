"""The jobs API's reads: JSON shapes, the ETA and the list/get routes' services.

Times are ISO 8601 UTC (:func:`chalicelib.timefmt.iso8601`). A job that is not the
caller's is a 404, like one that does not exist.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from chalicelib.db import ImageModel, JobItemModel, JobModel, VideoModel
from chalicelib.db.jobs import FAILED, ITEM_STATES, JOB_STATUSES, QUEUED, RUNNING, SUCCEEDED
from chalicelib.errors import NotFound, ValidationError
from chalicelib.jobs import state
from chalicelib.services import image_inputs
from chalicelib.services.images import ULID_RE, parse_collection
from chalicelib.services.pagination import ITEM_ID_PATTERN, decode_cursor, encode_cursor, parse_limit
from chalicelib.storage import objects
from chalicelib.timefmt import iso8601

MAX_LIST_QUERIES = 10  # Query calls per filtered list page (bounds read cost)


def eta_seconds(job: JobModel, now: float | None = None) -> int | None:
    """Seconds until the job ends at the throughput observed since it (re)started:
    ``remaining / ((done - progress_base) / elapsed)``; None until something finished."""
    c = state.counts(job)
    remaining = c[QUEUED] + c[RUNNING]
    if remaining == 0:
        return 0 if job.finished_at is not None else None
    since = job.progress_since or job.started_at
    if since is None or job.cancelled:
        return None
    done = c[SUCCEEDED] + c[FAILED] - int(job.progress_base or 0)
    elapsed = (state.now_s() if now is None else now) - float(since)
    if done <= 0 or elapsed <= 0:
        return None
    return int(round(remaining * elapsed / done))


def job_json(job: JobModel) -> dict[str, Any]:
    """The API shape of a job.

    ``counts`` by state, ``progress`` 0..1 (finished items / total), ``eta_seconds``
    (None while unknown), ``errors_by_reason`` ``{reason: n}`` (non-zero only), times as
    ISO 8601 UTC, ``webhook`` (None without a URL), ``key_source`` (``shared`` | ``own``),
    ``estimated_usd`` (the estimate at submission; None for jobs from before estimates),
    ``actual_usd`` (what its stored images cost so far), ``paused`` (``{code, reason,
    since}`` while its own key stops it, else None), ``kind`` (``image`` | ``video``).
    """
    c = state.counts(job)
    total = int(job.total or 0)
    reasons = job.failure_reasons.as_dict() if job.failure_reasons else {}
    webhook = None
    if job.webhook_url:
        webhook = {
            "url": job.webhook_url,
            "state": job.webhook_state,
            "attempts": int(job.webhook_attempts or 0),
            "next_attempt_at": iso8601(job.webhook_next_at) if job.webhook_state == "pending" else None,
            "last_error": job.webhook_last_error,
            "delivered_at": iso8601(job.webhook_delivered_at),
        }
    return {
        "job_id": job.job_id,
        "name": job.name,
        "status": state.derive_status(job),
        "collection": job.collection,
        "kind": job.kind or "image",
        "source": job.source,
        "total": total,
        "counts": c,
        "progress": round((c[SUCCEEDED] + c[FAILED]) / total, 4) if total else 1.0,
        "eta_seconds": eta_seconds(job),
        "params": dict(job.params or {}),
        "errors_by_reason": {k: int(v) for k, v in sorted(reasons.items()) if v},
        "created_at": iso8601(job.created_at),
        "started_at": iso8601(job.started_at),
        "finished_at": iso8601(job.finished_at),
        "cancelled_at": iso8601(job.cancelled_at) if job.cancelled else None,
        "webhook": webhook,
        "key_source": job.key_source or "shared",
        "estimated_usd": round(float(job.estimated_usd), 6) if job.estimated_usd is not None else None,
        "actual_usd": round(float(job.actual_usd or 0), 6),
        "paused": (
            {"code": job.paused_code, "reason": job.paused_reason, "since": iso8601(job.paused_at)}
            if job.paused_code and state.derive_status(job) == "paused"
            else None
        ),
    }


def image_ref(image: ImageModel) -> dict[str, Any]:
    """``{id, url, thumbnail_url, seed}`` of an item's stored image (fresh presigned URLs)."""
    return {
        "id": image.image_id,
        "url": objects.presign_get(image.s3_key),
        "thumbnail_url": objects.presign_get(image.thumb_key),
        "seed": int(image.seed),
    }


def video_ref(video: VideoModel) -> dict[str, Any]:
    """``{id, status, url, poster_url, cost_usd}`` of a video item's video (fresh presigned
    URLs once it is stored; ``url`` None while it renders)."""
    stored = video.status == "completed" and video.s3_key
    return {
        "id": video.video_id,
        "status": video.status,
        "url": objects.presign_get(video.s3_key) if stored else None,
        "poster_url": objects.presign_get(video.poster_key) if video.poster_key else None,
        "cost_usd": float(video.cost_usd) if video.cost_usd is not None else None,
    }


def item_json(item: JobItemModel, image: ImageModel | None, video: VideoModel | None = None) -> dict[str, Any]:
    """The API shape of an item: prompt, status, attempts, error ``{code, message}``, image and
    ``inputs`` (its input ids: ``{"image": {"id", "source"} | None, "references": [...],
    "mask": None}``, or None for a text-to-image item); ``video`` (:func:`video_ref`, once
    started) for an item of a video job, else None."""
    error = None
    if item.status == FAILED and item.error_code:
        error = {"code": item.error_code, "message": item.error_message or item.error_code}
    return {
        "item_id": item.item_id,
        "index": int(item.index),
        "prompt": item.prompt,
        "seed": int(item.seed),
        "status": item.status,
        "attempts": int(item.attempts or 0),
        "error": error,
        "image": image_ref(image) if image is not None and item.status == SUCCEEDED else None,
        "video": video_ref(video) if video is not None else None,
        "inputs": image_inputs.inputs_json(item.inputs),
        "started_at": iso8601(item.started_at),
        "finished_at": iso8601(item.finished_at),
    }


# --- reads -----------------------------------------------------------------------------------


def get_owned_job(user_id: str, job_id: str) -> JobModel:
    """The caller's job (strongly consistent).

    Raises:
        NotFound: 404 when it does not exist or belongs to another user.
    """
    if not ULID_RE.match(job_id or ""):
        raise NotFound("job")
    try:
        return JobModel.get(user_id, job_id, consistent_read=True)
    except JobModel.DoesNotExist:
        raise NotFound("job") from None


def get_job(user_id: str, job_id: str) -> dict[str, Any]:
    """``GET /v1/jobs/{id}``: counters, progress, ETA, parameters, errors by reason."""
    return job_json(get_owned_job(user_id, job_id))


def _filtered_page(
    run: Callable[[int, dict[str, Any] | None], Any], limit: int, start: dict[str, Any] | None
) -> tuple[list[Any], dict[str, Any] | None]:
    """Collect up to ``limit`` matches from a filtered Query, continuing from each page's
    LastEvaluatedKey; at most :data:`MAX_LIST_QUERIES` calls (a page may come back short,
    with a cursor)."""
    found: list[Any] = []
    key = start
    for _ in range(MAX_LIST_QUERIES):
        result = run(limit - len(found), key)
        found.extend(result)
        key = result.last_evaluated_key
        if not key or len(found) >= limit:
            break
    return found, key


def list_jobs(user_id: str, query: Mapping[str, str]) -> dict[str, Any]:
    """``GET /v1/jobs``: newest first, ``?status=&collection=&limit=&cursor=``.

    Returns:
        ``{"jobs": [job_json, ...], "next_cursor": str | None}``.

    Raises:
        ValidationError: 400 naming ``status``, ``collection``, ``limit`` or ``cursor``.
    """
    limit = parse_limit(query.get("limit"), default=20)
    status = query.get("status")
    if status is not None and status not in JOB_STATUSES:
        raise ValidationError(f"status must be one of: {', '.join(JOB_STATUSES)}", field="status")
    collection = parse_collection(query.get("collection"))
    start = decode_cursor(query.get("cursor"), {"user_id": user_id}, "job_id")
    condition = None
    if status:
        condition = JobModel.status == status
    if collection:
        match = JobModel.collection == collection
        condition = match if condition is None else condition & match

    def run(n: int, key: dict[str, Any] | None) -> Any:
        return JobModel.query(
            user_id, scan_index_forward=False, limit=n, last_evaluated_key=key, filter_condition=condition
        )

    jobs, last = _filtered_page(run, limit, start)
    return {"jobs": [job_json(j) for j in jobs], "next_cursor": encode_cursor(last, "job_id")}


def _by_id(model: Any, id_attr: str, user_id: str, ids: list[str]) -> dict[str, Any]:
    """The user's items of ``model`` among ``ids`` by their ``id_attr`` (BatchGetItem, 100 keys a call)."""
    found: dict[str, Any] = {}
    unique = list(dict.fromkeys(i for i in ids if i))
    for start in range(0, len(unique), 100):
        for one in model.batch_get([(user_id, i) for i in unique[start : start + 100]]):
            found[getattr(one, id_attr)] = one
    return found


def images_by_id(user_id: str, image_ids: list[str]) -> dict[str, ImageModel]:
    """The user's images among ``image_ids`` (BatchGetItem, 100 keys a call)."""
    return _by_id(ImageModel, "image_id", user_id, image_ids)


def videos_by_id(user_id: str, video_ids: list[str]) -> dict[str, VideoModel]:
    """The user's videos among ``video_ids`` (BatchGetItem, 100 keys a call)."""
    return _by_id(VideoModel, "video_id", user_id, video_ids)


def list_items(user_id: str, job_id: str, query: Mapping[str, str]) -> dict[str, Any]:
    """``GET /v1/jobs/{id}/items``: in prompt order, ``?status=&limit=&cursor=``.

    Returns:
        ``{"items": [item_json, ...], "next_cursor": str | None}``.

    Raises:
        NotFound: 404 (not the caller's job). ValidationError: 400 naming the parameter.
    """
    get_owned_job(user_id, job_id)
    limit = parse_limit(query.get("limit"), default=50)
    status = query.get("status")
    if status is not None and status not in ITEM_STATES:
        raise ValidationError(f"status must be one of: {', '.join(ITEM_STATES)}", field="status")
    start = decode_cursor(query.get("cursor"), {"job_id": job_id}, "item_id", ITEM_ID_PATTERN)
    condition = (JobItemModel.status == status) if status else None

    def run(n: int, key: dict[str, Any] | None) -> Any:
        return JobItemModel.query(job_id, limit=n, last_evaluated_key=key, filter_condition=condition)

    items, last = _filtered_page(run, limit, start)
    images = images_by_id(user_id, [i.image_id for i in items if i.status == SUCCEEDED and i.kind != "video"])
    found = videos_by_id(user_id, [i.image_id for i in items if i.kind == "video" and i.status != QUEUED])
    return {
        "items": [item_json(i, images.get(i.image_id), found.get(i.image_id)) for i in items],
        "next_cursor": encode_cursor(last, "item_id"),
    }
