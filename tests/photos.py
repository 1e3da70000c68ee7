"""Real photos for tests: ../shared/data/images/ (next to the repository), scaled down with Pillow."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
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


def unlikeness(out: Image.Image, source: Image.Image) -> float:
    """1 - the Pearson correlation of the two images' grey levels (0 = same picture).

    An edit is its input blended with a flat tint, which moves every pixel by the same
    amount; correlation ignores that shift and scale, a plain mean difference does not
    (a dark input under a bright tint can sit closer to another, brighter photo).
    """
    a = np.asarray(out.convert("L"), dtype=np.float64).ravel()
    b = np.asarray(source.convert("L").resize(out.size), dtype=np.float64).ravel()
    return 1.0 - float(np.corrcoef(a, b)[0, 1])
