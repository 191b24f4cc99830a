"""Writing a trial's record (search.record) while it runs: each fact once, to its Optuna trial
and, where MLflow shows it, to the trial's run."""
from __future__ import annotations

import os
import socket
from typing import Any

import optuna

from search import record as R
from search.record import FitResult
from search.running.gpus import worker_device
from search.stores.tracking import TrialRun
from studies import TrialConfig


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

    def summary(self, run: TrialRun, metric: str) -> None:
        """Seeds or folds: the spread over the models so far, on the trial's run, and the
        mean of each validation metric (all three, whichever one the study optimises)."""
        from search.running.repeats import summarize

        summary = summarize(self.fits)
        means = {f"val_{name.replace('-', '_')}_mean": sum(f.scores()[name] for f in self.fits) / len(self.fits)
                 for name in ("accuracy", "log-loss", "group-accuracy") if None not in (f.scores()[name] for f in self.fits)}
        run.log_metrics({**summary.metrics("val_"), **means, "best_val_accuracy": summary.accuracy.mean,
                         "epochs_run": summary.epochs.mean, "params_count": self.fits[0].params_count})
        run.set_tags({"converged": summary.convergence_rate == 1.0, "metric": metric})

    def failed(self, exc: BaseException) -> None:
        self._set(R.FAIL_REASON, f"{type(exc).__name__}: {exc}"[:2000])

    def tracking_error(self, error: str) -> None:
        self._set(R.TRACKING_ERROR, error)
