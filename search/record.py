"""One typed record of a trial: what it ran, what it measured, how it ended.

Optuna keeps a trial's number, state, value and parameters; everything else a trial of ours
knows (its whole configuration, seed, the trial it retries, the process that ran it, one
result per trained model, its MLflow run) is kept in the trial's user attributes. This module
is the only place those attribute names are spelled: workers write through
`search.running.recorder.TrialRecorder`, everyone else reads through `read_trial`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Iterable

import optuna

from studies import TrialConfig

S = optuna.trial.TrialState
# Finished trials count towards a study's target; active ones may still finish.
COUNTED = (S.COMPLETE, S.PRUNED)
ACTIVE = COUNTED + (S.RUNNING, S.WAITING)

# User-attribute names. A retried trial inherits its intent (configuration, seed, original
# number, being a baseline), never the identity of the process that died with it.
CONFIG, SEED, ORIGIN = "config", "seed", "origin_trial"
ENQUEUED = "bloodsearch.enqueued"  # a known configuration put first: where it came from (seed-fcn, --enqueue)
WARM_START = "bloodsearch.warm_start"  # a trial copied from an earlier study: {"study": name, "trial": number}
INHERITED = (CONFIG, SEED, ORIGIN, ENQUEUED)
HOST, PID, DEVICE, EPOCH, ELAPSED = "host", "pid", "device", "epoch", "elapsed_s"
RUN_ID, SPLIT, FITS, UNET = "run_id", "split", "fits", "unet"
SURPLUS, FAIL_REASON, TRACKING_ERROR = "surplus", "fail_reason", "tracking_error"


@dataclass(frozen=True)
class FitResult:
    """One trained model of a trial: the trial's own, one of its seeds (--repeats) or one of
    its folds (--cv). Validation scores are of the restored best weights (with the study's
    test-time augmentation), one per metric of search.metrics.REGISTRY."""

    seed: int
    val_accuracy: float
    epochs_run: int
    best_epoch: int
    converged: bool
    diverged: bool = False
    train_seconds: float = 0.0
    params_count: int | None = None
    model_size_mb: float | None = None
    fold: int | None = None
    # By metric name; accuracy is val_accuracy's. Not hashed: a dict is not hashable.
    val_scores: dict[str, float] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "val_scores", {**self.val_scores, "accuracy": self.val_accuracy})

    def metrics(self) -> dict[str, float]:
        """What its MLflow run records about its training."""
        from search.metrics import REGISTRY

        out = {m.mlflow_key: self.val_scores[name] for name, m in REGISTRY.items() if self.val_scores.get(name) is not None}
        out.update(epochs_run=self.epochs_run, best_epoch=self.best_epoch, train_seconds=self.train_seconds,
                   converged=float(self.converged))
        for key, value in (("params_count", self.params_count), ("model_size_mb", self.model_size_mb)):
            if value is not None:
                out[key] = value
        return out

    def scores(self) -> dict[str, float | None]:
        """By metric name (search.metrics.METRICS); None for one its model was not scored on
        (a record from before the metric was added)."""
        from search.metrics import METRICS

        return {name: self.val_scores.get(name) for name in METRICS}

    def to_dict(self) -> dict:
        d = asdict(self)  # accuracy is stored once, as val_accuracy (which every reader knows)
        d["val_scores"] = {k: v for k, v in self.val_scores.items() if k != "accuracy"}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FitResult":
        # Records written before val_scores kept each score in a field of its own, group
        # accuracy first as val_cell_accuracy (before groups were an input).
        legacy = {"log-loss": d.get("val_loss"), "group-accuracy": d.get("val_group_accuracy", d.get("val_cell_accuracy"))}
        d = {**d, "val_scores": {**{k: v for k, v in legacy.items() if v is not None}, **(d.get("val_scores") or {})}}
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True)
class TrialRecord:
    number: int
    state: S
    value: float | None
    params: dict[str, Any]
    config: TrialConfig | None
    seed: int | None
    origin: int
    run_id: str | None = None
    host: str | None = None
    pid: int | None = None
    device: str | None = None  # what it trained on: cpu, or gpu:<index> (search.running.gpus)
    epoch: int = 0  # epochs reached so far (of the current seed), for progress
    split: dict | None = None
    unet: str | None = None  # digest of the U-Net that masked its images (mask=unet)
    fits: tuple[FitResult, ...] = ()
    fail_reason: str | None = None
    tracking_error: str | None = None
    surplus: bool = False  # started in a race past the study's count; never trained
    started: datetime | None = None
    completed: datetime | None = field(default=None, compare=False)
    enqueued: str | None = None  # a known configuration (--enqueue, --enqueue-study): the baseline
    warm_start: dict | None = None  # copied from an earlier study: {"study": name, "trial": its number there}

    @property
    def baseline(self) -> bool:
        """Every result of the study reads against it."""
        return self.enqueued is not None

    def provenance(self) -> str:
        """Where the trial came from, for tables: a baseline, a warm start, or nothing."""
        marks = [f"baseline ({self.enqueued})"] if self.baseline else []
        if self.warm_start:
            marks.append(f"from {self.warm_start['study']} trial {self.warm_start['trial']}")
        return ", ".join(marks)

    @property
    def cv(self) -> bool:
        """Its models are folds (--cv): the trial is their bag."""
        return bool(self.fits) and self.fits[0].fold is not None

    def mean_score(self, metric: str) -> float | None:
        """The mean over its models of a validation metric (a name of search.metrics.METRICS)."""
        values = [f.scores()[metric] for f in self.fits]
        return sum(values) / len(values) if values and None not in values else None

    @property
    def retried(self) -> bool:
        return self.origin != self.number

    @property
    def converged(self) -> bool | None:
        """Every trained model learned (None before any finished)."""
        return all(f.converged for f in self.fits) if self.fits else None

    @property
    def convergence_rate(self) -> float | None:
        return sum(f.converged for f in self.fits) / len(self.fits) if self.fits else None

    @property
    def epochs_run(self) -> float | None:
        """Epochs per model: the model's, or the mean over seeds."""
        return sum(f.epochs_run for f in self.fits) / len(self.fits) if self.fits else None

    @property
    def epochs_spent(self) -> float:
        """Epochs trained, whatever the end: all seeds', or the epochs a stopped trial reached."""
        return float(sum(f.epochs_run for f in self.fits)) if self.fits else float(self.epoch)

    @property
    def model_size_mb(self) -> float | None:
        return self.fits[0].model_size_mb if self.fits else None

    @property
    def params_count(self) -> int | None:
        return self.fits[0].params_count if self.fits else None

    @property
    def train_seconds(self) -> float | None:
        return sum(f.train_seconds for f in self.fits) if self.fits else None

    def summary(self):
        """Mean ± std [min, max] over the trial's seeds (search.repeats.RepeatSummary)."""
        from search.repeats import summarize

        return summarize(self.fits)

    def flat_config(self) -> dict[str, Any]:
        """Every setting the trial ran with, one level of names as the study's parameters are
        named (as in `best --json`): TrialConfig.flat without its sections."""
        return self.config.flat(sections=False) if self.config else {}


def inherited(user_attrs: dict, number: int) -> tuple[int, int | None]:
    """(original trial, seed) of a trial that may be a retry: a retry inherits both."""
    return user_attrs.get(ORIGIN, number), user_attrs.get(SEED)


def read_trial(t: optuna.trial.FrozenTrial) -> TrialRecord:
    """The one way to read a trial of ours back."""
    a = t.user_attrs
    config = a.get(CONFIG)
    return TrialRecord(
        number=t.number, state=t.state, value=t.value, params=dict(t.params),
        config=TrialConfig.from_dict(config) if config else None, seed=a.get(SEED),
        # A warm-started trial's origin_trial numbers its earlier study's trials, not this one's.
        origin=t.number if WARM_START in a else a.get(ORIGIN, t.number), run_id=a.get(RUN_ID), host=a.get(HOST), pid=a.get(PID),
        device=a.get(DEVICE),
        epoch=a.get(EPOCH, 0), split=a.get(SPLIT), unet=a.get(UNET), fits=tuple(FitResult.from_dict(f) for f in a.get(FITS, ())),
        fail_reason=a.get(FAIL_REASON), tracking_error=a.get(TRACKING_ERROR), surplus=bool(a.get(SURPLUS)),
        started=t.datetime_start, completed=t.datetime_complete, enqueued=a.get(ENQUEUED),
        warm_start=a.get(WARM_START))


def read_trials(study: optuna.Study, states: Iterable[S] | None = None) -> list[TrialRecord]:
    return [read_trial(t) for t in study.get_trials(deepcopy=False, states=tuple(states) if states else None)]


def best_of(records: Iterable[TrialRecord]) -> TrialRecord | None:
    """The complete trial with the highest value: the one place "best" is decided."""
    complete = [r for r in records if r.state == S.COMPLETE and r.value is not None]
    return max(complete, key=lambda r: (r.value, -r.number)) if complete else None


def ranked(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """Complete trials, best first (ties: the earlier trial first)."""
    return sorted((r for r in records if r.state == S.COMPLETE and r.value is not None),
                  key=lambda r: (-r.value, r.number))
