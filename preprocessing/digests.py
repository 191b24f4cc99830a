"""What a split's files hold, as one digest: what keys the image cache.

ImageSet.fingerprint (names, sizes, mtimes) misses a file rewritten with its name, size and
mtime kept, which is what `rsync -a`, `cp -p` and tar restores leave; a cache keyed on it
served the old pixels. So the key hashes every file's bytes (sha256: with the CPU's SHA
instructions it ran faster here than blake2b; docs/benchmarks.md#cache-key), and a per-file
memo under the cache dir spares re-reading files whose stat says they are unchanged.

The memo trusts (size, mtime, ctime, inode). ctime is the signal that makes it sound: the
kernel sets it to the current time on every write and every utime(), and no system call
sets it back, so a rewrite followed by restoring the mtime still moves it (a restore that
replaces the file moves the inode too). One gap remains, as in git's "racy" index entries:
a file rewritten within the same timestamp granule as it was last hashed keeps its ctime on
file systems with coarse timestamps (1-2 s). Files changed less than RACY_NS before hashing
began are therefore not memoised; they are hashed again next time.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from .dataset import ImageSet

MEMO_VERSION = 1
RACY_NS = 2_000_000_000  # the coarsest ctime granule in use (FAT: 2 s)


def _stamp(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def file_digest(path: Path) -> str:
    """The file's sha256, or why it could not be read: the cache skips such a file with a
    warning (as it does one that does not decode), so the key must not fail on it first."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


def memo_path(cache_dir: str | os.PathLike, image_set: ImageSet) -> Path:
    where = hashlib.sha256(f"{image_set.root}\0{image_set.name}".encode()).hexdigest()[:16]
    return Path(cache_dir) / "digests" / f"{where}.json"


def _load_memo(path: Path | None) -> dict[str, list]:
    if path is None:
        return {}
    try:
        memo = json.loads(path.read_text())
        return memo["files"] if memo.get("version") == MEMO_VERSION else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _save_memo(path: Path, files: dict[str, list]) -> None:
    # Best effort: a read-only cache dir (a complete cache read elsewhere) only costs hashing.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"version": MEMO_VERSION, "files": files}))
        os.replace(tmp, path)
    except OSError:
        pass


def content_digest(image_set: ImageSet, cache_dir: str | os.PathLike | None = None) -> str:
    """A digest of the split's file names and bytes; cache_dir holds the memo (None: no memo)."""
    path = memo_path(cache_dir, image_set) if cache_dir is not None else None
    memo = _load_memo(path)
    started = time.time_ns()
    kept: dict[str, list] = {}
    total = hashlib.sha256()
    root = str(image_set.root)  # joined as strings: pathlib took half the memo path's time
    for rel in image_set.files:
        stamp = _stamp(os.path.join(root, rel))  # before reading: a write after it moves the stamp
        known = memo.get(rel)
        digest = known[-1] if known and known[:-1] == stamp else file_digest(image_set.root / rel)
        if stamp and stamp[2] < started - RACY_NS and not digest.startswith("unreadable"):
            kept[rel] = [*stamp, digest]
        total.update(f"{rel}\0{digest}\n".encode())
    if path is not None and kept != memo:
        _save_memo(path, kept)
    return total.hexdigest()[:20]
