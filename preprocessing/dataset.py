"""Find the images of a data set on disk, with their classes, groups and fingerprint.

Two layouts are accepted:
- split: TRAIN/<CLASS>/..., TEST/<CLASS>/..., optional TEST_SIMPLE/<CLASS>/... (the public set);
- flat: <CLASS>/..., for which a stratified, grouped test split is made once and recorded.

A class folder's images include those in its sub-folders (a folder per patient or slide is a
common way to keep them). What is skipped or lopsided without being an error (broken
symbolic links, a class with no TEST image) is said in DataSet.notes, for the caller to show.
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
    fingerprint: str = ""  # names, sizes and mtimes; the image cache keys on content (preprocessing.digests)
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
    notes: tuple[str, ...] = ()  # one line each, worth a warning: data left out or a class TEST lacks
    split_record: Path | None = None  # a flat layout's TEST split record
    split_recorded: bool = True  # False: a read-only load made the split in memory, as a launch would

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


def _inode(path: str | os.PathLike) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _walk_images(folder: Path, broken: list[Path], seen: set[tuple[int, int]]) -> list[os.DirEntry]:
    """Image files under folder, sub-folders included, in name order; broken symbolic links
    are collected in broken. seen: folders already walked (a linked folder may loop back)."""
    try:
        with os.scandir(folder) as it:
            entries = _visible(it)
    except OSError as exc:
        raise DataError(f"folder {folder} cannot be read ({exc.strerror or exc})") from None
    files = []
    for e in entries:
        if e.is_dir():
            if (key := _inode(e.path)) not in seen:
                seen.add(key)
                files.extend(_walk_images(Path(e.path), broken, seen))
        elif e.is_file():
            if Path(e.name).suffix.lower() in IMAGE_SUFFIXES:
                files.append(e)
        elif e.is_symlink():  # neither file nor folder behind it: dangling, or a loop of links
            broken.append(Path(e.path))
    return files


def _scan_class(folder: Path, broken: list[Path]) -> list[os.DirEntry]:
    files = _walk_images(folder, broken, {_inode(folder)})
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


def _scan_split(root: Path, split_dir: Path, classes: tuple[str, ...] | None,
                broken: list[Path]) -> tuple[tuple[str, ...], list]:
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
        for e in _scan_class(d, broken):
            entries.append((d.name, Path(e.path).relative_to(root).as_posix(), e))
    return names, entries


def _find_split_dirs(root: Path) -> dict[str, Path]:
    found = {}
    for d in _class_dirs(root):
        if d.name.upper() in SPLIT_NAMES:
            found[d.name.upper()] = d
    return found


def load_dataset(data_dir: str | os.PathLike, record_dir: str | os.PathLike | None = None,
                 test_fraction: float = 0.2, grouping: Grouping | None = None,
                 write_record: bool = True) -> DataSet:
    """Scan a data dir. Raises DataError (one line, naming the folder or file) on anything unusable.

    record_dir: where a flat layout's test split is recorded when data_dir is read-only.
    grouping: which images must stay together (default: the data dir's groups.csv if it has
    one, else each file alone).
    write_record: False for commands that only look (data inspect, data audit): a flat layout
    without a record gets the split a launch would make, and nothing is written.
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
        return _split_layout(root, split_dirs, grouping)
    return _flat_layout(root, grouping, record_dir, test_fraction, write_record)


def _split_layout(root: Path, split_dirs: dict[str, Path], grouping: Grouping) -> DataSet:
    if "TRAIN" not in split_dirs:
        raise DataError(f"data dir {root} has {', '.join(sorted(split_dirs))} but no TRAIN folder")
    broken: list[Path] = []
    classes, train_entries = _scan_split(root, split_dirs["TRAIN"], None, broken)
    by_split = {"TRAIN": train_entries}
    for name in ("TEST", "TEST_SIMPLE"):
        if name in split_dirs:
            by_split[name] = _scan_split(root, split_dirs[name], classes, broken)[1]
    groups = grouping.assign({name: [e[1] for e in entries] for name, entries in by_split.items()})
    splits = {name: _image_set(root, name, classes, entries, groups[name]) for name, entries in by_split.items()}
    return DataSet(root, "split", classes, splits, grouping, notes=_broken_note(root, broken))


def _flat_layout(root: Path, grouping: Grouping, record_dir, test_fraction: float, write_record: bool) -> DataSet:
    broken: list[Path] = []
    classes, entries = _scan_split(root, root, None, broken)
    if not classes:
        raise DataError(f"data dir {root} has no class folders (expected <CLASS>/ or TRAIN/<CLASS>/)")
    groups = grouping.assign({"ALL": [e[1] for e in entries]})["ALL"]
    record = _record_path(root, record_dir)
    recorded = record.exists() or write_record
    test_groups = _flat_test_groups(record, root, classes, entries, groups, grouping, test_fraction, write_record)
    sides = {"TRAIN": [i for i, g in enumerate(groups) if g not in test_groups],
             "TEST": [i for i, g in enumerate(groups) if g in test_groups]}
    splits = {name: _image_set(root, name, classes, [entries[i] for i in idx], [groups[i] for i in idx])
              for name, idx in sides.items()}
    notes = _broken_note(root, broken) + _untested_note(splits["TEST"], record)
    return DataSet(root, "flat", classes, splits, grouping, notes=notes, split_record=record,
                   split_recorded=recorded)


def _broken_note(root: Path, broken: list[Path]) -> tuple[str, ...]:
    if not broken:
        return ()
    return (f"{len(broken)} broken symbolic link(s) skipped in {root}, e.g. {broken[0].relative_to(root).as_posix()}",)


def _untested_note(test: ImageSet, record: Path) -> tuple[str, ...]:
    """A fresh split holds out every class; a class without TEST images came after the record
    (its groups all went to TRAIN, as new groups do) and would never be tested."""
    missing = [c for c, n in test.class_counts().items() if n == 0]
    if not missing:
        return ()
    which = f"class {missing[0]} has" if len(missing) == 1 else f"classes {', '.join(missing)} have"
    return (f"{which} no TEST image: none of its groups is in the TEST split recorded in {record} (made before "
            f"the class was added?), so all its images are in TRAIN; to test it, delete that file and the next "
            f"launch makes a new split (for new studies)",)


def _record_path(root: Path, record_dir: str | os.PathLike | None) -> Path:
    inside = root / SPLIT_RECORD
    if inside.exists() or os.access(root, os.W_OK):
        return inside
    base = Path(record_dir) if record_dir else default_cache_dir()
    return base / "splits" / (hashlib.sha256(str(root).encode()).hexdigest()[:16] + ".json")


def _flat_test_groups(path: Path, root: Path, classes: tuple[str, ...], entries: list, groups: list[str],
                      grouping: Grouping, fraction: float, write: bool = True) -> set[str]:
    """Groups held out as TEST: chosen once (stratified, grouped), then read back from the record
    at path (written only if write).

    Groups that appear after the record was written go to TRAIN, so no image ever moves
    from TEST into training.
    """
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
    if not write:
        return set(test_groups)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"data_dir": str(root), "fraction": fraction, "seed": 0, "grouping": grouping.key,
                               "test_groups": test_groups}, indent=1))
    os.replace(tmp, path)
    return set(test_groups)
