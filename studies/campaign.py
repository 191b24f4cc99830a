"""The 2026-12 campaign's space (issue 26): the study's FCN and the fast net in one space,
wide enough to hold every configuration the honest re-measure starts from, so a launch can
enqueue them (the study's FCN with `--enqueue-study seed-fcn`, earlier winners with
`--enqueue`) and TPE searches on from them.

Against `families` (the 2026-11-30 campaign): the FCN may take the study's own width 1 (the
baseline; its branch keeps the study's training: no weight decay), the fast net may take
120x160 (resolution was the largest lever measured) and the Otsu mask, and augmentation may
be off, so each known configuration is a point of the space. The FCN stays at 60x80: at
120x160 one of its trials is hours on one core.
"""
from models import FastConfig, FcnConfig
from preprocessing import PreprocessConfig

from .config import TrialConfig

FAMILIES = ("fast", "fcn")
SCALINGS = ("pixel", "channel")  # the two that won on the real data; global and /255 never did


def suggest(p):
    family = p.categorical("family", FAMILIES)
    dropout = p.float("dropout", 0.0, 0.5)
    if family == "fcn":
        kernel = p.categorical("fcn_kernel", (2, 3))
        model = FcnConfig(kernels=(kernel,) * 5, width=p.categorical("fcn_width", (0.25, 0.5, 1.0)), dropout=dropout)
        preprocess = PreprocessConfig(size=p.constant("size", "60x80"), color="rgb", mask="none",
                                      scaling=p.categorical("scaling", SCALINGS), fit="stretch")
        weight_decay = p.constant("weight_decay", 0.0)
    else:
        depth = p.int("depth", 3, 5)
        model = FastConfig(kernels=(p.int("kernel", 3, 5, step=2),) * depth,
                           width=p.categorical("width", (0.5, 1.0)), batch_norm=p.constant("batch_norm", True),
                           separable=p.categorical("separable", (True, False)),
                           pooling=p.categorical("pooling", ("avg", "max")), dropout=dropout,
                           augment=p.categorical("augment", ("none", "flip")))
        preprocess = PreprocessConfig(size=p.categorical("size", ("60x80", "120x160")), color="rgb",
                                      mask=p.categorical("mask", ("none", "otsu")),
                                      scaling=p.categorical("scaling", SCALINGS), fit="stretch")
        weight_decay = p.float("weight_decay", 1e-6, 1e-2, log=True)
    return TrialConfig(
        preprocess=preprocess,
        model=model,
        batch_size=p.categorical("batch_size", (32, 64, 128)),
        optimizer="adam",
        learning_rate=p.float("learning_rate", 3e-4, 1e-2, log=True),
        label_smoothing=p.float("label_smoothing", 0.0, 0.15),
        weight_decay=weight_decay,
        lr_schedule=p.categorical("lr_schedule", ("cosine", "constant")),
    )
