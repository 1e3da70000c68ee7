"""The video worker: one ``video`` message on the jobs queue moves one video a step on.

Nothing sleeps while Together renders. Each delivery does one bounded thing and returns
``Later(delay)``: the jobs worker's defer hook makes the same message visible again after
``delay`` seconds (ChangeMessageVisibility, or a fresh copy with ``DelaySeconds`` when one
more receive would send it to the DLQ). The poll interval starts at
``VIDEO_POLL_MIN_SECONDS`` and doubles per poll up to ``VIDEO_POLL_MAX_SECONDS`` (a minute);
past ``deadline_at`` (``VIDEO_DEADLINE_SECONDS`` after the request) the video fails with
``deadline``.

Exactly one upstream submit per video, under redelivery and concurrent deliveries:

1. a worker takes the *submit claim* with a conditional write (``queued`` → ``submitting``
   with its token; a claim older than :data:`CLAIM_TTL_S` may be taken over);
2. it submits; on an answer it records ``upstream_id`` at once, on condition that it still
   holds the claim and no ``upstream_id`` exists (``rendering``);
3. a definite refusal (429, 503, 5xx with an answer) puts the claim back (``queued``) and the
   message comes again later; nothing was created upstream. A timeout is the one ambiguous
   case: the claim is released after back-off and the submit is retried.

Every later delivery finds ``upstream_id`` and only polls (``GET`` is idempotent). On
``completed`` the file is streamed from the short-lived ``video_url`` into S3 (bounded
memory, :func:`chalicelib.storage.objects.put_stream`) under a key fixed by the video id
(a redelivery overwrites the same object), then the item moves to ``completed`` with
Together's reported cost, on condition it is not completed yet. An expired URL (403) is
polled again for a fresh one. ``failed`` / ``cancelled`` upstream fail the video with the
upstream's code and message and give back the quota unit.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

from pynamodb.exceptions import UpdateError

from chalicelib.db import VideoModel, is_condition_failure, utcnow
from chalicelib.flux.exceptions import (
    AllKeysCoolingError,
    NoUsableKeysError,
    UpstreamFailedError,
    UpstreamRejectedError,
)
from chalicelib.flux.video_client import VideoDownloadError, VideoJobRef, get_video_client
from chalicelib.jobs import video_items
from chalicelib.jobs.state import Done, Later
from chalicelib.services import usage
from chalicelib.services.videos import params_of
from chalicelib.settings import get_settings
from chalicelib.storage import objects

logger = logging.getLogger("promptcanvas.video_worker")

CLAIM_TTL_S = 120  # seconds a submit claim is held before another worker may take it over
MAX_SUBMIT_ATTEMPTS = 5  # submits that failed transiently before the video fails
NO_KEYS_RETRY_S = 60  # seconds before trying again when no key is usable
UPSTREAM_URL_SECONDS = 600  # lifetime of the presigned GETs of keyframes handed to Together


def poll_delay_s(polls: int) -> int:
    """Seconds before poll number ``polls + 1``: min * 2**polls, capped at the max (a minute)."""
    settings = get_settings()
    return int(min(settings.video_poll_max_seconds, settings.video_poll_min_seconds * 2 ** min(polls, 16)))


def _fail(item: VideoModel, code: str, message: str) -> Done:
    """Move a video to ``failed`` (unless it already ended) and give back its quota unit."""
    try:
        item.update(
            actions=[
                VideoModel.status.set("failed"),
                VideoModel.error_code.set(code),
                VideoModel.error_message.set(message[:300]),
                VideoModel.completed_at.set(utcnow()),
            ],
            condition=VideoModel.status.is_in("queued", "submitting", "rendering"),
        )
    except UpdateError as exc:
        if is_condition_failure(exc):
            return Done("already-ended")
        raise
    if item.job_id:  # a job's video: its item fails and refunds (once, as every item does)
        video_items.video_ended(item)
    else:
        usage.refund(item.user_id, 1, item.quota_period, float(item.estimated_cost_usd or 0))
    logger.info("video failed video_id=%s code=%s", item.video_id, code)
    return Done("failed")


def fail_video(item: VideoModel, code: str, message: str) -> bool:
    """Fail a video that has not ended, for callers outside the message flow (the
    stuck-video sweep, :func:`chalicelib.services.cleanup.sweep_stuck_videos`).

    The same path as the worker's own failures: one conditional UpdateItem (status still
    ``queued`` / ``submitting`` / ``rendering``), then the quota unit back. Of a worker and
    a sweep failing the same video at once, exactly one write succeeds and refunds.

    Args:
        item: the video (at least ``user_id``, ``video_id``, ``quota_period``).
        code: the error code shown to the owner (e.g. ``deadline``). message: its text (300 chars kept).

    Returns:
        True when this call ended the video (and gave the unit back), False when it had ended already.

    Raises:
        pynamodb.exceptions.UpdateError: a DynamoDB failure other than the condition.
    """
    return _fail(item, code, message).note == "failed"


def _claim(item: VideoModel, now: float) -> str | None:
    """Take the submit claim; its token, or None when another worker holds it."""
    token = secrets.token_hex(8)
    try:
        item.update(
            actions=[
                VideoModel.status.set("submitting"),
                VideoModel.claim.set(token),
                VideoModel.claimed_at.set(int(now)),
            ],
            condition=VideoModel.upstream_id.does_not_exist()
            & (
                (VideoModel.status == "queued")
                | ((VideoModel.status == "submitting") & (VideoModel.claimed_at < int(now) - CLAIM_TTL_S))
            ),
        )
    except UpdateError as exc:
        if is_condition_failure(exc):
            return None
        raise
    return token


def _release(item: VideoModel, token: str, *, failed_attempt: bool) -> None:
    """Put a claim back (``queued``) after a submit that created nothing upstream."""
    actions = [VideoModel.status.set("queued"), VideoModel.claim.remove()]
    if failed_attempt:
        actions.append(VideoModel.submit_attempts.add(1))
    try:
        item.update(actions=actions, condition=(VideoModel.claim == token) & VideoModel.upstream_id.does_not_exist())
    except UpdateError as exc:
        if not is_condition_failure(exc):
            raise


def _presigned(key: str | None) -> str | None:
    return objects.presign_get(key, expires_s=UPSTREAM_URL_SECONDS) if key else None


def _submit(item: VideoModel) -> Done | Later:
    now = time.time()
    token = _claim(item, now)
    if token is None:
        return Later(CLAIM_TTL_S, "submit-claimed-elsewhere")
    refs = [objects.presign_get(k, expires_s=UPSTREAM_URL_SECONDS) for k in json.loads(item.reference_keys or "[]")]
    try:
        job = get_video_client().submit(params_of(item), _presigned(item.first_key), _presigned(item.last_key), refs)
    except AllKeysCoolingError as exc:
        _release(item, token, failed_attempt=False)
        return Later(max(1.0, exc.retry_after), "keys-cooling")
    except NoUsableKeysError:
        _release(item, token, failed_attempt=False)
        return Later(NO_KEYS_RETRY_S, "no-usable-keys")
    except UpstreamRejectedError as exc:
        return _fail(item, "upstream-rejected", exc.message)
    except UpstreamFailedError as exc:
        attempts = int(item.submit_attempts or 0) + 1
        if attempts >= MAX_SUBMIT_ATTEMPTS:
            return _fail(item, "upstream-failed", exc.message)
        _release(item, token, failed_attempt=True)
        return Later(poll_delay_s(attempts), "submit-failed")
    try:
        item.update(
            actions=[
                VideoModel.upstream_id.set(job.upstream_id),
                VideoModel.key_id.set(job.key_id),
                VideoModel.status.set("rendering"),
                VideoModel.claim.remove(),
            ],
            condition=(VideoModel.claim == token) & VideoModel.upstream_id.does_not_exist(),
        )
    except UpdateError as exc:
        if is_condition_failure(exc):  # the claim was taken over: the other worker's job stands
            logger.warning("video %s: submit claim lost; upstream job %s abandoned", item.video_id, job.upstream_id)
            return Done("claim-lost")
        raise
    logger.info("video submitted video_id=%s key_id=%s", item.video_id, job.key_id)
    return Later(poll_delay_s(0), "submitted")


def _store(item: VideoModel, url: str, cost: float | None) -> Done | Later:
    key = objects.video_key(item.user_id, item.video_id)
    client = get_video_client()
    try:
        with client.open_video(url) as stream:
            objects.put_stream(key, stream, "video/mp4")
            size = stream.total
    except VideoDownloadError as exc:
        logger.info("video %s download failed (%s); polling again for a fresh URL", item.video_id, exc.message)
        return Later(1, "download-failed")
    spent = cost if cost is not None else item.estimated_cost_usd  # Together's figure, else the estimate
    try:
        item.update(
            actions=[
                VideoModel.status.set("completed"),
                VideoModel.s3_key.set(key),
                VideoModel.bytes.set(size),
                VideoModel.content_type.set("video/mp4"),
                VideoModel.cost_usd.set(spent),
                VideoModel.completed_at.set(utcnow()),
            ],
            condition=VideoModel.status == "rendering",
        )
    except UpdateError as exc:
        if is_condition_failure(exc):
            return Done("already-stored")
        raise
    usage.add_cost(item.user_id, spent, model=item.model)
    video_items.video_ended(item)
    return Done("stored")


def _poll(item: VideoModel) -> Done | Later:
    job = VideoJobRef(upstream_id=str(item.upstream_id), key_id=str(item.key_id or ""))
    polls = int(item.polls or 0)
    try:
        status = get_video_client().retrieve(job, item.model)
    except AllKeysCoolingError as exc:
        return Later(max(1.0, exc.retry_after), "keys-cooling")
    except NoUsableKeysError:
        return Later(NO_KEYS_RETRY_S, "no-usable-keys")
    except UpstreamRejectedError as exc:
        return _fail(item, "upstream-rejected", exc.message)
    except UpstreamFailedError:
        return Later(poll_delay_s(polls), "poll-failed")
    if status.status == "completed" and status.video_url:
        return _store(item, status.video_url, status.cost)
    if status.terminal:
        return _fail(item, status.error_code or f"upstream-{status.status}", status.error_message or status.status)
    item.update(actions=[VideoModel.polls.add(1)])
    return Later(poll_delay_s(polls + 1), status.status)


def handle_video(body: dict[str, Any], deadline: float) -> Done | Later:
    """``{"type": "video", "user_id", "video_id", "job_id"?, "item_id"?}``: submit, poll or
    store, as the video's state asks; a job's video ends its item (:mod:`chalicelib.jobs.video_items`).

    Args:
        body: the decoded message. deadline: ``time.monotonic()`` by which to be done.

    Returns:
        Done (the video ended, or is gone) or Later(seconds) (see it again then).
    """
    user_id, video_id = str(body.get("user_id") or ""), str(body.get("video_id") or "")
    if not (user_id and video_id):
        return Done("bad-message")
    try:
        item = VideoModel.get(user_id, video_id, consistent_read=True)
    except VideoModel.DoesNotExist:
        if body.get("job_id") and body.get("item_id"):
            video_items.video_deleted(str(body["job_id"]), str(body["item_id"]), video_id)
        return Done("deleted")
    if item.status in ("completed", "failed"):
        video_items.video_ended(item)  # a redelivery after a crash between the two writes
        return Done("already-ended")
    if time.time() > item.deadline_at:
        return _fail(item, "deadline", "the video was not ready before its deadline")
    if deadline - time.monotonic() < 5:
        return Later(0, "no-time-left")
    if item.upstream_id is None:
        return _submit(item)
    return _poll(item)
