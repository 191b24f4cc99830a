"""A small, fast classifier with what efficient nets use and the study did not try: batch
normalization, depthwise-separable convolutions, a global-average-pooling head, and
training-time augmentation (the cells have no orientation). Keras is imported when a model
is built, so the configuration is not."""
from __future__ import annotations

from dataclasses import dataclass

from .config import ModelConfig

MAX_FILTERS = 256
POOLINGS = ("avg", "max")
AUGMENTS = ("none", "flip", "dihedral", "rotate")


@dataclass(frozen=True)
class FastConfig(ModelConfig):
    """batch_norm; separable (depthwise-separable convs after the first section); pooling, its
    head ("avg" or "max"); augment ("none", "flip", "dihedral" for square inputs, "rotate":
    flips, any angle, shifts), in training only, so inference sees raw images."""

    arch = "fast"
    batch_norm: bool = False
    separable: bool = False
    pooling: str = "avg"
    augment: str = "none"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling {self.pooling!r} is not one of {', '.join(POOLINGS)}")
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment {self.augment!r} is not one of {', '.join(AUGMENTS)}")

    def check_input(self, height: int, width: int) -> None:
        if self.augment == "dihedral" and height != width:
            raise ValueError(f"augment dihedral turns images by 90 degrees, so it needs a square size, not "
                             f"{height}x{width} (use flip or rotate)")


def augmentation(x, kind: str):
    """Random flips (all four flip/180-degree combinations), plus transposes for "dihedral"
    (with them, every 90-degree rotation), or rotations by any angle and small shifts for
    "rotate" (what the data set's own augmented copies were made with). Active in training only."""
    from keras import layers

    from .layers import RandomTranspose

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


def fast_head(x, config: FastConfig, num_classes: int):
    from keras import layers

    from .layers import pool_sizes

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
