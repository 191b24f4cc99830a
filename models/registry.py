"""Network families by name. A family is one module: a configuration (a frozen dataclass
extending models.config.ModelConfig, its name in the class attribute `arch`) and a builder
(x, config, num_classes) -> outputs; registering the two makes it buildable, storable and
readable back. The table and register_family live in models.config (so reading a
configuration back imports no family module); this module registers the shipped families.
Nothing here imports TensorFlow until a model is built (builders import Keras inside), so
configurations are read and planned without it."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .cnn import CnnConfig, cnn_head
from .config import FAMILIES, Builder, Family, ModelConfig, family, register_family  # noqa: F401  (the table: models.config)
from .fast import FastConfig, fast_head
from .fcn import FcnConfig, fcn_head

if TYPE_CHECKING:
    import keras

register_family(CnnConfig, cnn_head)
register_family(FcnConfig, fcn_head)
register_family(FastConfig, fast_head)


def build_model(config: ModelConfig, input_shape: tuple[int, int, int], num_classes: int,
                scaling: tuple[str, np.ndarray | None, np.ndarray | None] = ("unit", None, None)) -> "keras.Model":
    """An uncompiled model taking uint8 (or float) images of input_shape."""
    import keras

    from .scaling import scaling_layer

    build = family(config.arch).build
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = scaling_layer(*scaling)(inputs)
    outputs = build(x, config, num_classes)
    return keras.Model(inputs, outputs, name=config.arch)


def count_trainable(model: "keras.Model") -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def training_bytes(model: "keras.Model", batch_size: int) -> tuple[int, str]:
    """A rough upper estimate of the memory one training step holds, and what it is made of:
    float32 weights with their gradients and Adam's two moments, and each layer's output kept
    for the backward pass with its gradient, for a batch."""
    import keras

    weights = int(sum(np.prod(w.shape) for w in model.weights))
    outputs = 0
    for layer in model.layers[1:]:  # the input layer holds the batch itself
        for out in keras.tree.flatten(layer.output):
            outputs += int(np.prod(out.shape[1:]))
    need = 4 * (4 * weights + 2 * batch_size * outputs)
    return need, f"{weights:,} weights, {outputs:,} activations per image, batch {batch_size}"
