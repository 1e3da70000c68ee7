"""The private images bucket: object keys, uploads, reads, listings, deletes and presigned GETs.

Every S3 call of the application goes through this module (and
:mod:`chalicelib.storage.multipart` for multipart uploads).

Keys: ``users/{user_id}/images/{image_id}.{ext}`` for originals and
``users/{user_id}/images/{image_id}.thumb.webp`` for thumbnails.
Clients only ever get presigned SigV4 GET URLs with a short expiry
(``PRESIGN_EXPIRES_SECONDS``, default 900 s). Source: Amazon S3 user guide,
"Sharing objects with presigned URLs".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.aws import client
from chalicelib.settings import get_settings


def image_key(user_id: str, image_id: str, ext: str) -> str:
    """The original's object key."""
    return f"users/{user_id}/images/{image_id}.{ext}"


def thumb_key(user_id: str, image_id: str) -> str:
    """The thumbnail's object key."""
    return f"users/{user_id}/images/{image_id}.thumb.webp"


def put(key: str, data: bytes, content_type: str, filename: str | None = None) -> None:
    """Upload ``data`` (bytes) to ``key``, server-side encrypted.

    Raises:
        botocore.exceptions.ClientError / BotoCoreError: the upload failed.
    """
    extra = {}
    if filename:
        extra["ContentDisposition"] = f'inline; filename="{filename}"'
    client("s3").put_object(
        Bucket=get_settings().images_bucket,
        Key=key,
        Body=data,
        ContentType=content_type,
        ServerSideEncryption="AES256",
        CacheControl="private, max-age=86400, immutable",
        **extra,
    )


DELETE_OBJECTS_MAX = 1000  # S3 DeleteObjects keys per call
LIST_PAGE_SIZE = 1000  # S3 ListObjectsV2 keys per page


def _bucket() -> str:
    return get_settings().images_bucket


def delete_chunk(keys: list[str]) -> int:
    """Delete up to 1000 objects in one DeleteObjects call (quiet mode; keys already gone
    count as deleted). Returns the number S3 reported as failed.

    Raises:
        botocore.exceptions.ClientError / BotoCoreError: the call failed.
    """
    response = client("s3").delete_objects(
        Bucket=_bucket(), Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
    )
    return len(response.get("Errors", []))


def delete(keys: list[str]) -> None:
    """Delete objects (missing ones are fine), up to 1000 keys per call (S3 DeleteObjects).

    Raises:
        botocore.exceptions.ClientError / BotoCoreError: a call failed.
    """
    keys = [k for k in keys if k]
    for start in range(0, len(keys), DELETE_OBJECTS_MAX):
        delete_chunk(keys[start : start + DELETE_OBJECTS_MAX])


def get(key: str) -> bytes | None:
    """The object's bytes, or None when it does not exist.

    Raises:
        botocore.exceptions.ClientError / BotoCoreError: any other failure.
    """
    s3 = client("s3")
    try:
        return s3.get_object(Bucket=_bucket(), Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None


def exists(key: str) -> bool | None:
    """True / False from HeadObject; None when S3 answered something other than 404
    (permissions, throttling): the caller must then keep the data."""
    try:
        client("s3").head_object(Bucket=_bucket(), Key=key)
        return True
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 404 or code in ("404", "NoSuchKey", "NotFound"):
            return False
        return None


def list_pages(prefix: str, page_size: int = LIST_PAGE_SIZE) -> Iterator[list[dict[str, Any]]]:
    """Pages of ``{"Key", "LastModified", "Size", ...}`` under ``prefix`` (ListObjectsV2),
    at most ``page_size`` keys a page.

    Raises:
        botocore.exceptions.ClientError / BotoCoreError: a page could not be read.
    """
    paginator = client("s3").get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=_bucket(), Prefix=prefix, PaginationConfig={"PageSize": page_size}):
        yield page.get("Contents", [])


def check_bucket() -> None:
    """HeadBucket on the images bucket (the health check).

    Raises:
        botocore.exceptions.ClientError / BotoCoreError: the bucket is not reachable.
    """
    client("s3").head_bucket(Bucket=_bucket())


def presign_get(key: str, download_name: str | None = None, expires_s: int | None = None) -> str:
    """A presigned SigV4 GET URL for ``key``, valid ``expires_s`` seconds.

    ``download_name`` makes the browser save the file under that name.
    """
    params: dict[str, str] = {"Bucket": get_settings().images_bucket, "Key": key}
    if download_name:
        params["ResponseContentDisposition"] = f'attachment; filename="{download_name}"'
    return client("s3").generate_presigned_url(
        "get_object", Params=params, ExpiresIn=expires_s or get_settings().presign_expires_seconds
    )


VIDEO_PART_BYTES = 8 * 1024 * 1024  # bytes per multipart part (S3's minimum part is 5 MiB)


def video_key(user_id: str, video_id: str) -> str:
    """The video file's object key."""
    return f"users/{user_id}/videos/{video_id}.mp4"


def poster_key(user_id: str, video_id: str) -> str:
    """The video poster's object key."""
    return f"users/{user_id}/videos/{video_id}.poster.webp"


def put_stream(key: str, fileobj: Any, content_type: str) -> None:
    """Upload a readable stream to ``key`` with bounded memory: boto3's managed transfer reads
    ``VIDEO_PART_BYTES`` at a time (multipart above that), one part in flight.

    Raises:
        botocore.exceptions.ClientError / BotoCoreError: the upload failed; the stream's own
            errors propagate as they are.
    """
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(
        multipart_threshold=VIDEO_PART_BYTES, multipart_chunksize=VIDEO_PART_BYTES, max_concurrency=1, use_threads=False
    )
    client("s3").upload_fileobj(
        fileobj,
        _bucket(),
        key,
        ExtraArgs={
            "ContentType": content_type,
            "ServerSideEncryption": "AES256",
            "CacheControl": "private, max-age=86400, immutable",
        },
        Config=config,
    )


def copy(source_key: str, key: str, content_type: str) -> None:
    """Server-side copy of ``source_key`` to ``key`` in the images bucket (no bytes pass here).

    Raises:
        botocore.exceptions.ClientError / BotoCoreError: the copy failed.
    """
    client("s3").copy_object(
        Bucket=_bucket(),
        Key=key,
        CopySource={"Bucket": _bucket(), "Key": source_key},
        ContentType=content_type,
        MetadataDirective="REPLACE",
        ServerSideEncryption="AES256",
    )
