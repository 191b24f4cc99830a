from keras import layers

from .config import ModelConfig
from .layers import conv_sections


def cnn_head(x, config: ModelConfig, num_classes: int):
    """The study's CNN: conv sections, then Dropout, Flatten, Dense(128, relu), softmax."""
    x = conv_sections(x, config.kernels, config.dropout, config.width)
    x = layers.Dropout(config.dropout, name="dropout_head")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(config.dense_units, activation="relu", name="dense")(x)
    return layers.Dense(num_classes, activation="softmax", name="predictions")(x)
