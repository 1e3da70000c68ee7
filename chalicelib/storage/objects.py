"""The private images bucket: object keys, uploads, deletes and presigned GETs.

Keys: ``users/{user_id}/images/{image_id}.{ext}`` for originals and
``users/{user_id}/images/{image_id}.thumb.webp`` for thumbnails.
Clients only ever get presigned SigV4 GET URLs with a short expiry
(``PRESIGN_EXPIRES_SECONDS``, default 900 s). Source: Amazon S3 user guide,
"Sharing objects with presigned URLs".
"""

from __future__ import annotations

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


def delete(keys: list[str]) -> None:
    """Delete objects (missing ones are fine). Up to 1000 keys per call (S3 DeleteObjects)."""
    keys = [k for k in keys if k]
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        client("s3").delete_objects(
            Bucket=get_settings().images_bucket,
            Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
        )


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
