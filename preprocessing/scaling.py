"""The study's four scalings, fitted on the training split in one streaming pass.

- pixel:   standardize each pixel and channel across images (sklearn StandardScaler on
           flattened images, as the study did)
- global:  one mean and std over every value
- channel: one mean and std per colour channel
- unit:    divide by 255

Statistics are float64 sums over chunks of the cache, never a stack of all images, and are
applied unchanged to validation, test and prediction (inside the model, see models.scaling).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import DataError

SCALINGS = ("pixel", "global", "channel", "unit")
# Axes of an (N, H, W, C) stack that each scaling averages over.
_AXES = {"pixel": (0,), "global": (0, 1, 2, 3), "channel": (0, 1, 2)}
# A constant feature would divide by ~0; like sklearn's StandardScaler, leave it unscaled.
_MIN_STD = 1e-6


@dataclass(frozen=True)
class ScalingStats:
    kind: str
    mean: np.ndarray  # broadcastable against one (H, W, C) image
    std: np.ndarray

    def apply(self, images: np.ndarray) -> np.ndarray:
        return ((images.astype(np.float64) - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "shape": list(self.mean.shape),
                "mean": self.mean.ravel().tolist(), "std": self.std.ravel().tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "ScalingStats":
        shape = tuple(d["shape"])
        return cls(d["kind"], np.asarray(d["mean"], np.float64).reshape(shape),
                   np.asarray(d["std"], np.float64).reshape(shape))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> "ScalingStats":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"scaling statistics {path} are unreadable ({exc})") from None


def fit_scaling_stream(kind: str, chunks: Iterable[np.ndarray], image_shape: tuple[int, int, int]) -> ScalingStats:
    """Fit from an iterable of (n, H, W, C) uint8 chunks."""
    if kind not in SCALINGS:
        raise DataError(f"scaling {kind!r} is not one of {', '.join(SCALINGS)}")
    if kind == "unit":
        return ScalingStats(kind, np.zeros((1, 1, 1)), np.full((1, 1, 1), 255.0))
    axes = _AXES[kind]
    total = total_sq = None
    count = 0
    for chunk in chunks:
        x = chunk.astype(np.float64)
        s, sq = x.sum(axis=axes, keepdims=True)[0], (x * x).sum(axis=axes, keepdims=True)[0]
        total, total_sq = (s, sq) if total is None else (total + s, total_sq + sq)
        count += int(np.prod([chunk.shape[a] for a in axes]))
    if count == 0:
        raise DataError("cannot fit scaling statistics on an empty training split")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    std = np.where(std < _MIN_STD, 1.0, std)
    return ScalingStats(kind, mean, std)


def fit_scaling(cache, indices: np.ndarray, kind: str) -> ScalingStats:
    """Fit on the cached images at `indices` (the training split only)."""
    return fit_scaling_stream(kind, cache.chunks(indices), cache.image_shape)
