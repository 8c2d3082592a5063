"""Sample grids: many small images tiled into one PNG people can look at."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image


def make_grid(
    images: np.ndarray, cols: int | None = None, pad: int = 1, scale: int = 3
) -> np.ndarray:
    """Tile uint8 NHWC images into one uint8 HWC image (white padding, nearest upscaling)."""
    n, h, w, c = images.shape
    if n == 0:
        raise ValueError("no images to tile")
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, im in enumerate(images):
        r, k = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + k * (w + pad)
        grid[y : y + h, x : x + w] = im
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid


def save_grid(images: np.ndarray, path: str | Path, **kwargs) -> Path:
    import io

    from fairsynth.data.shards import write_atomic

    buf = io.BytesIO()
    Image.fromarray(make_grid(images, **kwargs)).save(buf, format="PNG")
    write_atomic(path, buf.getvalue())
    return Path(path)
