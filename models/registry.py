"""Architectures by name; a new one is a function (x, config, num_classes) -> outputs."""
from __future__ import annotations

import keras
import numpy as np

from .cnn import cnn_head
from .config import ModelConfig
from .fast import fast_head
from .fcn import fcn_head
from .scaling import scaling_layer

ARCHITECTURES = {"cnn": cnn_head, "fcn": fcn_head, "fast": fast_head}


def build_model(config: ModelConfig, input_shape: tuple[int, int, int], num_classes: int,
                scaling: tuple[str, np.ndarray | None, np.ndarray | None] = ("unit", None, None)) -> keras.Model:
    """An uncompiled model taking uint8 (or float) images of input_shape."""
    if config.arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {config.arch!r}; known: {', '.join(ARCHITECTURES)}")
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = scaling_layer(*scaling)(inputs)
    outputs = ARCHITECTURES[config.arch](x, config, num_classes)
    return keras.Model(inputs, outputs, name=config.arch)


def count_trainable(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def training_bytes(model: keras.Model, batch_size: int) -> tuple[int, str]:
    """A rough upper estimate of the memory one training step holds, and what it is made of:
    float32 weights with their gradients and Adam's two moments, and each layer's output kept
    for the backward pass with its gradient, for a batch."""
    weights = int(sum(np.prod(w.shape) for w in model.weights))
    outputs = 0
    for layer in model.layers[1:]:  # the input layer holds the batch itself
        for out in keras.tree.flatten(layer.output):
            outputs += int(np.prod(out.shape[1:]))
    need = 4 * (4 * weights + 2 * batch_size * outputs)
    return need, f"{weights:,} weights, {outputs:,} activations per image, batch {batch_size}"

