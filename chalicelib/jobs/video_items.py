"""Items of video jobs: one item makes one video, and the video worker ends the item.

An item of a video job (``kind`` ``video``) is leased like an image item
(:func:`chalicelib.jobs.state.lease_item`). The lease holder then, in :func:`run_video_item`:

1. writes the video ``queued`` under the item's fixed ``image_id`` (so every attempt makes
   the same video; a ``failed`` video of that id, from before a retry, is written over);
   a video already there is reused as it stands;
2. stretches the item's lease to the video's ``deadline_at`` plus :data:`LEASE_GRACE_S`,
   so the stuck-work sweep leaves a rendering item alone (a video takes minutes);
3. sends one ``video`` message naming the job and item; the message is done.

The video worker (:mod:`chalicelib.services.video_worker`) renders and stores the video.
When the video ends it calls :func:`video_ended`, which moves the item to ``succeeded``
(its cost to the job's ``actual_usd``) or ``failed`` (refunded, reason mapped by
:func:`item_reason`), on condition the item is still running for this video. A video
deleted while rendering fails its item (``cancelled``).

When nothing ends the item (the video's messages died), its lease expires after the
video's deadline, the sweep queues it again, and :func:`run_video_item` finds the video:
ended, it settles the item at once; still open past its deadline, the new ``video``
message makes the video worker fail it with ``deadline``.
"""

from __future__ import annotations

import logging
from typing import Any

from pynamodb.exceptions import PutError, UpdateError

from chalicelib import queue
from chalicelib.db import JobItemModel, VideoModel, is_condition_failure
from chalicelib.db.jobs import RUNNING
from chalicelib.errors import DomainError
from chalicelib.jobs import state
from chalicelib.jobs.state import Done, ItemLease, Later
from chalicelib.services import videos

logger = logging.getLogger("promptcanvas.jobs")

LEASE_GRACE_S = 300  # seconds past the video's deadline before the sweep may take the item back
KIND = "video"


def item_body(item: JobItemModel) -> dict[str, Any]:
    """The ``POST /v1/videos``-shaped request of one item: the job's video fields, the item's
    prompt and seed, and its keyframe image (``inputs.image.id``) when it has one."""
    body = {k: v for k, v in dict(item.params or {}).items() if v is not None}
    if item.prompt:
        body["prompt"] = item.prompt
    body["seed"] = int(item.seed)
    image = dict(item.inputs or {}).get("image") or {}
    if image.get("id"):
        body["image_id"] = image["id"]
    if item.collection:
        body["collection"] = item.collection
    return body


def item_reason(code: str | None) -> str:
    """The job's failure reason for a video that failed with ``code``: a refusal stays
    ``upstream-rejected``, a deleted video is ``cancelled``, a dead-lettered message
    ``dead-lettered``; anything else (Together's failure, the deadline) ``upstream-failed``."""
    if code == state.REASON_REJECTED:
        return state.REASON_REJECTED
    if code in (state.REASON_CANCELLED, state.REASON_DEAD_LETTER):
        return code
    return state.REASON_UPSTREAM


def _stretch_lease(lease: ItemLease, until: float) -> None:
    """Hold the lease until ``until`` (epoch seconds) while the video renders."""
    try:
        lease.item.update(actions=[JobItemModel.lease_until.set(until)], condition=state.lease_held(lease))
    except UpdateError as exc:
        if not is_condition_failure(exc):
            raise


def _settle(lease: ItemLease, video: VideoModel) -> Done:
    """End the item as its (ended) video did."""
    if video.status == "completed":
        state.complete_result_item(lease, float(video.cost_usd or 0))
        return Done("succeeded")
    state.fail_item(lease, item_reason(video.error_code), video.error_message or "the video failed")
    return Done("failed")


def run_video_item(lease: ItemLease) -> Done | Later:
    """Start (or find) the video of a leased video item; see the module docstring.

    Returns:
        Done once the video is started or the item settled; Later when S3/DynamoDB/SQS failed
        (the lease is released and the message comes again).
    """
    item = lease.item
    video_id = item.image_id
    try:
        video = VideoModel.get(item.user_id, video_id, consistent_read=True)
    except VideoModel.DoesNotExist:
        video = None
    if video is not None and video.status == "completed":
        return _settle(lease, video)
    if video is not None and video.status == "failed" and int(item.attempts or 0) > 1:
        return _settle(lease, video)  # this round's video failed; a retry round writes it anew
    try:
        if video is None or video.status == "failed":
            prepared = videos.prepare(item.user_id, item_body(item))
            video = videos.write(
                item.user_id, video_id, prepared, item.charged_period, job_id=item.job_id, item_id=item.item_id
            )
        _stretch_lease(lease, float(video.deadline_at) + LEASE_GRACE_S)
        queue.send_messages([videos.video_message(item.user_id, video_id, item.job_id, item.item_id)])
    except DomainError as exc:  # an input deleted or rejected since submit: permanent
        state.fail_item(lease, state.REASON_INVALID, f"{exc.field or 'input'}: {exc.message}")
        return Done("invalid")
    except PutError as exc:
        if not is_condition_failure(exc):
            state.release(lease, give_back_attempt=True)
            return Later(5, "storage-failed")
        return Done("video-exists")  # another holder wrote it and sent its message
    except Exception:  # noqa: BLE001 - S3 / SQS: the message comes again
        logger.warning("starting the video failed job_id=%s item_id=%s", item.job_id, item.item_id)
        state.release(lease, give_back_attempt=True)
        return Later(5, "storage-failed")
    logger.info("video item started job_id=%s item_id=%s video_id=%s", item.job_id, item.item_id, video_id)
    return Done("video-started")


def _running_lease(job_id: str, item_id: str, video_id: str) -> ItemLease | None:
    """The item's current lease when it is running for ``video_id``, else None."""
    try:
        item = JobItemModel.get(job_id, item_id, consistent_read=True)
    except JobItemModel.DoesNotExist:
        return None
    if item.status != RUNNING or item.image_id != video_id or not item.lease_token:
        return None
    return ItemLease(item=item, token=str(item.lease_token), previous=RUNNING)


def video_ended(video: VideoModel) -> None:
    """The video of a job item completed or failed: settle the item (see :func:`_settle`).
    Nothing happens when the item already ended or is not running for this video."""
    if not (video.job_id and video.item_id):
        return
    lease = _running_lease(str(video.job_id), str(video.item_id), video.video_id)
    if lease is not None:
        _settle(lease, video)


def video_deleted(job_id: str, item_id: str, video_id: str) -> None:
    """A job item's video was deleted before it ended: the item fails ``cancelled``."""
    lease = _running_lease(job_id, item_id, video_id)
    if lease is not None:
        state.fail_item(lease, state.REASON_CANCELLED, "the video was deleted")
