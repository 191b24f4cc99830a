"""Out-of-fold predictions of a --cv trial: the class probabilities of every readable TRAIN
image from the one fold model that did not train on it, with file name, label and cell.
Saved with the trial (MLflow artifact `oof/oof.npz`) and read back in one call: ensembles are
chosen on them (search ensemble), never on TEST."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ARTIFACT = "oof/oof.npz"


@dataclass(frozen=True)
class OutOfFoldPredictions:
    indices: np.ndarray  # into the TRAIN split's files, ascending
    files: np.ndarray
    labels: np.ndarray
    groups: np.ndarray  # original cell of each image
    folds: np.ndarray  # the fold that validated each image
    probs: np.ndarray  # (images, classes)
    classes: tuple[str, ...]

    @classmethod
    def load(cls, path: str | Path) -> "OutOfFoldPredictions":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["indices"], z["files"], z["labels"], z["groups"], z["folds"], z["probs"],
                       tuple(z["classes"].tolist()))


class OutOfFold:
    """Collects a trial's fold predictions as its folds finish."""

    def __init__(self) -> None:
        self.parts: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.image_set = None

    def add(self, data, fold: int, probs: np.ndarray) -> None:
        self.image_set = data.cache.image_set
        self.parts.append((fold, np.asarray(data.split.val), np.asarray(probs, dtype=np.float32)))

    def predictions(self) -> OutOfFoldPredictions:
        image_set = self.image_set
        indices = np.concatenate([idx for _, idx, _ in self.parts])
        if len(set(indices.tolist())) != len(indices):
            raise AssertionError("an image was validated by two folds")
        order = np.argsort(indices)
        folds = np.concatenate([np.full(len(idx), fold) for fold, idx, _ in self.parts])[order]
        probs = np.concatenate([p for _, _, p in self.parts])[order]
        indices = indices[order]
        return OutOfFoldPredictions(indices, np.asarray([image_set.files[i] for i in indices]),
                                    image_set.labels[indices], np.asarray([image_set.groups[i] for i in indices]),
                                    folds, probs, tuple(image_set.classes))

    def save(self, folder: Path) -> Path:
        """folder/oof.npz, for run.log_artifacts(folder) -> artifact oof/oof.npz."""
        p = self.predictions()
        out = folder / "oof"
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / "oof.npz", indices=p.indices, files=p.files, labels=p.labels, groups=p.groups,
                            folds=p.folds, probs=p.probs, classes=np.asarray(p.classes))
        return folder
