"""Network families by name. A family is one module: a configuration (a frozen dataclass
extending models.config.ModelConfig, its name in the class attribute `arch`) and a builder
(x, config, num_classes) -> outputs; registering the two makes it buildable, storable and
readable back. Nothing here imports TensorFlow until a model is built (builders import Keras
inside), so configurations are read and planned without it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .cnn import CnnConfig, cnn_head
from .config import ModelConfig
from .fast import FastConfig, fast_head
from .fcn import FcnConfig, fcn_head

if TYPE_CHECKING:
    import keras

Builder = Callable[[Any, ModelConfig, int], Any]


@dataclass(frozen=True)
class Family:
    config: type[ModelConfig]
    build: Builder


FAMILIES: dict[str, Family] = {}


def register_family(config: type[ModelConfig], build: Builder) -> None:
    """Make a family known by its configuration's `arch`. Registering the same class again
    (a module imported anew, e.g. a .py study loaded twice) replaces it; another family's name
    is refused, so two families never read each other's records."""
    if not (isinstance(config, type) and issubclass(config, ModelConfig)) or config is ModelConfig:
        raise TypeError(f"{config!r} is not a subclass of models.ModelConfig")
    if not config.arch:
        raise ValueError(f"{config.__name__} names no family: set its class attribute arch")
    known = FAMILIES.get(config.arch)
    if known and (known.config.__module__, known.config.__qualname__) != (config.__module__, config.__qualname__):
        raise ValueError(f"family {config.arch!r} is already {known.config.__module__}.{known.config.__qualname__}")
    FAMILIES[config.arch] = Family(config, build)


def family(arch: str) -> Family:
    if arch not in FAMILIES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[arch]


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
