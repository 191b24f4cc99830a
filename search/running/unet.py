"""U-Net masks: the study's U-Net trained on grayscale images against their Otsu masks,
stored next to the image cache, and used to mask images.

Model training, so it lives here and not in preprocessing/: the image cache only takes a
`masker` (preprocessing.masks.BatchMasker), which UnetMasker is.

A U-Net is named by the digest of its weights. Stored ones are never overwritten:
`search unet train --retrain` adds another and makes it the one new studies use; a trial
records the digest of the U-Net that masked its training images, and everything that serves
the trial masks with exactly that one. A U-Net whose masks disagree with the Otsu masks it
learned from (validation Dice below MIN_DICE) is refused, never used silently.

The first worker that needs a U-Net (for a data set, size and fit) trains it with the
defaults below while holding its lock; every other worker waits for it, so it is never
trained twice, even concurrently. `search unet train` trains it ahead of time with settings
of your choosing and reports its Dice and IoU.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from preprocessing import ImageSet, ImageSpec, build_cache, validation_split
from preprocessing.digests import content_digest
from preprocessing.locking import DONE, exclusive
from preprocessing.masks import otsu_foreground

from search.serving.unets import UnetError, UnetReport, apply_unet, unet_by_digest

log = logging.getLogger("bloodsearch.unet")
DEFAULTS = {"epochs": 10, "patience": 3, "batch_size": 32, "seed": 0, "val_fraction": 0.2}
# Validation Dice against the Otsu masks it was trained on. Below it the U-Net's masks are
# mostly wrong (one trained on 30x40 images scored 0.0 and blacked out every image), and
# trials masked by it would be recorded as ordinary results.
MIN_DICE = 0.5
CURRENT = "current"  # in a U-Net home folder: the digest of the one new studies use
# In a U-Net home folder: why the last training with these options was refused. Every
# mask=unet trial asks for the same U-Net; training it again per trial to be refused again
# cost minutes each.
REFUSED = "refused.json"


def weights_digest(model) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()[:16]


def unet_home(cache_dir: str | Path, image_set: ImageSet, size: tuple[int, int], fit: str = "stretch") -> Path:
    """Where the U-Nets of one data set, size and fit live, one folder per digest. Keyed on
    the files' content, as the image cache is: a U-Net trained on pixels since rewritten in
    place (names, sizes and mtimes kept) is not reused."""
    content = content_digest(image_set, cache_dir)
    key = hashlib.sha256(json.dumps([content, image_set.name, list(size), fit]).encode()).hexdigest()[:20]
    return Path(cache_dir) / "unet" / key


def _current(home: Path) -> UnetReport | None:
    try:
        digest = (home / CURRENT).read_text().strip()
    except OSError:
        return None
    meta = home / digest / DONE
    return UnetReport(meta.parent, json.loads(meta.read_text())) if meta.exists() else None


def otsu_targets(gray: np.ndarray) -> np.ndarray:
    """(n, H, W, 1) uint8 -> (n, H, W, 1) float32 Otsu foreground, the U-Net's labels."""
    out = np.empty(gray.shape, dtype=np.float32)
    for i in range(len(gray)):
        out[i, :, :, 0] = otsu_foreground(np.ascontiguousarray(gray[i, :, :, 0]))
    return out


def dice_iou(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Over all pixels of boolean masks; 1.0 when both are empty."""
    inter = float(np.logical_and(predicted, truth).sum())
    total = float(predicted.sum() + truth.sum())
    union = total - inter
    return (2 * inter / total if total else 1.0), (inter / union if union else 1.0)


def _train_into(folder: Path, image_set: ImageSet, size: tuple[int, int], fit: str, root: Path, epochs: int,
                patience: int, batch_size: int, seed: int, val_fraction: float, callbacks) -> dict:
    import keras

    from models.unet import build_unet, padding_for

    from preprocessing.pipeline import make_batches

    gray = build_cache(image_set, ImageSpec(size=size, color="gray", mask="none", fit=fit), root)
    split = validation_split(image_set, val_fraction, seed, valid=gray.valid)
    keras.utils.set_random_seed(seed)
    model = build_unet(*size)
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    started = time.perf_counter()
    history = model.fit(
        make_batches(gray, split.train, batch_size, shuffle=True, seed=seed, targets=otsu_targets),
        validation_data=make_batches(gray, split.val, batch_size, targets=otsu_targets),
        epochs=epochs, verbose=0, shuffle=False,
        callbacks=[keras.callbacks.EarlyStopping("val_loss", patience=patience, restore_best_weights=True),
                   *callbacks]).history
    seconds = time.perf_counter() - started
    predicted = np.concatenate([model.predict(chunk, verbose=0) > 0.5 for chunk in gray.chunks(split.val)])
    truth = np.concatenate([otsu_targets(chunk) > 0.5 for chunk in gray.chunks(split.val)])
    dice, iou = dice_iou(predicted, truth)
    model.save(folder / "model.keras")
    pad = padding_for(*size)
    digest = weights_digest(model)
    meta = {"digest": digest, "model_id": digest, "size": list(size), "fit": fit, "fingerprint": image_set.fingerprint,
            "split": image_set.name, "val_dice": dice, "val_iou": iou, "epochs_run": len(history["loss"]),
            "train_seconds": round(seconds, 2), "epochs": epochs, "patience": patience, "batch_size": batch_size,
            "seed": seed, "val_fraction": val_fraction, "padding": {"bottom": pad[0], "right": pad[1]},
            "history": {k: [float(v) for v in vs] for k, vs in history.items()}, "split_report": split.report}
    (folder / DONE).write_text(json.dumps(meta, indent=1))
    return meta


def _refused_before(home: Path, options: dict, retrain: bool) -> None:
    """Refuse at once what was refused for the same data, size, fit and training options."""
    path = home / REFUSED
    if retrain or not path.exists():
        return
    refused = json.loads(path.read_text())
    if refused["options"] == json.loads(json.dumps(options)):
        raise UnetError(f"{refused['reason']} (refused earlier with the same settings: {path}; "
                        f"search unet train --retrain tries again)")


def ensure_unet(image_set: ImageSet, size: tuple[int, int], cache_dir: str | Path, fit: str = "stretch",
                retrain: bool = False, callbacks=(), on_trained: Callable[[UnetReport], None] | None = None,
                **settings) -> UnetReport:
    """The current U-Net for this data set, size and fit, trained first (under its lock) if
    there is none, or if retrain: then a new one is added beside the old, which stays."""
    root = Path(cache_dir)
    home = unet_home(root, image_set, size, fit)
    options = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    if not retrain and (found := _current(home)):
        return found
    _refused_before(home, options, retrain)
    home.mkdir(parents=True, exist_ok=True)
    with exclusive(home.parent / f"{home.name}.lock"):
        if not retrain and (found := _current(home)):  # trained by whoever held the lock before us
            return found
        _refused_before(home, options, retrain)
        h, w = size
        log.warning("training the U-Net for %s at %dx%d (%s)", image_set.where, h, w,
                    "sides padded to a multiple of 8" if any((h % 8, w % 8)) else "no padding")
        tmp = home / f"tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            meta = _train_into(tmp, image_set, size, fit, root, callbacks=callbacks, **options)
            if meta["val_dice"] < MIN_DICE:
                reason = (f"the U-Net trained at {h}x{w} reached validation Dice {meta['val_dice']:.3f} against its "
                          f"Otsu masks, below {MIN_DICE}: its masks would be mostly wrong, so it is not used; train "
                          f"it at a larger size or for longer (search unet train)")
                (home / REFUSED).write_text(json.dumps({"options": options, "reason": reason}, indent=1))
                raise UnetError(reason)
            (home / REFUSED).unlink(missing_ok=True)
            final = home / meta["digest"]
            if final.exists():  # the same weights again (a deterministic retrain): keep the first
                shutil.rmtree(tmp)
            else:
                os.rename(tmp, final)
            (home / f"{CURRENT}.tmp").write_text(meta["digest"])
            os.replace(home / f"{CURRENT}.tmp", home / CURRENT)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    report = UnetReport(final, json.loads((final / DONE).read_text()))
    if on_trained:
        on_trained(report)
    return report


class UnetMasker:
    """A stored U-Net as the image cache's masker: its digest keys the masked cache entries."""

    def __init__(self, report: UnetReport) -> None:
        self.model_id = self.digest = report.digest
        self.path = report.model_dir / "model.keras"
        self._model = None

    def __call__(self, images: np.ndarray, grays: np.ndarray) -> np.ndarray:
        if self._model is None:
            from models import load_model

            self._model = load_model(self.path)
        return apply_unet(self._model, images, grays)


def masker_for(spec: ImageSpec, train: ImageSet, cache_dir: str | Path | None, digest: str | None = None,
               tracker=None, on_trained: Callable[[UnetReport], None] | None = None) -> UnetMasker | None:
    """The masker a cache entry of `spec` needs, None without mask=unet. With `digest`: exactly
    that U-Net (a trial's), or an error naming it; without: the current one of TRAIN (trained
    first if absent), also when TEST is masked, so TEST never trains one of its own."""
    from preprocessing import default_cache_dir

    if spec.mask != "unet":
        return None
    root = cache_dir or default_cache_dir()
    if digest is not None:
        return UnetMasker(unet_by_digest(digest, root, tracker))
    return UnetMasker(ensure_unet(train, spec.size, root, fit=spec.fit, on_trained=on_trained))


class StudyUnets:
    """The U-Net each (size, fit) of one study masks with, the same for all its workers: the
    first worker that needs one takes the current U-Net on its machine (training it if there
    is none), logs it to MLflow's `unet` experiment and records digest and run with the study;
    every later worker, on any machine, masks with that one, fetched from MLflow if it lacks it.
    (Two machines that need one at the same moment can each record theirs; trials still record
    and serve the one they used.)"""

    def __init__(self, study, tracker, cache_dir: str | Path | None, data_dir: str) -> None:
        from preprocessing import default_cache_dir

        self.study, self.tracker, self.data_dir = study, tracker, data_dir
        self.root = Path(cache_dir or default_cache_dir())

    def __call__(self, spec: ImageSpec, train: ImageSet) -> UnetMasker:
        key = f"bloodsearch.unet.{spec.size_text}.{spec.fit}"
        known = self.study.user_attrs.get(key)
        if known:
            return UnetMasker(unet_by_digest(known["digest"], self.root, self.tracker, known["run_id"]))
        report = ensure_unet(train, spec.size, self.root, fit=spec.fit)
        run_id = self.tracker.unet_run(report.digest) or self.tracker.log_unet(report, self.data_dir)
        self.study.set_user_attr(key, {"digest": report.digest, "run_id": run_id})
        return UnetMasker(report)
