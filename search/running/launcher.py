"""The launching process: checks everything, creates or resumes the study, keeps N worker
processes running until the study has its trial count, shows progress, and stops cleanly.

It never imports TensorFlow, so it stays small however long the study runs.
"""
from __future__ import annotations

import ctypes
import ctypes.util
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

from models.config import TTA_MODES
from preprocessing import DataError, cv_folds, default_cache_dir, load_dataset, validation_split
from preprocessing.inspection import check_classes_readable, readable
from studies import ParamError, StudyError, check_params, load_study, study_digest

from search.urls import redact
from search.running.capacity import check_cache_fits
from search.running.gpus import GpuPlan
from search.running.algorithms import check_pruner, check_sampler, make_pruner, pruner_note
from search.errors import SearchError
from search.metrics import metric as metric_of, value_name
from search.record import S, read_trials
from search.tta import check_space as check_tta_space
from search.running.progress import progress_line, snapshot
from search.running.seeding import Seeds, apply as apply_seeds, defining_difference, plan as plan_seeds
from search.settings import CHANGEABLE, DATA_ATTR, METRICS, PARENT_RUN_ATTR, SETTINGS_ATTR, SearchSettings
from search.stores.storage import STORAGE_ERRORS, check_storage, error_line, is_sqlite, open_storage
from search.stores.tracking import Tracker, check_tracking
from search.running.worker import EXIT_FAILING, EXIT_INTERRUPTED, EXIT_USAGE, WORKER_MODULE, CloseRunAndRetry

ROOT = Path(__file__).resolve().parents[2]
STORAGE_OUTAGE_S = 120  # how long the launcher rides out an unreachable database
MAX_WORKER_CRASHES = 5


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def validate(settings: SearchSettings) -> dict:
    """Every check that can fail on user input, before anything is created. Returns what
    identifies the data (TRAIN's file listing, names and sizes, and its size) and a line
    saying how it was grouped and split. Sets settings.groups_digest from the data."""
    if settings.study_digest and study_digest(settings.study) != settings.study_digest:
        raise SearchError(f"study file {settings.study} changed since the study was created (its content digest was "
                          f"{settings.study_digest}); restore it, or launch the new version under another --study-name")
    try:
        suggest = load_study(settings.study)
        check_params(suggest, settings.params, settings.study)
        check_tta_space(settings.tta, suggest, settings.params, settings.study)
        data = load_dataset(settings.data_dir, record_dir=settings.cache_dir, grouping=settings.grouping())
        for note in data.notes:  # files left out, a class TEST lacks: said before any trial, even with --quiet
            print(f"warning: {note}", file=sys.stderr)
        check_cache_fits(suggest, settings.params, data.train, Path(settings.cache_dir or default_cache_dir()))
        # Unreadable files can leave a class empty or too small to split: say so now, not
        # as a one-class model with val_accuracy 1.0 in trial 0.
        ok = readable(data.train, settings.cache_dir)
        check_classes_readable(data.train, ok)
        if settings.cv:
            if settings.repeats > 1:
                raise SearchError(f"--cv {settings.cv} with --repeats {settings.repeats}: give one of them (seeds x "
                                  f"folds would train {settings.cv * settings.repeats} models per trial)")
            splits = cv_folds(data.train, settings.cv, settings.seed, valid=ok)  # K <= the smallest class's groups
        else:
            splits = [validation_split(data.train, settings.val_fraction, settings.seed, valid=ok)]
    except (StudyError, ParamError, DataError) as exc:
        raise SearchError(str(exc)) from None
    if settings.metric not in METRICS:
        raise SearchError(f"--metric {settings.metric!r} is not one of {', '.join(METRICS)}")
    if settings.tta not in TTA_MODES:
        raise SearchError(f"--tta {settings.tta!r} is not one of {', '.join(TTA_MODES)}")
    if settings.trials < 1:
        raise SearchError(f"--trials {settings.trials} must be at least 1")
    if settings.workers < 1:
        raise SearchError(f"--workers {settings.workers} must be at least 1")
    if settings.repeats < 1:
        raise SearchError(f"--repeats {settings.repeats} must be at least 1")
    check_sampler(settings.sampler)
    check_pruner(settings.pruner, settings.repeats, settings.cv)
    check_storage(settings.storage)
    check_tracking(settings.tracking_uri)
    settings.groups_digest = data.train.groups_digest
    return {"listing": data.train.listing, "images": len(data.train), "groups": len(set(data.train.groups)),
            "grouping": grouping_line(data, splits)}


def grouping_line(data, splits) -> str:
    """How TRAIN was grouped and what its validation achieved, in one line."""
    train = data.train
    per_class = train.group_counts()
    held = [sum(side["groups"] for side in s.report["val"].values()) for s in splits]
    shares = [s.report["held_out_share"] for s in splits]
    what = (f"{len(splits)} folds validating {min(held)}-{max(held)} groups each" if len(splits) > 1 else
            f"validation holds {held[0]} groups ({shares[0]:.0%} of TRAIN's)")
    classes = ", ".join(f"{c} {n}" for c, n in per_class.items())
    return (f"{data.grouping.describe()}: {len(set(train.groups))} groups in TRAIN ({classes}); {what}, "
            f"no group on both sides")


def check_unchanged(study: optuna.Study, settings: SearchSettings, data_id: dict) -> list[str]:
    """Refuse a launch or worker whose defining settings or data differ from the study's;
    nothing is written before this passes. Returns notes on the options that changed."""
    stored_json = study.user_attrs.get(SETTINGS_ATTR)
    if not stored_json:
        return []
    stored = SearchSettings.from_json(stored_json, storage=settings.storage)
    name = settings.study_name
    known = study.user_attrs.get(DATA_ATTR)
    if known and known["listing"] != data_id["listing"]:
        raise SearchError(f"--data-dir {settings.data_dir}: its TRAIN files differ from the ones study {name} was "
                          f"created on ({data_id['images']} images here, {known['images']} there); it would validate "
                          f"on another split")
    if diff := defining_difference(stored, settings):
        option, was, now = diff
        raise SearchError(f"study {name} was created with {option} {was}, this launch says {now}: "
                          f"use another --study-name (or {option} {was})")
    return [f"{option} is now {now} (was {was})" for option, was, now in stored.differences(settings, CHANGEABLE)]


def open_study(settings: SearchSettings, tracker: Tracker, create: bool, data_id: dict,
               store_settings: bool = True) -> optuna.Study:
    """Create or load the study. store_settings: record these settings for `resume` (a launch
    or resume does; a joining worker, whose data dir or tracking URI may be its own, does not)."""
    storage = open_storage(settings.storage, settings.heartbeat_interval, settings.grace_period,
                           stale_callback=CloseRunAndRetry(tracker))
    pruner = make_pruner(settings.pruner, settings.max_steps)
    try:
        study = optuna.load_study(study_name=settings.study_name, storage=storage, pruner=pruner)
    except KeyError:
        if not create:
            raise SearchError(f"no study named {settings.study_name!r} in {redact(settings.storage)}") from None
        study = optuna.create_study(study_name=settings.study_name, storage=storage, direction="maximize",
                                    pruner=pruner, load_if_exists=True)
    notes = check_unchanged(study, settings, data_id)
    if store_settings:  # after every check: a refused launch says one line, its error
        if note := pruner_note(settings.pruner, settings.repeats, settings.cv):
            notes.append(note)
        for note in notes:
            print(f"note: study {settings.study_name}: {note}", file=sys.stderr)
    if store_settings or SETTINGS_ATTR not in study.user_attrs:
        study.set_user_attr(SETTINGS_ATTR, settings.to_json())
    if DATA_ATTR not in study.user_attrs:
        study.set_user_attr(DATA_ATTR, {k: v for k, v in data_id.items() if k != "grouping"})
    if PARENT_RUN_ATTR not in study.user_attrs:
        study.set_user_attr(PARENT_RUN_ATTR, tracker.parent_run(settings.study_name, settings.mlflow_params()))
    return study


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def oversubscribed(workers: int, threads: int | None, cores: int | None = None) -> str | None:
    """A line when the local workers ask for more threads than the machine has cores: each
    TensorFlow then time-slices against the others, and every trial runs slower."""
    cores = cores or available_cores()
    asked = workers * (threads or cores)
    if workers < 2 or asked <= cores:
        return None
    each = f"--threads {threads}" if threads else f"TensorFlow's default of all {cores} cores"
    fit = max(1, cores // workers)
    return (f"--workers {workers}, each with {each}: {asked} threads on {cores} cores, which contend and slow every "
            f"trial (--workers {min(workers, cores)} --threads {fit} uses each core once)")


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def resume_command(s: SearchSettings) -> str:
    """The command that continues a study, as a user can paste it (no password in it)."""
    from search.stores.storage import DEFAULT_STORAGE

    return f"search resume --study-name {s.study_name}" + (
        "" if s.storage == DEFAULT_STORAGE else f" --storage {redact(s.storage)}")


def _pid_is_worker(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return WORKER_MODULE.encode() in cmdline


def recover_local_orphans(study: optuna.Study, tracker: Tracker, live: set[int]) -> list[int]:
    """Fail RUNNING trials whose worker on this host is gone, without waiting out the grace
    period; queue their parameters again and close their runs FAILED."""
    host, recovered = socket.gethostname(), []
    callback = CloseRunAndRetry(tracker)
    for t in read_trials(study, states=(S.RUNNING,)):
        if t.host != host or t.pid is None or t.pid in live or _pid_is_worker(t.pid):
            continue
        try:
            study.tell(t.number, state=S.FAIL)
        except (ValueError, RuntimeError):  # finished meanwhile by someone else
            continue
        callback(study, study.get_trials(deepcopy=False)[t.number])
        recovered.append(t.number)
    return recovered


VERBOSE_ENV = "BLOODSEARCH_VERBOSE"  # set by `search --verbose`: workers' output unfiltered
# TensorFlow's C++ start-up lines, printed before its log level applies; they say nothing
# about the search, and would bury the progress line.
NOISE = ("All log messages before absl::InitializeLog()", "cudart_stub.cc", "cpu_feature_guard.cc",
         "oneDNN custom operations are on",
         "To enable the following instructions", "Could not find cuda drivers")


def _forward(stream, out=sys.stderr) -> None:
    verbose = bool(os.environ.get(VERBOSE_ENV))
    for line in stream:
        if verbose or not any(marker in line for marker in NOISE):
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


def repair_runs(study: optuna.Study, tracker: Tracker, settings: SearchSettings) -> list[int]:
    """Finished trials that a tracking outage left without their record (found by the chaos
    soak: MLflow logging stops at a trial's first error, so a trial that finished while the
    server restarted had no run, or one without its metrics). Each gets a run as the
    objective writes it (search.running.recorder's projection): its parameters and tags, the
    learning curve its epoch pruner was told (when the run is new) and its final metrics from
    the trial's record, closed with its state and tagged `bloodsearch.repaired`. MLflow, not
    the trial, says what is missing, so running it again is safe."""
    from search.running.recorder import pruner_curve, run_metrics, run_name, run_params, run_tags

    # A warm-started trial's run belongs to its earlier study: repaired there, if anywhere.
    todo = [t for t in read_trials(study, states=(S.COMPLETE, S.PRUNED))
            if t.tracking_error and t.config and not t.warm_start]
    if not todo:
        return []
    runs = tracker.trial_runs(settings.study_name)
    parent = study.user_attrs.get(PARENT_RUN_ATTR)
    intermediate = {t.number: t.intermediate_values for t in study.get_trials(deepcopy=False)}
    accuracy_key = metric_of("accuracy").mlflow_key  # every finished model's run has it
    repaired = []
    for t in todo:
        mine = runs.get(t.number, [])
        if any(r.info.status in ("FINISHED", "KILLED") and accuracy_key in r.data.metrics for r in mine):
            continue
        if mine:
            run_id, new = mine[0].info.run_id, False
        else:
            run_id, new = tracker.start_trial(settings.study_name, parent, run_name(settings.study_name, t.number, t.origin),
                                              run_params(t.config, settings, t.seed),
                                              run_tags(settings, t.number, t.origin, t.device, t.enqueued)), True
        curve = pruner_curve(settings, intermediate[t.number]) if new else None
        if curve:
            key, values = curve
            for step, value in sorted(values.items()):
                tracker.log_metrics(run_id, {key: value}, step=step)
        tracker.log_metrics(run_id, run_metrics(t.fits) if t.fits else {})
        tracker.set_tags(run_id, {"bloodsearch.repaired": "after a tracking outage"})
        tracker.end_trial(run_id, t.state.name)
        repaired.append(t.number)
    return repaired


class Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop, a batch scheduler): stops as cleanly as Ctrl-C, exits 143."""


def _interrupt(signum, frame) -> None:
    raise Terminated


def _die_with_parent() -> None:
    """Worker side: a kill -9 of the launcher takes its workers along (Linux prctl)."""
    libc = ctypes.util.find_library("c")
    if libc:
        ctypes.CDLL(libc).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Launcher:
    def __init__(self, settings: SearchSettings, quiet: bool = False, create: bool = True,
                 store_settings: bool = True, seeds: Seeds = Seeds()) -> None:
        self.settings, self.quiet, self.create, self.store_settings = settings, quiet, create, store_settings
        self.seeds = seeds  # known configurations and a warm start, put in before any worker starts
        self.procs: dict[int, subprocess.Popen] = {}
        self.devices: dict[int, str] = {}  # each live worker's device
        self.gpu_plan = GpuPlan()
        self.spawned = 0
        self.tty = sys.stderr.isatty()
        self.repaired: list[int] = []  # trials whose MLflow record this launch rebuilt
        self.last_line = ""

    def _spawn(self, timeout: float | None, trials_so_far: int) -> None:
        s = self.settings
        sampler_seed = s.worker_sampler_seed(trials_so_far, self.spawned)
        cmd = [sys.executable, "-m", WORKER_MODULE,
               "--max-trials", str(s.trials_per_worker), "--sampler-seed", str(sampler_seed)]
        if timeout is not None:
            cmd += ["--timeout", str(max(1.0, timeout))]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        device = self.gpu_plan.next_device([self.devices[pid] for pid in self.procs])
        env.update(self.gpu_plan.env(device))
        # Own session: a terminal's Ctrl-C reaches the launcher only, which then stops each
        # worker once; the death signal covers a launcher that is killed outright.
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=_die_with_parent,
                                stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
        proc.stdin.write(s.to_payload() + "\n")
        proc.stdin.close()
        threading.Thread(target=_forward, args=(proc.stderr,), daemon=True).start()
        self.procs[proc.pid] = proc
        self.devices[proc.pid] = device
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
        self.gpu_plan = GpuPlan.for_launch(s.gpus, s.workers_per_gpu)
        s.workers = self.gpu_plan.workers(s.workers)
        data_id = validate(s)
        seeding = plan_seeds(self.seeds, s, data_id)  # checked before the study exists: a refusal writes nothing
        tracker = Tracker(s.tracking_uri)
        study = open_study(s, tracker, self.create, data_id, self.store_settings)
        if not self.quiet:
            print(f"study {s.study_name}: {data_id['grouping']}", file=sys.stderr)
            if self.gpu_plan.gpus:
                print(f"study {s.study_name}: {s.workers} worker(s) on GPU {', '.join(self.gpu_plan.gpus)}"
                      f"{f', {s.workers_per_gpu} per GPU, memory grown as needed' if s.workers_per_gpu > 1 else ''}",
                      file=sys.stderr)
        for note in apply_seeds(seeding, study, s):
            print(f"note: study {s.study_name}: {note}", file=sys.stderr)
        self._warn_about_sqlite(study)
        if note := oversubscribed(s.workers, s.threads):
            print(f"note: study {s.study_name}: {note}", file=sys.stderr)
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
                        raise SearchError(f"--storage {redact(s.storage)}: unreachable for {STORAGE_OUTAGE_S} s "
                                          f"({error_line(exc, s.storage)}); finished trials are kept, launch again to continue") from None
                    if not announced:  # once per outage, even with --quiet
                        announced = True
                        print(f"warning: storage unreachable ({error_line(exc, s.storage)}); retrying for up to "
                              f"{STORAGE_OUTAGE_S} s", file=sys.stderr, flush=True)
                time.sleep(0.5)
        except KeyboardInterrupt as stop:
            if self.tty and not self.quiet:
                sys.stderr.write("\r" + " " * len(self.last_line) + "\r")  # the progress line makes way
            self._stop_workers()
            recover_local_orphans(study, tracker, live=set())
            snap = self._finish(study, tracker, parent, finished=False, show=False)
            name = "SIGTERM" if isinstance(stop, Terminated) else "Ctrl-C (SIGINT)"
            print(f"study {s.study_name}: stopped by {name} with {plural(snap.finished, 'trial')} of {s.trials} "
                  f"finished; the running trial is queued again. Resume with: {resume_command(s)}", file=sys.stderr)
            return 143 if isinstance(stop, Terminated) else 130
        finally:
            signal.signal(signal.SIGTERM, previous)
        snap = self._finish(study, tracker, parent, finished=snapshot(study).finished >= s.trials)
        unrecorded = [t for t in read_trials(study) if t.tracking_error and t.number not in self.repaired]
        if unrecorded:
            print(f"warning: trial(s) {[t.number for t in unrecorded]} kept their results in Optuna but could not be "
                  f"recorded in MLflow ({unrecorded[-1].tracking_error})", file=sys.stderr)
        best = "-" if snap.best_value is None else f"{snap.best_value:.4f} (trial {snap.best_trial})"
        best = f"{value_name(s.metric, s.cv)} {best}"
        if snap.finished < s.trials:
            # Only the clock ends a launch short of its target; say so, and how to go on.
            remaining = s.trials - snap.finished
            print(f"study {s.study_name}: stopped by --timeout {s.timeout:g} s with {plural(snap.finished, 'trial')} of "
                  f"{s.trials} finished, {remaining} to go; best {best}. Continue with: "
                  f"{resume_command(s)}", file=sys.stderr)
        elif not self.quiet:
            print(f"study {s.study_name}: {plural(snap.finished, 'trial')} finished; best {best}",
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
            self.devices.pop(pid, None)
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
        mine = {t.number for t in read_trials(study, states=(S.RUNNING,)) if t.pid in self.procs}
        open_slots = s.trials - snap.finished - (snap.running - len(mine))
        while not out_of_time and len(self.procs) < min(s.workers, open_slots):
            self._spawn(self.deadline - time.time() if self.deadline else None, len(study.get_trials(deepcopy=False)))
        return False

    def _warn_about_sqlite(self, study: optuna.Study) -> None:
        if not is_sqlite(self.settings.storage):
            return
        # Warm-started trials ran for another study, wherever it lived.
        hosts = {t.host for t in read_trials(study) if not t.warm_start} - {None, socket.gethostname()}
        if hosts:
            print(f"warning: study {self.settings.study_name} in SQLite has trials from other hosts "
                  f"({', '.join(sorted(hosts))}); SQLite supports workers on one machine only: use PostgreSQL",
                  file=sys.stderr)

    def _finish(self, study, tracker, parent, finished: bool, show: bool = True):
        snap = snapshot(study)
        line = progress_line(snap, self.settings.trials, self.started, self.finished_at_start)
        if show and (self.tty or line.split(" | elapsed")[0] != self.last_line.split(" | elapsed")[0]):
            self._show(line, final=True)  # in a log, not the line just printed once more
        metrics = {"trials_complete": snap.complete, "trials_pruned": snap.pruned, "trials_failed": snap.failed}
        if snap.best_value is not None:
            metrics.update({f"best_{metric_of(self.settings.metric).value_key}": snap.best_value,
                            "best_trial": snap.best_trial})
        try:
            self.repaired = repair_runs(study, tracker, self.settings)
            reconcile_runs(study, tracker)
            tracker.end_parent(parent, finished, metrics)
        except Exception as exc:  # the study's results are safe in Optuna; say what MLflow missed
            print(f"warning: could not update MLflow at {redact(self.settings.tracking_uri)} ({_first_line(exc)}); "
                  f"the next launch closes what is left open", file=sys.stderr)
        return snap


def _failure_message(study: optuna.Study) -> str:
    failed = [t for t in read_trials(study, states=(S.FAIL,)) if not t.surplus]
    reason = (failed[-1].fail_reason or "") if failed else ""
    last = reason.strip().splitlines()[0] if reason.strip() else "see the worker output above"
    return f"trials keep failing; stopped. Last failure: {last}"
