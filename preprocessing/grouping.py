"""Stratified, grouped hold-outs on plain labels and group ids: what both the validation
split (splits.py) and a flat data set's TEST split (dataset.py) are made with."""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from .errors import DataError


def grouped_holdout(labels: np.ndarray, groups: Sequence[str], fraction: float, seed: int,
                    class_names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): `fraction` of each class's groups (original cells) held out,
    to the nearest cell, at least one and never all. Deterministic for a seed."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"validation fraction {fraction} must be between 0 and 1")
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    held_groups: set[str] = set()
    for label in sorted(set(labels.tolist())):
        cells = sorted(set(groups[labels == label].tolist()))
        if len(cells) < 2:
            name = class_names[label] if class_names is not None else f"label {label}"
            raise DataError(f"class {name} has {len(cells)} original cell(s) with readable images; "
                            f"a grouped validation split needs at least 2 per class")
        n_held = min(len(cells) - 1, max(1, round(fraction * len(cells))))
        held_groups.update(rng.choice(cells, size=n_held, replace=False).tolist())
    held = np.isin(groups, list(held_groups))
    return np.flatnonzero(~held), np.flatnonzero(held)


def grouped_folds(labels: np.ndarray, groups: Sequence[str], k: int, seed: int,
                  class_names: Sequence[str] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """K (train, validation) index pairs, stratified by class and grouped by cell: every
    cell is validated in exactly one fold (scikit-learn's StratifiedGroupKFold)."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    for label in sorted(set(labels.tolist())):
        n = len(set(groups[labels == label].tolist()))
        if n < k:
            name = class_names[label] if class_names is not None else f"label {label}"
            raise DataError(f"class {name} has {n} original cell(s) with readable images; "
                            f"{k} folds need at least {k} per class")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # checked above, in our words
        return [(np.sort(a), np.sort(b)) for a, b in splitter.split(np.zeros(len(labels)), labels, groups)]
