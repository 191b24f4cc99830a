"""Reading a study back: its settings, its trials, the best ones, where it stands."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import optuna

from .errors import SearchError
from .progress import snapshot
from .settings import SETTINGS_ATTR, SearchSettings
from .storage import check_storage, open_storage

S = optuna.trial.TrialState


@dataclass
class StudyHandle:
    study: optuna.Study
    settings: SearchSettings


def open_existing(study_name: str, storage: str, tracking_uri: str | None = None,
                  data_dir: str | None = None) -> StudyHandle:
    check_storage(storage)
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:
        raise SearchError(f"no study named {study_name!r} in {storage}") from None
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if not stored:
        raise SearchError(f"study {study_name!r} in {storage} was not made by search launch")
    settings = SearchSettings.from_json(stored, storage=storage, tracking_uri=tracking_uri, data_dir=data_dir)
    return StudyHandle(study, settings)


def pick_trial(study: optuna.Study, number: int | None) -> optuna.trial.FrozenTrial:
    """Trial `number`, or the best complete one."""
    trials = study.get_trials(deepcopy=False)
    if number is None:
        complete = [t for t in trials if t.state == S.COMPLETE and t.value is not None]
        if not complete:
            raise SearchError(f"study {study.study_name!r} has no complete trial yet")
        return max(complete, key=lambda t: t.value)
    if not 0 <= number < len(trials):
        raise SearchError(f"--trial {number}: study {study.study_name!r} has trials 0 to {len(trials) - 1}")
    trial = trials[number]
    if trial.state != S.COMPLETE:
        raise SearchError(f"--trial {number} is {trial.state.name}, not COMPLETE: it has no trained model")
    return trial


def best_rows(study: optuna.Study, top: int) -> list[dict]:
    complete = sorted((t for t in study.get_trials(deepcopy=False, states=(S.COMPLETE,)) if t.value is not None),
                      key=lambda t: t.value, reverse=True)[:top]
    rows = []
    for t in complete:
        rows.append({"trial": t.number, "val_accuracy": t.value, "params": t.params,
                     "fixed": {k: v for k, v in _flat_config(t).items() if k not in t.params},
                     "epochs_run": t.user_attrs.get("epochs_run"), "model_size_mb": t.user_attrs.get("model_size_mb"),
                     "params_count": t.user_attrs.get("params_count"), "converged": t.user_attrs.get("converged"),
                     "train_seconds": t.user_attrs.get("train_seconds"), "run_id": t.user_attrs.get("run_id"),
                     # with --repeats: the spread behind the mean
                     **{k: t.user_attrs[k] for k in ("val_accuracy_std", "val_accuracy_min", "val_accuracy_max",
                                                     "convergence_rate", "repeats_run") if k in t.user_attrs}})
    return rows


def _flat_config(t: optuna.trial.FrozenTrial) -> dict:
    config = t.user_attrs.get("config") or {}
    flat = dict(config.get("preprocess", {}))
    flat.update({k: v for k, v in config.get("model", {}).items()})
    flat.update({k: config[k] for k in ("batch_size", "optimizer", "learning_rate") if k in config})
    return flat


def status(handle: StudyHandle) -> dict:
    study, settings = handle.study, handle.settings
    trials = study.get_trials(deepcopy=False)
    snap = snapshot(study)
    now = time.time()
    running = [{"trial": t.number, "host": t.user_attrs.get("host"), "pid": t.user_attrs.get("pid"),
                "epoch": t.user_attrs.get("epoch"), "elapsed_s": round(now - t.datetime_start.timestamp())}
               for t in trials if t.state == S.RUNNING and t.datetime_start]
    finished = sorted(t.datetime_complete.timestamp() for t in trials
                      if t.state in (S.COMPLETE, S.PRUNED) and t.datetime_complete)
    recent = [f for f in finished if f > now - 3600]
    per_hour = None
    if len(finished) >= 2:
        span = finished[-1] - min(t.datetime_start.timestamp() for t in trials if t.datetime_start)
        per_hour = round(len(finished) / span * 3600, 2) if span > 0 else None
    remaining = max(0, settings.trials - snap.finished)
    eta_s = round(remaining / per_hour * 3600) if per_hour and remaining else (0 if not remaining else None)
    return {"study": study.study_name, "target": settings.trials, "finished": snap.finished,
            "states": {"complete": snap.complete, "pruned": snap.pruned, "failed": snap.failed,
                       "running": snap.running, "waiting": snap.waiting},
            "best_value": snap.best_value, "best_trial": snap.best_trial, "running": running,
            "finished_per_hour": per_hour, "finished_last_hour": len(recent), "eta_s": eta_s}


def as_json(value) -> str:
    return json.dumps(value, indent=1, default=str)
