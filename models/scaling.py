"""Input scaling as a fixed, non-trainable first layer holding the fitted statistics.

The data pipeline then moves uint8, and a saved model carries its own preprocessing.
"""
from __future__ import annotations

import numpy as np
from keras import layers


def scaling_layer(kind: str, mean: np.ndarray | None = None, std: np.ndarray | None = None) -> layers.Layer:
    if kind == "unit":
        return layers.Rescaling(1.0 / 255.0, name="scaling")
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    if kind == "pixel":
        axis, mean, std = (1, 2, 3), mean.reshape(mean.shape[-3:]), std.reshape(std.shape[-3:])
    elif kind == "channel":
        axis, mean, std = -1, mean.reshape(-1), std.reshape(-1)
    elif kind == "global":
        axis, mean, std = None, float(mean.reshape(-1)[0]), float(std.reshape(-1)[0])
    else:
        raise ValueError(f"unknown scaling {kind!r}")
    return layers.Normalization(axis=axis, mean=mean, variance=np.square(std), name="scaling")
