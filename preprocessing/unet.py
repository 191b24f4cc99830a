"""U-Net masks: the study's U-Net trained on grayscale images against their Otsu masks,
stored once per (data set, size) next to the image cache, and used to mask images.

Choice for studies that sample mask=unet before a U-Net exists: the first worker that needs
it trains it (default settings below) while holding the model's lock, and every other worker
waits for it, so it is never trained twice, even concurrently. `search unet train` trains it
ahead of time with settings of your choosing and reports its Dice and IoU.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .cache import build_cache
from .config import PreprocessConfig
from .dataset import ImageSet
from .locking import DONE, build_once
from .masks import otsu_foreground
from .splits import validation_split

log = logging.getLogger("bloodsearch.unet")
DEFAULTS = {"epochs": 10, "patience": 3, "batch_size": 32, "seed": 0, "val_fraction": 0.2}


@dataclass
class UnetReport:
    model_dir: Path
    meta: dict
    history: dict = field(default_factory=dict, repr=False)

    @property
    def dice(self) -> float:
        return self.meta["val_dice"]

    @property
    def iou(self) -> float:
        return self.meta["val_iou"]


def unet_dir(cache_dir: Path, image_set: ImageSet, size: tuple[int, int]) -> Path:
    key = hashlib.sha256(json.dumps([image_set.fingerprint, image_set.name, list(size)]).encode()).hexdigest()[:20]
    return Path(cache_dir) / "unet" / key


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


def _train_into(folder: Path, image_set: ImageSet, size: tuple[int, int], root: Path, epochs: int, patience: int,
                batch_size: int, seed: int, val_fraction: float, callbacks) -> dict:
    import keras

    from models.unet import build_unet, padding_for

    from .pipeline import make_batches

    gray = build_cache(image_set, PreprocessConfig(size=size, color="gray", mask="none"), root)
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
    meta = {"model_id": uuid.uuid4().hex, "size": list(size), "fingerprint": image_set.fingerprint,
            "split": image_set.name, "val_dice": dice, "val_iou": iou, "epochs_run": len(history["loss"]),
            "train_seconds": round(seconds, 2), "epochs": epochs, "patience": patience, "batch_size": batch_size,
            "seed": seed, "val_fraction": val_fraction, "padding": {"bottom": pad[0], "right": pad[1]},
            "history": {k: [float(v) for v in vs] for k, vs in history.items()}, "split_report": split.report}
    (folder / DONE).write_text(json.dumps(meta, indent=1))
    return meta


def ensure_unet(image_set: ImageSet, size: tuple[int, int], cache_dir: str | Path, retrain: bool = False,
                callbacks=(), on_trained: Callable[[UnetReport], None] | None = None, **settings) -> UnetReport:
    """The stored U-Net for this data set and size, trained first (under its lock) if absent."""
    root = Path(cache_dir)
    final = unet_dir(root, image_set, size)
    options = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    if retrain and final.exists():
        shutil.rmtree(final)
    trained: list[dict] = []

    def build(tmp: Path) -> None:
        h, w = size
        log.warning("training the U-Net for %s at %dx%d (%s)", image_set.where, h, w,
                    "sides padded to a multiple of 8" if any((h % 8, w % 8)) else "no padding")
        trained.append(_train_into(tmp, image_set, size, root, callbacks=callbacks, **options))

    build_once(final, build)
    report = UnetReport(final, json.loads((final / DONE).read_text()))
    if trained and on_trained:
        on_trained(report)
    return report


def apply_unet(model, images: np.ndarray, grays: np.ndarray) -> np.ndarray:
    """Zero the pixels of `images` that the U-Net calls background in `grays` (same size)."""
    keep = model.predict(grays, verbose=0) > 0.5
    return (images * keep).astype(np.uint8)


def unet_masked_writer(image_set: ImageSet, config: PreprocessConfig, root: Path, unet_from: ImageSet):
    """(model id for the cache key, writer) for a mask=unet cache entry of image_set, masked by
    the U-Net of unet_from (trained on it first if absent)."""
    report = ensure_unet(unet_from, config.size, root)

    def write(f) -> tuple[np.ndarray, list[dict]]:
        from models import load_model

        base = build_cache(image_set, replace(config, mask="none"), root)
        gray = base if config.color == "gray" else build_cache(image_set, replace(config, color="gray", mask="none"), root)
        model = load_model(report.model_dir / "model.keras")
        indices = np.arange(len(image_set))
        for images, grays in zip(base.chunks(indices, 128), gray.chunks(indices, 128)):
            f.write(apply_unet(model, images, grays).tobytes())
        return base.valid.copy(), list(base.unreadable)

    return report.meta["model_id"], write
