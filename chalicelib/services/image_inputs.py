"""Image inputs of a generation: the caller's ids → what the upstream fetches → what is recorded.

A request names its inputs by id (``POST /v1/images`` and the items of ``POST /v1/jobs``):

* ``image_id``: one image to edit, an upload or one of the caller's own generated
  images (so a result can be edited again); it becomes Together's ``image_url``;
* ``reference_image_ids``: reference images, in order, up to the model's
  ``max_reference_images`` (the catalog); they become ``reference_images``;
* ``mask_id``: an uploaded black-and-white mask (white: the area the edit may change),
  only with ``image_id``; the upstream never sees it: the edit is composited onto the
  input through it (:func:`chalicelib.storage.imaging.composite_masked`).

Rules (the API's, documented in docs/api.md):

1. :func:`parse_input_ids` checks the shape and that the chosen model takes each input
   (400 ``unsupported-parameter`` naming the field) before anything is read.
2. :func:`resolve` checks ownership and state: another user's id or one that does not
   exist is a 404 ``not-found`` naming the field (the two are not told apart); a ZIP upload
   is 422 ``upload-not-an-image``, a rejected one 422 ``upload-rejected``, one whose file
   never arrived 409 ``upload-pending``. A pending upload whose file has arrived is
   verified on first use (:func:`ready_upload`).
3. :func:`prepare` reads the stripped copies (bounded by ``UPLOAD_MAX_BYTES``), records
   their sha256 and hands the upstream short-lived presigned GETs
   (:data:`UPSTREAM_URL_SECONDS`) of the stripped copies, never the originals.

An id is tried as an upload first, then as a generated image (both are ULIDs of the
caller's own tables, so one id names at most one of each).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib.db import ImageModel, UploadModel
from chalicelib.db.uploads import KIND_IMAGE, PENDING, PROCESSING, READY, REJECTED
from chalicelib.errors import DomainError, ErrorCode, ValidationError
from chalicelib.flux.catalog import GenerationParams, ModelSpec
from chalicelib.services import upload_worker
from chalicelib.services.pagination import ULID_PATTERN
from chalicelib.settings import get_settings
from chalicelib.storage import imaging, objects
from chalicelib.storage import uploads as upload_store

#: Body fields naming image inputs (besides the generation fields of the catalog).
INPUT_FIELDS: frozenset[str] = frozenset({"image_id", "reference_image_ids", "mask_id"})
#: Lifetime of a presigned GET handed upstream, seconds: long enough for Together to fetch
#: it within one generation (our deadline is at most a minute), short enough to be useless later.
UPSTREAM_URL_SECONDS = 300
SOURCE_UPLOAD = "upload"
SOURCE_IMAGE = "image"

_ID_RE = re.compile(ULID_PATTERN.removesuffix("$") + r"\Z")


@dataclass(frozen=True)
class InputIds:
    """The input ids of one generation, checked for shape and against the model.

    Attributes:
        image_id: the image to edit, or None.
        reference_ids: reference image ids, in order (may be empty).
        mask_id: the mask upload's id (only with ``image_id``), or None.
        prefix: how fields are named in errors (``""`` for ``POST /v1/images``,
            e.g. ``"sets[2]."`` in a job).
    """

    image_id: str | None = None
    reference_ids: tuple[str, ...] = ()
    mask_id: str | None = None
    prefix: str = ""

    @property
    def empty(self) -> bool:
        """True for a text-to-image generation."""
        return self.image_id is None and not self.reference_ids and self.mask_id is None


@dataclass(frozen=True)
class InputRef:
    """One resolved input: ``id``, ``source`` (``upload`` | ``image``) and the S3 key of
    the stripped copy that is handed upstream."""

    id: str
    source: str
    s3_key: str

    def to_json(self) -> dict[str, str]:
        """``{"id", "source"}``: what a job item stores to resolve it again later."""
        return {"id": self.id, "source": self.source}


@dataclass(frozen=True)
class Resolved:
    """The resolved inputs of one generation (all the caller's own, all ready)."""

    image: InputRef | None = None
    references: tuple[InputRef, ...] = ()
    mask: InputRef | None = None

    @property
    def empty(self) -> bool:
        """True for a text-to-image generation."""
        return self.image is None and not self.references and self.mask is None

    def to_json(self) -> dict[str, Any] | None:
        """The job item's ``inputs`` (ids and sources), or None when empty."""
        if self.empty:
            return None
        body: dict[str, Any] = {"references": [r.to_json() for r in self.references]}
        if self.image is not None:
            body["image"] = self.image.to_json()
        if self.mask is not None:
            body["mask"] = self.mask.to_json()
        return body


@dataclass(frozen=True)
class Prepared:
    """Inputs ready for one generation.

    Attributes:
        image_url / reference_urls: presigned GETs of the stripped copies.
        record: what the stored image records, ``{"image"?, "references", "mask"?}``,
            each ``{"id", "source", "sha256"}``.
        image_bytes / mask_bytes: the input and mask bytes when a mask is to be applied.
    """

    image_url: str | None = None
    reference_urls: tuple[str, ...] = ()
    record: dict[str, Any] | None = None
    image_bytes: bytes | None = field(default=None, repr=False)
    mask_bytes: bytes | None = field(default=None, repr=False)

    def apply(self, params: GenerationParams) -> GenerationParams:
        """``params`` with the upstream URLs set."""
        if self.image_url is None and not self.reference_urls:
            return params
        from dataclasses import replace

        return replace(params, image_url=self.image_url, reference_images=self.reference_urls)

    def finish(self, data: bytes) -> bytes:
        """The upstream's image bytes after the mask (unchanged without a mask).

        Raises:
            ValueError: an image does not decode (a corrupt upstream answer).
        """
        if self.mask_bytes is None or self.image_bytes is None:
            return data
        return imaging.composite_masked(data, self.image_bytes, self.mask_bytes, get_settings().upload_max_pixels)


# --- parsing -----------------------------------------------------------------------------------


def is_id(value: str) -> bool:
    """Whether ``value`` is shaped like an image or upload id (a ULID)."""
    return bool(_ID_RE.match(value))


def _id(value: Any, name: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ValidationError(f"{name} must be an image or upload id (a ULID)", field=name)
    return value


def _unsupported(spec: ModelSpec, name: str, what: str) -> ValidationError:
    return ValidationError(f"model {spec.id} does not take {what}", field=name, code=ErrorCode.UNSUPPORTED_PARAMETER)


def parse_input_ids(body: Mapping[str, Any], spec: ModelSpec, *, prefix: str = "") -> InputIds:
    """The input ids of a body, checked for shape and against ``spec`` (nothing is read).

    Args:
        body: a mapping that may hold ``image_id`` (str), ``reference_image_ids`` (list of
            str, 1..``spec.max_reference_images``, no duplicates) and ``mask_id`` (str,
            needs ``image_id``).
        prefix: prepended to field names in errors (e.g. ``"sets[2]."``).

    Raises:
        ValidationError: 400 naming the field: ``invalid-request`` for a bad shape,
            ``unsupported-parameter`` when the model takes no such input (Together's
            ``image_url`` / ``reference_images`` per model, the catalog) or too many references.
    """
    image_id = body.get("image_id")
    refs = body.get("reference_image_ids")
    mask_id = body.get("mask_id")
    if image_id is not None:
        image_id = _id(image_id, f"{prefix}image_id")
        if not spec.image_url:
            raise _unsupported(spec, f"{prefix}image_id", "an image to edit (image_url)")
    reference_ids: tuple[str, ...] = ()
    if refs is not None:
        name = f"{prefix}reference_image_ids"
        if not isinstance(refs, list) or not refs:
            raise ValidationError(f"{name} must be a non-empty list of image or upload ids", field=name)
        if spec.max_reference_images == 0:
            raise _unsupported(spec, name, "reference images (reference_images)")
        if len(refs) > spec.max_reference_images:
            raise ValidationError(
                f"model {spec.id} takes at most {spec.max_reference_images} reference images (got {len(refs)})",
                field=name,
                code=ErrorCode.UNSUPPORTED_PARAMETER,
            )
        reference_ids = tuple(_id(r, f"{name}[{i}]") for i, r in enumerate(refs))
        if len(set(reference_ids)) != len(reference_ids):
            raise ValidationError(f"{name} names the same image twice", field=name)
    if mask_id is not None:
        mask_id = _id(mask_id, f"{prefix}mask_id")
        if image_id is None:
            raise ValidationError("mask_id needs image_id (the image the mask applies to)", field=f"{prefix}mask_id")
    return InputIds(image_id=image_id, reference_ids=reference_ids, mask_id=mask_id, prefix=prefix)


# --- resolving ---------------------------------------------------------------------------------


def _not_found(name: str) -> DomainError:
    return DomainError(ErrorCode.NOT_FOUND, f"{name}: no such image or upload", field=name)


def ready_upload(user_id: str, upload_id: str, field: str = "upload_id") -> UploadModel:
    """The caller's verified image upload, verifying it now if the worker has not yet.

    Raises:
        DomainError: 404 ``not-found`` (missing or another user's), 409 ``upload-pending``
            (the file has not arrived yet), 422 ``upload-rejected`` (with the reason) or
            ``upload-not-an-image`` (a ZIP); each naming ``field``.
    """
    item = _get_upload(user_id, upload_id)
    if item is None:
        raise _not_found(field)
    return _check_ready(item, field)


def _get_upload(user_id: str, upload_id: str) -> UploadModel | None:
    if not _ID_RE.match(upload_id or ""):
        return None
    try:
        return UploadModel.get(user_id, upload_id, consistent_read=True)
    except UploadModel.DoesNotExist:
        return None


def _check_ready(item: UploadModel, field: str) -> UploadModel:
    if item.kind != KIND_IMAGE:
        raise DomainError(ErrorCode.UPLOAD_NOT_AN_IMAGE, "a ZIP upload cannot be used as an image", field=field)
    if item.status == PENDING:
        upload_worker.verify_image(item)
        item = UploadModel.get(item.user_id, item.upload_id, consistent_read=True)
    if item.status == REJECTED:
        raise DomainError(
            ErrorCode.UPLOAD_REJECTED, f"upload {item.upload_id} was rejected: {item.error_message}", field=field
        )
    if item.status in (PENDING, PROCESSING) or not item.s3_key:
        raise DomainError(ErrorCode.UPLOAD_PENDING, f"upload {item.upload_id} has not been received yet", field=field)
    return item


def ready_uploads_in(user_id: str, collection: str, limit: int) -> list[InputRef]:
    """The ready image uploads of one of the caller's collections, oldest first, at most
    ``limit`` (one Query of the ``by_collection`` index, paged by PynamoDB).

    Pending, rejected and ZIP uploads are left out.
    """
    found: list[InputRef] = []
    for item in UploadModel.by_collection.query(f"{user_id}#{collection}", scan_index_forward=True):
        if item.kind == KIND_IMAGE and item.status == READY and item.s3_key:
            found.append(InputRef(item.upload_id, SOURCE_UPLOAD, str(item.s3_key)))
            if len(found) >= limit:
                break
    return found


def upstream_url(item: UploadModel, expires_s: int = UPSTREAM_URL_SECONDS) -> str:
    """A presigned GET of the stripped copy of a ready upload, valid ``expires_s`` seconds.

    Raises:
        ValueError: the upload is not ready.
    """
    if item.status != READY or not item.s3_key:
        raise ValueError("upload is not ready")
    return objects.presign_get(item.s3_key, expires_s=expires_s)


def resolve_one(user_id: str, input_id: str, name: str, *, uploads_only: bool = False) -> InputRef:
    """One input id: an upload of the caller's (verified on first use), else one of the
    caller's generated images (unless ``uploads_only``).

    Raises:
        DomainError: 404 naming ``name``, or the upload errors of :func:`ready_upload`.
    """
    upload = _get_upload(user_id, input_id)
    if upload is not None:
        ready = _check_ready(upload, name)
        return InputRef(ready.upload_id, SOURCE_UPLOAD, str(ready.s3_key))
    if not uploads_only and _ID_RE.match(input_id):
        try:
            image = ImageModel.get(user_id, input_id)
        except ImageModel.DoesNotExist:
            image = None
        if image is not None:
            return InputRef(image.image_id, SOURCE_IMAGE, image.s3_key)
    raise _not_found(name)


def resolve(user_id: str, ids: InputIds) -> Resolved:
    """Check that every id is the caller's own and ready (see the module docstring).

    Raises:
        DomainError: 404 ``not-found`` / 409 / 422 naming the field (with ``ids.prefix``).
    """
    p = ids.prefix
    image = resolve_one(user_id, ids.image_id, f"{p}image_id") if ids.image_id else None
    refs = tuple(resolve_one(user_id, r, f"{p}reference_image_ids[{i}]") for i, r in enumerate(ids.reference_ids))
    mask = resolve_one(user_id, ids.mask_id, f"{p}mask_id", uploads_only=True) if ids.mask_id else None
    return Resolved(image=image, references=refs, mask=mask)


def from_json(user_id: str, stored: Mapping[str, Any] | None) -> Resolved:
    """A job item's stored ``inputs`` (see :meth:`Resolved.to_json`) resolved again now.

    Raises:
        DomainError: 404 when an input was deleted since the job was submitted (field names
            ``image_id``, ``reference_image_ids[i]`` or ``mask_id``); the upload errors.
    """
    if not stored:
        return Resolved()

    def one(entry: Mapping[str, Any] | None, name: str) -> InputRef | None:
        if not entry:
            return None
        return resolve_one(user_id, str(entry.get("id")), name, uploads_only=entry.get("source") == SOURCE_UPLOAD)

    refs = tuple(one(r, f"reference_image_ids[{i}]") for i, r in enumerate(stored.get("references") or []))
    return Resolved(
        image=one(stored.get("image"), "image_id"),
        references=tuple(r for r in refs if r is not None),
        mask=one(stored.get("mask"), "mask_id"),
    )


# --- preparing ---------------------------------------------------------------------------------


def _read(ref: InputRef) -> bytes:
    limit = get_settings().upload_max_bytes
    data = upload_store.read_bounded(ref.s3_key, limit)
    if len(data) > limit:
        raise DomainError(ErrorCode.UPLOAD_REJECTED, f"input {ref.id} is larger than {limit} bytes")
    return data


def prepare(resolved: Resolved) -> Prepared:
    """Read each input once (sha256), sign a short-lived GET of each stripped copy.

    Returns:
        :class:`Prepared` (empty for text-to-image).

    Raises:
        botocore errors: S3 failed (the caller retries or answers 5xx).
        DomainError: 422 ``upload-rejected`` for a stored copy over ``UPLOAD_MAX_BYTES``.
    """
    if resolved.empty:
        return Prepared()

    def entry(ref: InputRef, data: bytes) -> dict[str, str]:
        return {"id": ref.id, "source": ref.source, "sha256": hashlib.sha256(data).hexdigest()}

    record: dict[str, Any] = {"references": []}
    image_bytes = mask_bytes = None
    if resolved.image is not None:
        image_bytes = _read(resolved.image)
        record["image"] = entry(resolved.image, image_bytes)
    for ref in resolved.references:
        record["references"].append(entry(ref, _read(ref)))
    if resolved.mask is not None:
        mask_bytes = _read(resolved.mask)
        record["mask"] = entry(resolved.mask, mask_bytes)
    return Prepared(
        image_url=objects.presign_get(resolved.image.s3_key, expires_s=UPSTREAM_URL_SECONDS)
        if resolved.image
        else None,
        reference_urls=tuple(
            objects.presign_get(r.s3_key, expires_s=UPSTREAM_URL_SECONDS) for r in resolved.references
        ),
        record=record,
        image_bytes=image_bytes if mask_bytes is not None else None,
        mask_bytes=mask_bytes,
    )


def inputs_json(stored: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The API shape of recorded inputs: ``{"image": {"id", "source", "sha256"?} | None,
    "references": [...], "mask": {...} | None}``, or None for text-to-image. An image's
    entries carry ``sha256``; a job item's (ids only, resolved when it runs) do not."""
    if not stored:
        return None
    return {
        "image": stored.get("image"),
        "references": list(stored.get("references") or []),
        "mask": stored.get("mask"),
    }
