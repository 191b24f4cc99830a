"""Opening a storage: launches that start at the same moment on a new, empty storage."""
import multiprocessing as mp

import pytest
from sqlalchemy.exc import IntegrityError

import search.stores.storage as storage_module
from search.stores.storage import open_storage


def test_a_schema_collision_is_retried(tmp_path, monkeypatch):
    real, calls = storage_module.RDBStorage, []

    def collide_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed"))
        return real(*args, **kwargs)

    monkeypatch.setattr(storage_module, "RDBStorage", collide_once)
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(calls) == 2 and storage.get_all_studies() == []


def _open(url, barrier, results):
    barrier.wait()
    try:
        open_storage(url)
        results.put("ok")
    except Exception as exc:  # what the launch would print
        results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("attempt", range(3))
def test_launches_opening_a_new_storage_together_all_succeed(tmp_path, attempt):
    ctx = mp.get_context("spawn")  # fork from a threaded pytest can deadlock
    url, n = f"sqlite:///{tmp_path / 'optuna.db'}", 4
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_open, args=(url, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert outcomes == ["ok"] * n
