"""Dataset export: a ZIP laid out as Hugging Face's ImageFolder expects.

``POST /v1/jobs/{id}/archive {"format": "imagefolder"}`` (and the collection and
image-list archives) write, instead of the flat ZIP and ``manifest.csv``::

    train/metadata.jsonl
    train/0001-{image_id}.jpg        the generated images, in archive order
    train/input-{input_id}.png       image-to-image inputs, each stored once

Unpacked, the folder loads with ``datasets.load_dataset("imagefolder", data_dir=...)``
into one ``train`` split, one row per generated image (source: Hugging Face datasets
documentation, "Create an image dataset", ImageFolder with metadata).

Columns of ``metadata.jsonl`` (one JSON object per line, same keys on every line):

- text-to-image (no image in the archive has inputs): ``file_name`` (the image), then
  :data:`FIELDS`: ``prompt``, ``seed``, ``model``, ``width``, ``height`` (pixels), ``steps``.
- image-to-image (some image has inputs): ``input_file_name`` (its first input: the
  image it edits, else its first reference), ``output_file_name`` (the generated image),
  and :data:`FIELDS`; when some image has more than one input, also
  ``reference_file_names`` (its further inputs, a list, empty for the others). ImageFolder
  turns every ``*_file_name`` column into an image column named by its prefix (``input``,
  ``output``) and every ``*_file_names`` column into a list of images (``reference``). A
  plain ``file_name`` column is never written beside them: the loader reads ``file_name``
  before ``{column}_file_name`` for every image column, so ``input`` and ``output`` would
  both get the ``file_name`` image. An image without inputs in such an export has a null
  ``input_file_name`` (the ``input`` cell loads as None).

Memory stays bounded as in :func:`chalicelib.services.archives.write_zip`: one image in
memory at a time, parts flushed between entries; the metadata rows (a few hundred bytes
each, at most ``ARCHIVE_MAX_IMAGES``) are held until the last entry.
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib.db import ImageModel
from chalicelib.db.uploads import UploadModel
from chalicelib.storage import objects
from chalicelib.storage.multipart import MultipartZipSink

logger = logging.getLogger("promptcanvas.dataset_export")

SPLIT = "train"  # the one split the export holds (ImageFolder's default split name)
METADATA_NAME = f"{SPLIT}/metadata.jsonl"
FIELDS = ("prompt", "seed", "model", "width", "height", "steps")
TEXT_TO_IMAGE_COLUMNS = ("file_name", *FIELDS)
IMAGE_TO_IMAGE_COLUMNS = ("input_file_name", "output_file_name", *FIELDS)
REFERENCES_COLUMN = "reference_file_names"


@dataclass(frozen=True)
class InputImage:
    """One input of a generated image, as stored: ``input_id`` (the upload or image id it
    was given as) and ``s3_key`` (the metadata-stripped copy in the images bucket; ``""``
    when the input has been deleted since)."""

    input_id: str
    s3_key: str


#: ``inputs_of(image) -> [InputImage, ...]`` in the order the generation took them
#: (the edited image first); ``[]`` for a text-to-image result.
InputsOf = Callable[[ImageModel], Sequence[InputImage]]


def zip_entry(zf: zipfile.ZipFile, name: str, data: bytes, date_time: tuple[int, ...]) -> None:
    """Add ``data`` to ``zf`` as ``name``: STORED (images are compressed already), mode 0644."""
    info = zipfile.ZipInfo(name, date_time=date_time)
    info.compress_type = zipfile.ZIP_STORED  # JPEG/PNG/WebP are already compressed
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def _extension(key: str) -> str:
    tail = key.rsplit("/", 1)[-1]
    return tail.rsplit(".", 1)[-1].lower() if "." in tail else "png"


def _fields(image: ImageModel) -> dict[str, Any]:
    return {
        "prompt": image.prompt,
        "seed": int(image.seed),
        "model": image.model,
        "width": int(image.width),
        "height": int(image.height),
        "steps": int(image.steps) if image.steps is not None else None,
    }


def zip_date_time(image: ImageModel) -> tuple[int, int, int, int, int, int]:
    """The ZIP timestamp of ``image``: its creation time (UTC), no earlier than 1980 (the ZIP epoch)."""
    created = image.created_at
    return (max(1980, created.year), created.month, created.day, created.hour, created.minute, created.second)


def write_imagefolder(sink: MultipartZipSink, images: Sequence[ImageModel], inputs_of: InputsOf) -> int:
    """Write ``images`` (in order), their inputs and ``train/metadata.jsonl`` into ``sink``.

    Args:
        sink: the streaming ZIP target (parts are flushed between entries).
        images: the generated images, in archive order.
        inputs_of: each image's inputs (see :data:`InputsOf`).

    Returns:
        The number of generated images written. An image whose object is gone is skipped
        (row and all); an input whose object is gone leaves its cell null.
    """
    listed = [(image, list(inputs_of(image))) for image in images]
    paired = any(inputs for _, inputs in listed)
    with_references = any(len(inputs) > 1 for _, inputs in listed)
    written_inputs: dict[str, str | None] = {}  # input id -> its file name (None: object missing)
    rows: list[dict[str, Any]] = []
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:

        def input_file(item: InputImage, when: tuple[int, ...]) -> str | None:
            if item.input_id not in written_inputs:
                data = objects.get(item.s3_key) if item.s3_key else None
                name = f"input-{item.input_id}.{_extension(item.s3_key)}" if data is not None else None
                if data is None:
                    logger.warning("export skips input %s: object missing", item.input_id)
                else:
                    zip_entry(zf, f"{SPLIT}/{name}", data, when)
                    sink.flush_parts()
                written_inputs[item.input_id] = name
            return written_inputs[item.input_id]

        for number, (image, inputs) in enumerate(listed, start=1):
            data = objects.get(image.s3_key)
            if data is None:
                logger.warning("export skips image %s: object missing", image.image_id)
                continue
            when = zip_date_time(image)
            name = f"{number:04d}-{image.image_id}.{_extension(image.s3_key)}"
            zip_entry(zf, f"{SPLIT}/{name}", data, when)
            sink.flush_parts()
            if not paired:
                rows.append({"file_name": name, **_fields(image)})
                continue
            files = [input_file(item, when) for item in inputs]
            row: dict[str, Any] = {"input_file_name": files[0] if files else None, "output_file_name": name}
            row.update(_fields(image))
            if with_references:
                row[REFERENCES_COLUMN] = [f for f in files[1:] if f is not None]
            rows.append(row)
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        info = zipfile.ZipInfo(METADATA_NAME, date_time=time.gmtime()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        zf.writestr(info, text.encode("utf-8"))
        sink.flush_parts()
    return len(rows)


def input_ids(image: ImageModel) -> list[str]:
    """The ids (uploads or images) ``image`` was generated from, in the order the
    generation took them: the edited image, then the references (a mask is not an input
    of the dataset); ``[]`` for a text-to-image result.

    ``image.inputs`` is the record the generation wrote: ``{"image": {"id", ...}?,
    "references": [{"id", ...}], "mask": {...}?}`` (see ``chalicelib.db.images.ImageModel``).
    """
    recorded = getattr(image, "inputs", None)
    if not isinstance(recorded, Mapping):
        return []
    entries = [recorded.get("image"), *(recorded.get("references") or [])]
    ids = [entry.get("id") for entry in entries if isinstance(entry, Mapping)]
    return [i for i in dict.fromkeys(ids) if isinstance(i, str) and i]


def inputs_resolver(user_id: str, images: Sequence[ImageModel]) -> InputsOf:
    """``inputs_of`` for :func:`write_imagefolder` over ``images``: the stored copies of
    every input, looked up once (uploads and the user's own images, BatchGetItem, 100 keys
    a call). An input that no longer exists keeps its place with an empty ``s3_key`` (its
    cell is null), so an image-to-image export stays one even when inputs were deleted."""
    wanted = list(dict.fromkeys(i for image in images for i in input_ids(image)))
    keys: dict[str, str] = {}
    for start in range(0, len(wanted), 100):
        chunk = wanted[start : start + 100]
        for upload in UploadModel.batch_get([(user_id, i) for i in chunk]):
            if upload.s3_key:
                keys[upload.upload_id] = upload.s3_key
        for found in ImageModel.batch_get([(user_id, i) for i in chunk if i not in keys]):
            keys[found.image_id] = found.s3_key

    def inputs_of(image: ImageModel) -> list[InputImage]:
        return [InputImage(i, keys.get(i, "")) for i in input_ids(image)]

    return inputs_of
