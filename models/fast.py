"""A small, fast classifier with what efficient nets use and the study did not try: batch
normalization, depthwise-separable convolutions, a global-average-pooling head, and
training-time augmentation (the cells have no orientation)."""
from __future__ import annotations

from keras import layers

from .config import ModelConfig
from .layers import RandomTranspose, pool_sizes

MAX_FILTERS = 256


def augmentation(x, kind: str):
    """Random flips (all four flip/180-degree combinations), plus transposes for "dihedral"
    (with them, every 90-degree rotation), or rotations by any angle and small shifts for
    "rotate" (what the data set's own augmented copies were made with). Active in training only."""
    if kind == "none":
        return x
    x = layers.RandomFlip("horizontal_and_vertical", name="random_flip")(x)
    if kind == "rotate":
        x = layers.RandomRotation(0.5, name="random_rotation")(x)
        x = layers.RandomTranslation(0.1, 0.1, name="random_translation")(x)
    if kind == "dihedral":
        if x.shape[1] != x.shape[2]:
            raise ValueError(f"augment=dihedral needs square images, not {x.shape[1]}x{x.shape[2]}; use augment=flip")
        x = RandomTranspose(name="random_transpose")(x)
    return x


def fast_head(x, config: ModelConfig, num_classes: int):
    x = augmentation(x, config.augment)
    pools = pool_sizes(x.shape[1], x.shape[2], len(config.kernels))
    for i, (k, pool) in enumerate(zip(config.kernels, pools)):
        filters = max(4, round(min(32 * 2**i, MAX_FILTERS) * config.width))
        # A separable conv on the RGB input saves nothing: the first section stays plain.
        conv = layers.SeparableConv2D if config.separable and i > 0 else layers.Conv2D
        x = conv(filters, k, padding="same", use_bias=not config.batch_norm, name=f"conv{i + 1}")(x)
        if config.batch_norm:
            x = layers.BatchNormalization(name=f"bn{i + 1}")(x)
        x = layers.Activation("relu", name=f"relu{i + 1}")(x)
        x = layers.MaxPooling2D(pool, name=f"pool{i + 1}")(x)
    pooling = layers.GlobalAveragePooling2D if config.pooling == "avg" else layers.GlobalMaxPooling2D
    x = pooling(name=f"global_{config.pooling}")(x)
    x = layers.Dropout(config.dropout, name="dropout")(x)
    return layers.Dense(num_classes, activation="softmax", name="predictions")(x)
