"""Models made of models: test-time augmentation, and members averaged into one (a trial's
fold or seed models, an ensemble of trials). Each result is an ordinary Keras model, so what
is evaluated is exactly what is saved, exported and served.

Cells have no orientation (the data set's own copies are rotations of each other), so the
mean of the class probabilities over an image's flips, or over all eight 90-degree turns and
flips of a square image, is a prediction of the same cell with less variance.
"""
from __future__ import annotations

import keras
from keras import layers

from .config import TTA_MODES


@keras.saving.register_keras_serializable(package="bloodsearch")
class FixedTransform(layers.Layer):
    """One fixed symmetry of the image: transpose (height <-> width), then flip rows, columns."""

    def __init__(self, transpose: bool = False, flip_rows: bool = False, flip_cols: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.transpose, self.flip_rows, self.flip_cols = transpose, flip_rows, flip_cols

    def call(self, x):
        if self.transpose:
            x = keras.ops.transpose(x, (0, 2, 1, 3))
        if self.flip_rows:
            x = keras.ops.flip(x, axis=1)
        if self.flip_cols:
            x = keras.ops.flip(x, axis=2)
        return x

    def get_config(self) -> dict:
        return {**super().get_config(), "transpose": self.transpose, "flip_rows": self.flip_rows,
                "flip_cols": self.flip_cols}


@keras.saving.register_keras_serializable(package="bloodsearch")
class WeightedMean(layers.Layer):
    """The weighted mean of several members' class probabilities (weights sum to one)."""

    def __init__(self, weights: list[float], **kwargs) -> None:
        super().__init__(**kwargs)
        total = float(sum(weights))
        self.member_weights = [float(w) / total for w in weights]

    def call(self, inputs):
        return sum(w * x for w, x in zip(self.member_weights, inputs))

    def get_config(self) -> dict:
        return {**super().get_config(), "weights": self.member_weights}


def transforms(mode: str, height: int, width: int) -> list[tuple[bool, bool, bool]]:
    """(transpose, flip rows, flip cols) of each view TTA averages over."""
    if mode not in TTA_MODES:
        raise ValueError(f"tta {mode!r} is not one of {', '.join(TTA_MODES)}")
    flips = [(False, r, c) for r in (False, True) for c in (False, True)]
    if mode == "none":
        return [(False, False, False)]
    if mode == "flip":
        return flips
    if height != width:
        raise ValueError(f"tta dihedral turns images by 90 degrees, so it needs a square size, not {height}x{width}")
    return flips + [(True, r, c) for r, c in ((False, False), (False, True), (True, False), (True, True))]


def _member(model: keras.Model, name: str) -> keras.Model:
    """The model under a name of its own: members of one model need distinct names."""
    outputs = model.outputs[0] if len(model.outputs) == 1 else model.outputs
    return keras.Model(model.inputs[0], outputs, name=name)


def with_tta(model: keras.Model, mode: str) -> keras.Model:
    """model, predicting the mean of its probabilities over the image's views."""
    if mode == "none":
        return model
    height, width = model.input_shape[1:3]
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    inner = _member(model, "tta_member")
    views = [inner(FixedTransform(*t, name=f"view{i}")(inputs)) for i, t in enumerate(transforms(mode, height, width))]
    outputs = WeightedMean([1.0] * len(views), name=f"tta_{mode}")(views)
    return keras.Model(inputs, outputs, name=f"tta_{mode}")


def averaged(models: list[keras.Model], weights: list[float] | None = None, name: str = "bag") -> keras.Model:
    """One model predicting the (weighted) mean of the members' probabilities. Members must
    take the same input; each keeps its own scaling layer (fitted on its own training data)."""
    if len(models) == 1 and not weights:
        return models[0]
    shapes = {tuple(m.input_shape[1:]) for m in models}
    if len(shapes) != 1:
        raise ValueError(f"members take different inputs {sorted(shapes)}: they cannot be averaged in one model")
    inputs = keras.Input(shape=models[0].input_shape[1:], name="image")
    outputs = WeightedMean(weights or [1.0] * len(models), name="mean")(
        [_member(m, f"member{i}")(inputs) for i, m in enumerate(models)])
    return keras.Model(inputs, outputs, name=name)
