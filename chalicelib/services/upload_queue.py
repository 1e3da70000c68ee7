"""The uploads queue's handler: S3 ``ObjectCreated`` events → the uploads worker.

Each SQS message is an S3 event; its object keys are URL-encoded (spaces as ``+``), hence
``unquote_plus``. Every created object under ``uploads/`` goes to
:func:`chalicelib.services.upload_worker.verify_image` (an image) or
:func:`chalicelib.services.upload_zip.unpack` (a ZIP, in turns). The handler has the shape
of every SQS handler (:func:`chalicelib.sqsbatch.process_batch`): a message whose work is
not finished (a ZIP out of time, leased by another worker, or a failure) stays in the
partial batch response and comes back.

Sources: Amazon S3 user guide, "Event message structure" (``s3:TestEvent``, URL-encoded
keys); AWS Lambda developer guide, "Handling errors for an SQS event source".
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import unquote_plus

from chalicelib.db import UploadModel
from chalicelib.db.uploads import KIND_ZIP
from chalicelib.services import upload_worker, upload_zip
from chalicelib.sqsbatch import invocation_deadline, process_batch
from chalicelib.storage import objects
from chalicelib.storage import uploads as upload_store

logger = logging.getLogger("promptcanvas.uploads")

#: Seconds kept back from the invocation's remaining time after the last object.
STOP_MARGIN_S = 10.0


class NotFinished(Exception):  # noqa: N818 - a record outcome, not a bug
    """The message's work is not finished: SQS delivers it again."""


def process_object(key: str, deadline: float) -> bool:
    """Handle one created object under ``uploads/``.

    Returns:
        False when the work is not finished (a ZIP out of time, or leased by another
        worker): the message is to be retried.
    """
    parsed = upload_store.parse_source_key(key)
    if parsed is None:
        logger.warning("deleting an object that is no upload's source: %r", key[:200])
        objects.delete([key])
        return True
    user_id, upload_id = parsed
    try:
        item = UploadModel.get(user_id, upload_id, consistent_read=True)
    except UploadModel.DoesNotExist:
        logger.info("deleting the source of a deleted or unknown upload %s", upload_id)
        objects.delete([key])
        return True
    if item.kind == KIND_ZIP:
        return upload_zip.unpack(item, deadline)
    upload_worker.verify_image(item)
    return True


def object_keys_of(body: str) -> list[str]:
    """The decoded object keys of the ``ObjectCreated`` records in one S3 event message.

    ``s3:TestEvent`` messages (sent when the notification is configured) give none.

    Raises:
        ValueError: the body is not an S3 event.
    """
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ValueError("not an S3 event")
    if message.get("Event") == "s3:TestEvent":
        return []
    keys = []
    for record in message.get("Records") or []:
        if str(record.get("eventName", "")).startswith("ObjectCreated"):
            keys.append(unquote_plus(record["s3"]["object"]["key"]))
    return keys


def handle_record(record: dict[str, Any], deadline: float) -> str:
    """The record handler: every object of one S3 event message.

    Returns:
        ``done``, or ``dropped`` for a message that is not an S3 event.

    Raises:
        NotFinished: out of time, or an object's work is not finished (or failed).
    """
    try:
        keys = object_keys_of(record.get("body") or "")
    except (ValueError, KeyError, TypeError):
        logger.warning("dropping a message that is not an S3 event")
        return "dropped"
    finished = True
    for key in keys:
        if time.monotonic() >= deadline:
            raise NotFinished("out of time")
        try:
            finished = process_object(key, deadline) and finished
        except Exception:
            logger.exception("verifying an upload failed; the message will be retried")
            finished = False
    if not finished:
        raise NotFinished("an object is not finished")
    return "done"


def handle_event(event: dict[str, Any], context: Any = None) -> dict[str, list[dict[str, str]]]:
    """The uploads-queue handler: the records one after another, then a partial batch response.

    Args:
        event: the Lambda SQS event (``{"Records": [...]}``), each body an S3 event.
        context: the Lambda context (``get_remaining_time_in_millis``), or None.

    Returns:
        ``{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}``.
    """
    deadline = invocation_deadline(context, margin_s=STOP_MARGIN_S)
    return process_batch(event, lambda record: handle_record(record, deadline))
