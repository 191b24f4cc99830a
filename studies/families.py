"""Two families in one space, for the cross-validated campaign on a CPU: the study's own
fully convolutional net (five conv + dropout + max-pool sections, 1x1-conv head, global max
pooling) and the `fast` net, each narrowed to what the earlier searches on the real data
kept choosing. `family` is the first choice, so a trial's other parameters depend on it
and rank correlations can be read within and across the two.

Narrowed, and why (README, "The campaign"): masks are off (Otsu and U-Net masks collapsed on
TEST); size 60x80 (the study's FCN at 120x160 costs ~4x per epoch, past this CPU's budget);
the fast net keeps batch norm, which every top trial of fast-hb chose; the study's FCN keeps
its equal kernels at a quarter of its width: a fold of width 0.25 with kernel 3 took 5.7
minutes on one core, one of width 0.5 over 16 (with the test suite beside it), so a trial
of three folds at width 0.5 would have been a third of the campaign's budget.
"""
from models import FastConfig, FcnConfig
from preprocessing import PreprocessConfig

from .config import TrialConfig

FAMILIES = ("fast", "fcn")


def suggest(p):
    family = p.categorical("family", FAMILIES)
    size = p.constant("size", "60x80")
    if family == "fcn":
        kernel = p.int("fcn_kernel", 2, 3)
        model = FcnConfig(kernels=(kernel,) * 5, width=p.constant("fcn_width", 0.25),
                          dropout=p.float("fcn_dropout", 0.05, 0.3))
        scaling = p.categorical("fcn_scaling", ("channel", "pixel"))
    else:
        depth = p.int("depth", 3, 5)
        model = FastConfig(kernels=(p.int("kernel", 3, 5, step=2),) * depth,
                           width=p.categorical("width", (0.5, 1.0)), batch_norm=True,
                           separable=p.categorical("separable", (True, False)),
                           pooling=p.categorical("pooling", ("avg", "max")),
                           dropout=p.float("dropout", 0.0, 0.4),
                           augment=p.categorical("augment", ("flip", "rotate")))
        scaling = p.categorical("scaling", ("pixel", "channel"))
    return TrialConfig(
        preprocess=PreprocessConfig(size=size, color="rgb", mask="none", scaling=scaling, fit="stretch"),
        model=model,
        batch_size=p.categorical("batch_size", (32, 64, 128)),
        optimizer="adam",
        learning_rate=p.float("learning_rate", 3e-4, 3e-3, log=True),
        label_smoothing=p.float("label_smoothing", 0.0, 0.15),
        weight_decay=p.float("weight_decay", 1e-6, 1e-3, log=True),
        lr_schedule=p.categorical("lr_schedule", ("cosine", "constant")),
    )
