"""The Optuna objective: trial -> TrialConfig -> trained model -> best validation accuracy,
with every trial recorded as an MLflow child run whose status mirrors the trial's."""
from __future__ import annotations

import json
import logging
import math
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable

import keras
import optuna

from studies import Params, TrialConfig

from .data import DataProvider, confusion
from .plots import confusion_png, learning_curves_png
from .repeats import RepeatSummary, SeedResult, repeat_seeds, summarize
from .settings import PARENT_RUN_ATTR, SearchSettings
from .tracking import Tracker, TrialRun
from .training import train

log = logging.getLogger("bloodsearch.objective")
COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
ACTIVE = COUNTED + (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)


class SurplusTrial(Exception):
    """Started in a race after the study already had its trial count; never trained."""


class PruneOnValAccuracy(keras.callbacks.Callback):
    """Report val_accuracy each epoch; stop the fit when the pruner says so."""

    def __init__(self, trial: optuna.Trial) -> None:
        super().__init__()
        self.trial = trial

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        value = (logs or {}).get("val_accuracy")
        if value is None or math.isnan(value):
            return
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch + 1} with val_accuracy {value:.4f}")


class LogEpochs(keras.callbacks.Callback):
    """Per-epoch metrics to MLflow as they happen, so a running trial is visible in the UI."""

    KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")

    def __init__(self, run: TrialRun, trial: optuna.Trial | None = None) -> None:
        super().__init__()
        self.run, self.trial = run, trial
        self.started = time.time()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = logs or {}
        self.run.log_metrics({k: logs[k] for k in self.KEYS if k in logs}, step=epoch)
        if self.trial is not None:
            self.trial.set_user_attr("epoch", epoch + 1)
            self.trial.set_user_attr("elapsed_s", round(time.time() - self.started, 1))


def trial_seed(base: int, trial_number: int) -> int:
    return (base * 1_000_003 + trial_number) % (2**31 - 1)


class Objective:
    def __init__(self, settings: SearchSettings, suggest: Callable[[Params], TrialConfig], tracker: Tracker,
                 data: DataProvider) -> None:
        self.settings, self.suggest, self.tracker, self.data = settings, suggest, tracker, data

    def _claim(self, trial: optuna.Trial) -> None:
        """Refuse a trial started after the study reached its count (a race between workers)."""
        active = trial.study.get_trials(deepcopy=False, states=ACTIVE)
        rank = sum(1 for t in active if t.number <= trial.number)
        if rank > self.settings.trials:
            trial.set_user_attr("surplus", True)
            trial.study.stop()
            raise SurplusTrial(f"trial {trial.number} is beyond the study's {self.settings.trials} trials")

    def __call__(self, trial: optuna.Trial) -> float:
        self._claim(trial)
        s = self.settings
        config = self.suggest(Params(trial, s.params))
        # A retried trial inherits its original's user attributes, so it reuses its seed.
        origin = trial.user_attrs.get("origin_trial", trial.number)
        seed = trial.user_attrs.get("seed", trial_seed(s.seed, origin))
        for key, value in {"config": config.to_dict(), "seed": seed, "origin_trial": origin,
                           "host": socket.gethostname(), "pid": os.getpid(), "epoch": 0}.items():
            trial.set_user_attr(key, value)
        name = f"{s.study_name}-{trial.number}" + (f"-retry-of-{origin}" if origin != trial.number else "")
        parent = trial.study.user_attrs[PARENT_RUN_ATTR]
        run = TrialRun(self.tracker, s.study_name, parent, name,
                       {**config.flat(), **s.mlflow_params(),
                        **({"seed": seed} if s.repeats == 1 else {"seeds": repeat_seeds(s.seed, s.repeats)})},
                       {"optuna.study": s.study_name, "optuna.trial": trial.number, "optuna.state": "RUNNING",
                        "optuna.origin_trial": origin})
        state = "FAIL"
        try:
            trial.set_user_attr("run_id", run.run_id)
            if s.repeats == 1:
                value = self._train_once(trial, config, seed, run)
            else:
                value = self._train_repeats(trial, config, run, name, origin)
            state = "COMPLETE"
            return value
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        except Exception as exc:
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:2000])
            raise
        finally:
            run.end(state)
            if run.error:
                # The result stays in Optuna; the missing record is reported, not swallowed.
                trial.set_user_attr("tracking_error", run.error)

    def _train_once(self, trial: optuna.Trial, config: TrialConfig, seed: int, run: TrialRun) -> float:
        s = self.settings
        data = self.data.get(config.preprocess)
        trial.set_user_attr("split", data.split.report)
        result = train(config, data, s.epochs, s.patience, seed,
                       callbacks=[LogEpochs(run, trial), PruneOnValAccuracy(trial)])
        size_mb = self._log_artifacts(trial, config, data, result, seed, run,
                                      keep_model=self._keep_model(trial, result.best_val_accuracy))
        metrics = result.metrics(size_mb)
        run.log_metrics(metrics)
        run.set_tags({"converged": result.converged, "diverged": result.diverged})
        for key, value in metrics.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("converged", result.converged)
        if not result.converged:
            log.warning("trial %d did not converge (best val_accuracy %.3f%s)", trial.number,
                        result.best_val_accuracy, ", loss diverged" if result.diverged else "")
        return result.best_val_accuracy

    def _train_repeats(self, trial: optuna.Trial, config: TrialConfig, run: TrialRun, name: str, origin: int) -> float:
        """--repeats K: the configuration trained with K seeds, each a run nested in the
        trial's. Each seed reports once, at step = its repeat index (never an epoch, so steps
        cannot collide), and the pruner (Wilcoxon) compares seed by seed with the best trial."""
        s = self.settings
        data = self.data.get(config.preprocess)
        trial.set_user_attr("split", data.split.report)
        seeds = repeat_seeds(s.seed, s.repeats)
        trial.set_user_attr("seeds", seeds)
        results: list[SeedResult] = []
        for r, seed in enumerate(seeds):
            seed_run = TrialRun(self.tracker, s.study_name, run.run_id, f"{name}-seed{r}",
                                {**config.flat(), "seed": seed, "repeat": r},
                                {"optuna.study": s.study_name, "optuna.trial": trial.number,
                                 "optuna.origin_trial": origin, "bloodsearch.repeat": r})
            seed_state = "FAIL"
            try:
                trial.set_user_attr("repeat", r)
                result = train(config, data, s.epochs, s.patience, seed, callbacks=[LogEpochs(seed_run, trial)])
                size_mb = self._log_artifacts(trial, config, data, result, seed, seed_run, keep_model=False)
                if r == 0:
                    # The trial's own model and pictures are its first seed's: a fixed choice,
                    # never the luckiest seed. ("best" compares that seed with earlier trials.)
                    self._log_artifacts(trial, config, data, result, seed, run,
                                        keep_model=self._keep_model(trial, result.best_val_accuracy))
                    run.log_metrics({"params_count": result.params_count})
                    trial.set_user_attr("params_count", result.params_count)
                seed_run.log_metrics(result.metrics(size_mb))
                seed_run.set_tags({"converged": result.converged, "diverged": result.diverged})
                seed_state = "COMPLETE"
            finally:
                seed_run.end(seed_state)
            results.append(SeedResult(seed, result.best_val_accuracy, result.epochs_run, result.converged, size_mb))
            del result
            summary = summarize(results)
            self._record_summary(trial, run, summary)
            trial.report(results[-1].val_accuracy, step=r)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after {r + 1} of {s.repeats} seeds: worse than the best trial, "
                                         f"seed by seed (Wilcoxon)")
        return summary.accuracy.mean

    def _record_summary(self, trial: optuna.Trial, run: TrialRun, summary: RepeatSummary) -> None:
        metrics = {**summary.metrics("val_"), "best_val_accuracy": summary.accuracy.mean,
                   "epochs_run": summary.epochs.mean}
        run.log_metrics(metrics)
        run.set_tags({"converged": summary.convergence_rate == 1.0})
        for key, value in metrics.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("converged", summary.convergence_rate == 1.0)

    def _log_artifacts(self, trial: optuna.Trial, config: TrialConfig, data, result, seed: int, run: TrialRun,
                       keep_model: bool) -> float:
        """Model, confusion matrix, learning curves, scaling and config into the run; the
        saved model's size in MB (with optimizer state, as the study measured it)."""
        s = self.settings
        with tempfile.TemporaryDirectory(prefix="bloodsearch-trial-") as tmp:
            out = Path(tmp)
            model_path = out / "model" / "model.keras"
            model_path.parent.mkdir()
            result.model.save(model_path)
            size_mb = model_path.stat().st_size / 2**20
            matrix = confusion(result.val_true, result.val_pred, data.num_classes)
            (out / "confusion_matrix.json").write_text(json.dumps(
                {"classes": list(data.classes), "matrix": matrix.tolist(), "split": "validation"}))
            title = f"{s.study_name} trial {trial.number}" + (f" seed {seed}" if s.repeats > 1 else "")
            confusion_png(matrix, data.classes, out / "confusion_matrix.png", f"{title}: validation")
            learning_curves_png(result.history, out / "learning_curves.png", title)
            data.stats.save(out / "scaling.json")
            (out / "trial_config.json").write_text(json.dumps(
                {"config": trial.user_attrs["config"], "seed": seed, "classes": list(data.classes)}, indent=1))
            if not keep_model:
                model_path.unlink()
                model_path.parent.rmdir()
            run.log_artifacts(out)
        return size_mb

    def _keep_model(self, trial: optuna.Trial, value: float) -> bool:
        if self.settings.log_models == "all":
            return True
        if self.settings.log_models == "none":
            return False
        done = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        return all(value > (t.value or 0.0) for t in done)
