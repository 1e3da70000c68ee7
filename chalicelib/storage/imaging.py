"""Image processing with Pillow: strip metadata, make thumbnails, check bytes.

:func:`process` handles generated images (JPEG/PNG from Flux); :func:`process_upload`
verifies what users upload (JPEG/PNG/WebP only, pixel count bounded before decoding).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Pillow is imported by the functions that use it (the first response needs none)
    from PIL import Image

THUMB_LONG_SIDE = 256  # pixels
THUMB_QUALITY = 80
#: libwebp's effort, 0 (fastest) to 6 (smallest). Measured on 256 px thumbnails of the sample
#: photos (Pillow 13, CPU per encode / mean size): 4 (Pillow's default) 10.4 ms / 13.3 KB,
#: 2 5.1 ms / 13.6 KB, 1 4.1 ms / 14.7 KB. 2 halves the encode for 2 % more bytes.
#: Source: Pillow docs, "Image file formats: WebP" (``method``); libwebp's cwebp ``-m``.
THUMB_WEBP_METHOD = 2
#: Pillow format → (MIME type, file extension) accepted for uploads. Only these decoders are
#: ever tried on user bytes (``Image.open(formats=...)``), so no exotic parser sees them.
UPLOAD_FORMATS = {"JPEG": ("image/jpeg", "jpg"), "PNG": ("image/png", "png"), "WEBP": ("image/webp", "webp")}
UPLOAD_CONTENT_TYPES = tuple(ct for ct, _ in UPLOAD_FORMATS.values())
MAX_ICC_BYTES = 128 * 1024  # a colour profile larger than this is dropped with the rest
EXIF_ORIENTATION = 0x0112


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
    from PIL import Image

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
            return ProcessedImage(out.getvalue(), content_type, ext, _thumbnail_of(data, img), img.width, img.height)
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a decodable image: {exc}") from None


def _thumbnail_of(data: bytes, img: Image.Image) -> bytes:
    """The thumbnail of ``img`` (decoded from ``data``). A JPEG is decoded a second time with
    ``draft()``: libjpeg then scales by 1/2, 1/4 or 1/8 while decoding (to no less than the
    thumbnail's size), so the resize starts from far fewer pixels; other formats use the
    loaded image (:func:`thumbnail` resizes through ``reduce()``, ``reducing_gap``).
    Source: Pillow docs, "Image.draft" and "Image.thumbnail"."""
    from PIL import Image

    if img.format != "JPEG":
        return thumbnail(img)
    with Image.open(io.BytesIO(data)) as small:
        small.draft(small.mode, (THUMB_LONG_SIDE, THUMB_LONG_SIDE))
        small.load()
        return thumbnail(small)


def thumbnail(img: Image.Image) -> bytes:
    """A WebP thumbnail of a loaded image, :data:`THUMB_LONG_SIDE` pixels on the long side.

    Transparency is kept (RGBA); every other mode becomes RGB.
    """
    from PIL import Image

    thumb = img.convert("RGBA" if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info else "RGB")
    thumb.thumbnail((THUMB_LONG_SIDE, THUMB_LONG_SIDE), Image.Resampling.LANCZOS, reducing_gap=2.0)
    out = io.BytesIO()
    thumb.save(out, format="WEBP", quality=THUMB_QUALITY, method=THUMB_WEBP_METHOD)
    return out.getvalue()


class ImageRejected(ValueError):
    """An upload that is not an acceptable image.

    Attributes:
        code: ``not-an-image`` (no accepted decoder recognises it), ``too-many-pixels``
            (width × height over the bound: a decompression bomb or just too large),
            ``corrupt-image`` (recognised, but does not decode).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def process_upload(data: bytes, max_pixels: int) -> ProcessedImage:
    """Verify an uploaded image and return a metadata-stripped copy and its thumbnail.

    The pixel count is read from the header and checked before any pixel is decoded, so a
    small file declaring huge dimensions (a decompression bomb) costs no memory. The copy
    keeps the original format (JPEG, PNG or WebP); EXIF, XMP, comments and text chunks are
    dropped; an EXIF orientation is applied to the pixels first (so the image still shows
    upright); a colour profile up to 128 KiB is kept (colour data, not personal metadata).
    A JPEG that needs no rotation is re-saved with its own quantisation tables
    (``quality="keep"``); other re-encodes use quality 95. Animated images keep their first frame.

    Args:
        data: the uploaded bytes (already bounded by the caller, at most ``UPLOAD_MAX_BYTES``).
        max_pixels: the largest accepted ``width * height`` (``UPLOAD_MAX_PIXELS``).

    Raises:
        ImageRejected: with ``code`` ``not-an-image`` | ``too-many-pixels`` | ``corrupt-image``.

    Sources: Pillow docs, "Image.open" (``formats``), "Decompression bombs"
    (``Image.MAX_IMAGE_PIXELS``), "ImageOps.exif_transpose", image file formats (JPEG
    ``quality="keep"``, ``icc_profile``).
    """
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data), formats=tuple(UPLOAD_FORMATS))
    except Image.DecompressionBombError:
        raise ImageRejected("too-many-pixels", "the image declares more pixels than allowed") from None
    except Exception:  # noqa: BLE001 - UnidentifiedImageError, OSError, ..., or any header parser hostile bytes trip
        raise ImageRejected("not-an-image", "the file is not a JPEG, PNG or WebP image") from None
    with img:
        width, height = img.size
        if width < 1 or height < 1 or width * height > max_pixels:
            raise ImageRejected("too-many-pixels", f"{width}x{height} pixels exceeds the limit of {max_pixels} pixels")
        fmt = img.format or ""
        content_type, ext = UPLOAD_FORMATS[fmt]
        try:
            img.load()
            return _strip(img, fmt, content_type, ext)
        except ImageRejected:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
            raise ImageRejected("corrupt-image", f"the {fmt} image does not decode: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - hostile bytes can trip any decoder/encoder path
            # (Pillow's PNG writer raises UnboundLocalError on a palette image without a PLTE chunk):
            # whatever its type, a failure here is the file's, and retrying cannot help
            raise ImageRejected("corrupt-image", f"the {fmt} image does not decode ({type(exc).__name__})") from None


def _strip(img: Image.Image, fmt: str, content_type: str, ext: str) -> ProcessedImage:
    from PIL import ImageOps

    icc = img.info.get("icc_profile") or b""
    keep = {"icc_profile": icc} if 0 < len(icc) <= MAX_ICC_BYTES else {}
    orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    out = io.BytesIO()
    if fmt == "JPEG" and orientation in (0, 1):
        img.save(out, format="JPEG", quality="keep", optimize=True, comment=b"", **keep)
        pixels = img
    else:
        pixels = ImageOps.exif_transpose(img) if orientation not in (0, 1) else img
        if fmt == "JPEG":
            if pixels.mode not in ("RGB", "L", "CMYK"):
                pixels = pixels.convert("RGB")
            pixels.save(out, format="JPEG", quality=95, optimize=True, comment=b"", **keep)
        elif fmt == "PNG":
            pixels.save(out, format="PNG", **keep)
        else:
            if pixels.mode not in ("RGB", "RGBA"):
                pixels = pixels.convert("RGBA" if "A" in pixels.mode or "transparency" in pixels.info else "RGB")
            pixels.save(out, format="WEBP", quality=95, method=4, **keep)
    return ProcessedImage(out.getvalue(), content_type, ext, thumbnail(pixels), pixels.width, pixels.height)


#: A mask pixel at or above this grey level (0..255) marks the area the edit may change.
MASK_THRESHOLD = 128


def composite_masked(edited: bytes, base: bytes, mask: bytes, max_pixels: int) -> bytes:
    """Composite an edit onto its input through a black-and-white mask (inpainting).

    The result has the input's size: the edit and the mask are resized to it (bilinear for
    the edit, nearest for the mask), the mask is thresholded at :data:`MASK_THRESHOLD`
    (white: take the edit, black: keep the input), and the result is encoded as PNG, so
    every pixel outside the mask is exactly the input's decoded RGB pixel.

    Args:
        edited: the upstream's result (JPEG/PNG/WebP bytes).
        base: the input image that was edited (the bytes handed upstream).
        mask: the mask image, any mode (converted to greyscale).
        max_pixels: the largest ``width * height`` any of the three may declare.

    Returns:
        PNG bytes, RGB, the input's width x height pixels.

    Raises:
        ValueError: one of the images does not decode or declares more than ``max_pixels``.

    Source: Pillow docs, ``Image.composite`` (mask "L": 255 takes the first image).
    """
    from PIL import Image, UnidentifiedImageError

    decoded = []
    for data in (edited, base, mask):
        try:
            img = Image.open(io.BytesIO(data), formats=tuple(UPLOAD_FORMATS))
            if img.width * img.height > max_pixels:
                raise ValueError(f"{img.width}x{img.height} pixels exceeds the limit of {max_pixels} pixels")
            img.load()
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
            raise ValueError(f"not a decodable image: {exc}") from None
        decoded.append(img)
    edit_img, base_img, mask_img = decoded
    size = base_img.size
    base_rgb = base_img.convert("RGB")
    edit_rgb = edit_img.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    cut = (
        mask_img.convert("L").resize(size, Image.Resampling.NEAREST).point(lambda v: 255 if v >= MASK_THRESHOLD else 0)
    )
    out = io.BytesIO()
    Image.composite(edit_rgb, base_rgb, cut).save(out, format="PNG")
    return out.getvalue()
