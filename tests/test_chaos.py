"""The chaos soak, short: real faults (kill -9 of workers and of the launcher, a PostgreSQL
restart, a tracking-server restart) against the real fleet on a private PostgreSQL cluster,
and nothing lost. benchmarks/chaos.py without --short is the full soak (README, "Resume and
faults")."""
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Its own group: it starts its own PostgreSQL and tracking server and keeps both CPUs busy.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("chaos")]


def _pg_binaries() -> bool:
    return bool(glob.glob("/usr/lib/postgresql/*/bin/initdb") or shutil.which("initdb"))


@pytest.mark.skipif(not _pg_binaries(), reason="no PostgreSQL server binaries (initdb) on this machine")
def test_short_soak_loses_nothing():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "chaos.py"), "--short", "--seed", "1", "--json"],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=900)
    lines = done.stdout.strip().splitlines()
    if done.returncode == 77:
        pytest.skip(json.loads(lines[-1])["skipped"])
    assert lines, f"no JSON line (exit {done.returncode}):\n{done.stderr[-5000:]}"
    result = json.loads(lines[-1])
    faults = result["faults"]
    assert faults["worker_kill"] == 2 and faults["launcher_kill"] == 1, faults
    assert faults["pg_restart"] == 1 and faults["mlflow_restart"] == 1, faults
    assert faults["worker_kill_in_mlflow"] + faults["worker_kill_in_commit"] >= 1, faults
    assert all(n > 0 for n in result["storage_errors_seen_per_pg_restart"]), "a PostgreSQL restart went unnoticed"
    assert result["complete"] + result["pruned"] >= result["trials_target"] == 12
    losses = {k: result[k] for k in ("running_left", "duplicates", "complete_without_finished_run",
                                     "runs_left_running", "retried_with_other_params")}
    assert losses == dict.fromkeys(losses, 0), (losses, result["problems"], done.stderr[-5000:])
    assert result["final_launch_exit"] == 0
    assert done.returncode == 0 and not result["problems"], (result["problems"], done.stderr[-5000:])
