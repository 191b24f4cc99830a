"""Build a folder exactly once across processes: under an exclusive file lock, into a
temporary folder that is renamed into place, so nobody duplicates the work or sees half of it."""
from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

DONE = "meta.json"  # written last: a folder holding it is complete


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on lock_path (created if absent) across processes."""
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_once(final: Path, build: Callable[[Path], None]) -> Path:
    """Return `final`, first running build(tmp) and renaming tmp to final if it is absent."""
    if (final / DONE).exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(final.parent / f"{final.name}.lock"):  # others wait here, then find the finished folder
        if (final / DONE).exists():
            return final
        for stale in final.parent.glob(f"{final.name}.tmp*"):  # left by a builder that was killed
            shutil.rmtree(stale, ignore_errors=True)
        tmp = final.parent / f"{final.name}.tmp{os.getpid()}"
        tmp.mkdir()
        try:
            build(tmp)
            if not (tmp / DONE).exists():
                raise RuntimeError(f"builder of {final} wrote no {DONE}")
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final
