"""Foreground masks. A mask zeroes the background of the resized image.

Per-image masks register in MASKS. Masks that need a model and run on whole batches
(`unet`, see search.running.unet) are in BATCH_MASKS: the cache applies the model it is given.
"""
from __future__ import annotations

from typing import Callable, Protocol

import cv2
import numpy as np

from .errors import DataError


def otsu_foreground(channel: np.ndarray) -> np.ndarray:
    """Boolean foreground of one uint8 channel by Otsu's threshold.

    Stained cells are darker than the background, so the foreground is the dark side. Pure
    black pixels are left out of the threshold and of the foreground: the public set's
    augmented copies are rotated onto black corners, which would otherwise be the "dark
    side" that Otsu separates, and the cell would be lost (seen with `search data inspect`).
    """
    content = channel[channel > 0]
    if content.size == 0:
        return np.zeros(channel.shape, dtype=bool)
    threshold, _ = cv2.threshold(content.reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return (channel <= threshold) & (channel > 0)


def otsu_mask(image: np.ndarray) -> np.ndarray:
    """Threshold each channel on its own (as the study did) and zero that channel's background."""
    out = np.empty_like(image)
    for c in range(image.shape[2]):
        channel = np.ascontiguousarray(image[:, :, c])
        out[:, :, c] = np.where(otsu_foreground(channel), channel, 0)
    return out


MASKS: dict[str, Callable[[np.ndarray], np.ndarray] | None] = {
    "none": None,
    "otsu": otsu_mask,
}
BATCH_MASKS = ("unet",)


class BatchMasker(Protocol):
    """A mask made by a model, on whole batches (mask=unet): what build_cache is given."""

    model_id: str  # keys the masked cache entry: another model, another entry

    def __call__(self, images: np.ndarray, grays: np.ndarray) -> np.ndarray:
        """images (n, H, W, C) uint8 and their gray versions (n, H, W, 1) -> masked images."""
MASK_NAMES = (*MASKS, *BATCH_MASKS)


def check_mask(name: str) -> None:
    if name not in MASK_NAMES:
        raise DataError(f"mask {name!r} is not one of {', '.join(MASK_NAMES)}")


def apply_mask(image: np.ndarray, name: str) -> np.ndarray:
    check_mask(name)
    if name in BATCH_MASKS:
        raise DataError(f"mask {name!r} runs on whole batches with its model: build_cache applies it")
    fn = MASKS[name]
    return image if fn is None else fn(image)
