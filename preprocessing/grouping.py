"""Stratified, grouped hold-outs on plain labels and group ids (a group: a patient, slide or
field): what both the validation split (splits.py) and a flat data set's TEST split
(dataset.py) are made with."""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from .errors import DataError


def grouped_holdout(labels: np.ndarray, groups: Sequence[str], fraction: float, seed: int,
                    class_names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): about `fraction` of each class's groups held out, at least one
    and never all. Deterministic for a seed.

    A group may hold several classes (a patient's many cells): classes are served rarest first,
    and a group held out for one class counts for every class it holds, so the shares are as
    close to `fraction` as the groups allow; the split's report says what was achieved."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"validation fraction {fraction} must be between 0 and 1")
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    by_class = {label: sorted(set(groups[labels == label].tolist())) for label in sorted(set(labels.tolist()))}
    held_groups: set[str] = set()
    for label in sorted(by_class, key=lambda lb: (len(by_class[lb]), lb)):
        cells = by_class[label]
        if len(cells) < 2:
            raise DataError(f"class {_name(label, class_names)} has {len(cells)} group(s) with readable images; "
                            f"a grouped validation split needs at least 2 per class")
        target = min(len(cells) - 1, max(1, round(fraction * len(cells))))
        free = [g for g in cells if g not in held_groups]
        n_more = max(0, min(target - (len(cells) - len(free)), len(free) - 1))
        if n_more:
            held_groups.update(rng.choice(free, size=n_more, replace=False).tolist())
    for label, cells in by_class.items():
        if all(g in held_groups for g in cells):
            raise DataError(f"class {_name(label, class_names)}: every one of its {len(cells)} groups also holds "
                            f"rarer classes that were held out; no grouped split leaves it in training")
    held = np.isin(groups, list(held_groups))
    return np.flatnonzero(~held), np.flatnonzero(held)


def _name(label: int, class_names: Sequence[str] | None) -> str:
    return class_names[label] if class_names is not None else f"label {label}"


def grouped_folds(labels: np.ndarray, groups: Sequence[str], k: int, seed: int,
                  class_names: Sequence[str] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """K (train, validation) index pairs, stratified by class as well as the groups allow:
    every group is validated in exactly one fold (scikit-learn's StratifiedGroupKFold)."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    for label in sorted(set(labels.tolist())):
        n = len(set(groups[labels == label].tolist()))
        if n < k:
            raise DataError(f"class {_name(label, class_names)} has {n} group(s) with readable images; "
                            f"{k} folds need at least {k} per class")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # checked above, in our words
        return [(np.sort(a), np.sort(b)) for a, b in splitter.split(np.zeros(len(labels)), labels, groups)]
