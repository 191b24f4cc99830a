"""The U-Nets a served model masks with: a stored U-Net found by the digest a trial recorded
(here, or fetched from the MLflow run that logged it), and masking images with it. Training
U-Nets is search.running.unet's; what serves a trial masks exactly as what trained it did,
with this code."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from preprocessing import DataError
from preprocessing.locking import DONE


class UnetError(DataError):
    """A U-Net that cannot be used: failed to learn, or missing where a trial needs it."""


@dataclass
class UnetReport:
    model_dir: Path
    meta: dict
    history: dict = field(default_factory=dict, repr=False)

    @property
    def digest(self) -> str:
        return self.meta["digest"]

    @property
    def dice(self) -> float:
        return self.meta["val_dice"]

    @property
    def iou(self) -> float:
        return self.meta["val_iou"]


def find_unet(cache_dir: str | Path, digest: str) -> UnetReport | None:
    """The stored U-Net with this digest, wherever it was trained for; None if absent."""
    for meta in (Path(cache_dir) / "unet").glob(f"*/{digest}/{DONE}"):
        return UnetReport(meta.parent, json.loads(meta.read_text()))
    return None


def apply_unet(model, images: np.ndarray, grays: np.ndarray) -> np.ndarray:
    """Zero the pixels of `images` that the U-Net calls background in `grays` (same size)."""
    keep = model.predict(grays, verbose=0) > 0.5
    return (images * keep).astype(np.uint8)


def unet_by_digest(digest: str, cache_dir: str | Path | None, tracker=None, run_id: str | None = None) -> UnetReport:
    """Exactly the U-Net with this digest: stored here, or fetched from the MLflow run that
    logged it (found by its tag when run_id is not given); otherwise an error naming it."""
    import tempfile

    from preprocessing import default_cache_dir

    root = Path(cache_dir or default_cache_dir())
    found = find_unet(root, digest)
    if found is not None:
        return found
    run_id = run_id or (tracker.unet_run(digest) if tracker is not None else None)
    if run_id is None:
        raise UnetError(f"U-Net {digest} is not stored in {root / 'unet'} and no MLflow run holds it")
    final = root / "unet" / "fetched" / digest
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent) as tmp:
        try:
            folder = tracker.download(run_id, "unet", tmp)
        except Exception as exc:
            raise UnetError(f"U-Net {digest} is not stored in {root / 'unet'} and could not be fetched from "
                            f"MLflow run {run_id} ({type(exc).__name__})") from None
        if not final.exists():
            os.rename(folder, final)
    return UnetReport(final, json.loads((final / DONE).read_text()))
