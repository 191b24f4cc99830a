"""Validation split out of TRAIN, stratified by class and grouped by original cell.

The public set's TRAIN holds ~40 augmented copies of each original cell; a split that put
copies of one cell on both sides would measure memory, not generalisation.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from .dataset import ImageSet
from .errors import DataError


def grouped_holdout(labels: np.ndarray, groups: Sequence[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): about `fraction` of the groups of each class held out."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"validation fraction {fraction} must be between 0 and 1")
    n_splits = max(2, round(1.0 / fraction))
    n_groups = len(set(groups))
    if n_groups < n_splits:
        raise DataError(f"only {n_groups} original cells; a grouped split of fraction {fraction} needs {n_splits}")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # sklearn warns when a class has fewer members than folds; the report shows it plainly.
        warnings.simplefilter("ignore", UserWarning)
        keep, held = next(splitter.split(np.zeros(len(labels)), labels, np.asarray(groups)))
    return np.sort(keep), np.sort(held)


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
        out[c] = {"images": int(len(sel)), "cells": len({image_set.groups[i] for i in sel})}
    return out


def validation_split(image_set: ImageSet, fraction: float = 0.2, seed: int = 0,
                     valid: np.ndarray | None = None) -> Split:
    """Deterministic for a seed. `valid` (bool per file) drops unreadable files first."""
    candidates = np.arange(len(image_set)) if valid is None else np.flatnonzero(valid)
    if len(candidates) == 0:
        raise DataError(f"{image_set.where} has no readable images")
    keep, held = grouped_holdout(image_set.labels[candidates],
                                 [image_set.groups[i] for i in candidates], fraction, seed)
    train, val = candidates[keep], candidates[held]
    leaked = {image_set.groups[i] for i in train} & {image_set.groups[i] for i in val}
    assert not leaked, f"grouped split leaked cells {sorted(leaked)[:3]}"
    report = {"seed": seed, "fraction": fraction,
              "train": _side_report(image_set, train), "val": _side_report(image_set, val)}
    return Split(train, val, report)
