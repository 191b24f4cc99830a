"""The study's Keras networks. A plain library: no Optuna, no MLflow.

    model = build_model(ModelConfig("fcn", kernels=(2,)*5), input_shape=(120, 160, 3),
                        num_classes=4, scaling=("channel", mean, std))

ModelConfig imports without TensorFlow, so processes that only plan trials stay small.
"""
from .config import ModelConfig

__all__ = ["ModelConfig", "ARCHITECTURES", "build_model", "count_trainable", "training_bytes", "load_model"]


def load_model(path):
    """keras.saving.load_model with this package's custom layers registered first."""
    import keras

    from . import combine, layers  # noqa: F401  (registers the custom layers and loss)

    return keras.saving.load_model(path)


def __getattr__(name: str):
    if name in ("ARCHITECTURES", "build_model", "count_trainable", "training_bytes"):
        from . import registry

        return getattr(registry, name)
    raise AttributeError(name)
