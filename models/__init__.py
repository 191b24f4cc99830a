"""The study's Keras networks. A plain library: no Optuna, no MLflow.

    model = build_model(ModelConfig("fcn", kernels=(2,)*5), input_shape=(120, 160, 3),
                        num_classes=4, scaling=("channel", mean, std))
"""
from .config import ModelConfig
from .registry import ARCHITECTURES, build_model, count_trainable

__all__ = ["ModelConfig", "ARCHITECTURES", "build_model", "count_trainable"]
