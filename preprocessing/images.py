"""Decode one image file into the uint8 array a model sees (before scaling)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .config import ImageSpec, PreprocessConfig, image_spec
from .masks import apply_mask

# Large scans are ours to shrink, not an attack: PIL's warning above ~89 megapixels printed
# once per image; its error at twice that still marks the file unreadable. A filter for the
# process, not catch_warnings: the cache decodes in threads, and that context is not thread-safe.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# Pillow's resize default for RGB since 9.x; named so the cache never changes under a Pillow upgrade.
RESAMPLE = Image.Resampling.BICUBIC


class UnreadableImage(Exception):
    """A file that Pillow cannot decode (truncated, corrupt, not an image)."""


def fit_to(im: Image.Image, size: tuple[int, int], fit: str) -> Image.Image:
    """Resize to (height, width): stretched, or scaled to fit and centred on black."""
    h, w = size
    if fit == "stretch":
        return im.resize((w, h), RESAMPLE)
    scale = min(w / im.width, h / im.height)
    inner = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    canvas = Image.new(im.mode, (w, h))
    canvas.paste(im.resize(inner, RESAMPLE), ((w - inner[0]) // 2, (h - inner[1]) // 2))
    return canvas


def load_image(path: str | Path, spec: ImageSpec | PreprocessConfig) -> np.ndarray:
    """(H, W, C) uint8: converted to RGB or gray, fitted to spec.size, masked."""
    config = image_spec(spec)
    try:
        with Image.open(path) as im:
            # RGBA, palette, 16-bit and gray files all become plain RGB first, so every
            # image takes the same path through resize and masking.
            im = fit_to(im.convert("RGB"), config.size, config.fit)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(f"{path}: {exc}") from None
    if config.color == "gray":
        im = im.convert("L")
    arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return apply_mask(arr, config.mask)
