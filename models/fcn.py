from keras import layers

from .config import ModelConfig
from .layers import Renormalize, conv_sections


def fcn_head(x, config: ModelConfig, num_classes: int):
    """The study's FCN: conv sections, two 1x1 sections (64, then classes with softmax),
    global max pooling."""
    x = conv_sections(x, config.kernels, config.dropout, config.width)
    x = layers.Conv2D(64, 1, activation="relu", name="conv1x1_a")(x)
    x = layers.Dropout(config.dropout, name="dropout_1x1")(x)
    x = layers.Conv2D(num_classes, 1, activation="softmax", name="conv1x1_b")(x)
    x = layers.GlobalMaxPooling2D(name="global_max")(x)
    return Renormalize(name="predictions")(x)
