"""Image processing with Pillow: strip metadata, make thumbnails, check bytes."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

THUMB_LONG_SIDE = 256  # pixels
THUMB_QUALITY = 80


@dataclass(frozen=True)
class ProcessedImage:
    """An original with its metadata stripped, and its WebP thumbnail.

    ``original`` / ``thumbnail`` are bytes; ``width``/``height`` are the original's pixels.
    """

    original: bytes
    content_type: str
    ext: str
    thumbnail: bytes
    width: int
    height: int


def process(data: bytes) -> ProcessedImage:
    """Strip EXIF/XMP/text metadata and build a 256 px (long side) WebP thumbnail.

    JPEGs are re-saved with ``quality="keep"`` (the original quantisation tables,
    so no visible loss); PNGs are re-saved without text chunks (lossless).

    Raises:
        ValueError: ``data`` is not a decodable JPEG or PNG.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            fmt = img.format
            if fmt not in ("JPEG", "PNG"):
                raise ValueError(f"unsupported image format {fmt!r}")
            out = io.BytesIO()
            if fmt == "JPEG":
                img.save(out, format="JPEG", quality="keep", optimize=True)
                content_type, ext = "image/jpeg", "jpg"
            else:
                img.save(out, format="PNG", optimize=False)
                content_type, ext = "image/png", "png"
            thumb = img.convert("RGB")
            thumb.thumbnail((THUMB_LONG_SIDE, THUMB_LONG_SIDE), Image.Resampling.LANCZOS)
            thumb_out = io.BytesIO()
            thumb.save(thumb_out, format="WEBP", quality=THUMB_QUALITY, method=4)
            return ProcessedImage(out.getvalue(), content_type, ext, thumb_out.getvalue(), img.width, img.height)
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a decodable image: {exc}") from None
