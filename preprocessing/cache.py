"""Decode-and-resize once into an on-disk uint8 cache shared by every trial and worker.

One cache entry per (split's content digest, split, size, color, fit, mask): a raw file of
N*H*W*C bytes plus meta.json. The digest hashes the files' names and bytes
(preprocessing.digests), so a file rewritten with its name, size and mtime kept gets a new
entry. It is built once (preprocessing.locking.build_once), so concurrent workers neither
duplicate the work nor see half an entry; a complete entry is read without writing anything,
so a read-only cache dir serves what it holds. Reads use pread, not mmap: mapped pages would
count in each worker's resident memory as an epoch touches them, and page-cache reads do not.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .config import ImageSpec, PreprocessConfig, image_spec
from .dataset import ImageSet
from .digests import content_digest
from .errors import DataError
from .images import UnreadableImage, load_image
from .locking import build_once
from .paths import default_cache_dir
from .masks import BATCH_MASKS, BatchMasker

log = logging.getLogger("bloodsearch.cache")
CACHE_VERSION = 3  # 2: Otsu leaves black augmentation corners out; 3: keyed on the files' content


def cache_key(image_set: ImageSet, config: ImageSpec | PreprocessConfig, extra: str = "",
              content: str | None = None) -> str:
    """content: the split's content_digest, if already known (else computed, without a memo)."""
    config = image_spec(config)
    content = content or content_digest(image_set)
    parts = [CACHE_VERSION, content, image_set.name, config.size_text, config.color, config.mask, extra]
    if config.fit != "stretch":  # keeps the keys of caches made before `fit` existed
        parts.append(config.fit)
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


@dataclass
class ImageCache:
    """Read access to one cache entry. Cheap to open; safe to read from many threads."""

    path: Path
    image_set: ImageSet
    spec: ImageSpec
    valid: np.ndarray = field(repr=False)
    unreadable: list[dict] = field(repr=False)
    _fd: int | None = field(default=None, repr=False)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (*self.spec.size, self.spec.channels)

    @property
    def image_bytes(self) -> int:
        h, w, c = self.image_shape
        return h * w * c

    @property
    def labels(self) -> np.ndarray:
        return self.image_set.labels

    def __len__(self) -> int:
        return len(self.image_set)

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path / "images.u8", os.O_RDONLY)
        return self._fd

    def read(self, indices: np.ndarray) -> np.ndarray:
        """(len(indices), H, W, C) uint8, in the order given."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty((len(indices), *self.image_shape), dtype=np.uint8)
        fd, nbytes = self._file(), self.image_bytes
        flat = out.reshape(len(indices), nbytes)
        for row, i in enumerate(indices):
            got = os.preadv(fd, [flat[row]], int(i) * nbytes)
            if got != nbytes:
                raise DataError(f"cache file {self.path / 'images.u8'} is short; delete {self.path} to rebuild it")
        return out

    def chunks(self, indices: np.ndarray, size: int = 256) -> Iterator[np.ndarray]:
        for start in range(0, len(indices), size):
            yield self.read(indices[start:start + size])

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __getstate__(self):
        # A file descriptor means nothing in another process; reopen lazily there.
        return {**self.__dict__, "_fd": None}


def _open(path: Path, image_set: ImageSet, config: ImageSpec) -> ImageCache:
    meta = json.loads((path / "meta.json").read_text())
    return ImageCache(path, image_set, config, np.asarray(meta["valid"], dtype=bool), meta["unreadable"])


def _decode_all(image_set: ImageSet, config: ImageSpec, out_file, workers: int,
                progress: Callable[[int, int], None] | None) -> tuple[np.ndarray, list[dict]]:
    valid = np.ones(len(image_set), dtype=bool)
    unreadable: list[dict] = []
    blank = np.zeros((*config.size, config.channels), dtype=np.uint8)

    def decode(i: int) -> np.ndarray | UnreadableImage:
        try:
            return load_image(image_set.path(i), config)
        except UnreadableImage as exc:
            return exc

    # Pillow and OpenCV release the GIL while decoding, resizing and thresholding, so
    # threads use every core without pickling images between processes.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, result in enumerate(pool.map(decode, range(len(image_set)), chunksize=16)):
            if isinstance(result, UnreadableImage):
                valid[i] = False
                unreadable.append({"file": image_set.files[i], "error": str(result)})
                log.warning("skipping unreadable image %s", result)
                result = blank
            out_file.write(result.tobytes())
            if progress and (i + 1) % 500 == 0:
                progress(i + 1, len(image_set))
    return valid, unreadable


def build_cache(image_set: ImageSet, spec: ImageSpec | PreprocessConfig, cache_dir: str | os.PathLike | None = None,
                workers: int | None = None, progress: Callable[[int, int], None] | None = None,
                masker: BatchMasker | None = None) -> ImageCache:
    """Open the cache entry for this split and image spec, building it first if needed.

    A mask that needs a model (mask="unet") takes it as `masker`: the entry is made from the
    unmasked entries and keyed by the masker's model id too, so another model makes another
    entry. This package trains no models; the caller brings it.
    """
    config = image_spec(spec)  # the pixels alone: every trial's scaling shares the entry
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    extra = ""
    if config.mask in BATCH_MASKS:
        if masker is None:
            raise DataError(f"mask={config.mask} needs its model to build a cache of {image_set.where}")
        extra = masker.model_id

        def write_images(f) -> tuple[np.ndarray, list[dict]]:
            base = build_cache(image_set, replace(config, mask="none"), root, workers, progress)
            gray = base if config.color == "gray" else build_cache(
                image_set, replace(config, color="gray", mask="none"), root, workers, progress)
            indices = np.arange(len(image_set))
            for images, grays in zip(base.chunks(indices, 128), gray.chunks(indices, 128)):
                f.write(masker(images, grays).tobytes())
            return base.valid.copy(), list(base.unreadable)
    else:
        def write_images(f) -> tuple[np.ndarray, list[dict]]:
            return _decode_all(image_set, config, f, workers or os.cpu_count() or 1, progress)

    content = content_digest(image_set, root)
    key = cache_key(image_set, config, extra, content)

    def build(tmp: Path) -> None:
        started = time.perf_counter()
        with open(tmp / "images.u8", "wb") as f:
            valid, unreadable = write_images(f)
            f.flush()
            os.fsync(f.fileno())
        if not valid.any():
            raise DataError(f"no readable images in {image_set.where}")
        if unreadable:
            log.warning("%d unreadable image(s) skipped in %s", len(unreadable), image_set.where)
        meta = {
            "version": CACHE_VERSION, "key": key, "split": image_set.name,
            "fingerprint": image_set.fingerprint, "content": content, "config": config.to_dict(), "mask_model": extra,
            "shape": [len(image_set), *config.size, config.channels],
            "classes": list(image_set.classes), "files": list(image_set.files),
            "valid": valid.tolist(), "unreadable": unreadable,
            "build_seconds": round(time.perf_counter() - started, 3),
        }
        (tmp / "meta.json").write_text(json.dumps(meta))

    return _open(_build_or_explain(root, key, build, f"{image_set.where} at {_described(config, extra)}"),
                 image_set, config)


def _described(config: ImageSpec, mask_model: str) -> str:
    mask = f"mask {config.mask}" + (f" ({mask_model})" if mask_model else "")
    return f"{config.size_text} {config.color}, fit {config.fit}, {mask}"


def _build_or_explain(root: Path, key: str, build: Callable[[Path], None], what: str) -> Path:
    """The entry's folder, built if absent. A cache dir that cannot take a missing entry is
    one line naming it and the entry, not a traceback from the lock file."""
    try:
        return build_once(root / "images" / key, build)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        raise DataError(f"cache dir {root} is not writable ({exc.strerror}) and lacks the images of {what}: "
                        f"give a writable --cache-dir, or build them once where this one is writable") from None
