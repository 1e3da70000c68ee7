"""A write-only file object that streams into an S3 multipart upload (a ZIP sink).

Python's :mod:`zipfile` writes into it; whole parts are uploaded as the archive grows,
so memory stays bounded by about two parts. Source: Amazon S3 user guide, "Uploading
and copying objects using multipart upload" (every part but the last is >= 5 MiB).
"""

from __future__ import annotations

import io
import logging
from typing import Any

from chalicelib.aws import client

logger = logging.getLogger(__name__)

MIN_PART_BYTES = 5 * 1024 * 1024  # S3 minimum for every part but the last


class MultipartZipSink(io.RawIOBase):
    """A write-only, partly seekable file object that streams into an S3 multipart upload.

    Bytes accumulate in a buffer; :meth:`flush_parts` (called between ZIP entries)
    uploads whole ``part_bytes`` parts from its front. ``seek`` may move anywhere inside
    the buffer (zipfile rewrites each local header after its data), never before it.
    :meth:`complete` uploads the rest as the last part and completes the upload;
    :meth:`abort` aborts it.

    Args:
        bucket, key: the target object.
        part_bytes: part size in bytes (>= 5 MiB).
    """

    def __init__(self, bucket: str, key: str, part_bytes: int, content_type: str = "application/zip") -> None:
        super().__init__()
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"part_bytes must be at least {MIN_PART_BYTES}")
        self.bucket = bucket
        self.key = key
        self.part_bytes = part_bytes
        self._s3 = client("s3")
        self._upload_id = self._s3.create_multipart_upload(
            Bucket=bucket, Key=key, ContentType=content_type, ServerSideEncryption="AES256"
        )["UploadId"]
        self._parts: list[dict[str, Any]] = []
        self._buffer = bytearray()
        self._base = 0  # offset of _buffer[0] in the whole object
        self._pos = 0  # current offset in the whole object
        self.peak_buffer = 0  # largest buffer seen, bytes (tests check memory stays bounded)
        self.size = 0

    # io.RawIOBase protocol ------------------------------------------------------------------
    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        end = self._base + len(self._buffer)
        target = {io.SEEK_SET: offset, io.SEEK_CUR: self._pos + offset, io.SEEK_END: end + offset}[whence]
        if target < self._base or target > end:
            raise io.UnsupportedOperation("seek outside the unflushed buffer")
        self._pos = target
        return target

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        start = self._pos - self._base
        self._buffer[start : start + len(chunk)] = chunk
        self._pos += len(chunk)
        self.size = max(self.size, self._pos)
        self.peak_buffer = max(self.peak_buffer, len(self._buffer))
        return len(chunk)

    def flush(self) -> None:  # zipfile calls flush(); parts are cut only by flush_parts()
        return None

    # parts ---------------------------------------------------------------------------------
    def _upload(self, data: bytes) -> None:
        number = len(self._parts) + 1
        etag = self._s3.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number, Body=data
        )["ETag"]
        self._parts.append({"PartNumber": number, "ETag": etag})

    def flush_parts(self) -> None:
        """Upload every whole part at the front of the buffer (call between entries)."""
        if self._pos != self._base + len(self._buffer):
            return  # zipfile is mid-entry
        while len(self._buffer) >= self.part_bytes:
            self._upload(bytes(self._buffer[: self.part_bytes]))
            del self._buffer[: self.part_bytes]
            self._base += self.part_bytes

    def complete(self) -> int:
        """Upload the rest as the last part and complete the upload. Returns the size in bytes."""
        if self._buffer or not self._parts:
            self._upload(bytes(self._buffer))
            self._base += len(self._buffer)
            self._buffer.clear()
        self._s3.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
        )
        return self.size

    def abort(self) -> None:
        """Abort the multipart upload (its parts are discarded). Never raises."""
        try:
            self._s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id)
        except Exception:  # noqa: BLE001
            logger.warning("could not abort multipart upload of %s", self.key)
