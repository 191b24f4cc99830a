"""`search replicate`: one fixed configuration trained K times from scratch, each seed
evaluated once on TEST, summarised as the study's table row.

MLflow: experiment `replicate`, a run per replication with a nested run per seed; the
table of seeds and the row are artifacts of the replication's run.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from preprocessing.groups import Grouping
from studies import TrialConfig

from search.errors import SearchError
from search.repeats import RepeatSummary, SeedResult, bag_members, repeat_seeds, summarize
from search.stores.tracking import Tracker, TrialRun

EXPERIMENT = "replicate"


@dataclass
class Replication:
    """What to re-train and how: the configuration and the training budget it had."""

    name: str
    config: TrialConfig
    data_dir: str
    epochs: int
    patience: int
    seed: int
    val_fraction: float
    source: dict
    unet: str | None = None  # a trial's U-Net digest (mask=unet): the one its replicas mask with
    cv: int = 0  # K >= 2: each seed trains K fold models and is judged as their bag
    tta: str = "none"  # test-time augmentation of each seed's TEST predictions
    grouping: Grouping = Grouping()  # the study's groups: its folds, and what clean TEST leaves out
    metric: str = "accuracy"  # the study's: what early stopping watches (search.metrics.REGISTRY)
    warmup: int = 0  # the study's --warmup-epochs

    def __post_init__(self) -> None:
        from search.tta import check_size

        # Before K seeds are trained, not after: their TEST predictions are where the TTA applies.
        if self.config is not None:
            check_size(self.tta, self.config.preprocess.size, f"the size of {self.name}")


# What `search replicate --study` uses when no study stored its own.
DEFAULT_EPOCHS, DEFAULT_PATIENCE, DEFAULT_SEED, DEFAULT_VAL_FRACTION = 20, 5, 0, 0.2


def of_trial(handle, trial, epochs: int | None = None, patience: int | None = None,
             seed: int | None = None, tta: str = "none") -> Replication:
    """A study's trial, re-trained with its study's budget, split seed and data: a --cv
    trial as K folds per seed, judged as their bag, as the trial is."""
    s = handle.settings
    return Replication(f"{s.study_name}-trial{trial.number}", trial.config, s.data_dir, epochs or s.epochs,
                       patience or s.patience, s.seed if seed is None else seed, s.val_fraction,
                       {"study_name": s.study_name, "trial": trial.number}, unet=trial.unet, cv=s.cv, tta=tta,
                       grouping=s.grouping(), metric=s.metric, warmup=s.warmup_epochs)


def of_study(study: str, fixed: dict[str, str], data_dir: str, epochs: int | None = None,
             patience: int | None = None, seed: int | None = None, tta: str = "none", cv: int = 0,
             grouping: Grouping = Grouping()) -> Replication:
    """A shipped or .py study's fixed configuration (e.g. seed-fcn), with --param overrides."""
    from studies import check_params, load_study

    config = check_params(load_study(study), fixed, study, fixed_only=True)
    name = Path(study).stem if study.endswith(".py") else study
    return Replication(name, config, data_dir, epochs or DEFAULT_EPOCHS, patience or DEFAULT_PATIENCE,
                       DEFAULT_SEED if seed is None else seed, DEFAULT_VAL_FRACTION, {"study": study, **fixed},
                       cv=cv, tta=tta, grouping=grouping)


@dataclass
class ReplicateResult:
    summary: RepeatSummary
    seeds: list[SeedResult]
    per_seed: list[dict]
    run_id: str | None
    tracking_error: str | None

    def to_dict(self) -> dict:
        return {"row": self.summary.row(), "summary": self.summary.to_dict(), "seeds": self.per_seed,
                "run_id": self.run_id, "tracking_error": self.tracking_error}


def replicate(rep: Replication, repeats: int, tracker: Tracker, cache_dir: str | None,
              say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)) -> ReplicateResult:
    from preprocessing import build_cache

    from search.running.data import DataProvider
    from search.running.unet import masker_for

    def unets(spec, train):  # a trial's replicas mask with the trial's own U-Net
        return masker_for(spec, train, cache_dir, digest=rep.unet, tracker=tracker)

    provider = DataProvider(rep.data_dir, cache_dir, rep.val_fraction, rep.seed, unets=unets, cv=rep.cv,
                            grouping=rep.grouping)
    dataset = provider.dataset
    if "TEST" not in dataset.splits:
        raise SearchError(f"--data-dir {rep.data_dir} has no TEST split to evaluate on")
    classes = provider.get(rep.config.preprocess).classes  # builds the cache first
    test = dataset.splits["TEST"]
    test_cache = build_cache(test, rep.config.preprocess, cache_dir,
                             masker=unets(rep.config.preprocess.image, dataset.train))
    seeds = repeat_seeds(rep.seed, repeats)
    params = {**rep.config.flat(), "repeats": repeats, "epochs": rep.epochs, "patience": rep.patience,
              "warmup_epochs": rep.warmup,
              "cv": rep.cv, "tta": rep.tta,
              "data_dir": rep.data_dir, "val_fraction": rep.val_fraction, "seeds": seeds,
              **{f"source.{k}": v for k, v in rep.source.items()}}
    parent = TrialRun(tracker, EXPERIMENT, None, rep.name, params, {"bloodsearch.replicate": "true"})
    try:
        results, per_seed = _train_seeds(rep, seeds, tracker, parent, provider, test, test_cache, say)
    except BaseException:
        parent.end("FAIL")  # the seeds that finished keep their runs
        raise
    summary = summarize(results)
    _log_summary(parent, summary, per_seed, classes)
    parent.end("COMPLETE")
    return ReplicateResult(summary, results, per_seed, parent.run_id, parent.error)


def _train_seeds(rep, seeds, tracker, parent, provider, test, test_cache, say) -> tuple[list[SeedResult], list[dict]]:
    """Each seed from scratch, one after another; a line per model trained says where it is
    (minutes each on a CPU)."""
    results: list[SeedResult] = []
    per_seed: list[dict] = []
    started = time.time()
    for r, seed in enumerate(seeds):
        def progress(line: str) -> None:
            say(f"seed {r + 1}/{len(seeds)}{line}; {time.time() - started:.0f} s in all")

        result, row = _train_seed(rep, r, seed, tracker, parent, provider, test, test_cache, progress)
        results.append(result)
        per_seed.append(row)
        what = f"bag of {row['models']} folds" if row["models"] > 1 else "model"
        say(f"seed {r + 1}/{len(seeds)} ({seed}): TEST accuracy {row['test_accuracy']:.4f} ({what}"
            f"{', TTA ' + rep.tta if rep.tta != 'none' else ''}), per-group {row['test_group_accuracy']:.4f}, "
            f"val {row['best_val_accuracy']:.4f}")
    return results, per_seed


def _train_seed(rep, r: int, seed: int, tracker, parent, provider, test, test_cache,
                progress: Callable[[str], None]) -> tuple[SeedResult, dict]:
    """One seed: one model, or K fold models (--cv) whose bag is what is judged, trained as
    the objective trains a trial's models; TEST once, logged to the seed's nested run."""
    from search.results.evaluation import predict_split, probs_report, score_metrics
    from search.running.objective import LogEpochs
    from search.running.training import train_saved

    from models.combine import with_tta

    folds = list(range(rep.cv)) if rep.cv >= 2 else [None]
    run = TrialRun(tracker, EXPERIMENT, parent.run_id, f"{rep.name}-seed{r}",
                   {**rep.config.flat(), "seed": seed, "repeat": r}, {"bloodsearch.repeat": r})
    state = "FAIL"
    fits, probs = [], []
    try:
        for fold in folds:
            data = provider.get(rep.config.preprocess, fold)
            with tempfile.TemporaryDirectory(prefix="bloodsearch-replicate-") as tmp:
                trained = train_saved(rep.config, data, rep.epochs, rep.patience, seed, Path(tmp), fold,
                                      callbacks=[LogEpochs(run)], metric=rep.metric, warmup=rep.warmup)
                idx, p = predict_split(with_tta(trained.result.model, rep.tta), test_cache)
            probs.append(p)
            fits.append(trained.fit)
            progress(f"{f', fold {fold + 1}/{len(folds)}' if fold is not None else ''}: val "
                     f"{trained.fit.val_accuracy:.4f}, {trained.fit.epochs_run} epochs, {trained.fit.train_seconds:.0f} s")
            del trained
        kept = bag_members(fits)
        report = probs_report(test, idx, np.mean([probs[k] for k in kept], axis=0), provider.dataset.classes,
                              frozenset(provider.dataset.train.groups))
        state = "COMPLETE"
    finally:
        run.end(state)
    val = float(np.mean([f.val_accuracy for f in fits]))
    epochs = int(round(np.mean([f.epochs_run for f in fits])))
    converged = all(f.converged for f in fits)
    size_mb = sum(f.model_size_mb for f in fits)  # a bag's size is its members'
    metrics = {**fits[0].metrics(), "best_val_accuracy": val, "epochs_run": epochs, "converged": float(converged),
               "model_size_mb": size_mb, "train_seconds": sum(f.train_seconds for f in fits),
               **score_metrics("test", report), "test_macro_f1": report["macro_f1"],
               **{f"test_recall_{c}": m["recall"] for c, m in report["per_class"].items()}}
    run.log_metrics(metrics)
    result = SeedResult(seed, val, epochs, converged, size_mb, report["accuracy"], report["groups"]["group_accuracy"])
    return result, {"repeat": r, "seed": seed, **metrics, "converged": converged, "models": len(kept),
                    "confusion_matrix": report["confusion_matrix"]}


def _log_summary(parent: TrialRun, summary: RepeatSummary, per_seed: list[dict], classes) -> None:
    parent.log_metrics(summary.metrics("test_"))
    columns = ["repeat", "seed", "test_accuracy", "test_group_accuracy", "best_val_accuracy", "epochs_run",
               "converged", "model_size_mb", "train_seconds"]
    with tempfile.TemporaryDirectory(prefix="bloodsearch-replicate-") as tmp:
        out = Path(tmp)
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(s[c]) for c in columns) + " |" for s in per_seed]
        (out / "replicate.md").write_text("\n".join([summary.row(), "", *lines, ""]))
        (out / "summary.json").write_text(json.dumps(
            {"row": summary.row(), "summary": summary.to_dict(), "classes": list(classes), "seeds": per_seed}, indent=1))
        parent.log_artifacts(out)
    # MLflow's own table artifact: shown as a table in the run's artifact view.
    parent.log_table({c: [s[c] for s in per_seed] for c in columns}, "seeds.json")


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
