"""Videos: ``POST /v1/videos`` (validate, resolve input images, charge, queue), and the
caller's own videos (``GET /v1/videos[/{id}]``, ``DELETE /v1/videos/{id}``).

The request is validated against the chosen model (:mod:`chalicelib.flux.video_catalog`,
400 naming the field). ``image_id`` / ``last_image_id`` / ``reference_image_ids`` are the
caller's image uploads or generated images (someone else's id is a 404, as for images); their
S3 keys are kept with the video, and the worker hands Together short-lived presigned GETs of
them. One video is charged as one unit of the monthly quota, its estimated cost is held against
the month's budget, and the estimate is shown until Together reports the real one. The video
is written ``queued`` and one ``video`` message goes to the jobs queue; the worker
(:mod:`chalicelib.services.video_worker`) does the rest.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ulid import ULID

from chalicelib import queue
from chalicelib.db import UploadModel, VideoModel, utcnow
from chalicelib.errors import NotFound, ValidationError
from chalicelib.flux.video_catalog import VideoParams, catalog_json, parse_video_params, video_estimate
from chalicelib.services import images, uploads, usage
from chalicelib.services.pagination import owner_page
from chalicelib.settings import get_settings
from chalicelib.storage import objects
from chalicelib.timefmt import iso8601

ULID_CHARS = 26
TERMINAL = ("completed", "failed")


def video_message(user_id: str, video_id: str, job_id: str | None = None, item_id: str | None = None) -> dict[str, str]:
    """The jobs-queue message that moves a video on: ``{"type": "video", "user_id", "video_id"}``,
    plus ``job_id`` and ``item_id`` for a video that is one item of a batch job."""
    message = {"type": "video", "user_id": user_id, "video_id": video_id}
    if job_id and item_id:
        message.update(job_id=job_id, item_id=item_id)
    return message


@dataclass(frozen=True)
class PreparedVideo:
    """A validated video request with its images resolved: ``first`` / ``last`` the
    ``(object key, thumbnail key)`` of the keyframes, ``refs`` the object keys of the
    reference images."""

    params: VideoParams
    first: tuple[str, str] | None
    last: tuple[str, str] | None
    refs: tuple[str, ...]


def prepare(user_id: str, body: Mapping[str, Any]) -> PreparedVideo:
    """Validate a video request against its model and resolve its images (the caller's own).

    Raises:
        ValidationError: 400 naming the field. NotFound: 404 for an image id that is not the caller's.
        DomainError: upload states (409/422) for an unusable upload.
    """
    params = parse_video_params(body)
    params = dataclasses.replace(params, collection=images.parse_collection(body.get("collection")))
    first = _image_keys(user_id, params.image_id, "image_id") if params.image_id else None
    last = _image_keys(user_id, params.last_image_id, "last_image_id") if params.last_image_id else None
    refs = tuple(_image_keys(user_id, r, "reference_image_ids")[0] for r in params.reference_image_ids)
    return PreparedVideo(params, first, last, refs)


def _image_keys(user_id: str, image_id: str, field: str) -> tuple[str, str]:
    """``(object key, thumbnail key)`` of the caller's image upload or generated image.

    Raises:
        NotFound: 404 for an id that is neither (or someone else's).
        DomainError: the upload is not a usable image yet (``upload-pending`` and the like).
    """
    if len(image_id) != ULID_CHARS:
        raise NotFound("image")
    try:
        UploadModel.get(user_id, image_id)
    except UploadModel.DoesNotExist:
        image = images.get_owned_image(user_id, image_id)
        return image.s3_key, image.thumb_key
    upload = uploads.ready_upload(user_id, image_id, field=field)
    return str(upload.s3_key), str(upload.thumb_key)


def write(
    user_id: str,
    video_id: str,
    video: PreparedVideo,
    period: str | None,
    *,
    job_id: str | None = None,
    item_id: str | None = None,
) -> VideoModel:
    """Write the video ``queued`` (with ``attribute_not_exists``, or over a ``failed`` video of
    the same id: a retried job item) and give it its poster: a server-side copy of the first
    keyframe's thumbnail, when it has one. Nothing is charged or sent here.

    Args:
        period: the quota month the video was charged to (refunds go there).
        job_id, item_id: the batch job item the video is (None for ``POST /v1/videos``).

    Returns:
        The written item.

    Raises:
        PutError: a live video of that id exists (condition failed), or DynamoDB failed.
    """
    params = video.params
    item = VideoModel(
        user_id,
        video_id,
        status="queued",
        params=json.dumps(params.to_record()),
        prompt=params.prompt,
        model=params.model,
        collection=params.collection,
        user_collection=f"{user_id}#{params.collection}" if params.collection else None,
        first_key=video.first[0] if video.first else None,
        last_key=video.last[0] if video.last else None,
        reference_keys=json.dumps(list(video.refs)) if video.refs else None,
        poster_key=None,
        deadline_at=int(time.time()) + get_settings().video_deadline_seconds,
        estimated_cost_usd=params.estimated_cost_usd,
        quota_period=period,
        job_id=job_id,
        item_id=item_id,
        created_at=utcnow(),
    )
    item.save(condition=VideoModel.video_id.does_not_exist() | (VideoModel.status == "failed"))
    if video.first:
        try:
            objects.copy(video.first[1], objects.poster_key(user_id, video_id), "image/webp")
            item.update(actions=[VideoModel.poster_key.set(objects.poster_key(user_id, video_id))])
        except Exception:  # noqa: BLE001 - the video works without a poster (the browser's first frame)
            pass
    return item


def create(user_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """``POST /v1/videos``: validate, resolve the images, charge, write ``queued``, enqueue.

    Returns:
        The video's JSON (:func:`video_json`), status ``queued``.

    Raises:
        ValidationError: 400 naming the field. NotFound: 404 for an image id that is not the caller's.
        DomainError: 429 ``quota-exceeded``, or ``budget-exceeded`` when its estimated cost does
            not fit the month's budget (:func:`chalicelib.services.usage.charge`); upload
            states (409/422) for an unusable upload.
    """
    video = prepare(user_id, body)
    usd = video.params.estimated_cost_usd
    period = usage.charge(user_id, 1, usd, video_estimate(video.params.model, video.params.seconds, 1))
    video_id = str(ULID())
    try:
        item = write(user_id, video_id, video, period)
        queue.send_messages([video_message(user_id, video_id)])
    except Exception:
        usage.refund(user_id, 1, period, usd)
        raise
    return video_json(item)


def models() -> dict[str, Any]:
    """``GET /v1/videos/models``: ``{"checked", "models": [...]}`` (see :func:`catalog_json`)."""
    return catalog_json()


def params_of(item: VideoModel) -> VideoParams:
    """The stored request of a video."""
    return VideoParams.from_record(json.loads(item.params))


def video_json(item: VideoModel) -> dict[str, Any]:
    """The public shape of a video: ids, request, status, cost, and short-lived presigned URLs
    of the file and the poster once stored (never keys, key ids or upstream ids)."""
    params = params_of(item)
    done = item.status == "completed" and item.s3_key
    return {
        "video_id": item.video_id,
        "status": item.status,
        "prompt": item.prompt,
        "model": item.model,
        "width": params.width,
        "height": params.height,
        "seconds": params.seconds,
        "fps": params.fps,
        "seed": params.seed,
        "negative_prompt": params.negative_prompt,
        "image_id": params.image_id,
        "last_image_id": params.last_image_id,
        "reference_image_ids": list(params.reference_image_ids),
        "collection": item.collection,
        "estimated_cost_usd": item.estimated_cost_usd,
        "cost_usd": item.cost_usd,
        "bytes": int(item.bytes) if item.bytes is not None else None,
        "content_type": item.content_type,
        "url": objects.presign_get(item.s3_key) if done else None,
        "poster_url": objects.presign_get(item.poster_key) if item.poster_key else None,
        "error": {"code": item.error_code, "message": item.error_message} if item.status == "failed" else None,
        "created_at": iso8601(item.created_at),
        "completed_at": iso8601(item.completed_at) if item.completed_at else None,
    }


def get_owned_video(user_id: str, video_id: str) -> VideoModel:
    """The caller's video.

    Raises:
        NotFound: 404 when it does not exist or belongs to another user.
    """
    if len(video_id or "") != ULID_CHARS or not video_id.isalnum():
        raise NotFound("video")
    try:
        return VideoModel.get(user_id, video_id)
    except VideoModel.DoesNotExist:
        raise NotFound("video") from None


def get_video(user_id: str, video_id: str) -> dict[str, Any]:
    """``GET /v1/videos/{id}``."""
    return video_json(get_owned_video(user_id, video_id))


def list_videos(user_id: str, query: Mapping[str, str]) -> dict[str, Any]:
    """``GET /v1/videos``: newest first, ``?limit=&cursor=&collection=``.

    Raises:
        ValidationError: 400 for a bad limit, cursor or collection.
    """
    unknown = sorted(set(query) - {"limit", "cursor", "collection"})
    if unknown:
        raise ValidationError(f"unknown query parameter {unknown[0]}", field=unknown[0], code="unknown-field")
    page = owner_page(VideoModel, user_id, query, images.parse_collection(query.get("collection")))
    return {"videos": [video_json(v) for v in page["items"]], "next_cursor": page["next_cursor"]}


def delete_video(user_id: str, video_id: str) -> None:
    """``DELETE /v1/videos/{id}``: the objects, then the item. A video still rendering upstream
    is deleted too; the worker finds no item and drops its message.

    Raises:
        NotFound: 404 when it does not exist or belongs to another user.
    """
    item = get_owned_video(user_id, video_id)
    objects.delete([objects.video_key(user_id, video_id), objects.poster_key(user_id, video_id)])
    item.delete()
