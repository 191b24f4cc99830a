"""What a data set holds, before hours of compute go into it: images and original cells per
class and split, image sizes, files that cannot be read."""
from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .config import ImageSpec
from .dataset import DataSet, ImageSet
from .errors import DataError
from .images import UnreadableImage, load_image


def _probe(path) -> tuple[tuple[int, int] | None, str | None]:
    """(width, height) and None, or None and why the file cannot be decoded."""
    try:
        with Image.open(path) as im:
            size = im.size
            im.load()  # the header alone does not catch a truncated file
        return size, None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        return None, str(exc)


def inspect_dataset(data: DataSet, workers: int = 4) -> dict:
    report = {"data_dir": str(data.root), "layout": data.layout, "classes": list(data.classes),
              "grouping": data.grouping.describe(), "warnings": list(data.notes), "splits": {}}
    if data.split_record:
        report["test_split"] = {"record": str(data.split_record), "recorded": data.split_recorded}
    for name, image_set in data.splits.items():
        with ThreadPoolExecutor(max_workers=workers) as pool:
            probes = list(pool.map(_probe, [image_set.path(i) for i in range(len(image_set))]))
        sizes = Counter(f"{w}x{h}" for (size, _) in probes if size for (w, h) in [size])
        report["splits"][name] = {
            "images": image_set.class_counts(),
            "groups": image_set.group_counts(),
            "sizes_wxh": dict(sizes.most_common()),
            "unreadable": [{"file": image_set.files[i], "error": err} for i, (_, err) in enumerate(probes) if err],
        }
    return report


def contact_pairs(data: DataSet, per_class: int, size: str | tuple[int, int],
                  skip: set[str] = frozenset()) -> list[tuple[str, list[tuple[np.ndarray, np.ndarray]]]]:
    """Per class, up to per_class (image, its Otsu-masked version) pairs from TRAIN, one per
    group so a sheet shows different fields; files in skip (unreadable) are passed over."""
    plain, otsu = ImageSpec(size=size, mask="none"), ImageSpec(size=size, mask="otsu")
    train, rows = data.train, []
    for label, name in enumerate(data.classes):
        pairs, seen = [], set()
        for i in range(len(train)):
            if train.labels[i] != label or train.files[i] in skip or train.groups[i] in seen:
                continue
            try:
                pairs.append((load_image(train.path(i), plain), load_image(train.path(i), otsu)))
            except UnreadableImage:
                continue
            seen.add(train.groups[i])
            if len(pairs) == per_class:
                break
        rows.append((name, pairs))
    return rows


def readable(image_set: ImageSet, cache_dir: str | Path | None = None, workers: int = 4) -> np.ndarray:
    """Which files decode (bool per file), probed once per data-set fingerprint and kept under
    the cache dir, so a launch can refuse a class without readable images before it starts."""
    import json

    from .paths import default_cache_dir

    record = Path(cache_dir or default_cache_dir()) / "readable" / f"{image_set.fingerprint}-{image_set.name}.json"
    try:
        return np.asarray(json.loads(record.read_text()), dtype=bool)
    except (OSError, ValueError):
        pass
    with ThreadPoolExecutor(max_workers=workers) as pool:
        ok = np.array([err is None for _, err in pool.map(_probe, [image_set.path(i) for i in range(len(image_set))])],
                      dtype=bool)
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(ok.tolist()))
        os.replace(tmp, record)
    except OSError:
        pass  # a read-only cache dir: probe again next time
    return ok


def check_classes_readable(image_set: ImageSet, ok: np.ndarray) -> None:
    """One line naming the first class of the split with no readable image."""
    for label, name in enumerate(image_set.classes):
        files = [image_set.files[i] for i in np.flatnonzero(image_set.labels == label)]
        if files and not ok[image_set.labels == label].any():
            raise DataError(f"class {name} in {image_set.where} has no readable image ({len(files)} file(s), "
                            f"all unreadable, e.g. {files[0]})")
