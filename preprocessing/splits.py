"""Validation split out of TRAIN, stratified by class and grouped (preprocessing.groups).

The public set's TRAIN holds ~36 augmented copies of each microscope field; a split that put
copies of one field on both sides measures recognition of fields already seen, not
generalisation (docs/groups.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .dataset import ImageSet
from .errors import DataError
from .grouping import grouped_folds, grouped_holdout


@dataclass(frozen=True)
class Split:
    train: np.ndarray = field(repr=False)
    val: np.ndarray = field(repr=False)
    report: dict

    def to_dict(self) -> dict:
        return {"train": self.train.tolist(), "val": self.val.tolist(), "report": self.report}


def _side_report(image_set: ImageSet, idx: np.ndarray) -> dict:
    out = {}
    for c_i, c in enumerate(image_set.classes):
        sel = idx[image_set.labels[idx] == c_i]
        out[c] = {"images": int(len(sel)), "groups": len({image_set.groups[i] for i in sel})}
    return out


def validation_split(image_set: ImageSet, fraction: float = 0.2, seed: int = 0,
                     valid: np.ndarray | None = None) -> Split:
    """Deterministic for a seed. `valid` (bool per file) drops unreadable files first."""
    candidates = np.arange(len(image_set)) if valid is None else np.flatnonzero(valid)
    if len(candidates) == 0:
        raise DataError(f"{image_set.where} has no readable images")
    keep, held = grouped_holdout(image_set.labels[candidates],
                                 [image_set.groups[i] for i in candidates], fraction, seed, image_set.classes)
    train, val = candidates[keep], candidates[held]
    train_groups, val_groups = {image_set.groups[i] for i in train}, {image_set.groups[i] for i in val}
    assert not train_groups & val_groups, f"grouped split leaked groups {sorted(train_groups & val_groups)[:3]}"
    # The share actually held out, to the nearest group per class: what was measured on.
    report = {"seed": seed, "fraction": fraction,
              "held_out_share": round(len(val_groups) / (len(val_groups) + len(train_groups)), 4),
              "train": _side_report(image_set, train), "val": _side_report(image_set, val)}
    return Split(train, val, report)


def cv_folds(image_set: ImageSet, k: int, seed: int = 0, valid: np.ndarray | None = None) -> list[Split]:
    """K grouped, stratified folds of the readable files: every group is validated in exactly
    one fold, never on both sides of one. Deterministic for a seed."""
    candidates = np.arange(len(image_set)) if valid is None else np.flatnonzero(valid)
    if len(candidates) == 0:
        raise DataError(f"{image_set.where} has no readable images")
    if k < 2:
        raise DataError(f"--cv {k}: cross-validation needs at least 2 folds")
    folds = []
    for fold, (keep, held) in enumerate(grouped_folds(image_set.labels[candidates],
                                                      [image_set.groups[i] for i in candidates], k, seed,
                                                      image_set.classes)):
        train, val = candidates[keep], candidates[held]
        train_groups, val_groups = {image_set.groups[i] for i in train}, {image_set.groups[i] for i in val}
        assert not train_groups & val_groups, f"fold {fold} leaked groups {sorted(train_groups & val_groups)[:3]}"
        folds.append(Split(train, val, {"seed": seed, "folds": k, "fold": fold,
                                        "held_out_share": round(len(val_groups) / (len(val_groups) + len(train_groups)), 4),
                                        "train": _side_report(image_set, train), "val": _side_report(image_set, val)}))
    return folds
