"""Helpers for tests that drive the real `search` CLI in subprocesses."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna

from servicetools import search_cmd  # noqa: F401  (the tests' way to start the CLI)

ROOT = Path(__file__).resolve().parents[1]
# Small and fast, still a real search: everything else in the fcn space stays free.
FAST = ["--epochs", "3", "--patience", "3", "--param", "size=24x32", "--param", "width=0.125",
        "--param", "batch_size=16", "--param", "color=rgb", "--param", "mask=none"]


# Where a command finds its stores when no option says: never inherited from the test process,
# where an in-process mlflow.set_tracking_uri (which exports MLFLOW_TRACKING_URI) of one test
# would send the next test's launches to the first test's store.
STORE_VARIABLES = ("MLFLOW_TRACKING_URI", "SEARCH_TRACKING_URI", "SEARCH_STORAGE")


def env_for(workdir: Path) -> dict:
    inherited = {k: v for k, v in os.environ.items() if k not in STORE_VARIABLES}
    return {**inherited, "BLOODSEARCH_CACHE_DIR": str(workdir / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}




def run_search(workdir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(search_cmd(*args), cwd=workdir, env=env_for(workdir), capture_output=True, text=True,
                          timeout=timeout)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_search(workdir: Path, *args: str, log: Path, sigint_ignored: bool = False) -> subprocess.Popen:
    """sigint_ignored: started as a script's background job (`cmd &`, nohup) is."""
    return subprocess.Popen(search_cmd(*args), cwd=workdir, env=env_for(workdir), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, preexec_fn=_ignore_sigint if sigint_ignored else None)


def load(workdir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / 'optuna.db'}")


def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    """Poll until predicate() is truthy; a deadline, not a sleep, decides failure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def running_trial(workdir: Path, name: str, min_epoch: int = 1):
    try:
        trials = load(workdir, name).get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    except Exception:  # the study does not exist yet
        return None
    return next((t for t in trials if t.user_attrs.get("epoch", 0) >= min_epoch), None)


def mlflow_runs(workdir: Path, experiment: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    parents = [r for r in runs if r.data.tags.get("bloodsearch.parent") == "true"]
    children = [r for r in runs if r.data.tags.get("bloodsearch.parent") != "true"]
    return client, parents, children


def launched_study(tmp_path_factory, name: str, launch_args: list[str], trials: int = 2, **dataset) -> Path:
    """A folder with a synthetic data set (make_split_dataset's **dataset) and a study
    launched on it with `launch_args`: what a module of end-to-end tests shares."""
    from preprocessing.synthetic import make_split_dataset

    work = tmp_path_factory.mktemp(name)
    make_split_dataset(work / "data", **dataset)
    done = run_search(work, "launch", *launch_args, "--trials", str(trials), "--data-dir", "data")
    assert done.returncode == 0, done.stderr
    return work


def one_line_error(done, *fragments) -> str:
    """The command failed as a usage error with exactly one line, `error: ...`, holding each fragment."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
