"""One process of simulated workers for `benchmarks/scale.py --simulate`.

A simulated worker is a thread that runs `search.running.worker.run_worker`, our worker's
real code path (its own storage opened with `open_storage`, so its own connection pool or gRPC
channel; the study loaded; `study.optimize` with Optuna's heartbeat thread and stale-trial
check, our StopRules, and `Objective.__call__`: the surplus claim, the study's real suggest,
the TrialRecorder's user attributes, a TrialRun), with four seams replaced:

- `Objective._train` sleeps for the trial's length instead of training, then records one
  FitResult as a trained model would;
- MLflow is a no-op tracker: the tracking server is another service, not measured here;
- no data set (the sleep needs none) and no U-Net;
- `gc.collect` after each trial is skipped: in a real worker it costs only its own process,
  here it would stop every thread of the process.

Threads share a process's interpreter and GIL, so a simulated worker's latency includes
waiting for its siblings: the figures are an upper bound of what one real worker process sees.

Reads the settings (storage URL included) as one JSON line on standard input; writes one JSON
object on standard output: each ask and tell latency, each trial it saw completed, errors.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import random
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class NullTracker:
    """MLflow left out: every call succeeds and does nothing."""

    def __init__(self, uri: str | None = None) -> None:
        self.uri = uri

    def start_trial(self, *args, **kwargs) -> str:
        return uuid.uuid4().hex

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


class Measurements:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ask: list[float] = []
        self.tell: list[float] = []
        self.completed: list[tuple[int, float]] = []  # (trial number, value) told COMPLETE
        self.errors: Counter = Counter()
        self.exits: Counter = Counter()
        self.rpcs: Counter = Counter()  # through the storage proxy: gRPC calls by name

    def add(self, kind: str, seconds: float) -> None:
        with self.lock:
            getattr(self, kind).append(seconds)


def install_seams(trial_seconds: float, m: Measurements) -> None:
    import optuna
    import optuna.study._optimize as optimize_module

    import search.running.data
    import search.running.objective as objective_module
    import search.running.unet
    import search.stores.tracking
    from search.record import FitResult

    def sleep_train(self, trial, recorder, config, seed, run, name, origin) -> float:
        seconds = trial_seconds * random.uniform(0.5, 1.5)  # workers drift apart, as real ones do
        time.sleep(seconds)
        recorder.epoch(1)
        value = random.random()
        recorder.fit(FitResult(seed=seed, val_accuracy=value, epochs_run=1, best_epoch=1, converged=True,
                               train_seconds=seconds), run)
        return value

    objective_module.Objective._train = sleep_train
    search.stores.tracking.Tracker = NullTracker
    search.running.data.DataProvider = lambda *args, **kwargs: None
    search.running.unet.StudyUnets = lambda *args, **kwargs: None
    gc.collect = lambda *args, **kwargs: 0

    ask = optuna.study.Study.ask

    def timed_ask(self, *args, **kwargs):
        started = time.perf_counter()
        trial = ask(self, *args, **kwargs)
        m.add("ask", time.perf_counter() - started)
        return trial

    tell = optimize_module._tell_with_warning

    def timed_tell(study, trial, value_or_values=None, state=None, **kwargs):
        started = time.perf_counter()
        result = tell(study, trial, value_or_values, state, **kwargs)
        m.add("tell", time.perf_counter() - started)
        if result[0] == optuna.trial.TrialState.COMPLETE:
            number = trial if isinstance(trial, int) else trial.number
            with m.lock:
                m.completed.append((number, float(result[1][0])))
        return result

    optuna.study.Study.ask = timed_ask
    optimize_module._tell_with_warning = timed_tell

    import search.stores.proxy as proxy_module

    stub_method = proxy_module._OutageStub.__getattr__

    def counted(self, name: str):
        with m.lock:
            m.rpcs[name] += 1
        return stub_method(self, name)

    proxy_module._OutageStub.__getattr__ = counted


def one_worker(settings, index: int, delay: float, m: Measurements) -> None:
    from search.running.worker import run_worker
    from search.stores.storage import STORAGE_ERRORS, error_line

    time.sleep(delay)
    try:
        code = run_worker(settings, max_trials=settings.trials, timeout=None, sampler_seed=index)
        with m.lock:
            m.exits[str(code)] += 1
    except STORAGE_ERRORS as exc:
        with m.lock:
            m.errors[error_line(exc)[:300]] += 1
    except Exception as exc:  # noqa: BLE001  (counted and reported, never hidden)
        with m.lock:
            m.errors[f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"] += 1


def main() -> None:
    p = argparse.ArgumentParser(description="simulated workers: threads running run_worker with sleep-trials")
    p.add_argument("--workers", type=int, required=True, help="threads (simulated workers) in this process")
    p.add_argument("--first-index", type=int, default=0, help="this process's first worker index (sampler seeds)")
    p.add_argument("--trial-seconds", type=float, default=10.0)
    p.add_argument("--ramp", type=float, default=10.0, help="workers start spread over this many seconds")
    p.add_argument("--fresh-for", type=float, help="through the proxy: search.stores.proxy.FRESH_FOR_S (0: Optuna's "
                                                   "client, every read asks the proxy)")
    args = p.parse_args()
    if args.fresh_for is not None:
        import search.stores.proxy

        search.stores.proxy.FRESH_FOR_S = args.fresh_for
    logging.basicConfig(level=logging.ERROR)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    from search.settings import SearchSettings

    settings = SearchSettings.from_payload(sys.stdin.readline())
    m = Measurements()
    install_seams(args.trial_seconds, m)
    threading.stack_size(512 * 1024)  # a thousand threads in a few processes
    threads = [threading.Thread(target=one_worker, args=(settings, args.first_index + i,
                                                         random.uniform(0, args.ramp), m), daemon=True)
               for i in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"ask": m.ask, "tell": m.tell, "completed": m.completed, "errors": dict(m.errors),
                      "exits": dict(m.exits), "rpcs": dict(m.rpcs)}))


if __name__ == "__main__":
    main()
