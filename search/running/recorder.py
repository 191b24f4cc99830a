"""Writing a trial's record (search.record) while it runs: each fact once, to its Optuna trial
and, where MLflow shows it, to the trial's run. The projection of a record and the study's
settings to an MLflow run (its name, parameters, tags, metrics and the curve its pruner saw)
is here too, once: the objective writes runs with it and the launcher's `repair_runs`
rebuilds the runs a tracking outage lost with it."""
from __future__ import annotations

import os
import socket
from typing import Any, Sequence

import optuna

from search import record as R
from search.metrics import METRICS, metric as metric_of, reported
from search.record import FitResult
from search.running.gpus import worker_device
from search.settings import EPOCH_PRUNERS, SearchSettings
from search.stores.tracking import TrialRun
from studies import TrialConfig

DEVICE_TAG = "bloodsearch.device"


def run_name(study_name: str, number: int, origin: int) -> str:
    return f"{study_name}-{number}" + (f"-retry-of-{origin}" if origin != number else "")


def run_params(config: TrialConfig, settings: SearchSettings, seed: int) -> dict[str, Any]:
    """A trial run's parameters: its configuration, the study's settings, its seed (or the
    study's --repeats seeds, which every trial shares)."""
    from search.repeats import repeat_seeds

    seeds = {"seed": seed} if settings.repeats == 1 else {"seeds": repeat_seeds(settings.seed, settings.repeats)}
    return {**config.flat(), **settings.mlflow_params(), **seeds}


def run_tags(settings: SearchSettings, number: int, origin: int, device: str | None = None,
             enqueued: str | None = None) -> dict[str, Any]:
    return {"optuna.study": settings.study_name, "optuna.trial": number, "optuna.origin_trial": origin,
            "metric": settings.metric, **({DEVICE_TAG: device} if device else {}),
            **({R.ENQUEUED: enqueued} if enqueued else {})}


def run_metrics(fits: Sequence[FitResult]) -> dict[str, float]:
    """A trial run's final metrics: its one model's; over seeds or folds, the spread of their
    accuracy and the mean of each metric (every one, whichever the study optimises)."""
    from search.repeats import summarize

    if len(fits) == 1:
        return fits[0].metrics()
    summary = summarize(fits)
    means = {}
    for name in METRICS:
        values = [f.scores()[name] for f in fits]
        if None not in values:
            means[f"val_{metric_of(name).key}_mean"] = sum(values) / len(values)
    out = {**summary.metrics("val_"), **means, metric_of("accuracy").mlflow_key: summary.accuracy.mean,
           "epochs_run": summary.epochs.mean, "params_count": fits[0].params_count}
    return {k: v for k, v in out.items() if v is not None}


def pruner_curve(settings: SearchSettings, intermediate: dict[int, float]) -> tuple[str, dict[int, float]] | None:
    """The learning curve an epoch pruner was told, as the Keras log it came from (the
    metric's monitor, its sign restored). None for other pruners: Wilcoxon's steps are seeds
    or folds, whose scores the means hold."""
    if settings.pruner not in EPOCH_PRUNERS:
        return None
    monitor = metric_of(settings.metric).monitor
    return monitor, {step: reported(monitor, value) for step, value in intermediate.items()}


class TrialRecorder:
    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.fits: list[FitResult] = []

    def _set(self, key: str, value: Any) -> None:
        self.trial.set_user_attr(key, value)

    def surplus(self) -> None:
        self._set(R.SURPLUS, True)

    def start(self, config: TrialConfig, seed: int, origin: int) -> None:
        for key, value in {R.CONFIG: config.to_dict(), R.SEED: seed, R.ORIGIN: origin,
                           R.HOST: socket.gethostname(), R.PID: os.getpid(), R.DEVICE: worker_device(),
                           R.EPOCH: 0}.items():
            self._set(key, value)

    def run(self, run: TrialRun) -> None:
        self._set(R.RUN_ID, run.run_id)

    def epoch(self, epoch: int) -> None:
        self._set(R.EPOCH, epoch)

    def data(self, split_report: dict, unet: str | None) -> None:
        """What the trial trained and validated on: the split, and the U-Net that masked it."""
        self._set(R.SPLIT, split_report)
        if unet:
            self._set(R.UNET, unet)

    def fit(self, fit: FitResult, run: TrialRun, diverged: bool = False) -> None:
        """One trained model: its metrics to its own run (the trial's, or a seed's) and its
        result appended to the trial's record."""
        run.log_metrics(fit.metrics())
        run.set_tags({"converged": fit.converged, "diverged": diverged})
        self.fits.append(fit)
        self._set(R.FITS, [f.to_dict() for f in self.fits])

    def summary(self, run: TrialRun) -> None:
        """Seeds or folds: the trial run's metrics over the models so far."""
        run.log_metrics(run_metrics(self.fits))
        run.set_tags({"converged": all(f.converged for f in self.fits)})

    def failed(self, exc: BaseException) -> None:
        self._set(R.FAIL_REASON, f"{type(exc).__name__}: {exc}"[:2000])

    def tracking_error(self, error: str) -> None:
        self._set(R.TRACKING_ERROR, error)
