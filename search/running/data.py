"""What a worker process prepares once and reuses across its trials: the data set, caches,
the validation split and the fitted scaling statistics."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from preprocessing import (DataSet, ImageCache, ImageSet, ImageSpec, PreprocessConfig, ScalingStats, Split, build_cache,
                           cv_folds, fit_scaling, load_dataset, validation_split)
from preprocessing.groups import Grouping
from preprocessing.masks import BatchMasker

log = logging.getLogger("bloodsearch.data")


@dataclass(frozen=True)
class TrialData:
    cache: ImageCache
    split: Split
    stats: ScalingStats
    unet: str | None = None  # digest of the U-Net that masked the images (mask=unet)

    @property
    def num_classes(self) -> int:
        return len(self.cache.image_set.classes)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.cache.image_set.classes


class DataProvider:
    """Memoises per process; the caches on disk are shared between processes."""

    def __init__(self, data_dir: str, cache_dir: str | None, val_fraction: float, seed: int,
                 unets: Callable[[ImageSpec, ImageSet], BatchMasker | None] | None = None, cv: int = 0,
                 grouping: Grouping | None = None) -> None:
        """unets: the masker for a mask=unet spec (a study's: search.running.unet.StudyUnets);
        default: the current U-Net of this data set, trained first if there is none.
        cv: K >= 2 makes K grouped folds (get(config, fold)); else one validation split."""
        self.data_dir, self.cache_dir = data_dir, cache_dir
        self.val_fraction, self.seed, self.cv = val_fraction, seed, cv
        self.unets = unets
        self.grouping = grouping or Grouping()
        self._prepare = lru_cache(maxsize=8)(self._prepare_uncached)
        self._stats = lru_cache(maxsize=40)(self._stats_uncached)
        self._dataset: DataSet | None = None

    def forget(self) -> None:
        """Drop what this process memoised: after files it pointed at vanished."""
        self._prepare.cache_clear()
        self._stats.cache_clear()
        self._dataset = None

    @property
    def dataset(self) -> DataSet:
        if self._dataset is None:
            self._dataset = load_dataset(self.data_dir, record_dir=self.cache_dir, grouping=self.grouping)
        return self._dataset

    def _prepare_uncached(self, spec: ImageSpec) -> tuple[ImageCache, list[Split], str | None]:
        masker = None
        if spec.mask == "unet":
            from search.running.unet import masker_for

            masker = (self.unets or (lambda s, train: masker_for(s, train, self.cache_dir)))(spec, self.dataset.train)
        cache = build_cache(self.dataset.train, spec, self.cache_dir, masker=masker)
        # Splits depend on the seed, the groups and the readable files only, so every trial of a
        # study, whatever its preprocessing, validates on the same groups (fold by fold with --cv).
        splits = (cv_folds(self.dataset.train, self.cv, self.seed, valid=cache.valid) if self.cv >= 2
                  else [validation_split(self.dataset.train, self.val_fraction, self.seed, valid=cache.valid)])
        return cache, splits, masker.model_id if masker else None

    def _stats_uncached(self, spec: ImageSpec, scaling: str, fold: int) -> ScalingStats:
        cache, splits, _ = self._prepare(spec)
        return fit_scaling(cache, splits[fold].train, scaling)  # on the fold's training images only

    def get(self, config: PreprocessConfig, fold: int | None = None) -> TrialData:
        """The data of one validation split: the study's only one, or fold `fold` of its K."""
        # The whole pixel spec keys the memo (as it keys the cache): a field left out here
        # would train one trial on another's images.
        cache, splits, unet = self._prepare(config.image)
        k = fold or 0
        return TrialData(cache, splits[k], self._stats(config.image, config.scaling, k), unet)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, y_pred, labels=list(range(n)))
