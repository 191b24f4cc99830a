"""Check `search/running/gpus.py` against a real driver (issue 28, part 1).

The test suite runs without a GPU, on a stand-in `nvidia-smi`; this script runs on a machine
that has one and prints what the launcher would do there: the GPUs it finds, what each `--gpus`
value chooses (or the one-line error), and how many devices a worker process started with the
launcher's environment actually sees. It needs no TensorFlow: the worker's view is read with
whichever CUDA framework is installed (PyTorch, else JAX), since CUDA_VISIBLE_DEVICES is
CUDA's switch, not a framework's.

    python benchmarks/gpu_devices.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.errors import SearchError  # noqa: E402
from search.running.gpus import GpuPlan, chosen_gpus, found_gpus  # noqa: E402

# What a worker process sees: the number of CUDA devices its framework enumerates.
PROBES = {
    "torch": "import torch; print(torch.cuda.device_count())",
    "jax": "import jax; print(len([d for d in jax.devices() if d.platform == 'gpu']))",
}


def probe() -> tuple[str, str] | None:
    for name, code in PROBES.items():
        if subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True).returncode == 0:
            return name, code
    return None


def seen_by_worker(env: dict[str, str], code: str) -> str:
    child = {**os.environ, **env}
    done = subprocess.run([sys.executable, "-c", code], env=child, capture_output=True, text=True, timeout=300)
    return done.stdout.strip() or f"error: {done.stderr.strip().splitlines()[-1:]}"


def choose(option: str | None, found: list[str]) -> str:
    try:
        return ",".join(chosen_gpus(option, found)) or "(none)"
    except SearchError as e:
        return f"error: {e.format_message()}"


def main() -> None:
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip()
    except OSError as e:
        listing = f"({e.strerror})"
    print(f"nvidia-smi -L:\n{listing}")
    found = found_gpus()
    print(f"found_gpus(): {found}")
    missing = str(len(found))  # one index past the last GPU: a GPU this machine does not have
    for option in (None, "all", "none", "0", missing, "0,0", "x,"):
        print(f"--gpus {option or '(not given)':<12} -> {choose(option, found)}")
    framework = probe()
    if framework is None:
        print("no CUDA framework to probe a worker with")
        return
    name, code = framework
    rows = []
    for option, per_gpu in ((None, 1), ("all", 2), ("none", 1)):
        plan = GpuPlan.for_launch(option, per_gpu)
        device = plan.next_device([])
        env = plan.env(device)
        rows.append({"gpus": option, "workers_per_gpu": per_gpu, "workers": plan.workers(None), "device": device,
                     "env": env, f"{name}_devices_seen": seen_by_worker(env, code)})
    uuid = listing.split("UUID: ")[-1].rstrip(")") if "UUID: " in listing else None
    if uuid:  # a launcher given CUDA_VISIBLE_DEVICES=<uuid> hands that name on
        os.environ["CUDA_VISIBLE_DEVICES"] = uuid
        plan = GpuPlan.for_launch(None, 1)
        env = plan.env(plan.next_device([]))
        rows.append({"launcher_given": uuid, "found": found_gpus(), "env": env,
                     f"{name}_devices_seen": seen_by_worker(env, code)})
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
