"""The uploads worker: S3 ``ObjectCreated`` events (through the uploads queue) → verified uploads.

For every object created under ``uploads/`` S3 sends an event to the uploads queue;
:func:`chalicelib.services.upload_queue.handle_event` is the queue's Lambda handler
and hands each image upload to :func:`verify_image`. Every object is checked again here, whatever the presigned POST's
policy said, because the policy is only as good as the S3 that enforces it:

- the key must be ``uploads/{user_id}/{upload_id}`` of an existing upload (anything else
  under the prefix is deleted);
- the actual size must not exceed the announced size nor the limit;
- the actual type is what Pillow decodes (JPEG, PNG or WebP only), with the pixel count
  bounded before decoding (:func:`chalicelib.storage.imaging.process_upload`).

An image upload then gets its stripped copy and thumbnail stored (S3 first, then the
item in a transaction with the quota: no item points at nothing), or ends ``rejected``
with a reason; the source object is deleted either way. ZIPs go to
``chalicelib.services.upload_zip``. All of it is idempotent: S3 and SQS deliver at
least once, and a pending item moves only under a ``status = pending`` condition.

Sources: Amazon S3 user guide, "Event message structure" (``s3:TestEvent``, URL-encoded
keys); AWS Lambda developer guide, "Handling errors for an SQS event source".
"""

from __future__ import annotations

import logging
import time

from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib.db import UploadModel
from chalicelib.db.uploads import PENDING, READY, REJECTED
from chalicelib.services import storage_quota
from chalicelib.settings import get_settings
from chalicelib.storage import imaging, objects
from chalicelib.storage import uploads as upload_store

logger = logging.getLogger("promptcanvas.uploads")


def reject(item: UploadModel, code: str, message: str, from_status: str = PENDING) -> bool:
    """``from_status`` → ``rejected`` with a reason; the reserved bytes go back to the quota.

    Returns:
        True when this call moved it (False: another worker or a delete got there first).
    """
    reserved = int(item.stored_bytes or 0)
    try:
        with TransactWrite(connection=storage_quota.connection()) as tx:
            tx.update(
                item,
                actions=[
                    UploadModel.status.set(REJECTED),
                    UploadModel.error_code.set(code),
                    UploadModel.error_message.set(message[:500]),
                    UploadModel.stored_bytes.set(0),
                    UploadModel.verified_at.set(time.time()),
                ],
                condition=(UploadModel.status == from_status) & (UploadModel.stored_bytes == reserved),
            )
            storage_quota.add_to(tx, item.user_id, -reserved)
    except TransactWriteError as exc:
        if storage_quota.failed_condition(exc, 0):
            return False
        raise
    logger.info("upload %s rejected: %s", item.upload_id, code)
    return True


def store_verified(
    item: UploadModel, processed: imaging.ProcessedImage, *, create: bool = False, reserved: int = 0
) -> bool:
    """Store a verified image's copy and thumbnail, then mark its item ``ready``.

    S3 first, then one transaction: the item (updated from ``pending``, or created when
    ``create``) and the quota charge of ``stored - reserved`` bytes. If the transaction
    fails the objects are deleted again.

    Returns:
        True when stored; False when the item moved meanwhile (or, with ``create``, exists).

    Raises:
        storage_quota.QuotaExceeded: the stored bytes do not fit the quota (nothing stored).
    """
    s3_key = upload_store.stored_key(item.user_id, item.upload_id, processed.ext)
    t_key = upload_store.thumb_key(item.user_id, item.upload_id)
    stored = len(processed.original) + len(processed.thumbnail)
    written: list[str] = []
    try:
        objects.put(s3_key, processed.original, processed.content_type)
        written.append(s3_key)
        objects.put(t_key, processed.thumbnail, "image/webp")
        written.append(t_key)
        with TransactWrite(connection=storage_quota.connection()) as tx:
            values = {
                "status": READY,
                "s3_key": s3_key,
                "thumb_key": t_key,
                "content_type": processed.content_type,
                "width": processed.width,
                "height": processed.height,
                "stored_bytes": stored,
                "verified_at": time.time(),
            }
            if create:
                for name, value in values.items():
                    setattr(item, name, value)
                tx.save(item, condition=UploadModel.upload_id.does_not_exist())
            else:
                tx.update(
                    item,
                    actions=[getattr(UploadModel, name).set(value) for name, value in values.items()],
                    condition=(UploadModel.status == PENDING) & (UploadModel.stored_bytes == reserved),
                )
            storage_quota.add_to(tx, item.user_id, stored - reserved)
    except TransactWriteError as exc:
        if storage_quota.failed_condition(exc, 0):
            if not create:  # the same bytes were stored under the same keys by whoever won
                _delete_if_gone(item, written)
            return False
        objects.delete(written)
        if storage_quota.failed_condition(exc, 1):
            raise storage_quota.QuotaExceeded() from None
        raise
    except BaseException:
        objects.delete(written)
        raise
    return True


def _delete_if_gone(item: UploadModel, written: list[str]) -> None:
    """After a lost race: delete what this call wrote if the upload was deleted meanwhile."""
    try:
        UploadModel.get(item.user_id, item.upload_id, consistent_read=True)
    except UploadModel.DoesNotExist:
        objects.delete(written)


def verify_image(item: UploadModel) -> None:
    """Verify a pending image upload whose file may have arrived; no-op otherwise.

    Raises:
        botocore / pynamodb errors: S3 or DynamoDB failed (the message is retried).
    """
    if item.status != PENDING:
        objects.delete([item.source_key] if item.source_key else [])
        return
    settings = get_settings()
    meta = upload_store.head(item.source_key)
    if meta is None:
        return  # not uploaded yet
    limit = min(int(item.declared_bytes), settings.upload_max_bytes)
    if int(meta.get("ContentLength", 0)) > limit:
        reject(item, "file-too-large", f"the file is larger than the announced {limit} bytes")
    else:
        data = upload_store.read_bounded(item.source_key, limit)
        if len(data) > limit:
            reject(item, "file-too-large", f"the file is larger than the announced {limit} bytes")
        else:
            _verify_bytes(item, data)
    objects.delete([item.source_key])


def _verify_bytes(item: UploadModel, data: bytes) -> None:
    try:
        processed = imaging.process_upload(data, get_settings().upload_max_pixels)
    except imaging.ImageRejected as exc:
        reject(item, exc.code, str(exc))
        return
    try:
        store_verified(item, processed, reserved=int(item.stored_bytes or 0))
    except storage_quota.QuotaExceeded:
        reject(item, "storage-quota-exceeded", "the verified image does not fit the storage quota")
