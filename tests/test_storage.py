"""Opening a storage: launches that start at the same moment on a new, empty storage."""
import multiprocessing as mp

import optuna
import pytest
from sqlalchemy.exc import IntegrityError

import search.stores.storage as storage_module
from search.stores.storage import open_storage


def test_a_schema_collision_is_retried(tmp_path, monkeypatch):
    real, calls = storage_module.OutageProofStorage, []

    def collide_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed"))
        return real(*args, **kwargs)

    monkeypatch.setattr(storage_module, "OutageProofStorage", collide_once)
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(calls) == 2 and storage.get_all_studies() == []


def _open(url, barrier, results):
    barrier.wait()
    try:
        open_storage(url)
        results.put("ok")
    except Exception as exc:  # what the launch would print
        results.put(f"{type(exc).__name__}: {exc}")


def _together(target, url: str, n: int) -> list[str]:
    """What n processes released at one moment to open `url` say: "ok" or their error."""
    ctx = mp.get_context("spawn")  # fork from a threaded pytest can deadlock
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=target, args=(url, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return outcomes


@pytest.mark.parametrize("attempt", range(3))
def test_launches_opening_a_new_storage_together_all_succeed(tmp_path, attempt):
    assert _together(_open, f"sqlite:///{tmp_path / 'optuna.db'}", 4) == ["ok"] * 4


def test_a_database_that_is_down_is_an_outage_not_a_usage_error():
    """Found by the chaos soak: a worker opening the storage during a PostgreSQL restart
    exited as a usage error, and the launcher stopped the whole launch."""
    from sqlalchemy.exc import OperationalError

    with pytest.raises(OperationalError):
        storage_module.open_storage("postgresql+psycopg://postgres@127.0.0.1:9/optuna")  # nothing listens there


def test_a_failed_heartbeat_does_not_end_the_heartbeats(tmp_path, monkeypatch):
    """Optuna's heartbeat thread died at its first failed beat (a database restart), and the
    trial, still training, was then failed as stale."""
    from optuna.storages import RDBStorage
    from sqlalchemy.exc import OperationalError

    storage = open_storage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=1, grace_period=2)
    trial = optuna.create_study(storage=storage).ask()
    calls = []

    def flaky(self, trial_id):
        calls.append(trial_id)
        raise OperationalError("beat", {}, Exception("server closed the connection"))

    monkeypatch.setattr(RDBStorage, "record_heartbeat", flaky)
    storage.record_heartbeat(trial._trial_id)  # logged, not raised: the thread beats on
    assert calls == [trial._trial_id]


def test_a_running_trial_that_never_beat_is_failed_after_the_grace_period(tmp_path):
    """Its worker died between ask() and its first heartbeat: Optuna skipped it for ever."""
    import time

    storage = open_storage(f"sqlite:///{tmp_path / 'b.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="b", storage=storage)
    trial = study.ask()
    deadline = time.monotonic() + 20
    while study.trials[trial.number].state == optuna.trial.TrialState.RUNNING and time.monotonic() < deadline:
        optuna.storages.fail_stale_trials(study)
        time.sleep(0.5)
    assert study.trials[trial.number].state == optuna.trial.TrialState.FAIL


def _open_tracking(uri, barrier, results):
    from search.stores.tracking import Tracker

    barrier.wait()
    try:
        Tracker(uri).experiment_id("s")
        results.put("ok")
    except Exception as exc:
        results.put(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")


def test_launches_opening_a_new_tracking_store_together_all_succeed(tmp_path):
    """Seen starting two campaign studies at once: both migrated the new mlflow.db and one
    died with "duplicate column name: step"."""
    assert _together(_open_tracking, f"sqlite:///{tmp_path / 'mlflow.db'}", 3) == ["ok"] * 3


def test_a_sqlite_tracking_store_keeps_its_models_beside_it_whatever_the_working_folder(tmp_path, monkeypatch):
    """MLflow's default put a database store's artifacts in ./mlruns of the folder a launch
    started in: the campaign's models were in the work tree, its mlflow.db elsewhere."""
    from search.stores.tracking import Tracker

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    tracker = Tracker(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    run_id = tracker.start_trial("s", None, "s-0", {}, {})
    tracker.log_text(run_id, "kept", "note.txt")
    assert list((tmp_path / "runs" / "mlruns" / "s").glob("*/artifacts/note.txt"))
    assert not (tmp_path / "elsewhere" / "mlruns").exists()
