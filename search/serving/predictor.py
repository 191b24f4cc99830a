"""A trained model with its own preprocessing, from a trial's MLflow run or an exported
folder: predict classes for image files, or save it as a self-contained folder."""
from __future__ import annotations

import io
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

from search.errors import SearchError
from search.serving.destination import Destination
from search.record import TrialRecord
from search.serving.unets import UnetError, apply_unet, unet_by_digest

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
        """An exported trial (search.serving.folders.load_folder also reads an exported ensemble)."""
        folder = Path(folder)
        manifest = folder / MANIFEST
        if not manifest.is_file() or not (folder / "model.keras").is_file():
            raise SearchError(f"--model {folder}: not an exported model (needs model.keras and {MANIFEST})")
        meta = json.loads(manifest.read_text())
        config = TrialConfig.from_dict(meta["config"])
        unet = None
        if config.preprocess.mask == "unet":
            # Without its U-Net the model would be served unmasked images: refuse, never guess.
            if not (folder / "unet.keras").is_file():
                raise SearchError(f"--model {folder}: the model masks with a U-Net (mask=unet) but unet.keras "
                                  f"is missing from the folder; export it again")
            unet = load_model(folder / "unet.keras")
        return cls(load_model(folder / "model.keras"), config, meta["classes"], unet, meta.get("info"))

    def save(self, folder: "str | Path | Destination") -> Path:
        names = ["model.keras", MANIFEST] + (["unet.keras"] if self.unet is not None else [])
        folder = Destination.of(folder).prepare(names)
        self.model.save(folder / "model.keras")
        if self.unet is not None:
            self.unet.save(folder / "unet.keras")
        (folder / MANIFEST).write_text(json.dumps({"config": self.config.to_dict(), "classes": self.classes,
                                                   "info": self.info or {}}, indent=1))
        return folder

    def _decode(self, path: Path | bytes) -> tuple[np.ndarray, np.ndarray | None]:
        """The model's input for one file (or one encoded image's bytes), plus its gray
        version when a U-Net masks it."""
        pre = self.config.preprocess
        source = (lambda: io.BytesIO(path)) if isinstance(path, (bytes, bytearray)) else (lambda: path)
        if pre.mask != "unet":
            return load_image(source(), pre), None
        image = load_image(source(), replace(pre, mask="none"))
        gray = image if pre.color == "gray" else load_image(source(), replace(pre, color="gray", mask="none"))
        return image, gray

    def model_input(self, path: Path) -> np.ndarray:
        """One file as the model takes it (masked, when the trial masked)."""
        image, gray = self._decode(path)
        if self.unet is None:
            return image
        return apply_unet(self.unet, image[None], gray[None])[0]

    def predict(self, paths: list[Path | bytes], batch: int = 64) -> list[dict]:
        """One row per file (or encoded image as bytes: the MLflow model's input), in order:
        class and probabilities, or the error that kept it out (a bad file is reported, never
        fatal). Streams `batch` files at a time."""
        rows: list[dict] = []
        for start in range(0, len(paths), batch):
            decoded, chunk_rows = [], []
            for path in paths[start:start + batch]:
                encoded = isinstance(path, (bytes, bytearray))
                name = f"<{len(path)} bytes>" if encoded else str(path)
                if not encoded and not path.exists():
                    chunk_rows.append({"file": name, "error": "no such file or folder"})
                    continue
                try:
                    decoded.append(self._decode(path))
                    chunk_rows.append({"file": name})
                except UnreadableImage as exc:
                    reason = str(exc).split(": ", 1)[-1]
                    chunk_rows.append({"file": name, "error": "not a readable image" if encoded else reason})
            if decoded:
                images = np.stack([d[0] for d in decoded])
                if self.unet is not None:
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
    """Files as given; folders searched recursively for images (hidden files skipped). A path
    that does not exist stays in the list: predict reports it in its row, like an unreadable
    file, and goes on with the others."""
    out = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                out += [Path(root) / f for f in sorted(files)
                        if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
        else:
            out.append(path)
    return out


def member_models(trial: TrialRecord, tracker) -> tuple[list, str]:
    """The models that are the trial's bag, from their nested runs: its K fold models (--cv),
    less those that did not learn, or its K seed models (--repeats), all of them
    (search.repeats.bag_members); ([], "") for a trial of one model."""
    import tempfile

    from search.repeats import bag_members

    if len(trial.fits) < 2:
        return [], ""
    kind = "fold" if trial.cv else "seed"
    runs = tracker.child_runs(trial.run_id, "bloodsearch.fold" if trial.cv else "bloodsearch.repeat")
    if len(runs) != len(trial.fits):
        raise SearchError(f"trial {trial.number}: {len(trial.fits)} {kind} models recorded, {len(runs)} {kind} runs "
                          f"found under MLflow run {trial.run_id}")
    models = []
    with tempfile.TemporaryDirectory(prefix="bloodsearch-members-") as tmp:
        for k in bag_members(trial.fits):
            run_id = runs[k]
            try:
                models.append(load_model(tracker.download(run_id, "model/model.keras", Path(tmp) / str(k))))
            except Exception:
                raise SearchError(f"trial {trial.number}: {kind} {k}'s model is not in MLflow run {run_id} (launched "
                                  f"with --log-models none, or not the best trial with --log-models best)") from None
    return models, kind


def check_trial_tta(tta: str, handle, trial: TrialRecord) -> None:
    """Refuse a TTA the trial's size cannot take before its model is downloaded and loaded."""
    from search.tta import check_size

    if trial.config is not None:  # a trial recorded without it: models.combine still refuses, later
        check_size(tta, trial.config.preprocess.size, f"the size of trial {trial.number} of study "
                   f"{handle.study.study_name}")


def from_trial(handle, trial: TrialRecord, tracker, cache_dir: str | None, tta: str = "none",
               whole: bool = True) -> Predictor:
    """The trial's model with its config, classes and U-Net. A --cv trial's model is the bag
    of its fold models (mean probabilities) unless whole=False (then fold 0, as for feature
    maps); a --repeats trial serves its first seed's. tta wraps it in test-time augmentation."""
    import tempfile

    check_trial_tta(tta, handle, trial)
    run_id = trial.run_id
    if not run_id:
        raise SearchError(f"trial {trial.number} has no MLflow run")
    # The configuration is the trial record's; the run's trial_config.json is read only for
    # the classes of a record without a split report.
    classes = list((trial.split or {}).get("train") or {})
    with tempfile.TemporaryDirectory(prefix="bloodsearch-model-") as tmp:
        try:
            model_path = tracker.download(run_id, "model/model.keras", tmp)
            if not classes or trial.config is None:
                meta = json.loads(tracker.download(run_id, "trial_config.json", tmp).read_text())
                classes = list(meta["classes"])
        except Exception as exc:
            if trial.warm_start:
                why = (f"copied from study {trial.warm_start['study']} (warm start), its run is in that study's "
                       f"MLflow store: pass its --tracking-uri")
            elif not tracker.has_run(run_id):
                why = f"no such run in the tracking store {tracker.uri}: pass the study's --tracking-uri, or was it lost?"
            else:
                why = "launched with --log-models best or none?"
            raise SearchError(f"trial {trial.number}: its model is not in MLflow run {run_id} ({why}): "
                              f"{type(exc).__name__}") from None
        model = load_model(model_path)
    what = "the trial's model" if len(trial.fits) < 2 else "its first seed's model" if not trial.cv else "fold 0's model"
    if whole and trial.cv:
        from models.combine import averaged

        from search.repeats import left_out

        members, _ = member_models(trial, tracker)
        model, what = averaged(members), f"the bag of its {len(members)} fold models{left_out(trial.fits, 'fold')}"
    if tta != "none":
        from models.combine import with_tta

        model, what = with_tta(model, tta), f"{what}, TTA {tta}"
    config = trial.config or TrialConfig.from_dict(meta["config"])
    unet = None
    if config.preprocess.mask == "unet":
        if not trial.unet:
            raise SearchError(f"trial {trial.number} used mask=unet but recorded no U-Net digest (made before "
                              f"U-Nets were recorded); re-run it")
        try:
            unet = load_model(unet_by_digest(trial.unet, cache_dir, tracker).model_dir / "model.keras")
        except UnetError as exc:
            raise SearchError(f"trial {trial.number}: {exc}") from None
    info = {"study": handle.study.study_name, "trial": trial.number, "value": trial.value,
            "metric": handle.settings.metric, "run_id": run_id,
            "seed": trial.fits[0].seed if trial.fits else trial.seed, "model": what, "tta": tta}
    return Predictor(model, config, classes, unet, info)
