"""The Optuna objective: trial -> TrialConfig -> trained model(s) -> the study's metric on
validation, with every trial recorded as an MLflow child run whose status mirrors the
trial's. A trial trains one model, K seeds (--repeats) or K folds (--cv); seeds and folds are
runs nested in the trial's."""
from __future__ import annotations

import json
import logging
import math
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import keras
import optuna

from studies import Params, TrialConfig

from search.plots import confusion_png, learning_curves_png
from search.record import ACTIVE, ENQUEUED, FitResult, S, best_of, inherited, read_trials
from search.running.data import DataProvider, TrialData, confusion
from search.running.gpus import worker_device
from search.running.recorder import TrialRecorder, run_name, run_params, run_tags
from search.running.requeue import requeue, vanished_file
from search.repeats import bag_members, repeat_seeds
from search.metrics import metric as metric_of, objective as objective_value, reported
from search.running.oof import OutOfFold
from search.running.training import train_saved
from search.settings import EPOCH_PRUNERS, PARENT_RUN_ATTR, SearchSettings
from search.stores.tracking import Tracker, TrialRun

log = logging.getLogger("bloodsearch.objective")


FAILURE_ARTIFACT = "failure/traceback.txt"


def say_failed(number: int, exc: BaseException, run_id: str | None = None, then: str = "") -> None:
    """One line per failed trial on the worker's stderr (the worker silences Optuna's own
    report of it, a traceback per trial); the traceback is in the trial's MLflow run."""
    text = str(exc).strip()
    reason = f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__
    where = f" (traceback: MLflow run {run_id}, {FAILURE_ARTIFACT})" if run_id else ""
    print(f"trial {number} failed: {reason}{where}{then}", file=sys.stderr, flush=True)


class SurplusTrial(Exception):
    """Started in a race after the study already had its trial count; never trained."""


class PruneOnEpochs(keras.callbacks.Callback):
    """Report the epoch's validation signal (the study's metric's Keras monitor, negated when
    lower is better: -val_loss for a log-loss study) and stop the fit when the pruner says so.
    With --cv the folds' epochs follow each other (step = fold x epochs + epoch), in the same fold order in every trial, so the pruner
    compares trials at the same fold and epoch, and fold 0 screens them.
    prune=False reports without stopping: a baseline's curve still informs the pruner."""

    def __init__(self, trial: optuna.Trial, step_offset: int = 0, signal: str = "val_accuracy",
                 prune: bool = True) -> None:
        super().__init__()
        self.trial, self.step_offset, self.signal, self.prune = trial, step_offset, signal, prune

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        value = (logs or {}).get(self.signal)
        if value is None or math.isnan(value):
            return
        value = reported(self.signal, float(value))
        self.trial.report(value, step=self.step_offset + epoch)
        if self.prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {self.step_offset + epoch + 1} with {self.signal} {abs(value):.4f}")


class LogEpochs(keras.callbacks.Callback):
    """Per-epoch metrics to MLflow as they happen, so a running trial is visible in the UI;
    the epoch reached into the trial's record, for `search status`."""

    KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")

    def __init__(self, run: TrialRun, recorder: TrialRecorder | None = None) -> None:
        super().__init__()
        self.run, self.recorder = run, recorder

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = logs or {}
        self.run.log_metrics({k: logs[k] for k in self.KEYS if k in logs}, step=epoch)
        if self.recorder is not None:
            self.recorder.epoch(epoch + 1)


@dataclass
class _TrialModels:
    """What the models of one trial share while they train, one after another."""

    trial: optuna.Trial
    recorder: TrialRecorder
    config: TrialConfig
    run: TrialRun  # the trial's run
    name: str
    origin: int
    held: Path  # model k is saved under held/k until the trial decides to keep models
    nested: bool  # several models: each has a run nested in the trial's
    # A known configuration (--enqueue, --enqueue-study) is never pruned: every other trial is
    # read against its value, and a slow first epochs' start (seen at a high learning rate) is
    # not a bad configuration.
    baseline: bool = False
    runs: list[TrialRun] = field(default_factory=list)  # each model's run, in order


def trial_seed(base: int, trial_number: int) -> int:
    return (base * 1_000_003 + trial_number) % (2**31 - 1)


class Objective:
    def __init__(self, settings: SearchSettings, suggest: Callable[[Params], TrialConfig], tracker: Tracker,
                 data: DataProvider) -> None:
        self.settings, self.suggest, self.tracker, self.data = settings, suggest, tracker, data
        self.parent_run: str | None = None  # the study's MLflow parent run

    def _claim(self, trial: optuna.Trial, recorder: TrialRecorder) -> None:
        """Refuse a trial started after the study reached its count (a race between workers).
        A trial numbered below the count cannot be past it (at most number + 1 trials come
        before it), so it is spared the read of every trial: through the gRPC proxy that read
        carries every running trial, and it was one of four per trial (docs/benchmarks.md)."""
        if trial.number < self.settings.trials:
            return
        active = trial.study.get_trials(deepcopy=False, states=ACTIVE)
        rank = sum(1 for t in active if t.number <= trial.number)
        if rank > self.settings.trials:
            recorder.surplus()
            trial.study.stop()
            raise SurplusTrial(f"trial {trial.number} is beyond the study's {self.settings.trials} trials")

    def __call__(self, trial: optuna.Trial) -> float:
        recorder = TrialRecorder(trial)
        self._claim(trial, recorder)
        s = self.settings
        try:
            config = self.suggest(Params(trial, s.params))
        except Exception as exc:
            recorder.failed(exc)
            say_failed(trial.number, exc)
            raise
        # A retried trial inherits its original's record (search.record.INHERITED): its seed too.
        origin, seed = inherited(trial.user_attrs, trial.number)
        seed = seed if seed is not None else trial_seed(s.seed, origin)
        recorder.start(config, seed, origin)
        name = run_name(s.study_name, trial.number, origin)
        if self.parent_run is None:  # fixed at launch: read once per process, not per trial
            self.parent_run = trial.study.user_attrs[PARENT_RUN_ATTR]
        parent = self.parent_run
        run = TrialRun(self.tracker, s.study_name, parent, name, run_params(config, s, seed),
                       {**run_tags(s, trial.number, origin, worker_device(), trial.user_attrs.get(ENQUEUED)),
                        "optuna.state": "RUNNING"})
        state = "FAIL"
        try:
            recorder.run(run)
            value = self._train(trial, recorder, config, seed, run, name, origin)
            state = "COMPLETE"
            return value
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        except Exception as exc:
            recorder.failed(exc)
            run.log_text(traceback.format_exc(), FAILURE_ARTIFACT)
            say_failed(trial.number, exc, run.run_id, self._retry_vanished(trial, exc))
            raise
        finally:
            run.end(state)
            if run.error:
                # The result stays in Optuna; the missing record is reported, not swallowed.
                recorder.tracking_error(run.error)

    def _retry_vanished(self, trial: optuna.Trial, exc: BaseException) -> str:
        """A trial failed by a file that vanished (its image cache deleted by hand, say) is
        queued again once, and this process forgets what it had memoised of those files."""
        missing = vanished_file(exc)
        if missing is None:
            return ""
        self.data.forget()
        requeue(trial.study, next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number))
        return f"; {missing} vanished during the trial, so it is queued again once"

    def _units(self, seed: int) -> list[tuple[int, int, int | None]]:
        """(index, seed, fold) of each model the trial trains: one; K seeds shared by every
        trial (paired); or K folds, fixed for the study, trained with the trial's seed."""
        s = self.settings
        if s.cv >= 2:
            return [(k, seed, k) for k in range(s.cv)]
        if s.repeats > 1:
            return [(r, r_seed, None) for r, r_seed in enumerate(repeat_seeds(s.seed, s.repeats))]
        return [(0, seed, None)]

    def _train(self, trial: optuna.Trial, recorder: TrialRecorder, config: TrialConfig, seed: int, run: TrialRun,
               name: str, origin: int) -> float:
        """Train the trial's models one after another. Alone, a model's run is the trial's;
        seeds and folds each get a run nested in the trial's, with their own curves, scores,
        pictures and (when the trial keeps models, decided on its value once all are in) their
        model. The trial's value is the mean over its models of the study's metric."""
        s = self.settings
        units = self._units(seed)
        oof = OutOfFold() if s.cv >= 2 else None
        values: list[float] = []
        with tempfile.TemporaryDirectory(prefix="bloodsearch-models-") as held:
            t = _TrialModels(trial, recorder, config, run, name, origin, Path(held), nested=len(units) > 1,
                             baseline=ENQUEUED in trial.user_attrs)
            for index, unit_seed, fold in units:
                fit, data = self._train_unit(t, index, unit_seed, fold, oof)
                values.append(objective_value(fit.scores(), s.metric))
                if t.nested:
                    recorder.summary(run)
                self._prune_pairwise(trial, values, len(units), prune=not t.baseline)
            value = sum(values) / len(values)
            if oof is not None:
                run.log_artifacts(oof.save(t.held / "oof"))
            if self._keep_model(trial, value):
                self._log_models(t, data)
        return value

    def _train_unit(self, t: "_TrialModels", index: int, seed: int, fold: int | None,
                    oof: OutOfFold | None) -> tuple[FitResult, TrialData]:
        """One seed or fold: its data, its run, the fit (with epoch pruning), its pictures and
        saved model, its record. Returns its FitResult and the data it trained on."""
        s = self.settings
        data = self.data.get(t.config.preprocess, fold)
        if index == 0:
            t.recorder.data(data.split.report, data.unet)
        run = self._unit_run(t, index, seed, fold)
        run.log_split(data.cache.image_set, data.split.report)  # lineage: what it saw
        if t.nested and (fold is not None or index == 0):
            t.run.log_split(data.cache.image_set, data.split.report)
        callbacks = [LogEpochs(run, t.recorder)]
        if s.pruner in EPOCH_PRUNERS:
            callbacks.append(PruneOnEpochs(t.trial, index * s.epochs, metric_of(s.metric).monitor, prune=not t.baseline))
        state = "FAIL"
        try:
            trained = train_saved(t.config, data, s.epochs, s.patience, seed, t.held / str(index), fold,
                                  callbacks=callbacks, metric=s.metric, tta=s.tta, warmup=s.warmup_epochs)
            self._log_artifacts(t.trial, t.config, data, trained.result, seed, run)
            if t.nested and index == 0:  # the trial's own pictures are its first model's
                self._log_artifacts(t.trial, t.config, data, trained.result, seed, t.run)
            t.recorder.fit(trained.fit, run, diverged=trained.result.diverged)
            if oof is not None:
                oof.add(data, fold, trained.result.val_probs)
            state = "COMPLETE"
        finally:
            if t.nested:
                run.end(state)
        t.runs.append(run)
        if not trained.result.converged:
            kind = "fold" if s.cv >= 2 else "repeat"
            log.warning("trial %d%s did not converge (best val_accuracy %.3f%s)", t.trial.number,
                        f" {kind} {index}" if t.nested else "", trained.result.best_val_accuracy,
                        ", loss diverged" if trained.result.diverged else "")
        return trained.fit, data

    def _unit_run(self, t: "_TrialModels", index: int, seed: int, fold: int | None) -> TrialRun:
        """The trial's own run for a lone model; else a run nested in it, per seed or fold."""
        if not t.nested:
            return t.run
        s = self.settings
        kind = "fold" if s.cv >= 2 else "repeat"
        return TrialRun(self.tracker, s.study_name, t.run.run_id,
                        f"{t.name}-{'fold' if fold is not None else 'seed'}{index}",
                        {**t.config.flat(), "seed": seed, kind: index},
                        {"optuna.study": s.study_name, "optuna.trial": t.trial.number, "optuna.origin_trial": t.origin,
                         f"bloodsearch.{kind}": index})

    def _prune_pairwise(self, trial: optuna.Trial, values: list[float], total: int, prune: bool = True) -> None:
        """Wilcoxon sees one value per seed or fold, at step = its index, compared pair by pair
        with the best trial's (epoch pruners are callbacks inside each fit)."""
        if self.settings.pruner != "wilcoxon":
            return
        index, kind = len(values) - 1, "fold" if self.settings.cv >= 2 else "repeat"
        trial.report(values[-1], step=index)
        if prune and trial.should_prune():
            raise optuna.TrialPruned(f"pruned after {index + 1} of {total} {kind}s: worse than the best trial, "
                                     f"pair by pair (Wilcoxon)")

    def _log_models(self, t: "_TrialModels", data) -> None:
        """The models into their runs, and the trial's as an MLflow model that takes raw
        images (what predict serves)."""
        t.run.log_artifacts(t.held / "0")  # the first model: what predict used before bags
        if t.nested:
            for index, run in enumerate(t.runs):
                run.log_artifacts(t.held / str(index))
        from search.serving.mlflow_model import log_model

        example = data.cache.image_set.path(int(data.split.val[0]))
        t.run.log_model(lambda tracker, run_id: log_model(
            tracker, run_id, self._predictor(t.config, data, t.held, t.recorder.fits, t.name), t.name, example, validate=False))

    def _predictor(self, config: TrialConfig, data, held: Path, fits: Sequence[FitResult], name: str):
        """The trial's model as `search predict` serves it: a --cv trial's bag of fold models,
        else its (first) model; with the study's test-time augmentation and U-Net."""
        from models import load_model
        from models.combine import averaged, with_tta
        from search.serving.predictor import Predictor

        kept = bag_members(fits) if self.settings.cv >= 2 else [0]
        files = [held / str(k) / "model" / "model.keras" for k in kept]
        model = averaged([load_model(f) for f in files]) if len(files) > 1 else load_model(files[0])
        if self.settings.tta != "none":
            model = with_tta(model, self.settings.tta)
        unet = None
        if data.unet:
            from search.serving.unets import unet_by_digest

            unet = load_model(unet_by_digest(data.unet, self.settings.cache_dir, self.tracker).model_dir / "model.keras")
        return Predictor(model, config, list(data.classes), unet, {"run": name, "tta": self.settings.tta,
                                                                   "members": kept})

    def _log_artifacts(self, trial: optuna.Trial, config: TrialConfig, data, result, seed: int,
                       run: TrialRun) -> None:
        """Confusion matrix, learning curves, scaling and config into the run."""
        s = self.settings
        with tempfile.TemporaryDirectory(prefix="bloodsearch-trial-") as tmp:
            out = Path(tmp)
            matrix = confusion(result.val_true, result.val_pred, data.num_classes)
            (out / "confusion_matrix.json").write_text(json.dumps(
                {"classes": list(data.classes), "matrix": matrix.tolist(), "split": "validation"}))
            fold = data.split.report.get("fold")
            title = f"{s.study_name} trial {trial.number}" + (
                f" fold {fold}" if fold is not None else f" seed {seed}" if s.repeats > 1 else "")
            confusion_png(matrix, data.classes, out / "confusion_matrix.png", f"{title}: validation")
            learning_curves_png(result.history, out / "learning_curves.png", title)
            data.stats.save(out / "scaling.json")
            (out / "trial_config.json").write_text(json.dumps(
                {"config": config.to_dict(), "seed": seed, "classes": list(data.classes)}, indent=1))
            run.log_artifacts(out)

    def _keep_model(self, trial: optuna.Trial, value: float) -> bool:
        if self.settings.log_models == "all":
            return True
        if self.settings.log_models == "none":
            return False
        best = best_of(read_trials(trial.study, states=(S.COMPLETE,)))
        return best is None or value > best.value
