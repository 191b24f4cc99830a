"""Many workers on one study over the machine's PostgreSQL and a real MLflow tracking server."""
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest

from searchtools import FAST, run_search, start_search, wait_for
from servicetools import descendants, dump_stacks, fresh_database, mlflow_server, pg_available, pg_cluster, pg_url, stop_process_group
from preprocessing.synthetic import make_split_dataset

S = optuna.trial.TrialState
# One xdist group: these tests share one MLflow server, and one of them stops PostgreSQL.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("postgres"), pytest.mark.skipif(not pg_available() and not os.environ.get("CI"),
                                                    reason="PostgreSQL at 127.0.0.1:5432 is not running")]
FASTER = [*FAST, "--pruner", "none", "--epochs", "2", "--heartbeat-interval", "1", "--grace-period", "4"]


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    work = tmp_path_factory.mktemp("mlflow")
    with fresh_database("bloodsearch_mlflow") as db, mlflow_server(db, work) as (url, _):
        yield url


@pytest.fixture
def storage():
    with fresh_database() as db:
        url = pg_url(db)
        yield url
        if url in _STORAGES:
            _STORAGES.pop(url).engine.dispose()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    make_split_dataset(tmp_path / "data", cells_per_class=6, copies=3)
    return tmp_path


_STORAGES: dict[str, optuna.storages.RDBStorage] = {}


def study_storage(storage: str) -> optuna.storages.RDBStorage:
    if storage not in _STORAGES:
        _STORAGES[storage] = optuna.storages.RDBStorage(storage, engine_kwargs={"pool_size": 1, "max_overflow": 2, "pool_pre_ping": True})
    return _STORAGES[storage]


def study_of(storage: str, name: str) -> optuna.Study:
    # One engine per URL: a new one per poll would hold its pooled connections until garbage
    # collection and, polled five times a second, run PostgreSQL out of connections.
    return optuna.load_study(study_name=name, storage=study_storage(storage))


def runs_of(tracking: str, name: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return client, [r for r in runs if r.data.tags.get("bloodsearch.parent") != "true"]


def start_fleet(work, storage, tracking, name, trials, workers=3):
    """One `search launch` (creates the study) plus `search worker`s joining it."""
    launcher = start_search(work, "launch", "--study", "fcn", "--study-name", name, "--trials", str(trials),
                            "--data-dir", "data", "--storage", storage, "--tracking-uri", tracking, "--quiet",
                            "--trials-per-worker", "3", *FASTER, log=work / "launch.log")
    wait_for(lambda: _exists(storage, name), 300, "the study to be created")
    joiners = [start_search(work, "worker", "--study-name", name, "--storage", storage, "--quiet",
                            log=work / f"worker{i}.log") for i in range(workers - 1)]
    return [launcher, *joiners]


def _exists(storage, name):
    try:
        return bool(study_of(storage, name).user_attrs.get("bloodsearch.parent_run_id"))
    except Exception:
        return False


def finish(procs, work: Path, timeout=600):
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            # Leave the evidence: every process's stacks go to the logs, which the failure shows.
            for q in procs:
                dump_stacks(q.pid)
            time.sleep(3)  # faulthandler writes asynchronously; not a check
            for q in procs:
                for pid in descendants(q.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            logs = "\n".join(f"----- {f.name}\n{f.read_text()[-8000:]}" for f in sorted(work.glob("*.log")))
            raise AssertionError(f"{' '.join(p.args[3:5])} still running after {timeout} s\n{logs}") from None
    return codes


def test_three_workers_reach_exactly_the_target(work, storage, tracking):
    procs = start_fleet(work, storage, tracking, "fleet", trials=12)
    assert finish(procs, work) == [0, 0, 0], [(work / f).read_text()[-2000:] for f in ("launch.log", "worker0.log")]
    study = study_of(storage, "fleet")
    finished = [t for t in study.trials if t.state in (S.COMPLETE, S.PRUNED)]
    assert len(finished) == 12
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert len({t.user_attrs["pid"] for t in finished}) >= 2  # the work was shared
    client, runs = runs_of(tracking, "fleet")
    by_trial = {int(r.data.tags["optuna.trial"]): r for r in runs}
    assert {t.number for t in finished} <= set(by_trial)
    assert len([r for r in runs if r.info.status == "FINISHED"]) == 12
    for t in finished:
        run = by_trial[t.number]
        assert run.data.metrics["best_val_accuracy"] == pytest.approx(t.value)
        assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) >= 1
        # Through the tracking server too: the trial's MLflow model and the data it saw.
        assert run.outputs.model_outputs and len(run.inputs.dataset_inputs) == 2
        assert "tracking_error" not in t.user_attrs


def test_kill_minus_9_one_worker_mid_trial(work, storage, tracking):
    procs = start_fleet(work, storage, tracking, "killed", trials=6)
    launcher_pids = {p.pid for p in procs}

    def victim():
        for t in study_of(storage, "killed").get_trials(deepcopy=False, states=(S.RUNNING,)):
            if t.user_attrs.get("epoch", 0) >= 1 and t.user_attrs.get("pid") not in launcher_pids:
                return t
        return None

    trial = wait_for(victim, 300, "a trial in its second epoch")
    os.kill(trial.user_attrs["pid"], signal.SIGKILL)
    assert finish(procs, work) == [0, 0, 0]

    study = study_of(storage, "killed")
    killed = study.trials[trial.number]
    assert killed.state == S.FAIL
    retries = [t for t in study.trials if t.user_attrs.get("origin_trial") == trial.number and t.number != trial.number]
    assert len(retries) == 1 and retries[0].params == killed.params and retries[0].state == S.COMPLETE
    assert len([t for t in study.trials if t.state in (S.COMPLETE, S.PRUNED)]) == 6
    assert not [t for t in study.trials if t.state == S.RUNNING]
    _, runs = runs_of(tracking, "killed")
    status = {int(r.data.tags["optuna.trial"]): r.info.status for r in runs}
    assert status[trial.number] == "FAILED"
    assert "RUNNING" not in status.values()
    assert all(status[t.number] == "FINISHED" for t in study.trials if t.state == S.COMPLETE)


def test_postgres_outage_mid_study_loses_nothing(work, storage, tracking):
    launcher = start_search(work, "launch", "--study", "fcn", "--study-name", "outage", "--trials", "6",
                            "--workers", "2", "--data-dir", "data", "--storage", storage, "--tracking-uri", tracking,
                            "--quiet", *FASTER, log=work / "launch.log")
    wait_for(lambda: _exists(storage, "outage") and
             len(study_of(storage, "outage").get_trials(states=(S.COMPLETE,))) >= 1, 300, "a first finished trial")
    before = {t.number: t.value for t in study_of(storage, "outage").get_trials(states=(S.COMPLETE,))}
    pg_cluster("stop")
    try:
        time.sleep(5)  # the outage itself, not a check
    finally:
        pg_cluster("start")
    code = launcher.wait(timeout=600)
    log = (work / "launch.log").read_text()
    if code != 0:  # allowed: a clear one-line error, then a relaunch completes the study
        assert "error: " in log, log[-3000:]
        again = run_search(work, "launch", "--study", "fcn", "--study-name", "outage", "--trials", "6",
                           "--data-dir", "data", "--storage", storage, "--tracking-uri", tracking, "--quiet", *FASTER)
        assert again.returncode == 0, again.stderr
    study = study_of(storage, "outage")
    complete = {t.number: t.value for t in study.trials if t.state == S.COMPLETE}
    assert all(complete.get(n) == v for n, v in before.items())  # nothing finished was lost
    assert len([t for t in study.trials if t.state in (S.COMPLETE, S.PRUNED)]) == 6
    assert not [t for t in study.trials if t.state == S.RUNNING]
    _, runs = runs_of(tracking, "outage")
    status = {int(r.data.tags["optuna.trial"]): r.info.status for r in runs}
    assert all(status.get(n) == "FINISHED" for n in complete)
    assert "RUNNING" not in status.values()


def test_tracking_server_unreachable_at_launch(work, storage):
    done = run_search(work, "launch", "--study", "fcn", "--trials", "1", "--data-dir", "data",
                      "--storage", storage, "--tracking-uri", "http://127.0.0.1:9", *FAST, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0 and len(lines) == 1
    assert lines[0].startswith("error: --tracking-uri http://127.0.0.1:9: tracking server unreachable")
    assert optuna.get_all_study_summaries(study_storage(storage)) == []


def test_tracking_server_lost_mid_study_keeps_results_and_says_so(work, storage, tmp_path):
    with fresh_database("bloodsearch_mlflow") as db, mlflow_server(db, tmp_path / "own") as (url, server):
        launcher = start_search(work, "launch", "--study", "fcn", "--study-name", "lost", "--trials", "3",
                                "--data-dir", "data", "--storage", storage, "--tracking-uri", url, *FASTER,
                                log=work / "launch.log")
        wait_for(lambda: _exists(storage, "lost") and
                 len(study_of(storage, "lost").get_trials(states=(S.COMPLETE,))) >= 1, 300, "a first finished trial")
        stop_process_group(server)
        assert launcher.wait(timeout=600) == 0, (work / "launch.log").read_text()[-3000:]
    study = study_of(storage, "lost")
    complete = [t for t in study.trials if t.state == S.COMPLETE]
    assert len(complete) == 3  # every result is in Optuna
    unrecorded = [t for t in complete if t.user_attrs.get("tracking_error")]
    assert unrecorded
    assert "could not be recorded in MLflow" in (work / "launch.log").read_text()
