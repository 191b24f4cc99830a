"""The study's U-Net (Ronneberger et al. 2015) for cell masks from grayscale images.

Start width 16, three down and three up levels of two 3x3 ReLU convolutions, dropout 0.25
after the first pooling and 0.5 after the others, Conv2DTranspose up-sampling with skip
concatenation, a 1x1 sigmoid output. Three poolings need sides divisible by 8: other sizes
are zero-padded at the bottom and right up to the next multiple of 8 inside the model, and
the prediction is cropped back, so the model takes and returns the caller's size.
"""
from __future__ import annotations

import keras
from keras import layers

LEVELS = 3


def padding_for(height: int, width: int) -> tuple[int, int]:
    """Rows and columns of zeros added so both sides divide by 2**LEVELS."""
    step = 2**LEVELS
    return (-height) % step, (-width) % step


def _block(x, filters: int, name: str):
    x = layers.Conv2D(filters, 3, activation="relu", padding="same", name=f"{name}_a")(x)
    return layers.Conv2D(filters, 3, activation="relu", padding="same", name=f"{name}_b")(x)


def build_unet(height: int, width: int, start_filters: int = 16) -> keras.Model:
    """Input (H, W, 1) uint8 or float in [0, 255]; output (H, W, 1) foreground probability."""
    inputs = keras.Input((height, width, 1), name="gray")
    x = layers.Rescaling(1.0 / 255.0, name="scaling")(inputs)
    pad_h, pad_w = padding_for(height, width)
    if pad_h or pad_w:
        x = layers.ZeroPadding2D(((0, pad_h), (0, pad_w)), name="pad_to_8")(x)
    skips = []
    for level in range(LEVELS):
        x = _block(x, start_filters * 2**level, f"down{level + 1}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level + 1}")(x)
        x = layers.Dropout(0.25 if level == 0 else 0.5, name=f"dropout_down{level + 1}")(x)
    x = _block(x, start_filters * 2**LEVELS, "bottom")
    for level in reversed(range(LEVELS)):
        filters = start_filters * 2**level
        x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", name=f"up{level + 1}")(x)
        x = layers.Concatenate(name=f"skip{level + 1}")([x, skips[level]])
        x = layers.Dropout(0.5, name=f"dropout_up{level + 1}")(x)
        x = _block(x, filters, f"upconv{level + 1}")
    x = layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x)
    if pad_h or pad_w:
        x = layers.Cropping2D(((0, pad_h), (0, pad_w)), name="crop_back")(x)
    return keras.Model(inputs, x, name="unet")
