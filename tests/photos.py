"""Real photos for tests: ../shared/data/images/ (next to the repository), scaled down with Pillow."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

PHOTOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "images"


def small_photo(name: str, side: int = 256, fmt: str = "PNG") -> bytes:
    """The photo ``name`` scaled to at most ``side`` pixels on its long side, RGB, encoded as ``fmt``."""
    with Image.open(PHOTOS / name) as img:
        out = img.convert("RGB")
        out.thumbnail((side, side))
        buf = io.BytesIO()
        out.save(buf, format=fmt)
        return buf.getvalue()
