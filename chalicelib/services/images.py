"""Generating, listing, fetching and deleting a user's images.

The write path for one generated image, with no half writes:

1. quota charged (conditional ADD) for the ``n`` images asked for;
2. Flux generates (the key-rotating client);
3. per image: original and thumbnail uploaded to S3, then the metadata item
   written with ``attribute_not_exists`` (with its collection counter, in one
   transaction); if the metadata write fails, the objects are deleted; every image
   that did not end stored is refunded. A conditional failure is checked first: when
   the item that is there is the one this call wrote (botocore retried a put whose
   first attempt committed), the write succeeded and nothing is deleted.

So no metadata exists without its object, and an object without metadata only
lives until the write fails (or, after a crash, until the orphan sweep).
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pynamodb.exceptions import PutError, TransactWriteError
from ulid import ULID

from chalicelib import observability
from chalicelib.db import ImageModel, PromptHistoryModel, is_condition_failure, same_item, utcnow
from chalicelib.db.images import collection_counts, delete_image_item, save_new_image
from chalicelib.errors import DomainError, ErrorCode, NotFound, ValidationError
from chalicelib.flux import availability, own_keys
from chalicelib.flux.catalog import (
    GENERATION_FIELDS,
    GenerationParams,
    estimate_cost,
    find_model,
    image_cost,
    parse_generation_params,
)
from chalicelib.flux.client import get_flux_client
from chalicelib.flux.exceptions import NoUsableKeysError
from chalicelib.jsonbody import reject_nulls
from chalicelib.services import image_inputs, together_keys, usage
from chalicelib.services.pagination import ULID_PATTERN, matches, owner_page
from chalicelib.settings import get_settings
from chalicelib.storage import imaging, objects
from chalicelib.timefmt import iso8601

logger = logging.getLogger("promptcanvas.images")

#: A collection name (the document's ``pattern``): 1-64 characters, letters, digits, space,
#: ``_ . -``; it starts and ends with a letter, digit, ``_``, ``.`` or ``-`` (no outer spaces).
COLLECTION_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9 _.\-]{0,62}[A-Za-z0-9_.\-])?$"
ULID_RE = re.compile(ULID_PATTERN.removesuffix("$") + r"\Z")
CREATE_FIELDS = GENERATION_FIELDS | {"collection"} | image_inputs.INPUT_FIELDS
RECENT_PROMPTS = 20


def check_unknown_fields(body: Mapping[str, Any], allowed: frozenset[str] | set[str]) -> None:
    """Raises ValidationError (400 ``unknown-field``) naming the first unknown field."""
    for name in body:
        if name not in allowed:
            raise ValidationError(f"unknown field {name!r}", field=name, code="unknown-field")


def parse_collection(value: Any, field: str = "collection") -> str | None:
    """A collection name (None stays None) matching :data:`COLLECTION_PATTERN`: 1-64
    characters, letters, digits, space, ``_ . -``, no leading or trailing space.

    Raises:
        ValidationError: 400 naming ``field``.
    """
    if value is None:
        return None
    if not isinstance(value, str) or not matches(COLLECTION_PATTERN, value):
        raise ValidationError(
            "collection must be 1-64 characters: letters, digits, space, '_', '.', '-',"
            " with no leading or trailing space",
            field=field,
        )
    return value


def collection_from_path(name: str | None) -> str:
    """A collection name from a URL path segment (``/v1/collections/{name}/...``): its
    percent-escapes decoded (``chalice local`` hands the segment over as sent; a valid name
    holds no ``%``, so decoding a decoded name changes nothing), then :func:`parse_collection`.

    Raises:
        ValidationError: 400 naming ``name``.
    """
    return parse_collection(urllib.parse.unquote(name or ""), field="name") or ""


def image_json(item: ImageModel) -> dict[str, Any]:
    """The API shape of an image, with fresh presigned URLs."""
    ext = item.s3_key.rsplit(".", 1)[-1]
    return {
        "id": item.image_id,
        "url": objects.presign_get(item.s3_key),
        "download_url": objects.presign_get(item.s3_key, download_name=f"{item.image_id}.{ext}"),
        "thumbnail_url": objects.presign_get(item.thumb_key),
        "prompt": item.prompt,
        "negative_prompt": item.negative_prompt,
        "model": item.model,
        "width": int(item.width),
        "height": int(item.height),
        "steps": int(item.steps) if item.steps is not None else None,
        "seed": int(item.seed),
        "guidance": item.guidance,
        "cost_usd": float(item.cost_usd) if item.cost_usd is not None else None,
        "key_source": "own" if own_keys.is_own(item.key_id) else "shared",
        "collection": item.collection,
        "job_id": item.job_id,
        "content_type": item.content_type,
        "bytes": int(item.bytes),
        "created_at": iso8601(item.created_at),
        "inputs": image_inputs.inputs_json(item.inputs),
    }


def _expiry() -> timedelta | None:
    """The TTL backstop: a day after the retention sweep would remove the image (None: keep).

    The sweep deletes objects and metadata together; TTL only catches what it missed, and a
    TTL deletion leaves objects the orphan sweep then removes.
    """
    days = get_settings().image_retention_days
    return timedelta(days=days + 1) if days > 0 else None


def new_image_model(
    user_id: str,
    image_id: str,
    params: GenerationParams,
    processed: imaging.ProcessedImage,
    *,
    seed: int,
    key_id: str | None,
    upstream_ms: float | None,
    collection: str | None = None,
    job_id: str | None = None,
    item_id: str | None = None,
    inputs: dict[str, Any] | None = None,
) -> ImageModel:
    """The (unsaved) metadata item of one processed image, with its S3 keys and TTL backstop.

    Used by the synchronous route and the batch worker alike, so both store the same shape.
    ``inputs`` is the record of its image inputs (:attr:`image_inputs.Prepared.record`).
    """
    return ImageModel(
        user_id,
        image_id,
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        model=params.model,
        width=processed.width,
        height=processed.height,
        steps=params.steps,
        seed=seed,
        guidance=params.guidance,
        cost_usd=image_cost(params.model, processed.width, processed.height, params.steps),
        key_id=key_id,
        job_id=job_id,
        item_id=item_id,
        collection=collection,
        user_collection=f"{user_id}#{collection}" if collection else None,
        s3_key=objects.image_key(user_id, image_id, processed.ext),
        thumb_key=objects.thumb_key(user_id, image_id),
        bytes=len(processed.original),
        content_type=processed.content_type,
        created_at=utcnow(),
        upstream_ms=upstream_ms,
        expires_at=_expiry(),
        inputs=inputs,
    )


def store_image(user_id: str, params: GenerationParams, data: bytes, **fields: Any) -> ImageModel:
    """Store one generated image: :func:`prepare_image` (same arguments), then
    :func:`persist_image`. The caller adds its cost to the month's spend (:func:`record_cost`,
    or :func:`spend_of` with :func:`usage.cost_writes`).

    Raises:
        ValueError: ``data`` does not decode.
        Exception: an S3 or DynamoDB failure; nothing is left behind in that case.
    """
    return persist_image(*prepare_image(user_id, params, data, **fields))


def prepare_image(
    user_id: str,
    params: GenerationParams,
    data: bytes,
    *,
    seed: int,
    key_id: str | None,
    upstream_ms: float | None,
    collection: str | None = None,
    image_id: str | None = None,
    inputs: dict[str, Any] | None = None,
) -> tuple[ImageModel, imaging.ProcessedImage]:
    """One generated image made ready to store, nothing written yet: its metadata stripped,
    its thumbnail made (:func:`imaging.process`) and its (unsaved) item, which holds its
    cost (:func:`~chalicelib.flux.catalog.image_cost`, USD).

    Args:
        data: the image bytes from Flux (JPEG or PNG).
        seed, key_id, upstream_ms: what the upstream reported (``key_id`` names a key, never holds one).
        image_id: a ULID (default: a fresh one); a caller repeating the same write passes the same id.
        inputs: the image inputs it was made from (ids, sources, sha256), as recorded.

    Returns:
        ``(item, processed)``, for :func:`persist_image`.

    Raises:
        ValueError: ``data`` does not decode.
    """
    processed = imaging.process(data)
    item = new_image_model(
        user_id,
        image_id or str(ULID()),
        params,
        processed,
        seed=seed,
        key_id=key_id,
        upstream_ms=upstream_ms,
        collection=collection,
        inputs=inputs,
    )
    return item, processed


def persist_image(item: ImageModel, processed: imaging.ProcessedImage) -> ImageModel:
    """Write a prepared image: S3 objects first (the original and its thumbnail, two
    PutObject calls at once), then the metadata item (:func:`save_image_item`), so an item
    never names a missing object.

    Returns:
        The stored item.

    Raises:
        Exception: an S3 or DynamoDB failure; nothing is left behind in that case.
    """
    puts = [
        in_background(objects.put, item.s3_key, processed.original, processed.content_type),
        in_background(objects.put, item.thumb_key, processed.thumbnail, "image/webp"),
    ]
    try:
        for put in puts:
            put.result()
        save_image_item(item)
    except Exception:
        wait(puts)
        try:
            objects.delete([item.s3_key, item.thumb_key])  # a key never written is fine
        except Exception:  # noqa: BLE001 - the orphan sweep removes what is left
            logger.warning("could not delete objects of failed image %s", item.image_id)
        raise
    return item


def spend_of(item: ImageModel) -> usage.Cost:
    """A stored image's cost for the month's spend (per model, per key; the platform's
    ``cost_usd`` only for shared keys)."""
    kid = str(item.key_id or "")
    own = own_keys.is_own(kid)
    spend_key = f"own:{own_keys.public_key_id(kid)}" if own else (kid or None)
    return usage.Cost(float(item.cost_usd or 0), item.model, spend_key, own)


def record_cost(item: ImageModel) -> None:
    """Add a newly stored image's cost to the month's spend. Call once per image. Never raises."""
    spend = spend_of(item)
    usage.add_cost(item.user_id, spend.usd, model=spend.model, key_id=spend.key_id, own=spend.own)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
IO_THREADS = 4  # S3 puts and best-effort writes of one request run at once


def in_background(fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """Run ``fn(*args)`` on the process's I/O thread pool (:data:`IO_THREADS` threads, made on
    first use), in a copy of this context (so the request's AWS call count sees it). The
    caller waits for the future before it answers: a Lambda freezes between invocations, so
    nothing may be left running."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="images-io")
    return _pool.submit(contextvars.copy_context().run, fn, *args)


#: Attributes set from the clock of the write: a retried put carries the same values, but
#: an item read back is compared without them (the image id, a fresh ULID, names the write).
WRITE_CLOCK_ATTRS = ("created_at", "expires_at")


def save_image_item(item: ImageModel) -> ImageModel:
    """Write a new image item and its collection counter (:func:`save_new_image`). If the
    condition fails and the stored item holds the same image (same id, objects, size,
    parameters, key), that is this write having committed already: success.

    Returns:
        The stored item.

    Raises:
        PutError / TransactWriteError: DynamoDB failed, or another item has this id.
    """
    try:
        save_new_image(item)
        return item
    except (PutError, TransactWriteError) as exc:
        if not is_condition_failure(exc):
            raise
        try:
            stored = ImageModel.get(item.user_id, item.image_id, consistent_read=True)
        except ImageModel.DoesNotExist:
            raise exc from None
        if not same_item(stored, item, ignore=WRITE_CLOCK_ATTRS):
            raise
        logger.info("image %s was stored by an earlier attempt of the same write", item.image_id)
        return stored


def _admit(
    user_id: str, n: int, estimate_usd: float, budget_holds: bool
) -> tuple[together_keys.OwnKey | None, str | None]:
    """Count a generation request against the rate limits and, for the shared pool, charge its
    ``n`` images (and ``estimate_usd``, USD, to the month's cost) unless ``budget_holds`` them
    later (:func:`usage.charge`). The user's own key (:func:`together_keys.active_key`) is
    read at the same time, on the I/O pool, and the admit assumes the shared pool, the usual
    case: with an own key, the images it charged are refunded, and a quota refusal does not
    apply (:func:`usage.admit` counted the request before refusing its images).

    Returns:
        ``(own key or None, period charged or None)``.

    Raises:
        DomainError: 429 ``rate-limited`` / ``quota-exceeded`` (shared pool only).
        envelope.EnvelopeError, botocore/PynamoDB errors: the key could not be read, or
            DynamoDB failed; nothing stays charged.
    """
    charged = 0 if budget_holds else n
    spend_usd = estimate_usd if charged else 0.0
    lookup = in_background(together_keys.active_key, user_id)
    try:
        period: str | None = usage.admit(user_id, write=True, generation=True, images=charged, spend_usd=spend_usd)
    except DomainError as exc:
        own = lookup.result()  # its error, if any, comes first: the refusal may not apply
        if own is None or exc.code != ErrorCode.QUOTA_EXCEEDED:
            raise
        return own, None
    except BaseException:
        wait([lookup])
        raise
    try:
        own = lookup.result()
    except BaseException:
        usage.refund(user_id, charged, period, spend_usd=spend_usd)
        raise
    if own is not None:
        usage.refund(user_id, charged, period, spend_usd=spend_usd)
        return own, None
    return None, period


@dataclass(frozen=True)
class Generated:
    """What :func:`generate` made: ``body`` ``{"images": [image_json, ...]}`` and
    ``flux_ms``, the milliseconds spent in the Flux call (the route's ``Server-Timing``)."""

    body: dict[str, Any]
    flux_ms: float


def generate(user_id: str, body: Mapping[str, Any] | Callable[[], Mapping[str, Any]]) -> Generated:
    """``POST /v1/images``: generate ``n`` images from a prompt (and image inputs) and store them.

    Image inputs (``image_id``, ``reference_image_ids``, ``mask_id``; see
    :mod:`chalicelib.services.image_inputs`) are checked against the model, then for
    ownership and state, before anything is charged; each stored image records them.

    With the user's own Together key saved (:mod:`chalicelib.services.together_keys`),
    only that key is used (its own pool of one; never the shared pool) and neither the
    image quota nor the budget is charged. Otherwise the quota is charged ``n`` images
    and the budget holds the estimate (:func:`~chalicelib.flux.catalog.estimate_cost`);
    what is not stored is given back.

    The request is counted against the user's write and generation rate limits and its images
    charged to the quota in one conditional UpdateItem (:func:`usage.admit`), while the user's
    own key is read beside it (:func:`_admit`); a request refused as invalid still counts as a
    write. ``body`` is the JSON object, or a function reading it
    (so a body that does not parse counts too).

    Returns:
        :class:`Generated` (the route answers 201).

    Raises:
        ValidationError: 400 naming the field.
        DomainError: 404 ``not-found`` / 409 ``upload-pending`` / 422 ``upload-rejected``
            naming an input field; 422 ``together-key-unusable`` (own key refused or out of
            credits); 429 ``rate-limited`` / ``quota-exceeded`` / ``budget-exceeded``; Flux errors (422
            ``upstream-rejected``, 503 ``keys-cooling`` with Retry-After, 502 ``upstream-failed``).
    """
    try:
        if callable(body):
            body = body()
        check_unknown_fields(body, CREATE_FIELDS)
        reject_nulls(body)
        collection = parse_collection(body.get("collection"))
        params = parse_generation_params(body)
        spec = find_model(params.model)
        assert spec is not None  # parse_generation_params returned a current model's id
        ids = image_inputs.parse_input_ids(body, spec)
        availability.require_available(params.model)
    except DomainError:
        usage.hit_mutation_rate_limit(user_id)  # a refused write still counts (a 429 comes first)
        raise
    estimate = estimate_cost(params.model, params.width, params.height, params.steps, params.n)
    per_image = estimate["usd"] / params.n
    budget_holds = get_settings().monthly_budget_usd > 0 and estimate["usd"] > 0  # on the shared pool
    own, period = _admit(user_id, params.n, estimate["usd"], budget_holds)
    held = own is None and budget_holds
    # the shared pool's images are charged ahead, with their estimated cost in the month's cost
    ahead = per_image if own is None else 0.0
    try:
        prepared = image_inputs.prepare(image_inputs.resolve(user_id, ids))
    except Exception:
        if own is None and not held:
            usage.refund(user_id, params.n, period, spend_usd=ahead * params.n)
        raise
    if own is not None:  # the user's own key: their bill, not the platform's quota or budget
        together_keys.require_usable(user_id, own)
        client = own_keys.own_client(user_id, own.key)
    else:
        client = get_flux_client()
        if held:  # quota and budget together (the budget holds the estimate)
            period = usage.charge(user_id, params.n, estimate["usd"], estimate, spend_usd=ahead * params.n)
    # best-effort writes run beside the work that follows and are waited for before answering
    pending = [in_background(remember_prompt, user_id, params.prompt)]
    stored: list[ImageModel] = []
    try:
        flux_started = time.perf_counter()
        try:
            results = client.generate(prepared.apply(params))
        except NoUsableKeysError:
            if own is None:
                raise
            state = own_keys.health(user_id, own.key).state
            raise DomainError(ErrorCode.TOGETHER_KEY_UNUSABLE, together_keys.unusable_message(state)) from None
        flux_ms = (time.perf_counter() - flux_started) * 1000
        for result in results:
            try:
                item, processed = prepare_image(
                    user_id,
                    params,
                    prepared.finish(result.data),
                    seed=result.seed,
                    key_id=result.key_id,
                    upstream_ms=result.upstream_ms,
                    collection=collection,
                    inputs=prepared.record,
                )
            except Exception:
                logger.exception("a generated image could not be processed")
                continue
            spend = [spend_of(item)]  # written while the image is: undone if it is not stored
            pending += [in_background(write) for write in usage.cost_writes(user_id, spend, month=False)]
            try:
                stored.append(persist_image(item, processed))
            except Exception:
                logger.exception("storing a generated image failed")
                pending += [in_background(write) for write in usage.cost_writes(user_id, spend, month=False, undo=True)]
        if not stored:
            raise DomainError(ErrorCode.STORAGE_FAILED, "the image could not be stored; nothing was charged")
    except BaseException:
        wait(pending)
        raise
    finally:
        if own is None:
            missing = params.n - len(stored)
            usage.refund(user_id, missing, period, per_image * missing, spend_usd=ahead * missing)
    observability.record_images_generated(len(stored))
    if own is None:  # the estimate charged ahead, corrected to what the stored images cost
        actual = sum(spend_of(item).usd for item in stored)
        correction = round(actual - ahead * len(stored), 6)
        if correction:
            pending.append(in_background(usage.add_month_cost, user_id, correction, period))
    body = {"images": [image_json(item) for item in stored]}
    wait(pending)
    return Generated(body, flux_ms)


def remember_prompt(user_id: str, prompt: str) -> None:
    """Add ``prompt`` to the user's recent prompts (best effort, never raises)."""
    key = hashlib.sha256(prompt.encode()).hexdigest()[:20]
    try:
        PromptHistoryModel(user_id, key).update_no_return(
            [
                PromptHistoryModel.prompt.set(prompt),
                PromptHistoryModel.last_used.set(int(time.time() * 1000)),
                PromptHistoryModel.uses.add(1),
            ]
        )
    except Exception:  # noqa: BLE001
        logger.warning("could not record prompt history")


def recent_prompts(user_id: str, limit: int = RECENT_PROMPTS) -> dict[str, Any]:
    """``GET /v1/prompts/recent``: ``{"prompts": [{"prompt", "last_used_at", "uses"}]}``, newest first."""
    items = PromptHistoryModel.by_last_used.query(user_id, scan_index_forward=False, limit=limit)
    return {
        "prompts": [
            {
                "prompt": p.prompt,
                "last_used_at": iso8601(p.last_used / 1000),
                "uses": int(p.uses or 0),
            }
            for p in items
        ]
    }


def list_images(user_id: str, query: Mapping[str, str]) -> dict[str, Any]:
    """``GET /v1/images``: newest first, ``?limit=&cursor=&collection=``.

    Returns:
        ``{"images": [...], "next_cursor": str | None}``.
    """
    collection = parse_collection(query.get("collection"))
    page = owner_page(ImageModel, user_id, query, collection)
    return {"images": [image_json(i) for i in page["items"]], "next_cursor": page["next_cursor"]}


def get_owned_image(user_id: str, image_id: str) -> ImageModel:
    """The caller's image.

    Raises:
        NotFound: 404 when it does not exist or belongs to another user.
    """
    if not ULID_RE.match(image_id or ""):
        raise NotFound("image")
    try:
        return ImageModel.get(user_id, image_id)
    except ImageModel.DoesNotExist:
        raise NotFound("image") from None


def get_image(user_id: str, image_id: str) -> dict[str, Any]:
    """``GET /v1/images/{id}``."""
    return image_json(get_owned_image(user_id, image_id))


def delete_image(user_id: str, image_id: str) -> ImageModel:
    """``DELETE /v1/images/{id}``: metadata first, then the objects (a leftover
    object is an orphan the sweep removes; metadata never points at nothing). The route
    then revokes the image's share links
    (:func:`chalicelib.services.shares.revoke_for_deleted_image`).

    Returns:
        The deleted image's item (its ``collection`` names the links to check).

    Raises:
        NotFound: 404 when it does not exist or belongs to another user.
    """
    item = get_owned_image(user_id, image_id)
    if not delete_image_item(user_id, image_id, item.collection, ImageModel.image_id.exists()):
        raise NotFound("image")
    objects.delete([item.s3_key, item.thumb_key])
    return item


# --- collections ------------------------------------------------------------------------------


def list_collections(user_id: str) -> dict[str, Any]:
    """``GET /v1/collections``: ``{"collections": [{"name", "image_count"}], "truncated"}``,
    sorted by name (case-insensitive).

    One Query of the user's collection counters, which change in the same transaction
    as the image items (``chalicelib.db.images``); empty collections are left out.
    ``truncated`` is always false (kept for clients of the earlier counting version).
    """
    ordered = sorted(collection_counts(user_id).items(), key=lambda x: x[0].lower())
    return {"collections": [{"name": name, "image_count": n} for name, n in ordered], "truncated": False}
