"""Real local services for the test suite and the benchmarks: a fresh database on the
machine's PostgreSQL (and stopping or starting that cluster) and an `mlflow server` on
127.0.0.1 with its backend in PostgreSQL. Here, not in the installed package: nothing a user
installs should be able to stop their database."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

PG_HOST, PG_PORT = os.environ.get("PGHOST", "127.0.0.1"), int(os.environ.get("PGPORT", "5432"))
PG_USER = os.environ.get("PGUSER", "postgres")


# MLflow 3's server also starts GenAI job runners (huey consumers, each with a pool of
# database connections); tracking needs none of them, and they exhaust max_connections.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def search_cmd(*args: str) -> list[str]:
    """The `search` CLI of this checkout, as a subprocess command."""
    return [sys.executable, "-m", "search.cli", *args]


def pg_url(database: str) -> str:
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def _admin():
    import psycopg

    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True,
                           connect_timeout=5)


def pg_available() -> bool:
    try:
        _admin().close()
        return True
    except Exception:
        return False


@contextmanager
def fresh_database(prefix: str = "bloodsearch_test"):
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        try:
            with _admin() as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        except Exception:
            pass  # the server may be restarting in an outage test; the database is disposable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout}s")


@contextmanager
def mlflow_server(backend_db: str, workdir: Path):
    port = free_port()
    artifacts = workdir / "mlflow-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    log = (workdir / f"mlflow-server-{port}.log").open("w")
    proc = subprocess.Popen([mlflow, "server", "--backend-store-uri", pg_url(backend_db),
                             "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **MLFLOW_SERVER_ENV})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", timeout=120)
        yield url, proc
    finally:
        stop_process_group(proc)
        log.close()


def stop_process_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.wait()


def descendants(pid: int) -> list[int]:
    """pid and every process below it (workers run in sessions of their own, so not killpg)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], []))
    return found


def dump_stacks(pid: int) -> None:
    """Ask a stuck process tree to print its Python stacks (faulthandler on SIGUSR1)."""
    for p in descendants(pid):
        try:
            os.kill(p, 10)
        except ProcessLookupError:
            pass


def pg_cluster(action: str) -> None:
    """Stop or start the machine's PostgreSQL (the outage test)."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action], check=True,
                   capture_output=True, timeout=60)


def study_user_attrs(workdir: Path, name: str, storage: str | None = None) -> dict:
    """A study's user attributes and its trials', to check that nothing was written."""
    import optuna

    study = optuna.load_study(study_name=name, storage=storage or f"sqlite:///{workdir / 'optuna.db'}")
    return {"study": dict(study.user_attrs), "trials": [dict(t.user_attrs) for t in study.trials]}
