"""The launching process: checks everything, creates or resumes the study, keeps N worker
processes running until the study has its trial count, shows progress, and stops cleanly.

It never imports TensorFlow, so it stays small however long the study runs.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import optuna

from preprocessing import DataError, load_dataset, validation_split
from studies import ParamError, StudyError, check_params, load_study

from .algorithms import check_pruner, check_sampler, make_pruner
from .errors import SearchError
from .progress import progress_line, snapshot
from .settings import PARENT_RUN_ATTR, SETTINGS_ATTR, SearchSettings
from .storage import STORAGE_ERRORS, check_storage, is_sqlite, open_storage
from .tracking import Tracker, check_tracking
from .worker import EXIT_FAILING, EXIT_INTERRUPTED, EXIT_USAGE, CloseRunAndRetry

ROOT = Path(__file__).resolve().parents[1]
S = optuna.trial.TrialState
STORAGE_OUTAGE_S = 120  # how long the launcher rides out an unreachable database
MAX_WORKER_CRASHES = 5


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def validate(settings: SearchSettings) -> None:
    """Every check that can fail on user input, before anything is created."""
    try:
        suggest = load_study(settings.study)
        check_params(suggest, settings.params, settings.study)
        data = load_dataset(settings.data_dir, record_dir=settings.cache_dir)
        validation_split(data.train, settings.val_fraction, settings.seed)
    except (StudyError, ParamError, DataError) as exc:
        raise SearchError(str(exc)) from None
    if settings.trials < 1:
        raise SearchError(f"--trials {settings.trials} must be at least 1")
    if settings.workers < 1:
        raise SearchError(f"--workers {settings.workers} must be at least 1")
    if settings.repeats < 1:
        raise SearchError(f"--repeats {settings.repeats} must be at least 1")
    check_sampler(settings.sampler)
    check_pruner(settings.pruner, settings.repeats)
    check_storage(settings.storage)
    check_tracking(settings.tracking_uri)


def open_study(settings: SearchSettings, tracker: Tracker, create: bool, store_settings: bool = True) -> optuna.Study:
    """Create or load the study. store_settings: record these settings for `resume` (a launch
    or resume does; a joining worker, whose data dir or tracking URI may be its own, does not)."""
    storage = open_storage(settings.storage, settings.heartbeat_interval, settings.grace_period,
                           stale_callback=CloseRunAndRetry(tracker))
    pruner = make_pruner(settings.pruner, settings.epochs)
    try:
        study = optuna.load_study(study_name=settings.study_name, storage=storage, pruner=pruner)
    except KeyError:
        if not create:
            raise SearchError(f"no study named {settings.study_name!r} in {settings.storage}") from None
        study = optuna.create_study(study_name=settings.study_name, storage=storage, direction="maximize",
                                    pruner=pruner, load_if_exists=True)
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored and json.loads(stored)["study"] != settings.study:
        raise SearchError(f"study {settings.study_name!r} was launched with --study {json.loads(stored)['study']}, "
                          f"not {settings.study}; pick another --study-name")
    if store_settings or not stored:
        study.set_user_attr(SETTINGS_ATTR, settings.to_json())
    if PARENT_RUN_ATTR not in study.user_attrs:
        study.set_user_attr(PARENT_RUN_ATTR, tracker.parent_run(settings.study_name, settings.mlflow_params()))
    return study


def _pid_is_worker(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"search.worker" in cmdline


def recover_local_orphans(study: optuna.Study, tracker: Tracker, live: set[int]) -> list[int]:
    """Fail RUNNING trials whose worker on this host is gone, without waiting out the grace
    period; queue their parameters again and close their runs FAILED."""
    host, recovered = socket.gethostname(), []
    callback = CloseRunAndRetry(tracker)
    for t in study.get_trials(deepcopy=False, states=(S.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or pid is None or pid in live or _pid_is_worker(pid):
            continue
        try:
            study.tell(t.number, state=S.FAIL)
        except (ValueError, RuntimeError):  # finished meanwhile by someone else
            continue
        callback(study, study.get_trials(deepcopy=False)[t.number])
        recovered.append(t.number)
    return recovered


# TensorFlow's C++ start-up lines, printed before its log level applies; they say nothing
# about the search, and would bury the progress line.
NOISE = ("All log messages before absl::InitializeLog()", "cudart_stub.cc", "cpu_feature_guard.cc",
         "To enable the following instructions", "Could not find cuda drivers")


def _forward(stream, out=sys.stderr) -> None:
    for line in stream:
        if not any(marker in line for marker in NOISE):
            out.write(line)
            out.flush()


def reconcile_runs(study: optuna.Study, tracker: Tracker) -> int:
    """Close runs still RUNNING whose trial has ended. A tracking or database outage can
    interrupt the closing call (or the saving of the run id), so this asks MLflow, not the
    trials, which runs are open."""
    closed = 0
    trials = study.get_trials(deepcopy=False)
    for run_id, number in tracker.open_trial_runs(study.study_name):
        if 0 <= number < len(trials) and trials[number].state.is_finished():
            tracker.end_trial(run_id, trials[number].state.name)
            closed += 1
    return closed


def _interrupt(signum, frame) -> None:
    """SIGTERM (docker stop, a batch scheduler) stops as cleanly as Ctrl-C."""
    raise KeyboardInterrupt


def _die_with_parent() -> None:
    """Worker side: a kill -9 of the launcher takes its workers along (Linux prctl)."""
    libc = ctypes.util.find_library("c")
    if libc:
        ctypes.CDLL(libc).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Launcher:
    def __init__(self, settings: SearchSettings, quiet: bool = False, create: bool = True,
                 store_settings: bool = True) -> None:
        self.settings, self.quiet, self.create, self.store_settings = settings, quiet, create, store_settings
        self.procs: dict[int, subprocess.Popen] = {}
        self.spawned = 0
        self.tty = sys.stderr.isatty()
        self.last_line = ""

    def _spawn(self, timeout: float | None, trials_so_far: int) -> None:
        s = self.settings
        sampler_seed = s.worker_sampler_seed(trials_so_far, self.spawned)
        payload = json.dumps({**json.loads(s.to_json()), "storage": s.storage})
        cmd = [sys.executable, "-m", "search.worker", "--settings", payload,
               "--max-trials", str(s.trials_per_worker), "--sampler-seed", str(sampler_seed)]
        if timeout is not None:
            cmd += ["--timeout", str(max(1.0, timeout))]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        # Own session: a terminal's Ctrl-C reaches the launcher only, which then stops each
        # worker once; the death signal covers a launcher that is killed outright.
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=_die_with_parent,
                                stderr=subprocess.PIPE, text=True, errors="replace")
        threading.Thread(target=_forward, args=(proc.stderr,), daemon=True).start()
        self.procs[proc.pid] = proc
        self.spawned += 1

    def _show(self, line: str, final: bool = False) -> None:
        if self.quiet:
            return
        if self.tty:
            sys.stderr.write("\r" + line.ljust(len(self.last_line)) + ("\n" if final else ""))
            sys.stderr.flush()
        elif final or line.split(" | elapsed")[0] != self.last_line.split(" | elapsed")[0]:
            # In a log file, a line per change of counts rather than one per second.
            print(line, file=sys.stderr, flush=True)
        self.last_line = line

    def _stop_workers(self, sig: int = signal.SIGINT, wait: float = 120.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(sig)
        deadline = time.time() + wait
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def run(self) -> int:
        s = self.settings
        validate(s)
        tracker = Tracker(s.tracking_uri)
        study = open_study(s, tracker, self.create, self.store_settings)
        self._warn_about_sqlite(study)
        recovered = recover_local_orphans(study, tracker, live=set())
        if recovered and not self.quiet:
            print(f"recovered trial(s) {recovered} left running by a crashed worker; their parameters are queued again",
                  file=sys.stderr)
        parent = study.user_attrs[PARENT_RUN_ATTR]
        self.started = time.time()
        self.deadline = self.started + s.timeout if s.timeout else None
        self.finished_at_start = self.last_finished = snapshot(study).finished
        self.last_stale_check, self.failing, self.crashes = 0.0, False, 0
        outage_since, announced = None, False
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            while True:
                try:
                    if self._step(study, tracker):
                        break
                    outage_since, announced = None, False
                except STORAGE_ERRORS as exc:
                    # Ride out a database restart; workers that crash meanwhile are replaced.
                    outage_since = outage_since or time.time()
                    if time.time() - outage_since > STORAGE_OUTAGE_S:
                        self._stop_workers()
                        raise SearchError(f"--storage {s.storage}: unreachable for {STORAGE_OUTAGE_S} s "
                                          f"({_first_line(exc)}); finished trials are kept, launch again to continue") from None
                    if not announced:  # once per outage, even with --quiet
                        announced = True
                        print(f"warning: storage unreachable ({_first_line(exc)}); retrying for up to "
                              f"{STORAGE_OUTAGE_S} s", file=sys.stderr, flush=True)
                time.sleep(0.5)
        except KeyboardInterrupt:
            self._show("stopping: waiting for workers to close their trials ...", final=True)
            self._stop_workers()
            recover_local_orphans(study, tracker, live=set())
            self._finish(study, tracker, parent, finished=False)
            print(f"interrupted; finished trials are kept. Resume with: search resume --study-name {s.study_name}"
                  f" --storage {s.storage}", file=sys.stderr)
            return 130
        finally:
            signal.signal(signal.SIGTERM, previous)
        snap = self._finish(study, tracker, parent, finished=snapshot(study).finished >= s.trials)
        unrecorded = [t.number for t in study.get_trials(deepcopy=False) if t.user_attrs.get("tracking_error")]
        if unrecorded:
            print(f"warning: trial(s) {unrecorded} kept their results in Optuna but could not be recorded in MLflow "
                  f"({study.trials[unrecorded[-1]].user_attrs['tracking_error']})", file=sys.stderr)
        if not self.quiet:
            print(f"study {s.study_name}: {snap.finished} trials finished; best val_accuracy "
                  f"{snap.best_value if snap.best_value is None else round(snap.best_value, 4)} (trial {snap.best_trial})",
                  file=sys.stderr)
        return 0

    def _step(self, study: optuna.Study, tracker: Tracker) -> bool:
        """One look at the workers and the study; True when the launch is done."""
        s = self.settings
        for pid, proc in list(self.procs.items()):
            rc = proc.poll()
            if rc is None:
                continue
            del self.procs[pid]
            if rc in (EXIT_FAILING, EXIT_USAGE):
                self.failing = True
            elif rc not in (0, EXIT_INTERRUPTED):
                self.crashes += 1
                print(f"worker {pid} exited with code {rc}; replacing it", file=sys.stderr)
        if time.time() - self.last_stale_check > s.heartbeat_interval:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            recover_local_orphans(study, tracker, live=set(self.procs))
            self.last_stale_check = time.time()
        snap = snapshot(study)
        if snap.finished > self.last_finished:  # progress: earlier crashes were passing trouble
            self.crashes, self.last_finished = 0, snap.finished
        self._show(progress_line(snap, s.trials, self.started, self.finished_at_start))
        if self.failing or self.crashes >= max(MAX_WORKER_CRASHES, 2 * s.workers):
            self._stop_workers()
            raise SearchError(_failure_message(study) if self.failing else
                              f"workers crashed {self.crashes} times; see their output above")
        out_of_time = self.deadline is not None and time.time() >= self.deadline
        if (snap.finished >= s.trials or out_of_time) and not self.procs:
            return True
        mine = {t.number for t in study.get_trials(deepcopy=False, states=(S.RUNNING,))
                if t.user_attrs.get("pid") in self.procs}
        open_slots = s.trials - snap.finished - (snap.running - len(mine))
        while not out_of_time and len(self.procs) < min(s.workers, open_slots):
            self._spawn(self.deadline - time.time() if self.deadline else None, len(study.get_trials(deepcopy=False)))
        return False

    def _warn_about_sqlite(self, study: optuna.Study) -> None:
        if not is_sqlite(self.settings.storage):
            return
        hosts = {t.user_attrs.get("host") for t in study.get_trials(deepcopy=False)} - {None, socket.gethostname()}
        if hosts:
            print(f"warning: study {self.settings.study_name} in SQLite has trials from other hosts "
                  f"({', '.join(sorted(hosts))}); SQLite supports workers on one machine only: use PostgreSQL",
                  file=sys.stderr)

    def _finish(self, study, tracker, parent, finished: bool):
        snap = snapshot(study)
        self._show(progress_line(snap, self.settings.trials, self.started, self.finished_at_start), final=True)
        metrics = {"trials_complete": snap.complete, "trials_pruned": snap.pruned, "trials_failed": snap.failed}
        if snap.best_value is not None:
            metrics.update(best_val_accuracy=snap.best_value, best_trial=snap.best_trial)
        try:
            reconcile_runs(study, tracker)
            tracker.end_parent(parent, finished, metrics)
        except Exception as exc:  # the study's results are safe in Optuna; say what MLflow missed
            print(f"warning: could not update MLflow at {self.settings.tracking_uri} ({_first_line(exc)}); "
                  f"the next launch closes what is left open", file=sys.stderr)
        return snap


def _failure_message(study: optuna.Study) -> str:
    failed = [t for t in study.get_trials(deepcopy=False, states=(S.FAIL,)) if not t.user_attrs.get("surplus")]
    reason = failed[-1].user_attrs.get("fail_reason", "") if failed else ""
    last = reason.strip().splitlines()[-1] if reason else "see the worker output above"
    return f"trials keep failing; stopped. Last failure: {last}"
