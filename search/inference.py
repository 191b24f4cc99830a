"""A trained model with its own preprocessing, from a trial's MLflow run or an exported
folder: predict classes for image files, or save it as a self-contained folder."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

import numpy as np

from preprocessing.dataset import IMAGE_SUFFIXES
from preprocessing.images import UnreadableImage, load_image
from models import load_model
from studies import TrialConfig

from .errors import SearchError

MANIFEST = "preprocess.json"


@dataclass
class Predictor:
    model: object  # keras.Model; scaling is its first layer
    config: TrialConfig
    classes: list[str]
    unet: object | None = None  # keras.Model, when config.preprocess.mask == "unet"
    info: dict | None = None

    @classmethod
    def from_folder(cls, folder: str | Path) -> "Predictor":
        folder = Path(folder)
        manifest = folder / MANIFEST
        if not manifest.is_file() or not (folder / "model.keras").is_file():
            raise SearchError(f"--model {folder}: not an exported model (needs model.keras and {MANIFEST})")
        meta = json.loads(manifest.read_text())
        config = TrialConfig.from_dict(meta["config"])
        unet = load_model(folder / "unet.keras") if (folder / "unet.keras").exists() else None
        return cls(load_model(folder / "model.keras"), config, meta["classes"], unet, meta.get("info"))

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save(folder / "model.keras")
        if self.unet is not None:
            self.unet.save(folder / "unet.keras")
        (folder / MANIFEST).write_text(json.dumps({"config": self.config.to_dict(), "classes": self.classes,
                                                   "info": self.info or {}}, indent=1))
        return folder

    def _decode(self, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        """The model's input for one file, plus its gray version when a U-Net masks it."""
        pre = self.config.preprocess
        if pre.mask != "unet":
            return load_image(path, pre), None
        image = load_image(path, replace(pre, mask="none"))
        gray = image if pre.color == "gray" else load_image(path, replace(pre, color="gray", mask="none"))
        return image, gray

    def model_input(self, path: Path) -> np.ndarray:
        """One file as the model takes it (masked, when the trial masked)."""
        image, gray = self._decode(path)
        if self.unet is None:
            return image
        from preprocessing.unet import apply_unet

        return apply_unet(self.unet, image[None], gray[None])[0]

    def predict(self, paths: list[Path], batch: int = 64) -> list[dict]:
        """One row per file, in order: class and probabilities, or the error that kept it out
        (a bad file is reported, never fatal). Streams `batch` files at a time."""
        rows: list[dict] = []
        for start in range(0, len(paths), batch):
            decoded, chunk_rows = [], []
            for path in paths[start:start + batch]:
                try:
                    decoded.append(self._decode(path))
                    chunk_rows.append({"file": str(path)})
                except UnreadableImage as exc:
                    chunk_rows.append({"file": str(path), "error": str(exc).split(": ", 1)[-1]})
            if decoded:
                images = np.stack([d[0] for d in decoded])
                if self.unet is not None:
                    from preprocessing.unet import apply_unet

                    images = apply_unet(self.unet, images, np.stack([d[1] for d in decoded]))
                probs = iter(np.asarray(self.model.predict(images, verbose=0)))
                for row in chunk_rows:
                    if "error" not in row:
                        p = next(probs)
                        row["class"] = self.classes[int(p.argmax())]
                        row["probabilities"] = {c: float(v) for c, v in zip(self.classes, p)}
            rows += chunk_rows
        return rows


def expand(paths: Iterable[str]) -> list[Path]:
    """Files as given; folders searched recursively for images (hidden files skipped)."""
    out = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise SearchError(f"{raw}: no such file or folder")
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                out += [Path(root) / f for f in sorted(files)
                        if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
        else:
            out.append(path)
    return out


def from_trial(handle, trial, tracker, cache_dir: str | None) -> Predictor:
    """The trial's logged model, its config and classes; its U-Net from the cache if it used one."""
    import tempfile

    run_id = trial.user_attrs.get("run_id")
    if not run_id:
        raise SearchError(f"trial {trial.number} has no MLflow run")
    with tempfile.TemporaryDirectory(prefix="bloodsearch-model-") as tmp:
        try:
            model_path = tracker.download(run_id, "model/model.keras", tmp)
            meta = json.loads(tracker.download(run_id, "trial_config.json", tmp).read_text())
        except Exception as exc:
            raise SearchError(f"trial {trial.number}: its model is not in MLflow run {run_id} "
                              f"(launched with --log-models best or none?): {type(exc).__name__}") from None
        model = load_model(model_path)
    config = TrialConfig.from_dict(meta["config"])
    unet = None
    if config.preprocess.mask == "unet":
        from preprocessing import default_cache_dir, load_dataset
        from preprocessing.unet import unet_dir

        data = load_dataset(handle.settings.data_dir, record_dir=cache_dir)
        folder = unet_dir(Path(cache_dir or default_cache_dir()), data.train, config.preprocess.size)
        if not (folder / "model.keras").exists():
            raise SearchError(f"trial {trial.number} used mask=unet, but no U-Net is stored in {folder}")
        unet = load_model(folder / "model.keras")
    info = {"study": handle.study.study_name, "trial": trial.number, "val_accuracy": trial.value,
            "run_id": run_id, "seed": meta.get("seed")}
    return Predictor(model, config, list(meta["classes"]), unet, info)

