"""What a worker process prepares once and reuses across its trials: the data set, caches,
the validation split and the fitted scaling statistics."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from preprocessing import (DataSet, ImageCache, PreprocessConfig, ScalingStats, Split, build_cache,
                           default_cache_dir, fit_scaling, load_dataset, validation_split)
from preprocessing.unet import ensure_unet

log = logging.getLogger("bloodsearch.data")


@dataclass(frozen=True)
class TrialData:
    cache: ImageCache
    split: Split
    stats: ScalingStats

    @property
    def num_classes(self) -> int:
        return len(self.cache.image_set.classes)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.cache.image_set.classes


class DataProvider:
    """Memoises per process; the caches on disk are shared between processes."""

    def __init__(self, data_dir: str, cache_dir: str | None, val_fraction: float, seed: int,
                 on_unet_trained: Callable | None = None) -> None:
        self.data_dir, self.cache_dir = data_dir, cache_dir
        self.val_fraction, self.seed = val_fraction, seed
        self.on_unet_trained = on_unet_trained
        self._prepare = lru_cache(maxsize=8)(self._prepare_uncached)
        self._stats = lru_cache(maxsize=16)(self._stats_uncached)
        self._dataset: DataSet | None = None

    @property
    def dataset(self) -> DataSet:
        if self._dataset is None:
            self._dataset = load_dataset(self.data_dir, record_dir=self.cache_dir)
        return self._dataset

    def _prepare_uncached(self, size, color, mask) -> tuple[ImageCache, Split]:
        config = PreprocessConfig(size=size, color=color, mask=mask)
        if mask == "unet":
            # Trained here, under its lock, only if nobody has yet (see preprocessing.unet).
            ensure_unet(self.dataset.train, config.size, self.cache_dir or default_cache_dir(),
                        on_trained=self.on_unet_trained)
        cache = build_cache(self.dataset.train, config, self.cache_dir)
        # The split depends on the seed and the readable files only, so every trial of a
        # study, whatever its preprocessing, validates on the same cells.
        split = validation_split(self.dataset.train, self.val_fraction, self.seed, valid=cache.valid)
        return cache, split

    def _stats_uncached(self, size, color, mask, scaling) -> ScalingStats:
        cache, split = self._prepare(size, color, mask)
        return fit_scaling(cache, split.train, scaling)

    def get(self, config: PreprocessConfig) -> TrialData:
        key = (config.size, config.color, config.mask)
        cache, split = self._prepare(*key)
        return TrialData(cache, split, self._stats(*key, config.scaling))


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, y_pred, labels=list(range(n)))
