"""A fast, modern small net for a CPU budget: what the study did not try (batch norm,
depthwise-separable convolutions, a global-average-pooling head, label smoothing, weight
decay, a cosine learning-rate schedule, flip and rotation augmentation) beside its own preprocessing
choices. 60x80 by default (--param size=120x160 on a GPU)."""
from models import FastConfig
from preprocessing import PreprocessConfig, parse_size
from preprocessing.scaling import SCALINGS

from .config import TrialConfig


def suggest(p):
    size = p.constant("size", "60x80")
    h, w = parse_size(size)
    depth = p.int("depth", 3, 5)
    model = FastConfig(
        kernels=(p.int("kernel", 3, 5, step=2),) * depth,
        width=p.categorical("width", (0.5, 1.0, 2.0)),
        batch_norm=p.categorical("batch_norm", (True, False)),
        separable=p.categorical("separable", (True, False)),
        pooling=p.categorical("pooling", ("avg", "max")),
        dropout=p.float("dropout", 0.0, 0.5),
        augment=p.categorical("augment", ("flip", "rotate", "none") + (("dihedral",) if h == w else ())),
    )
    return TrialConfig(
        preprocess=PreprocessConfig(size=size, color=p.constant("color", "rgb"),
                                    mask=p.categorical("mask", ("none", "otsu")),
                                    scaling=p.categorical("scaling", SCALINGS), fit=p.constant("fit", "stretch")),
        model=model,
        batch_size=p.categorical("batch_size", (32, 64, 128)),
        optimizer=p.constant("optimizer", "adam"),
        learning_rate=p.float("learning_rate", 3e-4, 1e-2, log=True),
        label_smoothing=p.float("label_smoothing", 0.0, 0.2),
        weight_decay=p.float("weight_decay", 1e-6, 1e-2, log=True),
        lr_schedule=p.categorical("lr_schedule", ("cosine", "constant")),
    )
