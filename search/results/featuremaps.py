"""What each convolution and max-pooling layer of a trained model sees for one image: one
PNG grid of channels per layer, as the study showed for one cell."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

MAX_CHANNELS = 64


def feature_layers(model) -> list:
    from keras import layers

    return [layer for layer in model.layers if isinstance(layer, (layers.Conv2D, layers.MaxPooling2D))]


def write_featuremaps(model, image: np.ndarray, out: Path, title: str = "") -> list[Path]:
    """image: one (H, W, C) array as the model takes it. Returns the PNGs, in layer order."""
    import keras

    chosen = feature_layers(model)
    probe = keras.Model(model.inputs, [layer.output for layer in chosen])
    outputs = probe.predict(image[None], verbose=0)
    if not isinstance(outputs, list):
        outputs = [outputs]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (layer, maps) in enumerate(zip(chosen, outputs)):
        maps = maps[0]
        n = min(maps.shape[-1], MAX_CHANNELS)
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.3 + 0.5), squeeze=False)
        for k, ax in enumerate(axes.flat):
            ax.axis("off")
            if k < n:
                ax.imshow(maps[:, :, k], cmap="viridis")
        shown = f"{n} of {maps.shape[-1]} channels" if n < maps.shape[-1] else f"{n} channels"
        fig.suptitle(f"{title} {layer.name}: {maps.shape[0]}x{maps.shape[1]}, {shown}".strip(), fontsize=9)
        path = out / f"{i + 1:02d}_{layer.name}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written
