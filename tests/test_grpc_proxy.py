"""grpc://host:port storage (issue 28): `search proxy` in front of PostgreSQL, a real launch
through it with every trial in the database once, heartbeat and stale-trial retry through it,
and one line when the proxy, or PostgreSQL's last connection, is not there."""
import subprocess

import optuna
import pytest

from searchtools import one_line_error
from servicetools import fresh_database, free_port, pg_available, pg_url, search_cmd, stop_process_group

pytestmark = pytest.mark.skipif(not pg_available(), reason="needs PostgreSQL at 127.0.0.1:5432")
TINY = ["--study", "seed-fcn", "--param", "size=16x16", "--param", "width=0.125", "--param", "batch_size=8",
        "--epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def proxy():
    """A real `search proxy` on a free port in front of a fresh database: (grpc URL, database URL)."""
    import os

    with fresh_database("bloodsearch_proxy") as db:
        port = free_port()
        proc = subprocess.Popen(search_cmd("proxy", "--port", str(port), "--threads", "4"), stderr=subprocess.PIPE,
                                text=True, start_new_session=True, env={**os.environ, "SEARCH_STORAGE": pg_url(db)})
        try:
            ready = proc.stderr.readline()  # printed once it listens
            assert f"grpc://127.0.0.1:{port}" in ready and "postgresql+psycopg://" in ready, ready + proc.stderr.read()
            yield f"grpc://127.0.0.1:{port}", pg_url(db)
        finally:
            stop_process_group(proc)


@pytest.mark.slow
def test_a_launch_through_the_proxy_lands_each_trial_once_in_the_database(proxy, tmp_path):
    from preprocessing.synthetic import make_split_dataset

    url, database = proxy
    make_split_dataset(tmp_path / "data", cells_per_class=4, copies=2)
    done = subprocess.run(search_cmd("launch", *TINY, "--study-name", "proxied", "--trials", "2", "--workers", "2",
                                     "--data-dir", "data", "--storage", url, "--tracking-uri",
                                     f"sqlite:///{tmp_path / 'mlflow.db'}", "--heartbeat-interval", "1"),
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    trials = optuna.load_study(study_name="proxied", storage=database).get_trials()  # the database itself
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert sorted(t.number for t in trials) == [0, 1] and len({t._trial_id for t in trials}) == 2
    assert all("bloodsearch:heartbeat" in t.system_attrs for t in trials)  # beats went through the proxy
    listed = subprocess.run(search_cmd("studies", "--storage", url), capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "proxied" in listed.stdout, listed.stderr


def test_a_trial_that_stops_beating_is_failed_and_retried_through_the_proxy(proxy, monkeypatch):
    import search.stores.proxy as proxy_module
    from search.stores.storage import open_storage

    clock = [1000.0]
    monkeypatch.setattr(proxy_module, "_now", lambda: clock[0])
    storage = open_storage(proxy[0], heartbeat_interval=1, grace_period=5)
    study = optuna.create_study(study_name="stale", storage=storage)
    dead, alive = study.ask(), study.ask()
    optuna.storages.fail_stale_trials(study)  # first sight of both
    clock[0] += 6
    storage.record_heartbeat(alive._trial_id)
    optuna.storages.fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials()}
    S = optuna.trial.TrialState
    assert states[dead.number] == S.FAIL and states[alive.number] == S.RUNNING
    retry = [t for t in study.get_trials() if t.state == S.WAITING]
    assert len(retry) == 1 and retry[0].system_attrs["failed_trial"] == dead.number


def test_the_reads_between_two_trials_are_one_get_trials_and_a_write_is_seen_at_once(proxy, monkeypatch):
    """A worker reads the study three times between two trials (stop rule, stale check, a
    queued trial); through the proxy each read returns every running trial, so the client
    answers a read within FRESH_FOR_S from its last one, unless it has written since."""
    from collections import Counter

    import search.stores.proxy as proxy_module
    from search.stores.storage import open_storage

    clock = [1000.0]
    monkeypatch.setattr(proxy_module, "_now", lambda: clock[0])
    storage = open_storage(proxy[0])
    study = optuna.create_study(study_name="fresh", storage=storage)
    calls: Counter = Counter()

    class Counting:
        def __init__(self, stub) -> None:
            self.stub = stub

        def __getattr__(self, name: str):
            calls[name] += 1
            return getattr(self.stub, name)

    storage._cache.grpc_client = Counting(storage._cache.grpc_client)
    S = optuna.trial.TrialState
    mine = study.ask()
    calls.clear()
    for states in ((S.RUNNING, S.WAITING), (S.RUNNING,), (S.WAITING,)):
        study.get_trials(deepcopy=False, states=states)
    assert calls["GetTrials"] == 1
    study.tell(mine, 1.0)  # this client's write: the next read asks the proxy
    assert [t.state for t in study.get_trials(deepcopy=False)] == [S.COMPLETE] and calls["GetTrials"] == 2
    optuna.load_study(study_name="fresh", storage=open_storage(proxy[0])).ask()  # another worker's trial
    assert len(study.get_trials(deepcopy=False)) == 1  # within FRESH_FOR_S of the last read
    clock[0] += proxy_module.FRESH_FOR_S
    assert [t.state for t in study.get_trials(deepcopy=False)] == [S.COMPLETE, S.RUNNING]


def test_an_unreachable_proxy_is_one_line(tmp_path):
    url = f"grpc://127.0.0.1:{free_port()}"
    done = subprocess.run(search_cmd("studies", "--storage", url), capture_output=True, text=True, timeout=120)
    one_line_error(done, url, "no storage proxy", "search proxy")
    done = subprocess.run(search_cmd("studies", "--storage", "grpc://user:Pw0rd1234@127.0.0.1:1/db"),
                          capture_output=True, text=True, timeout=120)
    assert "Pw0rd1234" not in one_line_error(done, "grpc://host:port")


def test_past_postgresqls_connections_the_error_names_the_proxy(monkeypatch):
    from sqlalchemy.exc import OperationalError

    import search.stores.storage as storage_module
    from search.errors import SearchError

    refusal = 'connection failed: connection to server at "db", port 5432 failed: FATAL:  sorry, too many clients already'

    class Refusing:
        def connect(self):
            raise OperationalError("SELECT 1", {}, Exception(refusal))

        def dispose(self):
            pass

    monkeypatch.setattr(storage_module, "create_engine", lambda *args, **kwargs: Refusing())
    with pytest.raises(SearchError) as raised:
        storage_module.check_storage("postgresql+psycopg://u:secret123@db:5432/optuna")
    line = str(raised.value)
    assert "\n" not in line and "search proxy" in line and "grpc://" in line and "secret123" not in line
    reserved = Exception("FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute")
    assert "search proxy" in storage_module.error_line(OperationalError("x", {}, reserved))
    # Optuna words a refused connection during a commit as bad data; the cause says what it was.
    try:
        try:
            raise OperationalError("COMMIT", {}, Exception(refusal))
        except OperationalError as cause:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from cause
    except optuna.exceptions.StorageInternalError as exc:
        assert "search proxy" in storage_module.error_line(exc)
