"""A worker process: joins a study and runs trials until the study has its count, or until
it has run its share of trials and the launcher replaces it (so TensorFlow's memory does
not pile up over hundreds of trials)."""
from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import re
import signal
import sys
import warnings

import optuna

from search.errors import SearchError
from search.quiet import quiet_psycopg
from search.running.requeue import requeue
from search.record import ACTIVE, read_trial
from search.running.threads import use_threads
from search.settings import SearchSettings
from search.stores.storage import STORAGE_ERRORS, error_line

# How the launcher starts a worker, and how it recognises one in /proc/<pid>/cmdline.
WORKER_MODULE = "search.running.worker"
# Optuna's two warnings for a failed trial (optuna/study/_optimize.py).
OPTUNA_FAILURE = re.compile(r"Trial \d+ failed with (parameters|value)")
EXIT_OK, EXIT_USAGE, EXIT_FAILING, EXIT_STORAGE, EXIT_INTERRUPTED = 0, 2, 3, 4, 130
MAX_CONSECUTIVE_FAILURES = 3
log = logging.getLogger("bloodsearch.worker")


def needs_work(study: optuna.Study, target: int) -> bool:
    """Whether the study still wants a worker: a queued (retried) trial nobody has started, or
    fewer finished and running trials than its target. A queued trial alone is reason to go
    on: counted as "in flight" it would stop every worker, and nobody would ever run it."""
    trials = study.get_trials(deepcopy=False, states=ACTIVE)
    return any(t.state == optuna.trial.TrialState.WAITING for t in trials) or len(trials) < target


class CloseRunAndRetry:
    """Heartbeat-stale trial: re-queue its parameters once and close its MLflow run FAILED."""

    def __init__(self, tracker) -> None:
        self.tracker = tracker

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        requeue(study, trial)
        run_id = read_trial(trial).run_id
        if run_id:
            self.tracker.close_if_running(run_id, "FAIL")


class StopRules:
    """Study callback: stop at the target count, or after repeated failures in this worker."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.failures = 0
        self.failing = False

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == optuna.trial.TrialState.FAIL and not read_trial(trial).surplus:
            self.failures += 1
            if self.failures >= MAX_CONSECUTIVE_FAILURES:
                self.failing = True
                study.stop()
        elif trial.state != optuna.trial.TrialState.FAIL:
            self.failures = 0
        # Running trials count too, so workers don't start trials past the target.
        if not needs_work(study, self.target):
            study.stop()


def run_worker(settings: SearchSettings, max_trials: int, timeout: float | None, sampler_seed: int | None) -> int:
    from studies import load_study

    from search.running.algorithms import make_pruner, make_sampler
    from search.running.data import DataProvider
    from search.running.objective import Objective
    from search.running.seeding import enqueued_count
    from search.running.unet import StudyUnets
    from search.stores.storage import open_storage
    from search.stores.tracking import Tracker

    tracker = Tracker(settings.tracking_uri)
    storage = open_storage(settings.storage, settings.heartbeat_interval, settings.grace_period,
                           stale_callback=CloseRunAndRetry(tracker))
    study = optuna.load_study(study_name=settings.study_name, storage=storage,
                              pruner=make_pruner(settings.pruner, settings.max_steps))
    # The study's known configurations lengthen TPE's random start-up.
    study.sampler = make_sampler(settings.sampler, sampler_seed, enqueued_count(study))
    if not needs_work(study, settings.trials):
        return EXIT_OK
    unets = StudyUnets(study, tracker, settings.cache_dir, settings.data_dir)
    objective = Objective(settings, load_study(settings.study), tracker,
                          DataProvider(settings.data_dir, settings.cache_dir, settings.val_fraction, settings.seed,
                                       unets=unets, cv=settings.cv, grouping=settings.grouping()))
    rules = StopRules(settings.trials)
    try:
        study.optimize(objective, n_trials=max_trials, timeout=timeout, callbacks=[rules],
                       catch=(Exception,), gc_after_trial=True)
    except KeyboardInterrupt:
        # The interrupted trial is FAIL and its run FAILED by now; queue its parameters
        # again so the next launch runs them.
        mine = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
                if (r := read_trial(t)).pid == os.getpid() and not r.surplus]
        if mine:
            requeue(study, mine[-1])
        return EXIT_INTERRUPTED
    return EXIT_FAILING if rules.failing else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {WORKER_MODULE}",
                                description="one worker process (started by search launch); reads its settings, "
                                            "storage URL included, as one JSON line on standard input")
    p.add_argument("--max-trials", type=int, default=5)
    p.add_argument("--timeout", type=float)
    p.add_argument("--sampler-seed", type=int)
    args = p.parse_args(argv)
    # `kill -USR1 <pid>` prints every thread's stack: the way to see where a stuck worker waits.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # SIGINT is how the launcher asks a worker to close its trial. A launcher started in the
    # background by a script (`search launch ... &`, nohup) hands its children SIGINT ignored,
    # and a worker that inherited that sat out the request until it was killed 120 s later.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s worker %(process)d %(levelname)s %(message)s")
    quiet_psycopg()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Optuna reports each failed trial with its whole stack, then "Trial N failed with value
    # None"; the objective says it in one line instead (the stack goes to the trial's MLflow
    # run), and a stop request is the launcher's to say.
    for handler in logging.getLogger("optuna").handlers:  # records of its child loggers pass here
        handler.addFilter(lambda record: not OPTUNA_FAILURE.match(record.getMessage()))
    # Heartbeat and retry are marked experimental in Optuna; we rely on them knowingly.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing notices for each new trial's model
    # On stdin, not argv: the storage URL may hold a password, and argv is public (ps).
    settings = SearchSettings.from_payload(sys.stdin.readline())
    use_threads(settings.threads)
    try:
        return run_worker(settings, args.max_trials, args.timeout, args.sampler_seed)
    except SearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except STORAGE_ERRORS as exc:
        # The launcher replaces this worker once the database answers again.
        print(f"worker {os.getpid()}: storage unreachable ({error_line(exc, settings.storage)})", file=sys.stderr)
        return EXIT_STORAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
