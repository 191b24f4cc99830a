"""Fault points for benchmarks/chaos.py: lets the soak's kill -9 land at a chosen moment.

The soak puts this folder first on PYTHONPATH of the launches it starts, so Python imports
this file in every process of the fleet; it does nothing unless CHAOS_TRAP_DIR is set and
the process is a search worker (`python -m search.running.worker`). It changes no behaviour: it
only looks for a trap file, <CHAOS_TRAP_DIR>/<pid>.json, that the soak writes to arm a trap
for one worker, {"phase": "mlflow" | "commit", "after": N}:

- "mlflow": the N-th answer the worker's main thread gets from the tracking server
  (any MLflow REST or artifact call of a trial) is held before MLflow's client sees it:
  the server has done the call, the worker never learns it;
- "commit": the N-th COMMIT of the worker's main thread to the study's database is held
  before it is sent: the transaction is complete and open, its commit never happens.

At that point the worker writes <pid>.caught (what it was doing) and waits, for at most
TRAP_HOLD_S, for the soak's kill -9 from outside. If none comes, it carries on unchanged.
The heartbeat thread is never held, so a held worker is alive to the study throughout.
"""
from __future__ import annotations

import os

TRAP_HOLD_S = 30.0


def _install() -> None:
    trap_dir = os.environ.get("CHAOS_TRAP_DIR")
    if not trap_dir:
        return
    try:
        with open("/proc/self/cmdline", "rb") as f:
            if b"search.running.worker" not in f.read():
                return
    except OSError:
        return

    import json
    import threading
    import time

    pid = os.getpid()
    trap_file = os.path.join(trap_dir, f"{pid}.json")
    state = {"seen": 0, "armed": None}

    def hit(phase: str, what: str) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if not os.path.exists(trap_file):
            state["armed"] = None
            return
        if state["armed"] is None:
            try:
                with open(trap_file) as f:
                    state["armed"] = json.load(f)
            except (OSError, ValueError):  # being written: look again next time
                return
            state["seen"] = 0
        trap = state["armed"]
        if trap.get("phase") != phase:
            return
        state["seen"] += 1
        if state["seen"] < int(trap.get("after", 1)):
            return
        tmp = os.path.join(trap_dir, f"{pid}.caught.tmp")
        with open(tmp, "w") as f:
            json.dump({"phase": phase, "what": what, "time": time.time()}, f)
        os.replace(tmp, os.path.join(trap_dir, f"{pid}.caught"))
        deadline = time.monotonic() + TRAP_HOLD_S
        while time.monotonic() < deadline and os.path.exists(trap_file):
            time.sleep(0.05)
        # Not killed: disarm and go on as if nothing happened.
        state["armed"] = None
        try:
            os.remove(trap_file)
        except OSError:
            pass

    try:
        import requests
    except ImportError:
        requests = None
    if requests is not None:
        from urllib.parse import urlparse

        send = requests.Session.send

        def traced_send(self, request, **kwargs):
            response = send(self, request, **kwargs)
            path = urlparse(request.url).path
            if "/mlflow" in path:
                hit("mlflow", f"{request.method} {path} -> HTTP {response.status_code}")
            return response

        requests.Session.send = traced_send

    try:
        import sqlalchemy
    except ImportError:
        return

    def before_commit(conn) -> None:
        hit("commit", "COMMIT of a study transaction (not sent)")

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "commit", before_commit)


_install()
