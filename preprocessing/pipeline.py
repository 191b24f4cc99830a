"""tf.data batches streamed from an ImageCache: uint8 images, int32 labels.

Only indices are shuffled (a buffer of N integers); images are read per batch with
pread, so memory holds a few prefetched batches whatever the data set or resolution.
Scaling happens inside the model, so batches stay uint8 (4x less to move than float32).
"""
from __future__ import annotations

import ctypes
import ctypes.util
from typing import Callable

import numpy as np
import tensorflow as tf

from .cache import ImageCache

_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def _release_batch_buffers_to_the_os() -> None:
    """Keep a process's memory flat across epochs.

    glibc raises its mmap threshold after the first large buffer is freed, so every later
    batch (7 MB at 120x160, 29 MB at 240x320) comes from the heap and freed batches stay
    resident: measured here, +300 MB after 4 epochs. A fixed threshold stops that.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        ctypes.CDLL(name).mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


_release_batch_buffers_to_the_os()


def make_batches(cache: ImageCache, indices: np.ndarray, batch_size: int, shuffle: bool = False,
                 seed: int | None = None,
                 targets: Callable[[np.ndarray], np.ndarray] | None = None) -> tf.data.Dataset:
    """Batches of (uint8 images, int32 labels), or (images, targets(images)) as float32 when
    `targets` is given (a segmentation target such as an Otsu mask of the same size)."""
    indices = np.asarray(indices, dtype=np.int64)
    labels = cache.labels.astype(np.int32)
    h, w, c = cache.image_shape

    def read(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = cache.read(idx)
        return images, (labels[idx] if targets is None else targets(images).astype(np.float32))

    y_type, y_shape = (tf.int32, (None,)) if targets is None else (tf.float32, (None, h, w, 1))

    def read_op(idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, y = tf.numpy_function(read, [idx], (tf.uint8, y_type), stateful=False)
        images.set_shape((None, h, w, c))
        y.set_shape(y_shape)
        return images, y

    ds = tf.data.Dataset.from_tensor_slices(indices)
    if shuffle:
        ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(read_op, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
