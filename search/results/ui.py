"""`search ui`: the MLflow UI on the configured tracking store (and optuna-dashboard on the
storage when it is installed), on 127.0.0.1, until Ctrl-C."""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from search.urls import redact
from search.errors import SearchError

# The UI needs none of MLflow 3's GenAI job runners, which would start with it.
MLFLOW_UI_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
STOP_GRACE_S = 10.0


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SearchError(f"{url}: the server exited with code {proc.returncode} before answering")
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.3)
    raise SearchError(f"{url}: no answer within {timeout:.0f} s")


def run_ui(tracking_uri: str, storage: str, port: int, dashboard_port: int) -> int:
    procs: list[subprocess.Popen] = []
    urls: list[str] = []
    bindir = Path(sys.executable).parent
    previous = signal.signal(signal.SIGTERM, _interrupt)  # stop as cleanly as on Ctrl-C
    try:
        if tracking_uri.startswith(("http://", "https://")):
            urls.append(f"MLflow UI (the tracking server): {redact(tracking_uri)}")
        else:
            if not _port_free(port):
                raise SearchError(f"--port {port} is in use on 127.0.0.1; pick another")
            mlflow = shutil.which("mlflow", path=str(bindir)) or "mlflow"
            # The store's URL goes by environment (MLflow's own variable for
            # --backend-store-uri), readable by this user only, never by ps.
            proc = subprocess.Popen([mlflow, "ui", "--host", "127.0.0.1", "--port", str(port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                    env={**os.environ, **MLFLOW_UI_ENV, "MLFLOW_BACKEND_STORE_URI": tracking_uri})
            procs.append(proc)
            _wait(f"http://127.0.0.1:{port}/health", proc)
            urls.append(f"MLflow UI: http://127.0.0.1:{port}")
        if importlib.util.find_spec("optuna_dashboard") is not None:
            if not _port_free(dashboard_port):
                raise SearchError(f"--dashboard-port {dashboard_port} is in use on 127.0.0.1; pick another")
            proc = _start_dashboard(storage, dashboard_port)
            procs.append(proc)
            _wait(f"http://127.0.0.1:{dashboard_port}/", proc)
            urls.append(f"optuna-dashboard: http://127.0.0.1:{dashboard_port}")
        else:
            urls.append("optuna-dashboard: not installed (pip install optuna-dashboard)")
        for line in urls:
            print(line, flush=True)
            if line.startswith("MLflow UI") and "://" in line:
                for link in study_runs_links(tracking_uri, line.rsplit(" ", 1)[-1]):
                    print(f"  {link}", flush=True)
            elif line.startswith("optuna-dashboard: http"):
                for link in dashboard_links(storage, line.rsplit(" ", 1)[-1]):
                    print(f"  {link}", flush=True)
        print("Ctrl-C to stop.", flush=True)
        while procs and all(p.poll() is None for p in procs):
            time.sleep(0.5)
        if not procs:  # nothing local to serve: the tracking server has its own UI
            return 0
        raise SearchError("a UI server stopped on its own")
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        # Each server runs in its own process group with its children (uvicorn workers):
        # stop the whole group, not just its first process.
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        # One grace period for all servers, not one each, so Ctrl-C returns within it however
        # many servers run.
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()


# MLflow 3's UI opens an experiment in its GenAI view (traces) unless the link, or the switch
# "GenAI | Model training" at its top, says model training: the study's link says it.
RUNS_VIEW = "?workflowType=machine_learning"
MAX_LINKS = 20


def study_runs_links(tracking_uri: str, base: str) -> list[str]:
    """`study NAME: <the study's experiment, opened on its training runs>` for each study in
    the tracking store (best effort: a store that cannot be listed gives no links)."""
    try:
        from mlflow import MlflowClient

        experiments = [e for e in MlflowClient(tracking_uri).search_experiments(max_results=1000)
                       if "bloodsearch.study" in e.tags]
    except Exception:
        return []
    lines = [f"study {e.name}: {base.rstrip('/')}/#/experiments/{e.experiment_id}{RUNS_VIEW}"
             for e in sorted(experiments, key=lambda e: e.name)]
    return lines[:MAX_LINKS] + ([f"... and {len(lines) - MAX_LINKS} more"] if len(lines) > MAX_LINKS else [])


def dashboard_links(storage: str, base: str) -> list[str]:
    """`study NAME: <its optuna-dashboard page>` for each study in the storage (best effort)."""
    try:
        from optuna.storages import RDBStorage

        from search.stores.storage import is_proxy, open_storage, study_names

        rdb = open_storage(storage) if is_proxy(storage) else RDBStorage(storage)
        names = sorted(study_names(rdb))
        lines = [f"study {n}: {base.rstrip('/')}/dashboard/studies/{rdb.get_study_id_from_name(n)}" for n in names]
    except Exception:
        return []
    return lines[:MAX_LINKS] + ([f"... and {len(lines) - MAX_LINKS} more"] if len(lines) > MAX_LINKS else [])


def _start_dashboard(storage: str, port: int) -> subprocess.Popen:
    """optuna-dashboard (search.results.dashboard) with the storage URL on its standard
    input: optuna-dashboard's own command takes it as an argument, which ps shows."""
    proc = subprocess.Popen([sys.executable, "-m", "search.results.dashboard", "--port", str(port)],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, text=True)
    try:
        proc.stdin.write(storage + "\n")
        proc.stdin.close()
    except BrokenPipeError:
        pass  # it died at start: _wait says so
    return proc


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
