"""The study's Keras networks. A plain library: no Optuna, no MLflow.

    model = build_model(FcnConfig(kernels=(2,)*5), input_shape=(120, 160, 3),
                        num_classes=4, scaling=("channel", mean, std))

Each network family is one module (its configuration and its builder) registered in
models.registry. Configurations import without TensorFlow (builders import Keras when they
build), so processes that only plan trials stay small.
"""
from .cnn import CnnConfig
from .config import ModelConfig
from .fast import FastConfig
from .fcn import FcnConfig
from .registry import FAMILIES, build_model, count_trainable, register_family, training_bytes

__all__ = ["ModelConfig", "CnnConfig", "FcnConfig", "FastConfig", "FAMILIES", "register_family", "build_model",
           "count_trainable", "training_bytes", "load_model"]


def load_model(path):
    """keras.saving.load_model with this package's custom layers registered first."""
    import keras

    from . import combine, layers  # noqa: F401  (registers the custom layers and loss)

    return keras.saving.load_model(path)
