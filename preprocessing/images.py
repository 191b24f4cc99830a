"""Decode one image file into the uint8 array a model sees (before scaling)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .config import PreprocessConfig
from .masks import apply_mask

# Pillow's resize default for RGB since 9.x; named so the cache never changes under a Pillow upgrade.
RESAMPLE = Image.Resampling.BICUBIC


class UnreadableImage(Exception):
    """A file that Pillow cannot decode (truncated, corrupt, not an image)."""


def load_image(path: str | Path, config: PreprocessConfig) -> np.ndarray:
    """(H, W, C) uint8: converted to RGB or gray, resized to config.size, masked."""
    h, w = config.size
    try:
        with Image.open(path) as im:
            # RGBA, palette, 16-bit and gray files all become plain RGB first, so every
            # image takes the same path through resize and masking.
            im = im.convert("RGB").resize((w, h), RESAMPLE)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(f"{path}: {exc}") from None
    if config.color == "gray":
        im = im.convert("L")
    arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return apply_mask(arr, config.mask)
