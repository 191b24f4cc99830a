"""Issue 28, part 1: one GPU per local worker. No GPU here: a stand-in `nvidia-smi` on PATH lists
two, and the workers' environments and the trials' records show which one each was given."""
import json
import os
import sqlite3
from pathlib import Path

import pytest

from search.errors import SearchError
from search.running.gpus import CPU, DEVICE_ENV, GpuPlan, chosen_gpus, found_gpus
from searchtools import one_line_error, run_search

STAND_IN = "#!/bin/sh\n# Lists two GPUs as `nvidia-smi --query-gpu=index --format=csv,noheader` does.\nprintf '0\\n1\\n'\n"
# Each worker writes what CUDA_VISIBLE_DEVICES it was started with (only in the worker, which
# has imported TensorFlow; the launcher's dry run has not).
SEEING = '''import json, os, sys
from pathlib import Path
from studies.seed_fcn import suggest as _suggest


def suggest(p):
    if "tensorflow" in sys.modules and p.trial is not None:
        Path(f"seen-{p.trial.number}.json").write_text(json.dumps(
            {"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "growth": os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH")}))
    return _suggest(p)
'''


@pytest.fixture
def two_gpus(tmp_path: Path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(STAND_IN)
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return bin_dir


def test_gpus_are_found_with_nvidia_smi_or_as_cuda_visible_devices_names_them(two_gpus, monkeypatch):
    assert found_gpus() == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # given to the launcher: the only GPU there is
    assert found_gpus() == ["1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,-1,3")  # CUDA stops at the first invalid entry
    assert found_gpus() == ["2"]
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert found_gpus() == []


def test_gpus_option_chooses_among_the_found_and_names_what_is_missing():
    assert chosen_gpus(None, ["0", "1"]) == ("0", "1") and chosen_gpus("none", ["0", "1"]) == ()
    assert chosen_gpus("all", ["0", "1"]) == ("0", "1") and chosen_gpus("1,0,1", ["0", "1"]) == ("1", "0")
    with pytest.raises(SearchError, match="--gpus 3: there is no GPU 3; this machine has GPUs 0, 1"):
        chosen_gpus("3", ["0", "1"])
    with pytest.raises(SearchError, match=r"--gpus all: this machine has none \(nvidia-smi lists no GPU\)"):
        chosen_gpus("all", [])


def test_workers_go_round_robin_one_gpu_each_and_share_with_growth():
    plan = GpuPlan(("0", "1"), per_gpu=1)
    assert plan.workers(None) == 2 and plan.workers(3) == 3 and GpuPlan().workers(None) == 1
    assert [plan.next_device(busy) for busy in ([], ["0"], ["0", "1"], ["1"])] == ["0", "1", "0", "0"]
    assert plan.env("1") == {DEVICE_ENV: "gpu:1", "CUDA_VISIBLE_DEVICES": "1"}
    shared = GpuPlan(("0",), per_gpu=2)
    assert shared.workers(None) == 2 and shared.env("0")["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert GpuPlan((), hide=True).env(CPU) == {DEVICE_ENV: CPU, "CUDA_VISIBLE_DEVICES": "-1"}
    assert GpuPlan().env(CPU) == {DEVICE_ENV: CPU}


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    from preprocessing.synthetic import make_split_dataset

    make_split_dataset(tmp_path / "data", cells_per_class=3, copies=2)
    (tmp_path / "seeing.py").write_text(SEEING)
    return tmp_path


TINY = ["--study", "seeing.py", "--param", "size=16x16", "--param", "width=0.125", "--param", "batch_size=8",
        "--epochs", "1", "--threads", "1", "--data-dir", "data", "--quiet"]


@pytest.mark.slow
def test_two_workers_each_see_one_gpu_and_each_trial_records_it(two_gpus, tiny):
    done = run_search(tiny, "launch", *TINY, "--trials", "2", "--gpus", "all", "--workers", "2",
                      "--trials-per-worker", "1")
    assert done.returncode == 0, done.stderr
    seen = [json.loads((tiny / f"seen-{n}.json").read_text()) for n in (0, 1)]
    assert sorted(s["cuda"] for s in seen) == ["0", "1"] and all(s["growth"] is None for s in seen)
    with sqlite3.connect(tiny / "optuna.db") as db:
        devices = dict(db.execute("select t.number, a.value_json from trial_user_attributes a join trials t "
                                  "on t.trial_id = a.trial_id where a.key = 'device'").fetchall())
    assert {n: json.loads(d) for n, d in devices.items()} == {n: f"gpu:{s['cuda']}" for n, s in enumerate(seen)}
    status = run_search(tiny, "status", "--study-name", "seeing")
    assert "trained on: gpu:0 1, gpu:1 1" in status.stdout, status.stdout


@pytest.mark.slow
def test_a_gpu_the_machine_lacks_is_one_line(two_gpus, tiny):
    done = run_search(tiny, "launch", *TINY, "--trials", "1", "--gpus", "0,3")
    one_line_error(done, "--gpus 0,3: there is no GPU 3; this machine has GPUs 0, 1")
    assert not (tiny / "optuna.db").exists()
