"""Data sets, splits, preprocessing and tf.data streaming for image classifiers.

A plain library: it knows nothing of Optuna or MLflow. The usual path is

    data = load_dataset(data_dir)                      # scan folders, fingerprint
    cache = build_cache(data.train, config, cache_dir) # decode + resize once, shared
    split = validation_split(cache.image_set, seed=0)  # grouped by original cell
    stats = fit_scaling(cache, split.train, "channel") # streaming, float64 sums
    ds = make_batches(cache, split.train, batch_size=128, shuffle=True, seed=0)
"""
from .errors import DataError
from .config import ImageSpec, PreprocessConfig, parse_size
from .dataset import DataSet, ImageSet, load_dataset
from .splits import Split, cv_folds, validation_split
from .paths import default_cache_dir
from .cache import ImageCache, build_cache
from .scaling import SCALINGS, ScalingStats, fit_scaling

__all__ = [
    "DataError", "ImageSpec", "PreprocessConfig", "parse_size", "DataSet", "ImageSet", "load_dataset",
    "Split", "cv_folds", "validation_split", "ImageCache", "build_cache", "default_cache_dir",
    "SCALINGS", "ScalingStats", "fit_scaling", "make_batches",
]


def __getattr__(name: str):
    # tf.data needs TensorFlow; import it only when a pipeline is actually built.
    if name == "make_batches":
        from .pipeline import make_batches

        return make_batches
    raise AttributeError(name)
