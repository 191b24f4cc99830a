"""Find the images of a data set on disk, with their classes, groups and fingerprint.

Two layouts are accepted:
- split: TRAIN/<CLASS>/..., TEST/<CLASS>/..., optional TEST_SIMPLE/<CLASS>/... (the public set);
- flat: <CLASS>/..., for which a stratified, grouped test split is made once and recorded.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError
from .grouping import grouped_holdout
from .groups import Grouping, groups_digest, resolve_grouping
from .paths import default_cache_dir

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
SPLIT_NAMES = ("TRAIN", "TEST", "TEST_SIMPLE")
SPLIT_RECORD = ".bloodsearch-test-split.json"


@dataclass(frozen=True)
class ImageSet:
    """The files of one split: paths relative to root, integer labels, groups (preprocessing.groups)."""

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
        """Per class, the groups holding at least one of its images."""
        per_class: dict[str, set[str]] = {c: set() for c in self.classes}
        for label, group in zip(self.labels, self.groups):
            per_class[self.classes[label]].add(group)
        return {c: len(g) for c, g in per_class.items()}

    @property
    def groups_digest(self) -> str:
        return groups_digest(self.files, self.groups)


@dataclass(frozen=True)
class DataSet:
    root: Path
    layout: str  # "split" or "flat"
    classes: tuple[str, ...]
    splits: dict[str, ImageSet]
    grouping: Grouping = Grouping()

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


def _image_set(root: Path, name: str, classes: tuple[str, ...], entries: list[tuple[str, str, os.DirEntry]],
               groups: list[str]) -> ImageSet:
    """entries: (class, path relative to root, DirEntry); groups: one per entry."""
    index = {c: i for i, c in enumerate(classes)}
    files, labels, items = [], [], []
    for cls, rel, entry in entries:
        st = entry.stat()
        files.append(rel)
        labels.append(index[cls])
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
            entries.append((d.name, Path(e.path).relative_to(root).as_posix(), e))
    return names, entries


def _find_split_dirs(root: Path) -> dict[str, Path]:
    found = {}
    for d in _class_dirs(root):
        if d.name.upper() in SPLIT_NAMES:
            found[d.name.upper()] = d
    return found


def load_dataset(data_dir: str | os.PathLike, record_dir: str | os.PathLike | None = None,
                 test_fraction: float = 0.2, grouping: Grouping | None = None) -> DataSet:
    """Scan a data dir. Raises DataError (one line, naming the folder or file) on anything unusable.

    record_dir: where a flat layout's test split is recorded when data_dir is read-only.
    grouping: which images must stay together (default: the data dir's groups.csv if it has
    one, else each file alone).
    """
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise DataError(f"data dir {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data dir {root} is not a folder")
    root = root.resolve()
    grouping = grouping or resolve_grouping(root)
    split_dirs = _find_split_dirs(root)
    if split_dirs:
        if "TRAIN" not in split_dirs:
            raise DataError(f"data dir {root} has {', '.join(sorted(split_dirs))} but no TRAIN folder")
        classes, train_entries = _scan_split(root, split_dirs["TRAIN"], None)
        by_split = {"TRAIN": train_entries}
        for name in ("TEST", "TEST_SIMPLE"):
            if name in split_dirs:
                by_split[name] = _scan_split(root, split_dirs[name], classes)[1]
        groups = grouping.assign({name: [e[1] for e in entries] for name, entries in by_split.items()})
        splits = {name: _image_set(root, name, classes, entries, groups[name]) for name, entries in by_split.items()}
        return DataSet(root, "split", classes, splits, grouping)

    classes, entries = _scan_split(root, root, None)
    if not classes:
        raise DataError(f"data dir {root} has no class folders (expected <CLASS>/ or TRAIN/<CLASS>/)")
    groups = grouping.assign({"ALL": [e[1] for e in entries]})["ALL"]
    test_groups = _flat_test_groups(root, classes, entries, groups, grouping, record_dir, test_fraction)
    sides = {"TRAIN": [i for i, g in enumerate(groups) if g not in test_groups],
             "TEST": [i for i, g in enumerate(groups) if g in test_groups]}
    return DataSet(root, "flat", classes, {
        name: _image_set(root, name, classes, [entries[i] for i in idx], [groups[i] for i in idx])
        for name, idx in sides.items()}, grouping)


def _record_path(root: Path, record_dir: str | os.PathLike | None) -> Path:
    inside = root / SPLIT_RECORD
    if inside.exists() or os.access(root, os.W_OK):
        return inside
    base = Path(record_dir) if record_dir else default_cache_dir()
    return base / "splits" / (hashlib.sha256(str(root).encode()).hexdigest()[:16] + ".json")


def _flat_test_groups(root: Path, classes: tuple[str, ...], entries: list, groups: list[str], grouping: Grouping,
                      record_dir, fraction: float) -> set[str]:
    """Groups held out as TEST: chosen once (stratified, grouped), then read back from the record.

    Groups that appear after the record was written go to TRAIN, so no image ever moves
    from TEST into training.
    """
    path = _record_path(root, record_dir)
    if path.exists():
        try:
            record = json.loads(path.read_text())
            test_groups = set(record["test_groups"])
        except (ValueError, KeyError) as exc:
            raise DataError(f"test-split record {path} is unreadable ({exc}); delete it to make a new split") from None
        # Group ids of another grouping would match nothing and send every image to TRAIN.
        made_by = record.get("grouping", "file names (_<k>_ read as a cell: leaky)")
        if made_by != grouping.key:
            raise DataError(f"test-split record {path} was made with {made_by}, this data is grouped by "
                            f"{grouping.key}: delete it to make a new TEST split with these groups")
        return test_groups
    labels = np.asarray([classes.index(e[0]) for e in entries])
    _, test_idx = grouped_holdout(labels, groups, fraction, seed=0, class_names=classes)
    test_groups = sorted({groups[i] for i in test_idx})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"data_dir": str(root), "fraction": fraction, "seed": 0, "grouping": grouping.key,
                               "test_groups": test_groups}, indent=1))
    os.replace(tmp, path)
    return set(test_groups)
