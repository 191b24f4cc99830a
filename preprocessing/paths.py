"""Where this package keeps what it builds (decoded images, split records)."""
from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE_DIR = "BLOODSEARCH_CACHE_DIR"


def default_cache_dir() -> Path:
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bloodsearch"


def unwritable_reason(folder: Path) -> str | None:
    """Why no cache entry could be built in folder (None: it can), found by writing a file
    where each entry's lock file goes: access(2) can be wrong where a server maps users
    (NFS with root_squash), an actual write cannot."""
    import tempfile

    if folder.exists() and not folder.is_dir():
        return "is not a folder"
    try:
        (folder / "images").mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder / "images")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"cannot write there ({exc.strerror or exc})"
    return None
