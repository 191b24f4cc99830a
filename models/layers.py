"""Building blocks shared by the CNN and the FCN."""
from __future__ import annotations

import keras
from keras import layers

FIRST_POOL = (3, 4)  # the study's: 120x160 becomes 40x40


def pool_sizes(height: int, width: int, sections: int) -> list[tuple[int, int]]:
    """The study's pools, (3, 4) then (2, 2), clamped so no dimension falls below 1.

    This lets 60x80 or a tiny test image build with the same five sections.
    """
    sizes = []
    for i in range(sections):
        ph, pw = FIRST_POOL if i == 0 else (2, 2)
        ph, pw = min(ph, height), min(pw, width)
        sizes.append((ph, pw))
        height, width = height // ph, width // pw
    return sizes


def conv_sections(x, kernels, dropout: float, width: float):
    """Five sections of Conv2D(ReLU, same) + Dropout + MaxPooling, filters 64*2**i*width."""
    pools = pool_sizes(x.shape[1], x.shape[2], len(kernels))
    for i, (k, pool) in enumerate(zip(kernels, pools)):
        filters = max(1, round(64 * 2**i * width))
        x = layers.Conv2D(filters, k, padding="same", activation="relu", name=f"conv{i + 1}")(x)
        x = layers.Dropout(dropout, name=f"dropout{i + 1}")(x)
        x = layers.MaxPooling2D(pool, name=f"pool{i + 1}")(x)
    return x


@keras.saving.register_keras_serializable(package="bloodsearch")
class Renormalize(layers.Layer):
    """Divide by the sum over classes.

    The study's FCN takes the global max of per-location softmaxes, which no longer sums to
    one; Keras's crossentropy renormalises it silently, so training is unchanged, and this
    makes predict() return probabilities too.
    """

    def call(self, x):
        return x / keras.ops.sum(x, axis=-1, keepdims=True)


@keras.saving.register_keras_serializable(package="bloodsearch")
class RandomTranspose(layers.Layer):
    """Swap height and width of a whole batch with probability 1/2, in training only. After
    per-image random flips this reaches every 90-degree rotation (square images only)."""

    def __init__(self, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training:
            return x
        flip = keras.random.uniform((), seed=self.generator) < 0.5
        return keras.ops.where(flip, keras.ops.transpose(x, (0, 2, 1, 3)), x)

    def get_config(self) -> dict:
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="bloodsearch")
class SparseSmoothedCrossentropy(keras.losses.Loss):
    """Crossentropy on integer labels with label smoothing (Keras's sparse loss has none)."""

    def __init__(self, label_smoothing: float = 0.0, num_classes: int = 2, name: str = "smoothed_crossentropy",
                 **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.label_smoothing, self.num_classes = label_smoothing, num_classes

    def call(self, y_true, y_pred):
        labels = keras.ops.one_hot(keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,)), self.num_classes)
        return keras.losses.categorical_crossentropy(labels, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "num_classes": self.num_classes}
