"""`benchmarks/scale.py --simulate`: one study, N simulated workers, directly on PostgreSQL and
through the storage proxy; what each costs (see scale.py's docstring and simulated_workers.py)."""
from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # servicetools: local PostgreSQL and MLflow servers
CHILD = Path(__file__).resolve().parent / "simulated_workers.py"
MAX_CONNECTIONS = 100  # PostgreSQL's default: the ceiling a direct study meets
PROXY_THREADS = 16
RUN_TIMEOUT_S = 1200


def percentile(values: list[float], q: int) -> float | None:
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def _settings(storage: str, target: int):
    from search.settings import SearchSettings

    # The random sampler: a sampler's own CPU is spent on each worker's machine, and here two
    # cores carry every worker; the storage calls are the same for every sampler but TPE's
    # extra reads of finished trials.
    return SearchSettings(study="fast", study_name="simulated", storage=storage, tracking_uri="unused://",
                          data_dir="/nonexistent", trials=target, sampler="random", pruner="none", epochs=1,
                          log_models="none", heartbeat_interval=10, grace_period=30)


def _create_study(url: str, target: int) -> None:
    import optuna

    from search.settings import PARENT_RUN_ATTR, SETTINGS_ATTR
    from search.stores.storage import open_storage

    storage = open_storage(url)
    study = optuna.create_study(study_name="simulated", storage=storage, direction="maximize")
    study.set_user_attr(SETTINGS_ATTR, _settings(url, target).to_json())
    study.set_user_attr(PARENT_RUN_ATTR, "simulated-parent-run")
    storage.engine.dispose()  # its idle connections would count against the workers' ceiling


def _start_proxy(direct: str) -> tuple[subprocess.Popen, str]:
    from servicetools import free_port, search_cmd

    port = free_port()
    proc = subprocess.Popen(search_cmd("proxy", "--port", str(port), "--threads", str(PROXY_THREADS)), cwd=ROOT,
                            env={**os.environ, "SEARCH_STORAGE": direct, "PYTHONPATH": str(ROOT)},
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    line = proc.stderr.readline()
    if "storage proxy:" not in line:
        raise SystemExit(f"search proxy did not start: {line}{proc.stderr.read()[-2000:]}")
    return proc, f"grpc://127.0.0.1:{port}"


def _run_children(storage: str, workers: int, target: int, trial_seconds: float, per_process: int,
                  fresh_for: float | None) -> list[dict]:
    processes = math.ceil(workers / per_process)
    ramp = max(2.0, workers / 50)
    payload = _settings(storage, target).to_payload()
    children, first = [], 0
    for k in range(processes):
        count = workers // processes + (1 if k < workers % processes else 0)
        proc = subprocess.Popen([sys.executable, str(CHILD), "--workers", str(count), "--first-index", str(first),
                                 "--trial-seconds", str(trial_seconds), "--ramp", str(ramp),
                                 *(["--fresh-for", str(fresh_for)] if fresh_for is not None else [])], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"},
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdin.write(payload + "\n")
        proc.stdin.close()
        proc.stdin = None  # written: communicate() below must not flush it again
        children.append(proc)
        first += count
    results = []
    for proc in children:
        try:
            out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        results.append(json.loads(lines[-1]) if lines else {"ask": [], "tell": [], "completed": [], "exits": {},
                                                            "errors": {f"process exit {proc.returncode}: "
                                                                       f"{err.strip()[-300:]}": 1}})
    return results


def _check(url: str, target: int, told: list[tuple[int, float]]) -> dict:
    """What the database holds against what the workers were told: every trial once."""
    import optuna

    from search.record import read_trial

    study = optuna.load_study(study_name="simulated", storage=url)
    trials = study.get_trials(deepcopy=False)
    complete = {t.number: t.value for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    told_numbers = [n for n, _ in told]
    lost = sum(1 for n, v in told if complete.get(n) != v)
    duplicated = (len(told_numbers) - len(set(told_numbers))) + max(0, len(complete) - target)
    span = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    seconds = ((max(t.datetime_complete for t in span) - min(t.datetime_start for t in span)).total_seconds()
               if span else 0)
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    return {"complete": len(complete), "target": target, "lost": lost, "duplicated": duplicated,
            "not_told": len(set(complete) - set(told_numbers)),
            "failed_surplus": sum(1 for t in failed if read_trial(t).surplus),
            "failed_other": sum(1 for t in failed if not read_trial(t).surplus),
            "left_running": sum(1 for t in trials if t.state == optuna.trial.TrialState.RUNNING),
            "trials_per_s": round(len(complete) / seconds, 2) if seconds else None}


def run_one(pg, via: str, workers: int, trial_seconds: float, per_worker: int, per_process: int,
            fresh_for: float | None = None) -> dict:
    """fresh_for: through the proxy, search.stores.proxy.FRESH_FOR_S in the workers (None: as shipped)."""
    from benchmarks.scale import ConnectionSampler

    database = f"sim_{via}_{workers}_{int(time.time())}"
    pg.create_databases(database)
    direct = pg.url(database)
    target = workers * per_worker
    _create_study(direct, target)
    proxy = None
    try:
        storage = direct
        if via == "proxy":
            proxy, storage = _start_proxy(direct)
            started_cpu = _cpu_seconds(proxy.pid)  # its imports and start-up are not the study's
        started = time.perf_counter()
        with ConnectionSampler(database, pg.port) as connections:
            results = _run_children(storage, workers, target, trial_seconds, per_process,
                                    fresh_for if via == "proxy" else None)
        wall = time.perf_counter() - started
    finally:
        proxy_cpu = None
        if proxy is not None:
            from servicetools import stop_process_group

            now = _cpu_seconds(proxy.pid)
            proxy_cpu = now - started_cpu if now is not None and started_cpu is not None else None
            stop_process_group(proxy)
    ask = [x for r in results for x in r["ask"]]
    tell = [x for r in results for x in r["tell"]]
    told = [tuple(c) for r in results for c in r["completed"]]
    errors: dict[str, int] = {}
    exits: dict[str, int] = {}
    rpcs: dict[str, int] = {}
    for r in results:
        for k, v in r.get("rpcs", {}).items():
            rpcs[k] = rpcs.get(k, 0) + v
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
        for k, v in r["exits"].items():
            exits[k] = exits.get(k, 0) + v
    checked = _check(direct, target, told)
    _drop(pg, database)  # and with it this process's idle connections to it
    if via == "proxy":
        from search.stores.proxy import FRESH_FOR_S

        fresh_for = FRESH_FOR_S if fresh_for is None else fresh_for
    return {"via": via if via != "proxy" else f"proxy (snapshot {fresh_for:g} s)", "fresh_for_s": fresh_for,
            "workers": workers, "processes": math.ceil(workers / per_process), "wall_s": round(wall, 1),
            **checked, "peak_db_connections": connections.peak,
            "ask_p50_ms": _ms(percentile(ask, 50)), "ask_p99_ms": _ms(percentile(ask, 99)),
            "tell_p50_ms": _ms(percentile(tell, 50)), "tell_p99_ms": _ms(percentile(tell, 99)),
            "asks": len(ask), "workers_ended_on_error": sum(errors.values()), "errors": errors, "exits": exits,
            "rpcs": rpcs,
            # The proxy's own CPU: how many cores one proxy needs at this load (the next step
            # of issue 28's table is a machine where it is not sharing cores with its clients).
            "proxy_cpu_s": proxy_cpu, "proxy_cores_busy": round(proxy_cpu / wall, 2) if proxy_cpu else None,
            "proxy_cpu_ms_per_trial": round(1000 * proxy_cpu / checked["complete"], 1)
            if proxy_cpu and checked["complete"] else None,
            "get_trials_per_trial": round(rpcs["GetTrials"] / checked["complete"], 1)
            if rpcs.get("GetTrials") and checked["complete"] else None}


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a live process, from /proc (Linux); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _drop(pg, database: str) -> None:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))
        conn.execute(f'DROP DATABASE IF EXISTS "{database}"')


def simulate(counts: list[int], vias: list[str], trial_seconds: float, per_worker: int, per_process: int,
             as_json: bool, fresh_for: list[float | None] = (None,)) -> None:
    from benchmarks.chaos import PrivatePostgres, quiet_port

    pg = PrivatePostgres(quiet_port(set()))
    pg.init()
    with (pg.data / "postgresql.conf").open("a") as conf:
        conf.write(f"max_connections = {MAX_CONNECTIONS}\n")  # the default again, after chaos's 200
    pg.start()
    rows = []
    try:
        for workers in counts:
            for via, fresh in [(v, f) for v in vias for f in (fresh_for if v == "proxy" else [None])]:
                row = run_one(pg, via, workers, trial_seconds, per_worker, per_process, fresh)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        pg.destroy()
    machine = f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end"
    if as_json:
        print(json.dumps({"machine": machine, "trial_seconds": trial_seconds, "rows": rows}))
        return
    print(f"\n{machine}; trials sleep {trial_seconds:g} s on average; PostgreSQL max_connections {MAX_CONNECTIONS}")
    print("| via | workers | trials (target) | trials/s | ask p50 / p99 ms | tell p50 / p99 ms | peak DB connections "
          "| lost | duplicated | workers ended on an error | GetTrials per trial | proxy CPU ms per trial (cores busy) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        proxy = f"{r['proxy_cpu_ms_per_trial']} ({r['proxy_cores_busy']})" if r["proxy_cpu_ms_per_trial"] else "-"
        print(f"| {r['via']} | {r['workers']} | {r['complete']} ({r['target']}) | {r['trials_per_s']} "
              f"| {r['ask_p50_ms']} / {r['ask_p99_ms']} | {r['tell_p50_ms']} / {r['tell_p99_ms']} "
              f"| {r['peak_db_connections']} | {r['lost']} | {r['duplicated']} | {r['workers_ended_on_error']} "
              f"| {r['get_trials_per_trial'] if r['get_trials_per_trial'] is not None else '-'} "
              f"| {proxy} |")
