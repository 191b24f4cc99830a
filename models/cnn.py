"""The study's CNN. Keras is imported when a model is built, so the configuration is not."""
from __future__ import annotations

from dataclasses import dataclass

from .config import ModelConfig


@dataclass(frozen=True)
class CnnConfig(ModelConfig):
    """dense_units: the hidden layer of its head (the study's 128)."""

    arch = "cnn"
    dense_units: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dense_units < 1:
            raise ValueError(f"dense_units {self.dense_units} must be at least 1")


def cnn_head(x, config: CnnConfig, num_classes: int):
    """The study's CNN: conv sections, then Dropout, Flatten, Dense(128, relu), softmax."""
    from keras import layers

    from .layers import conv_sections

    x = conv_sections(x, config.kernels, config.dropout, config.width)
    x = layers.Dropout(config.dropout, name="dropout_head")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(config.dense_units, activation="relu", name="dense")(x)
    return layers.Dense(num_classes, activation="softmax", name="predictions")(x)
