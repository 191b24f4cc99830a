"""A model folder back as the predictor it holds: an exported trial (model.keras +
preprocess.json [+ unet.keras]) or an exported ensemble (member folders + ensemble.json)."""
from __future__ import annotations

from pathlib import Path

from search.serving.ensemble import MANIFEST as ENSEMBLE_MANIFEST, EnsemblePredictor
from search.serving.predictor import Predictor


def load_folder(folder: str | Path) -> Predictor | EnsemblePredictor:
    """The Predictor of an exported trial, or the EnsemblePredictor of an exported ensemble."""
    folder = Path(folder)
    if (folder / ENSEMBLE_MANIFEST).is_file():
        return EnsemblePredictor.from_folder(folder)
    return Predictor.from_folder(folder)
