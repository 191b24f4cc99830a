"""Leak audit: which held-out images share a group (a patient, slide or field, or a merged
cluster of overlapping fields) with the images a model trained on.

Two questions, one table: does TEST (and TEST_SIMPLE) hold groups that TRAIN holds, and do
the validation folds a study would make hold groups that their training folds hold? The
folds may be made by another grouping than the reference one (`split_by`): that is how the
audit shows what splitting by file, or by a file-name pattern, leaks.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from .dataset import DataSet, ImageSet
from .splits import cv_folds, validation_split


@dataclass(frozen=True)
class Leak:
    """Held-out images whose reference group is also among the training images."""

    what: str
    images: int
    leaked_images: int
    leaked_groups: list[str] = field(default_factory=list)
    per_class: dict[str, int] = field(default_factory=dict)

    @property
    def share(self) -> float:
        return self.leaked_images / self.images if self.images else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "share": round(self.share, 4)}


def leak(what: str, image_set: ImageSet, held: Sequence[int], seen_groups: set[str]) -> Leak:
    held = np.asarray(held, dtype=int)
    shared = np.asarray([image_set.groups[i] in seen_groups for i in held], dtype=bool)
    per_class = {c: int(((image_set.labels[held] == k) & shared).sum()) for k, c in enumerate(image_set.classes)}
    return Leak(what, int(len(held)), int(shared.sum()),
                sorted({image_set.groups[i] for i in held[shared]}), {c: n for c, n in per_class.items() if n})


def audit(data: DataSet, split_by: DataSet | None = None, cv: int = 0, seed: int = 0,
          val_fraction: float = 0.2) -> list[Leak]:
    """data: grouped by the reference groups; split_by: the same files grouped as the folds
    (or the validation split) are made (default: the reference groups themselves)."""
    train = data.train
    rows = [leak(f"{name} vs TRAIN", data.splits[name], range(len(data.splits[name])), set(train.groups))
            for name in ("TEST", "TEST_SIMPLE") if name in data.splits]
    splitter = (split_by or data).train
    if splitter.files != train.files:
        raise ValueError("the two groupings must describe the same TRAIN files")
    splits = (cv_folds(splitter, cv, seed) if cv >= 2 else [validation_split(splitter, val_fraction, seed)])
    for k, s in enumerate(splits):
        label = f"validation fold {k} of {cv}" if cv >= 2 else f"validation split ({val_fraction:.0%})"
        rows.append(leak(label, train, s.val, {train.groups[i] for i in s.train}))
    return rows


def table(rows: list[Leak], reference: str, split_by: str) -> list[str]:
    """The audit for people, one line per row."""
    lines = [f"leak audit: 'a group' is by {reference}; validation made with {split_by}",
             f"{'held out':<24} {'images':>7} {'sharing a group with training':>32}"]
    for r in rows:
        groups = ", ".join(r.leaked_groups[:4]) + (f" (+{len(r.leaked_groups) - 4})" if len(r.leaked_groups) > 4 else "")
        shared = f"{r.leaked_images} ({r.share:.1%})"
        lines.append(f"{r.what:<24} {r.images:>7} {shared:>32}" + (f"  groups: {groups}" if groups else ""))
    return lines
