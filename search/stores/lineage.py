"""What a run saw, MLflow's way (`mlflow.data`): one dataset per side of a split.

A trial's run (and each fold's or seed's run) gets two run inputs: its training images and
its validation images, with context `training` / `validation`, so the MLflow UI shows on
every run which data it learned from and was judged on. Each is named after the data set,
its split and side (`blood-cells/TRAIN training`, `... fold 2 validation`), has as digest
the image set's listing of file names and sizes with the digest of its groups (what a study
is fixed to: the same files and groups on any machine give the same digest; the cache's
fingerprint, which also hashes mtimes, is in the profile) and the data folder as source, and
a profile with images and groups per class (and the split's seed, share and fold).
MLflow keeps one dataset per name and digest in an experiment, so every trial of a study
points at the same two (or 2K) datasets.
"""
from __future__ import annotations

import hashlib
import json
import warnings

from mlflow.data.dataset import Dataset

CONTEXT_TAG = "mlflow.data.context"
SIDES = {"train": "training", "val": "validation"}


class SplitSide(Dataset):
    """The images of one side of a split: nothing but metadata (they stay on disk)."""

    def __init__(self, image_set, report: dict, side: str) -> None:
        fold = report.get("fold")
        name = f"{image_set.root.name}/{image_set.name} " + (f"fold {fold} " if fold is not None else "") + SIDES[side]
        per_class = report[side]
        self._profile = {
            "split": SIDES[side], "images": sum(v["images"] for v in per_class.values()),
            "groups": sum(v["groups"] for v in per_class.values()), "per_class": per_class,
            "listing": image_set.listing, "groups_digest": image_set.groups_digest,
            "fingerprint": image_set.fingerprint, "split_seed": report.get("seed"),
            **{k: report[k] for k in ("fraction", "held_out_share", "fold", "folds") if report.get(k) is not None}}
        super().__init__(_folder(image_set.root), name=name, digest=self._compute_digest())

    def _compute_digest(self) -> str:  # the same files split by other groups are another data set
        return hashlib.sha256(f"{self._profile['listing']}/{self._profile['groups_digest']}".encode()).hexdigest()[:16]

    @property
    def profile(self) -> dict:
        return self._profile

    @property
    def schema(self):
        return None

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


def _folder(root):
    """MLflow's source for a local folder (its LocalArtifactDatasetSource, made at run time)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():  # it is registered twice under one name, and says so
        warnings.simplefilter("ignore")
        return resolve_dataset_source(str(root))


def split_inputs(image_set, report: dict) -> list:
    """The DatasetInputs (training, validation) of one split, for MlflowClient.log_inputs."""
    from mlflow.entities import DatasetInput, InputTag

    return [DatasetInput(SplitSide(image_set, report, side)._to_mlflow_entity(), tags=[InputTag(CONTEXT_TAG, context)])
            for side, context in SIDES.items()]
