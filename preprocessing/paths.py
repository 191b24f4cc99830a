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
