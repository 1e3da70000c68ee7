"""Share links: create, list and revoke a user's links; resolve a public ``/s/{code}`` view.

A link is ``{base}/s/{code}``. The code is :data:`CODE_LENGTH` base62 characters drawn with
``secrets`` (about 95 bits; the rule is at least 64 bits). DynamoDB keys the link by the
code's sha256, so the public lookup is one strongly consistent key operation whose cost
does not depend on how much of a guessed code matches (no scan, no prefix comparison in
our code), and unknown, expired and revoked codes take the same path to the same 404.

Lifetimes: ``expires_in_s`` (seconds) defaults to ``SHARE_DEFAULT_LIFETIME_SECONDS``
(7 days) and may be at most ``SHARE_MAX_LIFETIME_SECONDS`` (90 days).

Revoking deletes the link (``DELETE /v1/shares/{id}``); deleting an image revokes that
image's links; a link whose image or collection no longer exists answers 404 and is
deleted on that view. Expired links are deleted by :func:`sweep_expired` (the scheduled
cleanup), with DynamoDB TTL on ``expires_at`` as the backstop.

Public views are rate-limited before the lookup, per client IP
(``SHARE_VIEWS_PER_IP_PER_MINUTE``) and per code (``SHARE_VIEWS_PER_CODE_PER_MINUTE``),
with fixed one-minute windows in ``ShareHitModel`` (TTL). The per-code counter counts
unknown codes too, so a 429 never tells a valid code from an invalid one.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pynamodb.exceptions import DeleteError, UpdateError
from ulid import ULID

from chalicelib.db import ImageModel, ShareHitModel, ShareModel, VideoModel, is_condition_failure, utcnow
from chalicelib.errors import DomainError, ErrorCode, NotFound, ValidationError
from chalicelib.flux.catalog import as_integer
from chalicelib.services.images import check_unknown_fields, collection_from_path, get_owned_image
from chalicelib.services.pagination import parse_limit
from chalicelib.services.videos import get_owned_video
from chalicelib.settings import get_settings
from chalicelib.timefmt import iso8601

logger = logging.getLogger("promptcanvas.shares")

ALPHABET = string.digits + string.ascii_letters  # base62
CODE_LENGTH = 16  # 16 * log2(62) = 95.3 bits
CODE_RE = re.compile(r"^[0-9A-Za-z]{16}$")
CREATE_FIELDS = frozenset({"expires_in_s"})
TARGET_IMAGE = "image"
TARGET_COLLECTION = "collection"
TARGET_VIDEO = "video"
RATE_WINDOW_S = 60


def new_code() -> str:
    """A fresh link code: :data:`CODE_LENGTH` base62 characters from ``secrets``."""
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def code_hash(code: str) -> str:
    """The table key of ``code``: its sha256, hex."""
    return hashlib.sha256(code.encode()).hexdigest()


def share_url(code: str, request_base: str) -> str:
    """The public URL of ``code``: ``{SHARE_BASE_URL or request_base}/s/{code}``."""
    base = get_settings().share_base_url or request_base.rstrip("/")
    return f"{base}/s/{code}"


def share_json(item: ShareModel, request_base: str) -> dict[str, Any]:
    """The owner's view of a link: ``{share_id, url, expires_at, target_type, target_id,
    views, created_at, last_viewed_at}`` (times ISO 8601 UTC)."""
    return {
        "share_id": item.share_id,
        "url": share_url(item.code, request_base),
        "expires_at": iso8601(item.expires_at),
        "target_type": item.target_type,
        "target_id": item.target_id,
        "views": int(item.views or 0),
        "created_at": iso8601(item.created_at),
        "last_viewed_at": iso8601(item.last_viewed_at),
    }


def parse_lifetime(body: Mapping[str, Any]) -> int:
    """``expires_in_s`` in seconds: an integer in 1..``SHARE_MAX_LIFETIME_SECONDS``
    (default ``SHARE_DEFAULT_LIFETIME_SECONDS``).

    Raises:
        ValidationError: 400 ``unknown-field`` or ``invalid-request`` naming the field.
    """
    check_unknown_fields(body, CREATE_FIELDS)
    settings = get_settings()
    if "expires_in_s" not in body:
        return min(settings.share_default_lifetime_seconds, settings.share_max_lifetime_seconds)
    value = as_integer(body["expires_in_s"])  # 45 or 45.0, as JSON Schema's "integer"
    maximum = settings.share_max_lifetime_seconds
    if value is None or not 1 <= value <= maximum:
        raise ValidationError(f"expires_in_s must be an integer from 1 to {maximum} seconds", field="expires_in_s")
    return value


def _create(user_id: str, target_type: str, target_id: str, lifetime_s: int, request_base: str) -> dict[str, Any]:
    now = utcnow()
    for _ in range(3):  # a collision of 95-bit codes is not expected; the condition makes it harmless
        code = new_code()
        item = ShareModel(
            code_hash(code),
            share_id=str(ULID()),
            user_id=user_id,
            code=code,
            target_type=target_type,
            target_id=target_id,
            created_at=now,
            expires_at=now + timedelta(seconds=lifetime_s),
            views=0,
        )
        try:
            item.save(condition=ShareModel.code_hash.does_not_exist())
        except Exception as exc:  # noqa: BLE001 - retried with a new code on a collision only
            if not is_condition_failure(exc):
                raise
            continue
        return share_json(item, request_base)
    raise DomainError(ErrorCode.SHARE_UNAVAILABLE, "could not create a share link; try again")


def create_for_image(user_id: str, image_id: str, body: Mapping[str, Any], request_base: str) -> dict[str, Any]:
    """``POST /v1/images/{id}/shares``: a link to one of the caller's images.

    Raises:
        NotFound: 404 when the image does not exist or belongs to another user.
        ValidationError: 400 on a bad ``expires_in_s`` or an unknown field.
    """
    lifetime = parse_lifetime(body)
    image = get_owned_image(user_id, image_id)
    return _create(user_id, TARGET_IMAGE, image.image_id, lifetime, request_base)


def create_for_collection(user_id: str, name: str, body: Mapping[str, Any], request_base: str) -> dict[str, Any]:
    """``POST /v1/collections/{name}/shares``: a link to a collection (a grid of its images).

    A collection exists while the caller has at least one image in it.

    Raises:
        NotFound: 404 when the caller has no image in that collection.
        ValidationError: 400 on a bad name, ``expires_in_s`` or an unknown field.
    """
    lifetime = parse_lifetime(body)
    collection = collection_from_path(name)
    if not _collection_images(user_id, collection, 1):
        raise NotFound("collection")
    return _create(user_id, TARGET_COLLECTION, collection, lifetime, request_base)


def create_for_video(user_id: str, video_id: str, body: Mapping[str, Any], request_base: str) -> dict[str, Any]:
    """``POST /v1/videos/{id}/shares``: a link to one of the caller's finished videos.

    Raises:
        NotFound: 404 when the video does not exist or belongs to another user.
        ValidationError: 400 on a bad ``expires_in_s``, an unknown field, or a video that is
            not ``completed`` (there is nothing to show yet).
    """
    lifetime = parse_lifetime(body)
    video = get_owned_video(user_id, video_id)
    if video.status != "completed":
        raise ValidationError(f"the video is {video.status}: share it once it is completed")
    return _create(user_id, TARGET_VIDEO, video.video_id, lifetime, request_base)


def _owned_shares(user_id: str, filter_condition: Any = None):
    return ShareModel.by_user.query(user_id, filter_condition=filter_condition, scan_index_forward=False)


def list_shares(user_id: str, query: Mapping[str, str], request_base: str) -> dict[str, Any]:
    """``GET /v1/shares``: the caller's live links, newest first, with view counts.

    Query: ``limit`` (1-100, default 100). Expired links not yet swept are left out.

    Returns:
        ``{"shares": [share_json, ...]}``.
    """
    limit = parse_limit(query.get("limit"), default=100, maximum=100)
    now = utcnow()
    out = []
    for item in _owned_shares(user_id):
        if item.expires_at and item.expires_at <= now:
            continue
        out.append(share_json(item, request_base))
        if len(out) >= limit:
            break
    return {"shares": out}


def _delete(item: ShareModel) -> bool:
    """Delete one link (conditional: only that owner's). True when this call removed it."""
    try:
        item.delete(condition=ShareModel.user_id == item.user_id)
    except DeleteError as exc:
        if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
            return False
        raise
    return True


def revoke(user_id: str, share_id: str) -> None:
    """``DELETE /v1/shares/{id}``: the link stops working at once (it is deleted).

    Raises:
        NotFound: 404 when the link does not exist, is expired or belongs to another user.
    """
    if not re.match(r"^[0-9A-HJKMNP-TV-Z]{26}$", share_id or ""):
        raise NotFound("share")
    found = list(ShareModel.by_user.query(user_id, ShareModel.share_id == share_id))
    if not found or not _delete(found[0]):
        raise NotFound("share")


def revoke_for(user_id: str, target_type: str, target_id: str) -> int:
    """Delete every link of the caller to one image or collection. Returns how many."""
    condition = (ShareModel.target_type == target_type) & (ShareModel.target_id == target_id)
    return sum(1 for item in _owned_shares(user_id, condition) if _delete(item))


def revoke_for_image(user_id: str, image_id: str) -> int:
    """Revoke the links to one image (called when the image is deleted). Returns how many."""
    return revoke_for(user_id, TARGET_IMAGE, image_id)


def revoke_for_deleted_image(user_id: str, image_id: str, collection: str | None) -> None:
    """After an image was deleted: revoke its links, and its collection's links when it was
    the collection's last image (a link whose image or collection is gone answers 404 in
    any case)."""
    revoke_for_image(user_id, image_id)
    if collection:
        revoke_for_collection_if_empty(user_id, collection)


def revoke_for_collection_if_empty(user_id: str, name: str) -> int:
    """Revoke the links to a collection once its last image is gone (a collection exists
    while it holds an image), so a later image under the same name does not revive them.
    Returns how many were revoked."""
    if _collection_images(user_id, name, 1):
        return 0
    return revoke_for(user_id, TARGET_COLLECTION, name)


# -- public views ----------------------------------------------------------------------------------


@dataclass
class SharedView:
    """What a public page shows: ``kind`` (``image`` | ``collection`` | ``video``), ``title``
    and the images (newest first; one for an image link) or the video."""

    kind: str
    title: str
    images: list[ImageModel] = field(default_factory=list)
    video: VideoModel | None = None


class ShareRateLimited(Exception):
    """Too many views from one client IP or of one code; ``retry_after`` in seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry in {retry_after} s")
        self.retry_after = retry_after


class ShareNotFound(Exception):
    """Unknown, expired or revoked code, or its image/collection is gone (one answer for all)."""


def _hit(bucket: str, limit: int, now: float) -> None:
    """Count one hit in ``bucket``'s current one-minute window.

    Raises:
        ShareRateLimited: past ``limit`` in this window.
    """
    if limit <= 0:
        return
    window = int(now // RATE_WINDOW_S)
    try:
        ShareHitModel(f"{bucket}#{window}").update(
            actions=[ShareHitModel.count.add(1), ShareHitModel.expires_at.set(timedelta(seconds=3 * RATE_WINDOW_S))],
            condition=ShareHitModel.count.does_not_exist() | (ShareHitModel.count < limit),
        )
    except UpdateError as exc:
        if getattr(exc, "cause_response_code", None) != "ConditionalCheckFailedException":
            raise
        raise ShareRateLimited(max(1, RATE_WINDOW_S - int(now) % RATE_WINDOW_S)) from None


def _collection_images(user_id: str, collection: str, limit: int) -> list[ImageModel]:
    return list(ImageModel.by_collection.query(f"{user_id}#{collection}", scan_index_forward=False, limit=limit))


def view(code: str, source_ip: str) -> SharedView:
    """Resolve a public ``GET /s/{code}`` hit: rate limits, then count the view, then load.

    Args:
        code: the path segment as received (anything; malformed codes are simply not found).
        source_ip: the client address (API Gateway ``requestContext.identity.sourceIp``).

    Raises:
        ShareRateLimited: over the per-IP or the per-code limit (checked before the lookup).
        ShareNotFound: unknown, expired, revoked, or its target is gone.
    """
    settings = get_settings()
    now = time.time()
    _hit(f"ip#{source_ip or 'unknown'}", settings.share_views_per_ip_per_minute, now)
    digest = code_hash(code if CODE_RE.match(code or "") else "-malformed-")
    _hit(f"code#{digest[:32]}", settings.share_views_per_code_per_minute, now)
    if not CODE_RE.match(code or ""):
        raise ShareNotFound()
    item = ShareModel(digest)
    moment = datetime.fromtimestamp(now, UTC)
    try:
        item.update(
            actions=[ShareModel.views.add(1), ShareModel.last_viewed_at.set(moment)],
            condition=ShareModel.code_hash.exists() & (ShareModel.expires_at > moment),
        )
    except UpdateError as exc:
        if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
            raise ShareNotFound() from None
        raise
    if not secrets.compare_digest(item.code, code):
        raise ShareNotFound()
    if item.target_type == TARGET_VIDEO:
        try:
            video = VideoModel.get(item.user_id, item.target_id)
        except VideoModel.DoesNotExist:
            _delete(item)
            raise ShareNotFound() from None
        if video.status != "completed" or not video.s3_key:
            raise ShareNotFound()
        return SharedView(TARGET_VIDEO, video.prompt or video.model, video=video)
    if item.target_type == TARGET_IMAGE:
        try:
            image = ImageModel.get(item.user_id, item.target_id)
        except ImageModel.DoesNotExist:
            _delete(item)
            raise ShareNotFound() from None
        return SharedView(TARGET_IMAGE, image.prompt, [image])
    images = _collection_images(item.user_id, item.target_id, settings.share_collection_max_images)
    if not images:
        _delete(item)
        raise ShareNotFound()
    return SharedView(TARGET_COLLECTION, item.target_id, images)


# -- expiry sweep ----------------------------------------------------------------------------------


def sweep_expired(*, now: datetime | None = None, dry_run: bool = False, deadline: Any = None) -> dict[str, int]:
    """Delete links whose ``expires_at`` is at or before ``now`` (aware UTC; default now).

    Each delete is conditional on the link still being expired, so a concurrent run counts
    ``already_gone`` instead of failing. ``deadline`` (an object with ``expired() -> bool``)
    stops the scan between pages.

    Returns:
        counts ``scanned``, ``shares_deleted`` (or ``would_delete_shares``), ``already_gone``,
        and ``incomplete`` (1 when the deadline stopped it).
    """
    now = now or utcnow()
    counts = {"scanned": 0, "shares_deleted": 0, "would_delete_shares": 0, "already_gone": 0, "incomplete": 0}
    result = ShareModel.scan(ShareModel.expires_at <= now, page_size=100)
    for item in result:
        if deadline is not None and deadline.expired():
            counts["incomplete"] = 1
            break
        counts["scanned"] += 1
        if dry_run:
            counts["would_delete_shares"] += 1
            continue
        try:
            item.delete(condition=ShareModel.expires_at <= now)
            counts["shares_deleted"] += 1
        except DeleteError as exc:
            if not is_condition_failure(exc):
                raise
            counts["already_gone"] += 1
    return counts
