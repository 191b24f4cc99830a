"""Which GPU each local worker sees.

TensorFlow maps nearly all the memory of every GPU it sees into each process and places work
on the first one, so four workers on a four-GPU workstation crowded onto one device. Each
worker is therefore shown one GPU (CUDA_VISIBLE_DEVICES, round-robin), and workers that share
a GPU (--workers-per-gpu K > 1) grow their memory on demand instead of mapping it all.

TensorFlow-free, like the launcher: GPUs are found with nvidia-smi, and a CUDA_VISIBLE_DEVICES
the launcher was itself given is honoured (it names the only GPUs there are).
"""
from __future__ import annotations

import os
import subprocess
from collections import Counter
from dataclasses import dataclass

from search.errors import SearchError

DEVICE_ENV = "BLOODSEARCH_DEVICE"  # what a worker records as the device its trials trained on
CPU = "cpu"


def found_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA names them: CUDA_VISIBLE_DEVICES when set (up to
    its first invalid entry, where CUDA stops too), else nvidia-smi's indices."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        ids = []
        for entry in (e.strip() for e in given.split(",")):
            if not entry or entry.startswith("-"):
                break
            ids.append(entry)
        return ids
    try:
        listed = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                                text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):  # no driver, no nvidia-smi: no GPU
        return []
    return [line.strip() for line in listed.splitlines() if line.strip()]


def chosen_gpus(option: str | None, found: list[str]) -> tuple[str, ...]:
    """--gpus all | none | a list such as 0,2; None (not given): every GPU found."""
    if option is None:
        return tuple(found)
    if option == "none":
        return ()
    have = f"this machine has GPUs {', '.join(found)}" if found else "this machine has none (nvidia-smi lists no GPU)"
    if option == "all":
        if not found:
            raise SearchError(f"--gpus all: {have}")
        return tuple(found)
    wanted = [g.strip() for g in option.split(",")]
    if not all(wanted):
        raise SearchError(f"--gpus {option}: give all, none, or GPU indices such as 0,2")
    missing = [g for g in wanted if g not in found]
    if missing:
        raise SearchError(f"--gpus {option}: there is no GPU {missing[0]}; {have}")
    return tuple(dict.fromkeys(wanted))


@dataclass(frozen=True)
class GpuPlan:
    """The devices local workers share, and how many workers each takes."""

    gpus: tuple[str, ...] = ()
    per_gpu: int = 1
    hide: bool = False  # --gpus none on a machine with GPUs: show the workers none

    @classmethod
    def for_launch(cls, option: str | None, per_gpu: int) -> "GpuPlan":
        found = found_gpus()
        gpus = chosen_gpus(option, found)
        return cls(gpus, per_gpu, hide=not gpus and bool(found))

    def workers(self, asked: int | None) -> int:
        """--workers as given, else one per GPU (times --workers-per-gpu), else one."""
        return asked if asked else max(1, len(self.gpus) * self.per_gpu)

    def next_device(self, busy: list[str]) -> str:
        """The GPU with the fewest of the live workers (`busy`: their devices), lowest first."""
        if not self.gpus:
            return CPU
        load = Counter(busy)
        return min(self.gpus, key=lambda g: (load[g], self.gpus.index(g)))

    def env(self, device: str) -> dict[str, str]:
        """What a worker on `device` is started with."""
        if device == CPU:
            return {DEVICE_ENV: CPU, **({"CUDA_VISIBLE_DEVICES": "-1"} if self.hide else {})}
        env = {DEVICE_ENV: f"gpu:{device}", "CUDA_VISIBLE_DEVICES": device}
        if self.per_gpu > 1:  # TensorFlow's own switch: allocate as needed, not the whole card
            env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
        return env


def worker_device() -> str:
    """In a worker: the device its launcher gave it (cpu when started without one)."""
    return os.environ.get(DEVICE_ENV, CPU)
