"""What a search can afford, estimated before the work that would exhaust it: the image
cache's disk space (at launch, for every size the space can take) and one model's training
memory (in the worker, once the model is built, before it trains). A size or depth that
cannot fit is one line naming the numbers, not a full disk or an out-of-memory kill hours in.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from preprocessing import ImageSet
from preprocessing.config import ImageSpec, image_spec
from studies import Params, TrialConfig, reachable_configs

from search.errors import SearchError

GiB = 1024**3
# Of the memory the machine has free when a trial starts: the rest is TensorFlow's own,
# the input pipeline's and the other workers' growth.
MEMORY_SHARE = 0.8


class TooLarge(Exception):
    """A trial whose model cannot train in this machine's memory; the trial fails with it."""


def size_text(n: float) -> str:
    return f"{n / GiB:,.1f} GiB" if n >= GiB / 10 else f"{n / 1024**2:,.0f} MiB"


def reachable_specs(suggest: Callable[[Params], TrialConfig], fixed: dict) -> list[ImageSpec]:
    """The image specs the space can ask for (studies.reachable_configs)."""
    return [image_spec(c.preprocess) for c in reachable_configs(suggest, fixed)]


def _room(cache_dir: Path) -> int:
    """Free bytes where the cache goes, counting what the cache already holds (an entry built
    earlier is reused, not written again)."""
    existing = next(p for p in (cache_dir, *cache_dir.parents) if p.exists())
    held = sum(f.stat().st_size for f in cache_dir.rglob("*") if f.is_file()) if cache_dir.is_dir() else 0
    return shutil.disk_usage(existing).free + held


def check_cache_fits(suggest: Callable[[Params], TrialConfig], fixed: dict, train: ImageSet, cache_dir: Path) -> None:
    """Refuse a size whose cache of TRAIN would not fit on the cache's disk."""
    room = _room(cache_dir)
    for spec in sorted(set(reachable_specs(suggest, fixed)), key=lambda s: -s.size[0] * s.size[1] * s.channels):
        (h, w), c = spec.size, spec.channels
        need = len(train) * h * w * c
        if need > room:
            given = "--param size" if "size" in fixed else "the space's size"
            raise SearchError(f"{given} {h}x{w}: its image cache would take {size_text(need)} ({len(train):,} images "
                              f"x {h}x{w}x{c} bytes) and {cache_dir} has {size_text(room)} free; choose a smaller "
                              f"size or a --cache-dir with room")


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), in bytes; None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(need: int, what: str, available: int | None = None) -> None:
    """Raise TooLarge when `need` bytes exceed this machine's share for one trial."""
    available = available if available is not None else available_memory()
    if available is not None and need > MEMORY_SHARE * available:
        raise TooLarge(f"the model needs about {size_text(need)} to train ({what}) and this machine has "
                       f"{size_text(available)} available; choose a smaller size, depth, width or batch")
