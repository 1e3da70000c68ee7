"""Submitting a batch job (``POST /v1/jobs``): parsing, validation, idempotency, writing
and enqueueing.

A job is up to ``JOBS_MAX_ITEMS`` (1,000) images, one *item* each. Submitting:

1. everything is validated first (400 naming the field; nothing is written);
2. an ``Idempotency-Key`` is claimed with a conditional put (same key and body: the same
   job is returned; same key, other body: 422 ``idempotency-key-reused``);
3. the quota is charged for all images at once and the budget holds the job's estimate
   (429 ``quota-exceeded`` / ``budget-exceeded`` with the estimate, nothing written); with
   the user's own Together key saved nothing is charged and the job is ``key_source: own``
   (its items use only that key, see :mod:`chalicelib.jobs.worker`);
4. the items (BatchWriteItem, a few calls at once), then the job, are written (the job with
   ``attribute_not_exists``);
5. the items go to SQS (:func:`chalicelib.queue.send_messages`: SendMessageBatch, 10
   entries a call, failed entries sent again), so no item stays queued without a
   message. If SQS stays down, the job keeps ``enqueued_at`` unset and the recovery
   sweep (or a retried request with the same key) sends them later.
   Source: Amazon SQS API reference, SendMessageBatch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import batched
from typing import Any

from pynamodb.exceptions import DeleteError, PutError, UpdateError
from ulid import ULID

from chalicelib.db import IdempotencyModel, JobItemModel, JobModel, is_condition_failure, same_item
from chalicelib.db.jobs import ACTIVE_SHARD, JOB_QUEUED, QUEUED
from chalicelib.errors import DomainError, ErrorCode, ValidationError
from chalicelib.flux import availability
from chalicelib.flux.catalog import (
    GENERATION_FIELDS,
    MAX_SEED,
    TEXT_PATTERN,
    as_integer,
    estimate_cost,
    find_model,
    parse_generation_params,
)
from chalicelib.flux.video_catalog import parse_video_params, video_estimate
from chalicelib.jobs import state
from chalicelib.jsonbody import parse_json_object, reject_nulls
from chalicelib.queue import QueueError, parallel, send_messages
from chalicelib.services import image_inputs, prompt_files, together_keys, usage
from chalicelib.services.images import check_unknown_fields, parse_collection
from chalicelib.services.pagination import matches
from chalicelib.services.webhook_secrets import get_or_create_secret
from chalicelib.services.webhooks import validate_webhook_url
from chalicelib.settings import get_settings

logger = logging.getLogger("promptcanvas.jobs")

#: The image-job shapes (one of them): ``image_ids`` or ``collection_images`` (one prompt over
#: each image, automatic mode) and ``sets`` (each set's references and prompt, semi-automatic).
IMAGE_JOB_FIELDS: tuple[str, ...] = ("image_ids", "collection_images", "sets")
SET_FIELDS = frozenset({"prompt", "image_ids"})

#: ``kind`` of a job: ``image`` (the default) or ``video`` (one video per item).
JOB_KINDS = ("image", "video")
#: The fields of a video job (``kind: "video"``, :func:`build_video_submission`).
VIDEO_JOB_FIELDS = frozenset(
    {"kind", "prompts", "prompt", "count", "image_ids", "collection_images", "name", "collection", "webhook_url"}
    | {"model", "width", "height", "seconds", "fps", "seed", "negative_prompt"}
)
#: A well-formed image id for checking that a video model takes a keyframe at all (the real
#: ids are checked for ownership and state by :func:`resolve_inputs`).
PROBE_IMAGE_ID = "0" * 26
#: The video fields a video job stores once for all its items (prompt, seed and keyframe per item).
VIDEO_PARAM_FIELDS = ("model", "width", "height", "seconds", "fps", "negative_prompt")

SUBMIT_FIELDS: frozenset[str] = (
    GENERATION_FIELDS
    | VIDEO_JOB_FIELDS
    | {
        "prompts",
        "count",
        "name",
        "collection",
        "webhook_url",
        *IMAGE_JOB_FIELDS,
    }
)

#: The generation fields a job stores once for all its items (the rest: prompt, seed, n per item).
JOB_PARAM_FIELDS = tuple(sorted(GENERATION_FIELDS - {"prompt", "seed", "n"}))

MAX_NAME_CHARS = 200
ITEM_WRITE_CHUNK = 25  # items per BatchWriteItem (its maximum; Amazon DynamoDB API reference)
ITEM_WRITE_PARALLEL = 4  # BatchWriteItem calls in flight at once (a 1,000-item job is 40 calls)

MAX_IDEMPOTENCY_KEY_CHARS = 255

IDEMPOTENCY_TTL = timedelta(hours=24)

IDEMPOTENCY_TAKEOVER_S = 60  # a claim whose job never appeared may be taken over after this, seconds


@dataclass(frozen=True)
class Submitted:
    """The outcome of a submit: the job as created (or found again for a replayed
    ``Idempotency-Key``). The route answers 202 with :meth:`body`, ``Location`` and,
    when ``replayed``, ``Idempotent-Replayed: true``.
    """

    job_id: str
    status: str
    total: int
    replayed: bool = False

    def body(self) -> dict[str, Any]:
        """``{"job_id", "status", "total"}``."""
        return {"job_id": self.job_id, "status": self.status, "total": self.total}


# --- parsing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """A validated job request, before anything is written.

    ``prompts`` one entry per item (``n`` already expanded); ``seeds`` one per item;
    ``params`` the job's generation fields (``JOB_PARAM_FIELDS``); ``request_hash``
    sha256 of the normalised request (for the idempotency key).

    Image jobs (``source`` ``image_ids`` | ``collection_images`` | ``sets``): ``wanted``
    one entry per item, ``(role, ((id, field), ...))`` with ``role`` ``image`` (edited:
    ``image_url``) or ``reference`` (``reference_images``) and ``field`` the request field
    that named the id; ``inputs`` the resolved item inputs (:meth:`Resolved.to_json`),
    filled in by :func:`resolve_inputs`; ``collection_images`` the collection whose
    ready uploads make the items (expanded by :func:`resolve_inputs`).
    """

    prompts: list[str]
    seeds: list[int]
    params: dict[str, Any]
    name: str | None
    collection: str | None
    webhook_url: str | None
    source: str
    request_hash: str
    wanted: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    inputs: tuple[dict[str, Any] | None, ...] = ()
    collection_images: str | None = None
    collection_prompt: str | None = None
    seed: int | None = None
    n: int = 1
    kind: str = "image"


def _name(value: Any) -> str | None:
    """The job's ``name``: at most ``MAX_NAME_CHARS`` characters as sent, no control
    characters but TAB/LF/CR (:data:`TEXT_PATTERN`); runs of white space become one space."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError("name must be a string", field="name")
    if len(value) > MAX_NAME_CHARS:
        raise ValidationError(f"name must be at most {MAX_NAME_CHARS} characters", field="name")
    if not matches(TEXT_PATTERN, value):
        raise ValidationError("name must not contain control characters", field="name")
    return " ".join(value.split()) or None


def _count(value: Any, maximum: int) -> int:
    if value is None:
        return 1
    value = as_integer(value)
    if value is None:
        raise ValidationError("count must be an integer", field="count")
    if not 1 <= value <= maximum:
        raise ValidationError(f"count must be between 1 and {maximum} (got {value})", field="count")
    return value


def _prompt_error(message: str, field: str) -> DomainError:
    """A bad prompt (or too many images) in a JSON body is 400 naming ``field``; in a
    prompt file it is 422 ``invalid-prompt-file`` (the form matched the schema, its file
    content did not make a job)."""
    if field == "file":
        return prompt_files.unusable_file(message)
    return ValidationError(message, field=field)


def build_submission(
    fields: Mapping[str, Any],
    prompts: list[tuple[str, str, Any]] | None,
    *,
    source: str,
    hash_extra: Any = None,
) -> Submission:
    """Validate a job request into a :class:`Submission`.

    Args:
        fields: the JSON body (or the multipart form fields, already typed). Either
            ``prompts`` (list of strings) or ``prompt`` + optional ``count``, unless
            ``prompts`` is given.
        prompts: prompts from a file as ``(field, label, text)`` (``label`` names the
            line in error messages, ``field`` is ``file``), or None for a JSON request.
        source: ``prompts`` | ``count`` | ``file``.
        hash_extra: anything else that identifies the request (the file's digest).

    Raises:
        ValidationError: 400 naming the field: ``prompts`` (empty, not a list, over the
            limit), ``prompts[i]`` (a bad prompt), ``count``, ``name``, ``collection``,
            ``webhook_url`` or a generation field.
        DomainError: 422 ``invalid-prompt-file`` for a bad line of a prompt file, or a file
            that makes too many images; 422 ``webhook-url-refused``.
    """
    settings = get_settings()
    maximum = settings.jobs_max_items
    kind = fields.get("kind", "image")
    if kind not in JOB_KINDS:
        raise ValidationError(f"kind must be one of {', '.join(JOB_KINDS)}", field="kind")
    if kind == "video":
        if prompts is not None:
            raise ValidationError("a video job takes a JSON body", field="kind")
        return build_video_submission(fields)
    for name in ("seconds", "fps"):
        if fields.get(name) is not None:
            raise ValidationError(f"{name} goes with kind video", field=name, code="unknown-field")
    if prompts is None and any(fields.get(k) is not None for k in IMAGE_JOB_FIELDS):
        return build_image_submission(fields)
    if prompts is None:
        has_list = fields.get("prompts") is not None
        if has_list:
            if fields.get("prompt") is not None:
                raise ValidationError("send prompts, or prompt with count, not both", field="prompt")
            if fields.get("count") is not None:
                raise ValidationError("count goes with prompt, not with prompts", field="count")
            raw = fields["prompts"]
            if not isinstance(raw, list):
                raise ValidationError("prompts must be a list of strings", field="prompts")
            if not 1 <= len(raw) <= maximum:
                raise ValidationError(f"prompts must have 1 to {maximum} entries (got {len(raw)})", field="prompts")
            prompts = [(f"prompts[{i}]", f"prompts[{i}]", p) for i, p in enumerate(raw)]
            source = "prompts"
        else:
            if fields.get("prompt") is None:
                raise ValidationError("prompts (a list) or prompt (with count) is required", field="prompts")
            count = _count(fields.get("count"), maximum)
            prompts = [("prompt", "prompt", fields["prompt"])] * count
            source = "count"
    elif not prompts:
        raise ValidationError("the file has no prompts", field="file")
    # The job's generation parameters, validated once with the first prompt.
    base = {k: v for k, v in fields.items() if k in GENERATION_FIELDS and k != "prompt"}
    first_field, first_label, first_prompt = prompts[0]
    try:
        params = parse_generation_params({**base, "prompt": first_prompt})
    except ValidationError as exc:
        if exc.field == "prompt":
            raise _prompt_error(exc.message.replace("prompt", first_label, 1), first_field) from None
        raise
    availability.require_available(params.model)
    n = params.n
    if len(prompts) * n > maximum:
        where = "prompts" if source == "prompts" else ("count" if source == "count" else "file")
        message = f"a job makes at most {maximum} images; {len(prompts)} prompts x n={n} is {len(prompts) * n}"
        raise _prompt_error(message, where)
    job_params = {k: v for k, v in params.to_body().items() if k in JOB_PARAM_FIELDS}
    texts: list[str] = []
    checked: dict[str, str] = {}
    for where, label, text in prompts:
        if isinstance(text, str) and text in checked:
            texts.append(checked[text])
            continue
        try:
            one = parse_generation_params({**job_params, "prompt": text, "seed": 0})
        except ValidationError as exc:
            raise _prompt_error(exc.message.replace("prompt", label, 1), where) from None
        checked[text] = one.prompt
        texts.append(one.prompt)
    expanded = [t for t in texts for _ in range(n)]
    return _finish(fields, expanded, job_params, source, hash_extra)


def _seeds(seed: Any, count: int) -> list[int]:
    """One seed per item: ``(seed + i) mod 2**32`` when the request gave one (reproducible), else drawn."""
    if seed is not None:
        return [(int(seed) + i) % (MAX_SEED + 1) for i in range(count)]
    return [secrets.randbelow(MAX_SEED + 1) for _ in range(count)]


def _finish(
    fields: Mapping[str, Any],
    prompts: list[str],
    job_params: dict[str, Any],
    source: str,
    hash_extra: Any = None,
    **image_parts: Any,
) -> Submission:
    """The :class:`Submission` of validated ``prompts`` (one per item): seeds, ``name``,
    ``collection``, ``webhook_url`` and the request hash; ``image_parts`` the image-job fields."""
    digest = hashlib.sha256(
        json.dumps(
            {"fields": {k: v for k, v in fields.items()}, "extra": hash_extra, "source": source},
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        ).encode()
    ).hexdigest()
    return Submission(
        prompts=prompts,
        seeds=_seeds(fields.get("seed"), len(prompts)),
        params=job_params,
        name=_name(fields.get("name")),
        collection=parse_collection(fields.get("collection")),
        webhook_url=validate_webhook_url(fields.get("webhook_url")),
        source=source,
        request_hash=digest,
        **image_parts,
    )


# --- image jobs ------------------------------------------------------------------------------


def _ulid_list(value: Any, field: str, maximum: int) -> list[str]:
    """A list of 1..``maximum`` ULIDs (400 naming ``field`` or ``field[i]``)."""
    if not isinstance(value, list) or not value:
        raise ValidationError(f"{field} must be a non-empty list of image or upload ids", field=field)
    if len(value) > maximum:
        raise ValidationError(f"{field} may name at most {maximum} images (got {len(value)})", field=field)
    for i, one in enumerate(value):
        if not isinstance(one, str) or not image_inputs.is_id(one):
            raise ValidationError(f"{field}[{i}] must be an image or upload id (a ULID)", field=f"{field}[{i}]")
    return value


def _check_prompt(job_params: dict[str, Any], text: Any, field: str) -> str:
    try:
        return parse_generation_params({**job_params, "prompt": text, "seed": 0}).prompt
    except ValidationError as exc:
        if exc.field == "prompt":
            raise ValidationError(exc.message.replace("prompt", field, 1), field=field) from None
        raise


def build_image_submission(fields: Mapping[str, Any]) -> Submission:
    """Validate an image job (nothing is read: ids are checked by :func:`resolve_inputs`).

    Shapes (exactly one of them, beside the generation fields, ``name``, ``collection``,
    ``webhook_url``):

    * ``{prompt, image_ids: [1..JOBS_MAX_ITEMS]}``: one prompt over each image, ``n`` images
      each (automatic mode). Each image is edited (``image_url``) when the model takes an
      image to edit, else it is the one reference image (``reference_images``);
    * ``{prompt, collection_images: name}``: the same over every ready upload of the
      collection (oldest first);
    * ``{sets: [{prompt, image_ids: [1..model max]}, ...], n}``: each set's images are the
      references of its prompt, ``n`` (1..JOBS_MAX_ITEMS) images per set (semi-automatic mode).

    At most ``JOBS_MAX_ITEMS`` images in all.

    Raises:
        ValidationError: 400 naming the field (``image_ids[i]``, ``sets[i].prompt``,
            ``sets[i].image_ids``, ...); ``unsupported-parameter`` when the model takes no
            image input of the kind needed.
    """
    maximum = get_settings().jobs_max_items
    given = [k for k in IMAGE_JOB_FIELDS if fields.get(k) is not None]
    if len(given) > 1:
        raise ValidationError(f"send one of {', '.join(IMAGE_JOB_FIELDS)}, not several", field=given[1])
    mode = given[0]
    for other in ("prompts", "count"):
        if fields.get(other) is not None:
            raise ValidationError(f"{other} does not go with {mode}", field=other)
    base = {k: v for k, v in fields.items() if k in GENERATION_FIELDS and k not in ("prompt", "n")}
    if mode == "sets":
        return _sets_submission(fields, base, maximum)
    if fields.get("prompt") is None:
        raise ValidationError(f"prompt is required with {mode}", field="prompt")
    params = parse_generation_params({**base, "prompt": fields["prompt"], "n": fields.get("n")})
    availability.require_available(params.model)
    spec = find_model(params.model)
    assert spec is not None
    if spec.image_url:
        role = "image"
    elif spec.max_reference_images > 0:
        role = "reference"
    else:
        raise ValidationError(f"model {spec.id} takes no image input", field=mode, code=ErrorCode.UNSUPPORTED_PARAMETER)
    job_params = {k: v for k, v in params.to_body().items() if k in JOB_PARAM_FIELDS}
    if mode == "collection_images":
        return _over_collection(fields, job_params, params.prompt, role, n=params.n)
    ids = _ulid_list(fields["image_ids"], "image_ids", maximum)
    if len(ids) * params.n > maximum:
        raise ValidationError(
            f"a job makes at most {maximum} images; {len(ids)} images x n={params.n} is {len(ids) * params.n}",
            field="image_ids",
        )
    wanted = tuple((role, ((one, f"image_ids[{i}]"),)) for i, one in enumerate(ids) for _ in range(params.n))
    return _finish(fields, [params.prompt] * len(wanted), job_params, mode, wanted=wanted, n=params.n)


def _over_collection(
    fields: Mapping[str, Any], job_params: dict[str, Any], prompt: str, role: str, **parts: Any
) -> Submission:
    """``{prompt, collection_images: name}``: one prompt over each ready upload of the
    collection, as ``role`` (expanded by :func:`resolve_inputs`)."""
    name = parse_collection(fields["collection_images"], field="collection_images")
    return _finish(
        fields,
        [],
        job_params,
        "collection_images",
        collection_images=name,
        collection_prompt=prompt,
        seed=fields.get("seed"),
        wanted=((role, ()),),
        **parts,
    )


def _sets_submission(fields: Mapping[str, Any], base: dict[str, Any], maximum: int) -> Submission:
    """``{sets: [{prompt, image_ids}], n}``: see :func:`build_image_submission`."""
    for other in ("prompt",):
        if fields.get(other) is not None:
            raise ValidationError("each set has its own prompt", field=other)
    sets = fields["sets"]
    if not isinstance(sets, list) or not 1 <= len(sets) <= maximum:
        raise ValidationError(f"sets must be a list of 1 to {maximum} sets", field="sets")
    n = as_integer(fields.get("n", 1))
    if n is None or not 1 <= n <= maximum:
        raise ValidationError(f"n (images per set) must be an integer from 1 to {maximum}", field="n")
    if len(sets) * n > maximum:
        raise ValidationError(
            f"a job makes at most {maximum} images; {len(sets)} sets x n={n} is {len(sets) * n}", field="n"
        )
    for i, one in enumerate(sets):
        if not isinstance(one, dict):
            raise ValidationError("a set is an object {prompt, image_ids}", field=f"sets[{i}]")
        for key in one:
            if key not in SET_FIELDS:
                raise ValidationError(f"unknown field {key!r}", field=f"sets[{i}].{key}", code="unknown-field")
        if one.get("prompt") is None:
            raise ValidationError("prompt is required", field=f"sets[{i}].prompt")
    params = parse_generation_params({**base, "prompt": _check_prompt(base, sets[0]["prompt"], "sets[0].prompt")})
    availability.require_available(params.model)
    spec = find_model(params.model)
    assert spec is not None
    job_params = {k: v for k, v in params.to_body().items() if k in JOB_PARAM_FIELDS}
    prompts: list[str] = []
    wanted: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    for i, one in enumerate(sets):
        text = _check_prompt(job_params, one["prompt"], f"sets[{i}].prompt")
        field = f"sets[{i}].image_ids"
        ids = _ulid_list(one.get("image_ids"), field, max(1, spec.max_reference_images))
        if spec.max_reference_images == 0:
            raise ValidationError(
                f"model {spec.id} takes no reference images", field=field, code=ErrorCode.UNSUPPORTED_PARAMETER
            )
        if len(set(ids)) != len(ids):
            raise ValidationError(f"{field} names the same image twice", field=field)
        refs = tuple((one_id, f"{field}[{j}]") for j, one_id in enumerate(ids))
        for _ in range(n):
            prompts.append(text)
            wanted.append(("reference", refs))
    return _finish(fields, prompts, job_params, "sets", wanted=tuple(wanted), n=n)


# --- video jobs ------------------------------------------------------------------------------


def _video_params(job_params: dict[str, Any], text: Any, field: str, image: bool) -> str:
    """Validate one item's video request (``image``: it has a keyframe); its prompt as parsed.

    Raises:
        ValidationError: 400 naming ``field`` for a bad prompt, else the field at fault.
    """
    body = {**job_params, "prompt": text, "seed": 0}
    if image:
        body["image_id"] = PROBE_IMAGE_ID
    try:
        prompt = parse_video_params(body).prompt
    except ValidationError as exc:
        if exc.field == "prompt":
            raise ValidationError(exc.message.replace("prompt", field, 1), field=field) from None
        raise
    if prompt is None:  # a blank prompt, which only a keyframe could stand in for
        raise ValidationError(f"{field} must not be blank", field=field)
    return prompt


def build_video_submission(fields: Mapping[str, Any]) -> Submission:
    """Validate a video job (``kind: "video"``): one video per item, every item with the
    job's ``model``, size, ``seconds``, ``fps`` and ``negative_prompt``
    (:func:`~chalicelib.flux.video_catalog.parse_video_params` checks them against the model).

    Shapes (one of them, beside ``name``, ``collection``, ``webhook_url``, ``seed``):

    * ``{prompts: [1..JOBS_MAX_ITEMS]}``: text-to-video, one video per prompt;
    * ``{prompt, count?}``: ``count`` videos of one prompt (consecutive seeds);
    * ``{prompt, image_ids: [...]}``: one prompt over each image (its first keyframe);
    * ``{prompt, collection_images: name}``: the same over every ready upload of a collection.

    Raises:
        ValidationError: 400 naming the field: a field that does not go with a video job,
            a bad prompt (``prompts[i]``), a size/duration/fps the model does not render,
            ``image_ids`` for a model that takes no keyframe image.
    """
    maximum = get_settings().jobs_max_items
    for name in fields:
        if name not in VIDEO_JOB_FIELDS:
            raise ValidationError(f"{name} does not go with kind video", field=name, code="unknown-field")
    given = [k for k in ("prompts", "image_ids", "collection_images") if fields.get(k) is not None]
    if len(given) > 1:
        raise ValidationError(f"send one of {', '.join(given)}, not several", field=given[1])
    mode = given[0] if given else "count"
    if mode != "count" and fields.get("count") is not None:
        raise ValidationError(f"count does not go with {mode}", field="count")
    if mode == "prompts" and fields.get("prompt") is not None:
        raise ValidationError("send prompts, or prompt with count, not both", field="prompt")
    if mode != "prompts" and fields.get("prompt") is None:
        raise ValidationError(
            "prompts (a list) or prompt is required", field="prompts" if mode == "count" else "prompt"
        )
    image = mode in ("image_ids", "collection_images")
    first = (
        fields["prompts"][0]
        if mode == "prompts" and isinstance(fields["prompts"], list) and fields["prompts"]
        else fields.get("prompt")
    )
    probe = {k: fields[k] for k in VIDEO_PARAM_FIELDS if fields.get(k) is not None}
    if image:
        probe["image_id"] = PROBE_IMAGE_ID
    try:
        params = parse_video_params({**probe, "prompt": first, "seed": fields.get("seed", 0)})
    except ValidationError as exc:
        if exc.field == "image_id":  # the model takes no keyframe image
            raise ValidationError(exc.message, field=mode, code=exc.code) from None
        if exc.field == "prompt":
            field = "prompts[0]" if mode == "prompts" else "prompt"
            raise ValidationError(exc.message.replace("prompt", field, 1), field=field, code=exc.code) from None
        raise
    resolved = {
        "model": params.model,
        "width": params.width,
        "height": params.height,
        "seconds": params.seconds,
        "fps": params.fps,
        "negative_prompt": params.negative_prompt,
    }
    job_params = {k: v for k, v in resolved.items() if v is not None}
    if mode == "prompts":
        raw = fields["prompts"]
        if not isinstance(raw, list) or not 1 <= len(raw) <= maximum:
            raise ValidationError(f"prompts must be a list of 1 to {maximum} prompts", field="prompts")
        texts = [_video_params(job_params, text, f"prompts[{i}]", False) for i, text in enumerate(raw)]
        return _finish(fields, texts, job_params, "prompts", kind="video")
    text = _video_params(job_params, fields["prompt"], "prompt", image)
    if mode == "count":
        return _finish(fields, [text] * _count(fields.get("count"), maximum), job_params, "count", kind="video")
    if mode == "collection_images":
        return _over_collection(fields, job_params, text, "image", kind="video")
    ids = _ulid_list(fields["image_ids"], "image_ids", maximum)
    wanted = tuple(("image", ((one, f"image_ids[{i}]"),)) for i, one in enumerate(ids))
    return _finish(fields, [text] * len(wanted), job_params, mode, wanted=wanted, kind="video")


def resolve_inputs(user_id: str, sub: Submission) -> Submission:
    """Check every input id of an image job (the caller's own, ready) and fill in ``inputs``;
    expand ``collection_images`` into its items. Nothing is written.

    Raises:
        DomainError: 404 ``not-found`` / 409 ``upload-pending`` / 422 ``upload-rejected`` naming
            the field with its index (``image_ids[3]``, ``sets[1].image_ids[0]``).
        DomainError: 404 ``not-found`` naming ``collection_images`` when the collection holds
            no ready upload.
        ValidationError: 400 naming ``collection_images`` when it holds too many.
    """
    if not sub.wanted:
        return sub
    cache: dict[str, image_inputs.InputRef] = {}

    def ref(one_id: str, field: str) -> image_inputs.InputRef:
        if one_id not in cache:
            cache[one_id] = image_inputs.resolve_one(user_id, one_id, field)
        return cache[one_id]

    def item_inputs(role: str, refs: list[image_inputs.InputRef]) -> dict[str, Any] | None:
        if role == "image":
            return image_inputs.Resolved(image=refs[0]).to_json()
        return image_inputs.Resolved(references=tuple(refs)).to_json()

    if sub.collection_images is not None:
        role = sub.wanted[0][0]
        maximum = get_settings().jobs_max_items
        found = image_inputs.ready_uploads_in(user_id, sub.collection_images, limit=maximum // sub.n + 1)
        if not found:  # no such collection, or nothing ready in it: nothing to name
            raise DomainError(
                ErrorCode.NOT_FOUND, "collection_images: no ready uploads in that collection", field="collection_images"
            )
        if len(found) * sub.n > maximum:
            raise ValidationError(
                f"a job makes at most {maximum} images; the collection has more ready uploads than that",
                field="collection_images",
            )
        inputs = tuple(item_inputs(role, [r]) for r in found for _ in range(sub.n))
        prompts = [str(sub.collection_prompt)] * len(inputs)
        return replace(sub, prompts=prompts, seeds=_seeds(sub.seed, len(inputs)), inputs=inputs)
    inputs = tuple(item_inputs(role, [ref(i, f) for i, f in refs]) for role, refs in sub.wanted)
    return replace(sub, inputs=inputs)


def parse_request(content_type: str | None, raw: bytes) -> Submission:
    """Parse and validate a ``POST /v1/jobs`` body: JSON, or multipart with a prompt file.

    Raises:
        DomainError: 413 ``body-too-large`` over ``JOBS_MAX_BODY_BYTES``; 415
            ``unsupported-media-type``; 400 ``invalid-json`` / naming the field.
    """
    limit = get_settings().jobs_max_body_bytes
    if len(raw) > limit:
        raise DomainError(ErrorCode.BODY_TOO_LARGE, f"request body exceeds {limit} bytes")
    ctype = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if ctype == "multipart/form-data":
        form = prompt_files.parse_form(content_type or "", raw)
        return build_submission(form.fields, form.prompts, source="file", hash_extra=form.digest)
    if ctype not in ("application/json", "text/json") and not ctype.endswith("+json"):
        raise DomainError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "send application/json or multipart/form-data")
    body = parse_json_object(raw)
    check_unknown_fields(body, SUBMIT_FIELDS)
    reject_nulls(body)
    return build_submission(body, None, source="prompts")


def estimate_submission(sub: Submission) -> dict[str, Any]:
    """The upstream cost of a validated job: ``{"images", "megapixels", "usd", "model",
    "price_per_mp", "priced_at"}`` (:func:`~chalicelib.flux.catalog.estimate_cost`; every
    item has the job's model, size and steps); for a video job ``{"videos", "seconds", "usd",
    "model", "price_per_video", "priced_at"}`` (:func:`~chalicelib.flux.video_catalog.video_cost`)."""
    if sub.kind == "video":
        return video_estimate(str(sub.params["model"]), int(sub.params["seconds"]), len(sub.prompts))
    params = parse_generation_params({**sub.params, "prompt": sub.prompts[0], "seed": 0, "n": 1})
    return estimate_cost(params.model, params.width, params.height, params.steps, len(sub.prompts))


def parse_idempotency_key(value: str | None) -> str | None:
    """The ``Idempotency-Key`` header: 1-255 printable ASCII characters.

    Raises:
        ValidationError: 400 naming ``Idempotency-Key``.
    """
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_IDEMPOTENCY_KEY_CHARS or not all(33 <= ord(c) < 127 for c in value):
        raise ValidationError(
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters",
            field="Idempotency-Key",
        )
    return value


# --- idempotency -----------------------------------------------------------------------------


@dataclass
class _Claim:
    job_id: str
    charged: bool
    replay: JobModel | None = None
    period: str | None = None  # the quota month an earlier request charged


def _claim_key(user_id: str, key: str, request_hash: str) -> _Claim:
    """Claim ``key`` for this request, or find the job an earlier identical request made.

    Raises:
        DomainError: 422 ``idempotency-key-reused`` (other body); 409
            ``idempotency-key-in-progress`` (the first request is still running).
    """
    now = state.now_s()
    record = IdempotencyModel(
        user_id,
        key,
        request_hash=request_hash,
        job_id=str(ULID()),
        charged=False,
        claimed_at=now,
        expires_at=IDEMPOTENCY_TTL,
    )
    expired = datetime.fromtimestamp(now, UTC)
    try:
        record.save(condition=IdempotencyModel.key.does_not_exist() | (IdempotencyModel.expires_at < expired))
        return _Claim(record.job_id, False)
    except PutError as exc:
        if not is_condition_failure(exc):
            raise
    existing = IdempotencyModel.get(user_id, key, consistent_read=True)
    if existing.request_hash != request_hash:
        raise DomainError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "this Idempotency-Key was used with a different request body",
            field="Idempotency-Key",
        )
    try:
        return _Claim(existing.job_id, bool(existing.charged), JobModel.get(user_id, existing.job_id))
    except JobModel.DoesNotExist:
        pass
    if now - float(existing.claimed_at) < IDEMPOTENCY_TAKEOVER_S:
        raise _in_progress()
    try:  # the first request died before writing its job: take its claim over
        existing.update(
            actions=[IdempotencyModel.claimed_at.set(now)],
            condition=IdempotencyModel.claimed_at == existing.claimed_at,
        )
    except UpdateError as exc:
        if is_condition_failure(exc):
            raise _in_progress() from None
        raise
    return _Claim(existing.job_id, bool(existing.charged), period=existing.charged_period)


def _in_progress() -> DomainError:
    return DomainError(
        ErrorCode.IDEMPOTENCY_KEY_IN_PROGRESS,
        "a request with this Idempotency-Key is still being processed; retry shortly",
        retry_after_s=1,
    )


def _release_key(user_id: str, key: str, job_id: str) -> None:
    try:
        IdempotencyModel(user_id, key).delete(condition=IdempotencyModel.job_id == job_id)
    except DeleteError:
        logger.warning("could not release an idempotency key")


def _created(job: JobModel, replayed: bool = False) -> Submitted:
    return Submitted(job.job_id, state.derive_status(job), int(job.total), replayed)


def submit(
    user_id: str, content_type: str | None, raw: bytes | str | None, idempotency_key: str | None = None
) -> Submitted:
    """``POST /v1/jobs``.

    Args:
        raw: the request body (Chalice gives ``str`` for text bodies, ``bytes`` for binary ones).

    Returns:
        :class:`Submitted` (status ``queued``); with an ``Idempotency-Key`` seen before
        (same body): the same job, its current status and ``replayed``.

    Raises:
        ValidationError: 400 naming the field (nothing written).
        DomainError: 413, 415, 409/422 (idempotency key), 429 ``rate-limited`` / ``quota-exceeded``;
            for image jobs 404 ``not-found`` / 409 ``upload-pending`` / 422 ``upload-rejected``
            naming the input field with its index (nothing written; a claimed key is released).
    """
    body = raw.encode("utf-8") if isinstance(raw, str) else (raw or b"")
    sub = parse_request(content_type, body)
    key = parse_idempotency_key(idempotency_key)
    usage.hit_rate_limit(user_id)
    claim = _claim_key(user_id, key, sub.request_hash) if key else _Claim(str(ULID()), False)
    if claim.replay is not None:  # the job exists: its inputs were checked when it was made
        ensure_enqueued(claim.replay)
        return _created(claim.replay, replayed=True)
    try:
        sub = resolve_inputs(user_id, sub)
    except Exception:
        if key:
            _release_key(user_id, key, claim.job_id)
        raise
    total = len(sub.prompts)
    estimate = estimate_submission(sub)
    own = together_keys.active_key(user_id) if sub.kind == "image" else None  # videos use the shared pool
    if own is not None:  # the user's own key: their bill, not the platform's quota or budget
        try:
            together_keys.require_usable(user_id, own)
        except DomainError:
            if key:
                _release_key(user_id, key, claim.job_id)
            raise
    charged_now = False
    period = claim.period
    if not claim.charged and own is None:
        try:
            period = usage.charge(user_id, total, estimate["usd"], estimate)
        except DomainError:
            if key:
                _release_key(user_id, key, claim.job_id)
            raise
        charged_now = True
        if key:
            try:
                IdempotencyModel(user_id, key).update(
                    actions=[IdempotencyModel.charged.set(True), IdempotencyModel.charged_period.set(period)]
                )
            except UpdateError:
                logger.warning("could not record the charge on an idempotency key")
    try:
        if sub.webhook_url:
            get_or_create_secret(user_id)
        job, items = _write_job(
            user_id, claim.job_id, sub, key, period, key_source="shared" if own is None else "own", estimate=estimate
        )
    except Exception:
        if charged_now:
            usage.refund(user_id, total, period, estimate["usd"])
        if key:
            _release_key(user_id, key, claim.job_id)
        raise
    ensure_enqueued(job, items)
    logger.info("job submitted job_id=%s total=%d source=%s", job.job_id, total, sub.source)
    return _created(job)


#: Attributes of a new job set from the clock of the write (compared without them).
JOB_WRITE_CLOCK_ATTRS = ("created_at", "counters_at")


def _write_job(
    user_id: str,
    job_id: str,
    sub: Submission,
    key: str | None,
    period: str | None,
    *,
    key_source: str = "shared",
    estimate: dict[str, Any] | None = None,
) -> tuple[JobModel, list[JobItemModel]]:
    """Write the items (BatchWriteItem, 25 a call, :data:`ITEM_WRITE_PARALLEL` calls at once,
    retried by PynamoDB), then the job.
    ``period`` is the quota month the items were charged to (their refunds go there;
    None for ``key_source="own"``: nothing charged). ``estimate``: the job's
    :func:`estimate_submission` (kept on the job; each item holds its share).

    Items come first: a crash in between leaves only unreachable items (no job, no
    messages); a retry with the same idempotency key rewrites them under the same job id.
    """
    now = state.now_s()
    estimated = float((estimate or {}).get("usd") or 0)
    per_item = round(estimated / max(1, len(sub.prompts)), 9)
    items = [
        JobItemModel(
            job_id,
            state.item_id_for(i),
            user_id=user_id,
            index=i,
            prompt=prompt,
            seed=seed,
            params=sub.params,
            collection=sub.collection,
            image_id=str(ULID()),
            status=QUEUED,
            attempts=0,
            retry_round=0,
            charged_period=period,
            inputs=sub.inputs[i] if sub.inputs else None,
            key_source=key_source,
            estimated_usd=per_item,
            kind="video" if sub.kind == "video" else None,
            created_at=now,
        )
        for i, (prompt, seed) in enumerate(zip(sub.prompts, sub.seeds, strict=True))
    ]
    parallel(_save_items, batched(items, ITEM_WRITE_CHUNK), workers=ITEM_WRITE_PARALLEL)
    job = JobModel(
        user_id,
        job_id,
        name=sub.name,
        collection=sub.collection,
        status=JOB_QUEUED,
        source=sub.source,
        params=sub.params,
        total=len(items),
        queued_count=len(items),
        running_count=0,
        succeeded_count=0,
        failed_count=0,
        failure_reasons=dict.fromkeys(state.REASONS, 0),
        cancelled=False,
        created_at=now,
        counters_at=now,
        progress_base=0,
        finish_seq=0,
        idempotency_key=key,
        webhook_url=sub.webhook_url,
        webhook_state="none",
        webhook_attempts=0,
        active_shard=ACTIVE_SHARD,
        key_source=key_source,
        estimated_usd=round(estimated, 6),
        actual_usd=0,
        kind="video" if sub.kind == "video" else None,
    )
    try:
        job.save(condition=JobModel.job_id.does_not_exist())
    except PutError as exc:
        if not is_condition_failure(exc):
            raise
        # the job is there: ours, when an earlier attempt of this put committed (botocore
        # retried it after a lost answer), or one written by the same request (same
        # idempotency key and body) that was taken over; either way it is this job
        try:
            stored = JobModel.get(user_id, job_id, consistent_read=True)
        except JobModel.DoesNotExist:
            raise exc from None
        if not same_item(stored, job, ignore=JOB_WRITE_CLOCK_ATTRS):
            raise
        logger.info("job %s was written by an earlier attempt of the same put", job_id)
        return stored, items
    return job, items


def _save_items(chunk: tuple[JobItemModel, ...]) -> None:
    """One BatchWriteItem of up to 25 items (unprocessed ones are resent by PynamoDB).

    Raises:
        pynamodb.exceptions.PutError: DynamoDB kept failing.
    """
    with JobItemModel.batch_write() as batch:
        for item in chunk:
            batch.save(item)


def ensure_enqueued(job: JobModel, items: list[JobItemModel] | None = None) -> int:
    """Send the messages of a job whose enqueue never completed (``enqueued_at`` unset):
    one per queued item (a duplicate message is harmless, items are idempotent), then
    record ``enqueued_at``.

    Args:
        items: the job's items when the caller just wrote them (saves reading them).

    Returns:
        Messages sent (0 when the job was already enqueued or SQS failed; logged).
    """
    if job.enqueued_at is not None:
        return 0
    queued = [i for i in items if i.status == QUEUED] if items is not None else state.query_items(job.job_id, QUEUED)
    try:
        send_messages([state.item_message(i) for i in queued])
    except QueueError:
        logger.error("enqueue incomplete job_id=%s; the stuck-work sweep will retry", job.job_id)
        return 0
    try:
        job.update(actions=[JobModel.enqueued_at.set(state.now_s())], condition=JobModel.job_id.exists())
    except UpdateError:
        logger.warning("could not record enqueued_at job_id=%s", job.job_id)
    return len(queued)
