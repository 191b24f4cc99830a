"""Coordination cost of the search service: trials/hour with 1, 2 and 4 local workers on
PostgreSQL, and the per-trial overhead (trial wall time minus time inside Keras fit) on
SQLite vs PostgreSQL, with a tiny fixed model on synthetic images so training is not what
is measured.

    python benchmarks/scale.py [--trials 24] [--overhead-trials 21] [--json]

Needs PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres); creates and drops its own
databases. Everything runs through the real `search launch` CLI.

    python benchmarks/scale.py --simulate 10,100,1000 [--via direct,proxy] [--trial-seconds 10]
                               [--trials-per-worker 3] [--fresh-for 0,1] [--json]

The coordination cost of one study with many workers, directly on PostgreSQL and through the
storage proxy (`search proxy`, grpc://): simulated workers (threads running our worker's real
code path with sleep-trials instead of training: benchmarks/simulated_workers.py says exactly
what a simulated worker is), each study aiming at workers x --trials-per-worker trials. Says
trials per second, ask and tell latency p50/p99, peak database connections (pg_stat_activity,
polled every 0.5 s), trials lost or counted twice and, through the proxy, the GetTrials calls
per complete trial. Runs on a private PostgreSQL cluster
with the default max_connections of 100 (initdb as in benchmarks/chaos.py), so the machine's
PostgreSQL and whoever uses it are never short of connections.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # servicetools: local PostgreSQL and MLflow servers

import optuna  # noqa: E402

from preprocessing.synthetic import make_split_dataset  # noqa: E402
from search.record import S, TrialRecord, read_trials  # noqa: E402
from servicetools import fresh_database, pg_url  # noqa: E402

TINY = ["--study", "seed-fcn", "--param", "size=24x32", "--param", "width=0.125", "--param", "batch_size=16",
        "--param", "scaling=unit", "--epochs", "1", "--patience", "1", "--pruner", "none", "--log-models", "none",
        "--quiet"]


def launch(work: Path, storage: str, name: str, trials: int, workers: int, per_worker: int) -> float:
    env = {**os.environ, "BLOODSEARCH_CACHE_DIR": str(work / "cache"), "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "search.cli", "launch", *TINY, "--study-name", name,
                           "--trials", str(trials), "--workers", str(workers), "--trials-per-worker", str(per_worker),
                           "--data-dir", str(work / "data"), "--storage", storage,
                           "--tracking-uri", f"sqlite:///{work / (name + '-mlflow.db')}"],
                          cwd=work, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"launch failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


class ConnectionSampler:
    """Peak number of server connections to one database, sampled from pg_stat_activity."""

    def __init__(self, database: str, port: int = 5432) -> None:
        import threading

        self.database, self.port, self.peak, self._stop = database, port, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            while not self._stop.wait(0.5):
                n = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.database,)).fetchone()[0]
                self.peak = max(self.peak, n)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def trial_times(storage: str, name: str) -> tuple[list[TrialRecord], float]:
    trials = read_trials(optuna.load_study(study_name=name, storage=storage), states=(S.COMPLETE,))
    span = (max(t.completed for t in trials) - min(t.started for t in trials)).total_seconds()
    return trials, span


def overheads(trials) -> list[float]:
    """Trial wall time minus fit time, leaving out each worker process's first trial (cold)."""
    first_of_pid: dict[int, int] = {}
    for t in sorted(trials, key=lambda t: t.number):
        first_of_pid.setdefault(t.pid, t.number)
    return [(t.completed - t.started).total_seconds() - t.train_seconds
            for t in trials if first_of_pid[t.pid] != t.number]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=24, help="trials per worker-count run")
    p.add_argument("--overhead-trials", type=int, default=21, help="trials per storage for the overhead median")
    p.add_argument("--simulate", help="simulated worker counts, e.g. 10,100,1000 (see the module's docstring)")
    p.add_argument("--via", default="direct,proxy", help="with --simulate: direct, proxy or both")
    p.add_argument("--trial-seconds", type=float, default=10.0, help="with --simulate: each trial's mean sleep")
    p.add_argument("--trials-per-worker", type=int, default=3, help="with --simulate: the study's target / workers")
    p.add_argument("--threads-per-process", type=int, default=250, help="with --simulate")
    p.add_argument("--fresh-for", help="with --simulate, through the proxy: the client's snapshot time(s) in seconds, "
                                       "e.g. 0,1 (0: Optuna's client, every read a GetTrials); default as shipped")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.simulate:
        from benchmarks.scale_simulated import simulate

        simulate([int(n) for n in args.simulate.split(",")], args.via.split(","), args.trial_seconds,
                 args.trials_per_worker, args.threads_per_process, args.json,
                 [float(x) for x in args.fresh_for.split(",")] if args.fresh_for else [None])
        return
    result: dict = {"machine": f"{os.cpu_count()} cores", "throughput": {}, "overhead": {}}
    with tempfile.TemporaryDirectory(prefix="bloodsearch-scale-") as tmp:
        work = Path(tmp)
        make_split_dataset(work / "data", cells_per_class=6, copies=3)
        for workers in (1, 2, 4):
            with fresh_database("bloodsearch_bench") as db:
                storage = pg_url(db)
                with ConnectionSampler(db) as connections:
                    wall = launch(work, storage, f"w{workers}", args.trials, workers, per_worker=args.trials)
                trials, span = trial_times(storage, f"w{workers}")
                result["throughput"][workers] = {
                    "peak_db_connections": connections.peak,
                    "trials": len(trials), "launch_wall_s": round(wall, 1), "trials_span_s": round(span, 1),
                    "trials_per_hour": round(len(trials) / span * 3600),
                    "trials_per_hour_incl_startup": round(len(trials) / wall * 3600)}
                print(f"workers={workers}: {result['throughput'][workers]}", file=sys.stderr)
        for kind in ("sqlite", "postgresql"):
            with fresh_database("bloodsearch_bench") as db:
                storage = pg_url(db) if kind == "postgresql" else f"sqlite:///{work / 'overhead.db'}"
                launch(work, storage, f"o-{kind}", args.overhead_trials, 1, per_worker=args.overhead_trials)
                trials, _ = trial_times(storage, f"o-{kind}")
                values = overheads(trials)
                fit = [t.train_seconds for t in trials]
                result["overhead"][kind] = {"trials": len(values), "median_overhead_s": round(statistics.median(values), 3),
                                            "max_overhead_s": round(max(values), 3),
                                            "median_fit_s": round(statistics.median(fit), 3)}
                print(f"{kind}: {result['overhead'][kind]}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
        return
    print("\n| workers | trials | trials/hour (first start to last end) | trials/hour incl. start-up | peak connections |")
    print("|---|---|---|---|---|")
    for w, r in result["throughput"].items():
        print(f"| {w} | {r['trials']} | {r['trials_per_hour']} | {r['trials_per_hour_incl_startup']} "
              f"| {r['peak_db_connections']} |")
    print("\n| storage | warm trials | median overhead s | max overhead s | median fit s |")
    print("|---|---|---|---|---|")
    for k, r in result["overhead"].items():
        print(f"| {k} | {r['trials']} | {r['median_overhead_s']} | {r['max_overhead_s']} | {r['median_fit_s']} |")


if __name__ == "__main__":
    main()
