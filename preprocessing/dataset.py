"""Find the images of a data set on disk, with their classes, original-cell groups and fingerprint.

Two layouts are accepted:
- split: TRAIN/<CLASS>/..., TEST/<CLASS>/..., optional TEST_SIMPLE/<CLASS>/... (the public set);
- flat: <CLASS>/..., for which a stratified, grouped test split is made once and recorded.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError
from .grouping import grouped_holdout
from .paths import default_cache_dir

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
SPLIT_NAMES = ("TRAIN", "TEST", "TEST_SIMPLE")
# `_<k>_<n>.jpeg` is augmentation n of original cell k in its class folder.
_AUGMENTED = re.compile(r"^_(\d+)_\d+\.[^.]+$")
SPLIT_RECORD = ".bloodsearch-test-split.json"


def cell_group(class_name: str, filename: str) -> str:
    """The original cell an image was made from; one file, one group when the name doesn't say."""
    m = _AUGMENTED.match(filename)
    return f"{class_name}/{m.group(1)}" if m else f"{class_name}/{filename}"


@dataclass(frozen=True)
class ImageSet:
    """The files of one split: paths relative to root, integer labels, cell groups."""

    root: Path
    name: str
    classes: tuple[str, ...]
    files: tuple[str, ...]
    labels: np.ndarray = field(repr=False)
    groups: tuple[str, ...] = field(repr=False)
    fingerprint: str = ""  # names, sizes and mtimes: keys caches (a touched file is re-read)
    listing: str = ""  # names and sizes only: the same files anywhere, e.g. another machine's copy

    def __len__(self) -> int:
        return len(self.files)

    @property
    def where(self) -> str:
        """The folder and split, for messages."""
        return f"{self.root} ({self.name})"

    def path(self, i: int) -> Path:
        return self.root / self.files[i]

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts)}

    def group_counts(self) -> dict[str, int]:
        per_class: dict[str, set[str]] = {c: set() for c in self.classes}
        for label, group in zip(self.labels, self.groups):
            per_class[self.classes[label]].add(group)
        return {c: len(g) for c, g in per_class.items()}


@dataclass(frozen=True)
class DataSet:
    root: Path
    layout: str  # "split" or "flat"
    classes: tuple[str, ...]
    splits: dict[str, ImageSet]

    @property
    def train(self) -> ImageSet:
        return self.splits["TRAIN"]

    @property
    def test(self) -> ImageSet:
        return self.splits["TEST"]


def _visible(entries) -> list[os.DirEntry]:
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _class_dirs(folder: Path) -> list[Path]:
    with os.scandir(folder) as it:
        return [Path(e.path) for e in _visible(it) if e.is_dir()]


def _scan_class(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        files = [e for e in _visible(it) if e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"class folder {folder} holds no images (.jpg/.jpeg/.png/.bmp/.tif)")
    return files


def _fingerprint(items: list[tuple]) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(("\0".join(str(v) for v in item) + "\n").encode())
    return h.hexdigest()[:16]


def _image_set(root: Path, name: str, classes: tuple[str, ...], entries: list[tuple[str, str, os.DirEntry]]) -> ImageSet:
    """entries: (class, path relative to root, DirEntry)."""
    index = {c: i for i, c in enumerate(classes)}
    files, labels, groups, items = [], [], [], []
    for cls, rel, entry in entries:
        st = entry.stat()
        files.append(rel)
        labels.append(index[cls])
        groups.append(cell_group(cls, entry.name))
        items.append((rel, st.st_size, st.st_mtime_ns))
    return ImageSet(root, name, classes, tuple(files), np.asarray(labels, dtype=np.int64),
                    tuple(groups), _fingerprint(items), _fingerprint([(rel, size) for rel, size, _ in items]))


def _scan_split(root: Path, split_dir: Path, classes: tuple[str, ...] | None) -> tuple[tuple[str, ...], list]:
    dirs = _class_dirs(split_dir)
    if len(dirs) < 2 and classes is None:
        raise DataError(f"{split_dir} needs at least two class folders, found {len(dirs)}")
    names = tuple(d.name for d in dirs)
    if classes is not None:
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise DataError(f"{split_dir} has class folder(s) {', '.join(unknown)} that TRAIN lacks")
    entries = []
    for d in dirs:
        for e in _scan_class(d):
            entries.append((d.name, str(Path(e.path).relative_to(root)), e))
    return names, entries


def _find_split_dirs(root: Path) -> dict[str, Path]:
    found = {}
    for d in _class_dirs(root):
        if d.name.upper() in SPLIT_NAMES:
            found[d.name.upper()] = d
    return found


def load_dataset(data_dir: str | os.PathLike, record_dir: str | os.PathLike | None = None,
                 test_fraction: float = 0.2) -> DataSet:
    """Scan a data dir. Raises DataError (one line, naming the folder) on anything unusable.

    record_dir: where a flat layout's test split is recorded when data_dir is read-only.
    """
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise DataError(f"data dir {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data dir {root} is not a folder")
    root = root.resolve()
    split_dirs = _find_split_dirs(root)
    if split_dirs:
        if "TRAIN" not in split_dirs:
            raise DataError(f"data dir {root} has {', '.join(sorted(split_dirs))} but no TRAIN folder")
        classes, train_entries = _scan_split(root, split_dirs["TRAIN"], None)
        splits = {"TRAIN": _image_set(root, "TRAIN", classes, train_entries)}
        for name in ("TEST", "TEST_SIMPLE"):
            if name in split_dirs:
                _, entries = _scan_split(root, split_dirs[name], classes)
                splits[name] = _image_set(root, name, classes, entries)
        return DataSet(root, "split", classes, splits)

    classes, entries = _scan_split(root, root, None)
    if not classes:
        raise DataError(f"data dir {root} has no class folders (expected <CLASS>/ or TRAIN/<CLASS>/)")
    test_groups = _flat_test_groups(root, classes, entries, record_dir, test_fraction)
    train = [e for e in entries if cell_group(e[0], e[2].name) not in test_groups]
    test = [e for e in entries if cell_group(e[0], e[2].name) in test_groups]
    return DataSet(root, "flat", classes, {
        "TRAIN": _image_set(root, "TRAIN", classes, train),
        "TEST": _image_set(root, "TEST", classes, test),
    })


def _record_path(root: Path, record_dir: str | os.PathLike | None) -> Path:
    inside = root / SPLIT_RECORD
    if inside.exists() or os.access(root, os.W_OK):
        return inside
    base = Path(record_dir) if record_dir else default_cache_dir()
    return base / "splits" / (hashlib.sha256(str(root).encode()).hexdigest()[:16] + ".json")


def _flat_test_groups(root: Path, classes: tuple[str, ...], entries: list, record_dir, fraction: float) -> set[str]:
    """Groups held out as TEST: chosen once (stratified, grouped), then read back from the record.

    Groups that appear after the record was written go to TRAIN, so no image ever moves
    from TEST into training.
    """
    path = _record_path(root, record_dir)
    if path.exists():
        try:
            return set(json.loads(path.read_text())["test_groups"])
        except (ValueError, KeyError) as exc:
            raise DataError(f"test-split record {path} is unreadable ({exc}); delete it to make a new split") from None
    labels = np.asarray([classes.index(e[0]) for e in entries])
    groups = [cell_group(e[0], e[2].name) for e in entries]
    _, test_idx = grouped_holdout(labels, groups, fraction, seed=0, class_names=classes)
    test_groups = sorted({groups[i] for i in test_idx})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"data_dir": str(root), "fraction": fraction, "seed": 0,
                               "test_groups": test_groups}, indent=1))
    os.replace(tmp, path)
    return set(test_groups)
