"""The study's fully convolutional net. Keras is imported when a model is built, so the
configuration is not."""
from __future__ import annotations

from dataclasses import dataclass

from .config import ModelConfig


@dataclass(frozen=True)
class FcnConfig(ModelConfig):
    """The common fields are all it has."""

    arch = "fcn"


def fcn_head(x, config: FcnConfig, num_classes: int):
    """The study's FCN: conv sections, two 1x1 sections (64, then classes with softmax),
    global max pooling."""
    from keras import layers

    from .layers import Renormalize, conv_sections

    x = conv_sections(x, config.kernels, config.dropout, config.width)
    x = layers.Conv2D(64, 1, activation="relu", name="conv1x1_a")(x)
    x = layers.Dropout(config.dropout, name="dropout_1x1")(x)
    x = layers.Conv2D(num_classes, 1, activation="softmax", name="conv1x1_b")(x)
    x = layers.GlobalMaxPooling2D(name="global_max")(x)
    return Renormalize(name="predictions")(x)
