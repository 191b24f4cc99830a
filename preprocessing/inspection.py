"""What a data set holds, before hours of compute go into it: images and original cells per
class and split, image sizes, files that cannot be read."""
from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from PIL import Image, UnidentifiedImageError

from .dataset import DataSet


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
    report = {"data_dir": str(data.root), "layout": data.layout, "classes": list(data.classes), "splits": {}}
    for name, image_set in data.splits.items():
        with ThreadPoolExecutor(max_workers=workers) as pool:
            probes = list(pool.map(_probe, [image_set.path(i) for i in range(len(image_set))]))
        sizes = Counter(f"{w}x{h}" for (size, _) in probes if size for (w, h) in [size])
        report["splits"][name] = {
            "images": image_set.class_counts(),
            "cells": image_set.group_counts(),
            "sizes_wxh": dict(sizes.most_common()),
            "unreadable": [{"file": image_set.files[i], "error": err} for i, (_, err) in enumerate(probes) if err],
        }
    return report
