"""Foreground masks. A mask zeroes the background of the resized image.

New masks register in MASKS; `unet` is reserved for the U-Net masks that a later
release adds, and choosing it now is a clear error rather than a silent no-op.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from .errors import DataError


def otsu_foreground(channel: np.ndarray) -> np.ndarray:
    """Boolean foreground of one uint8 channel by Otsu's threshold.

    Stained cells are darker than the background, so the foreground is the dark side.
    """
    _, fg = cv2.threshold(channel, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    return fg.astype(bool)


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
PLANNED = {"unet": "U-Net masks are not available yet; use mask none or otsu"}


def check_mask(name: str) -> None:
    if name in PLANNED:
        raise DataError(f"mask {name!r}: {PLANNED[name]}")
    if name not in MASKS:
        raise DataError(f"mask {name!r} is not one of {', '.join(MASKS)}")


def apply_mask(image: np.ndarray, name: str) -> np.ndarray:
    check_mask(name)
    fn = MASKS[name]
    return image if fn is None else fn(image)
