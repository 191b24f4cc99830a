"""Reading a study back: its settings, its trials, the best ones, where it stands."""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import optuna

from search.errors import SearchError
from search.record import COUNTED, S, TrialRecord, best_of, ranked, read_trial, read_trials
from search.running.progress import Snapshot, snapshot
from search.settings import SETTINGS_ATTR, SearchSettings
from search.stores.storage import check_storage, open_storage
from search.urls import redact


@dataclass
class StudyHandle:
    study: optuna.Study
    settings: SearchSettings


def open_existing(study_name: str, storage: str, tracking_uri: str | None = None,
                  data_dir: str | None = None) -> StudyHandle:
    check_storage(storage, must_exist=True)
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:
        raise SearchError(f"no study named {study_name!r} in {redact(storage)}") from None
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if not stored:
        raise SearchError(f"study {study_name!r} in {redact(storage)} was not made by search launch")
    settings = SearchSettings.from_json(stored, storage=storage, tracking_uri=tracking_uri, data_dir=data_dir)
    return StudyHandle(study, settings)


def study_tracker(handle: StudyHandle):
    """The study's MLflow tracker, checked to be reachable."""
    from search.stores.tracking import Tracker, check_tracking

    check_tracking(handle.settings.tracking_uri, must_exist=True)
    return Tracker(handle.settings.tracking_uri)


def pick_trial(study: optuna.Study, number: int | None) -> TrialRecord:
    """Trial `number`, or the best complete one."""
    trials = study.get_trials(deepcopy=False)
    if number is None:
        best = best_of(read_trials(study, states=(S.COMPLETE,)))
        if best is None:
            raise SearchError(f"study {study.study_name!r} has no complete trial yet")
        return best
    if not 0 <= number < len(trials):
        raise SearchError(f"--trial {number}: study {study.study_name!r} has trials 0 to {len(trials) - 1}")
    trial = read_trial(trials[number])
    if trial.state != S.COMPLETE:
        raise SearchError(f"--trial {number} is {trial.state.name}, not COMPLETE: it has no trained model")
    return trial


def best_trials(study: optuna.Study, top: int, baselines: bool = False) -> list[TrialRecord]:
    """The top complete trials; baselines: and after them the complete baselines (known
    configurations put first) that are not among them, so every result reads against them."""
    complete = ranked(read_trials(study, states=(S.COMPLETE,)))
    shown = complete[:top]
    return shown + [r for r in complete[top:] if r.baseline] if baselines else shown


def baseline_of(records: list[TrialRecord]) -> TrialRecord | None:
    """The best complete baseline: what the study's best is measured against."""
    return best_of(r for r in records if r.baseline)


def trial_summary(r: TrialRecord, metric: str = "accuracy") -> dict:
    """A finished trial as `best --json` shows it: its value and the study's metric it
    measures (as val_accuracy too when that is accuracy), the mean of every validation metric
    over its models, sampled parameters apart from fixed ones."""
    from search.metrics import METRICS

    row = {"trial": r.number, "value": r.value, "metric": metric,
           **({"val_accuracy": r.value} if metric == "accuracy" else {}),
           "val_scores": {name: r.mean_score(name) for name in METRICS}, "params": r.params,
           "fixed": {k: v for k, v in r.flat_config().items() if k not in r.params},
           "epochs_run": r.epochs_run, "model_size_mb": r.model_size_mb, "params_count": r.params_count,
           "converged": r.converged, "train_seconds": r.train_seconds, "run_id": r.run_id,
           "baseline": r.enqueued, "warm_start": r.warm_start}
    if len(r.fits) > 1:  # with --repeats: the spread behind the mean
        s = r.summary()
        row.update(val_accuracy_std=s.accuracy.std, val_accuracy_min=s.accuracy.min,
                   val_accuracy_max=s.accuracy.max, convergence_rate=s.convergence_rate, repeats_run=s.accuracy.n)
    return row


@dataclass(frozen=True)
class RunningTrial:
    trial: int
    host: str | None
    pid: int | None
    epoch: int
    elapsed_s: int
    device: str | None = None


@dataclass(frozen=True)
class StudyStatus:
    study: str
    target: int
    snapshot: Snapshot
    running: list[RunningTrial]
    finished_per_hour: float | None
    finished_last_hour: int
    eta_s: int | None
    baseline: TrialRecord | None = None
    devices: dict[str, int] = field(default_factory=dict)  # finished trials per device they trained on

    @property
    def finished(self) -> int:
        return self.snapshot.finished

    def to_dict(self) -> dict:
        s = self.snapshot
        return {"study": self.study, "target": self.target, "finished": s.finished,
                "states": {"complete": s.complete, "pruned": s.pruned, "failed": s.failed,
                           "running": s.running, "waiting": s.waiting},
                "best_value": s.best_value, "best_trial": s.best_trial,
                "running": [asdict(r) for r in self.running], "finished_per_hour": self.finished_per_hour,
                "finished_last_hour": self.finished_last_hour, "eta_s": self.eta_s, "devices": self.devices,
                "baseline": None if self.baseline is None else {
                    "trial": self.baseline.number, "source": self.baseline.enqueued, "value": self.baseline.value}}


def status(handle: StudyHandle) -> StudyStatus:
    study, settings = handle.study, handle.settings
    trials = read_trials(study)
    snap = snapshot(study)
    now = time.time()
    running = [RunningTrial(t.number, t.host, t.pid, t.epoch, round(now - t.started.timestamp()), t.device)
               for t in trials if t.state == S.RUNNING and t.started]
    # Warm-started trials ran for an earlier study, at its pace: not this one's rate.
    own = [t for t in trials if not t.warm_start]
    finished = sorted(t.completed.timestamp() for t in own if t.state in COUNTED and t.completed)
    recent = [f for f in finished if f > now - 3600]
    per_hour = None
    if len(finished) >= 2:
        span = finished[-1] - min(t.started.timestamp() for t in own if t.started)
        per_hour = round(len(finished) / span * 3600, 2) if span > 0 else None
    remaining = max(0, settings.trials - snap.finished)
    eta_s = round(remaining / per_hour * 3600) if per_hour and remaining else (0 if not remaining else None)
    devices = Counter(t.device for t in own if t.state in COUNTED and t.device)
    return StudyStatus(study.study_name, settings.trials, snap, running, per_hour, len(recent), eta_s,
                       baseline_of(trials), dict(sorted(devices.items())))


def as_json(value) -> str:
    return json.dumps(value, indent=1, default=str)


@dataclass(frozen=True)
class StudyRow:
    study: str
    target: int | None
    snapshot: Snapshot

    def to_dict(self) -> dict:
        s = self.snapshot
        return {"study": self.study, "finished": s.finished, "target": self.target, "complete": s.complete,
                "pruned": s.pruned, "failed": s.failed, "running": s.running, "best_value": s.best_value,
                "best_trial": s.best_trial}


def study_rows(storage: str) -> list[StudyRow]:
    """Every study in a storage, with its target (when launched by us) and counts."""
    check_storage(storage, must_exist=True)
    rdb = open_storage(storage)
    rows = []
    for summary in optuna.get_all_study_summaries(rdb, include_best_trial=False):
        stored = summary.user_attrs.get(SETTINGS_ATTR)
        target = json.loads(stored).get("trials") if stored else None
        rows.append(StudyRow(summary.study_name, target,
                             snapshot(optuna.load_study(study_name=summary.study_name, storage=rdb))))
    return rows
