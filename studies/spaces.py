"""Pieces of search space the shipped studies share; each study module composes them."""
from __future__ import annotations

from models import CnnConfig, FcnConfig, ModelConfig
from preprocessing import PreprocessConfig
from preprocessing.config import FITS
from preprocessing.masks import MASK_NAMES
from preprocessing.scaling import SCALINGS

from .config import OPTIMIZERS, TrialConfig
from .params import Params

SIZES = ("120x160", "60x80", "90x120", "30x40")
SECTIONS = 5


def preprocessing_space(p: Params) -> PreprocessConfig:
    return PreprocessConfig(
        size=p.categorical("size", SIZES),
        color=p.categorical("color", ("rgb", "gray")),
        mask=p.categorical("mask", MASK_NAMES),
        scaling=p.categorical("scaling", SCALINGS),
        fit=p.categorical("fit", FITS),
    )


def training_space(p: Params) -> dict:
    return {
        "batch_size": p.categorical("batch_size", (16, 32, 64, 128, 256)),
        "optimizer": p.categorical("optimizer", OPTIMIZERS),
        "learning_rate": p.float("learning_rate", 1e-4, 1e-2, log=True),
    }


def conv_space(p: Params, arch: str) -> ModelConfig:
    kernels = tuple(p.int(f"kernel_{i + 1}", 2, 4) for i in range(SECTIONS))
    common = dict(kernels=kernels, dropout=p.float("dropout", 0.1, 0.5), width=p.categorical("width", (0.25, 0.5, 1.0)))
    if arch == "cnn":
        return CnnConfig(**common, dense_units=p.categorical("dense_units", (64, 128, 256)))
    return FcnConfig(**common)


def full_space(p: Params, arch: str) -> TrialConfig:
    return TrialConfig(preprocess=preprocessing_space(p), model=conv_space(p, arch), **training_space(p))


def _fixed_model(p: Params, arch: str, dropout: float) -> ModelConfig:
    common = dict(kernels=tuple(p.constant(f"kernel_{i + 1}", 2) for i in range(SECTIONS)),
                  dropout=p.constant("dropout", dropout), width=p.constant("width", 1.0))
    # A constant of seed-fcn too, whose net has no dense layer: its names, and so what
    # --param and --enqueue-study accept, stay as they were.
    dense_units = p.constant("dense_units", 128)
    return CnnConfig(**common, dense_units=dense_units) if arch == "cnn" else FcnConfig(**common)


def fixed_config(p: Params, arch: str, dropout: float) -> TrialConfig:
    """The study's best configuration, every value still overridable with --param."""
    return TrialConfig(
        preprocess=PreprocessConfig(size=p.constant("size", "120x160"), color=p.constant("color", "rgb"),
                                    mask=p.constant("mask", "none"), scaling=p.constant("scaling", "channel"),
                                    fit=p.constant("fit", "stretch")),
        model=_fixed_model(p, arch, dropout),
        batch_size=p.constant("batch_size", 128),
        optimizer=p.constant("optimizer", "adam"),
        learning_rate=p.constant("learning_rate", 1e-3),
        # Named, so a space that searches them can hold the study's training (--enqueue-study).
        label_smoothing=p.constant("label_smoothing", 0.0),
        weight_decay=p.constant("weight_decay", 0.0),
        lr_schedule=p.constant("lr_schedule", "constant"),
    )
