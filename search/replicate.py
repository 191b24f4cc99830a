"""`search replicate`: one fixed configuration trained K times from scratch, each seed
evaluated once on TEST, summarised as the study's table row.

MLflow: experiment `replicate`, a run per replication with a nested run per seed; the
table of seeds and the row are artifacts of the replication's run.
"""
from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from studies import TrialConfig

from .errors import SearchError
from .repeats import RepeatSummary, SeedResult, repeat_seeds, summarize
from .tracking import Tracker, TrialRun

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

    from .data import DataProvider

    provider = DataProvider(rep.data_dir, cache_dir, rep.val_fraction, rep.seed)
    dataset = provider.dataset
    if "TEST" not in dataset.splits:
        raise SearchError(f"--data-dir {rep.data_dir} has no TEST split to evaluate on")
    data = provider.get(rep.config.preprocess)
    test = dataset.splits["TEST"]
    test_cache = build_cache(test, rep.config.preprocess, cache_dir, unet_from=dataset.train)
    seeds = repeat_seeds(rep.seed, repeats)
    params = {**rep.config.flat(), "repeats": repeats, "epochs": rep.epochs, "patience": rep.patience,
              "data_dir": rep.data_dir, "val_fraction": rep.val_fraction, "seeds": seeds,
              **{f"source.{k}": v for k, v in rep.source.items()}}
    parent = TrialRun(tracker, EXPERIMENT, None, rep.name, params, {"bloodsearch.replicate": "true"})
    try:
        results, per_seed = _train_seeds(rep, seeds, tracker, parent, data, test, test_cache, say)
    except BaseException:
        parent.end("FAIL")  # the seeds that finished keep their runs
        raise
    summary = summarize(results)
    _log_summary(parent, summary, per_seed, data.classes)
    parent.end("COMPLETE")
    return ReplicateResult(summary, results, per_seed, parent.run_id, parent.error)


def _train_seeds(rep, seeds, tracker, parent, data, test, test_cache, say) -> tuple[list[SeedResult], list[dict]]:
    from .evaluation import split_report
    from .objective import LogEpochs
    from .training import train

    results: list[SeedResult] = []
    per_seed: list[dict] = []
    for r, seed in enumerate(seeds):
        run = TrialRun(tracker, EXPERIMENT, parent.run_id, f"{rep.name}-seed{r}",
                       {**rep.config.flat(), "seed": seed, "repeat": r}, {"bloodsearch.repeat": r})
        state = "FAIL"
        try:
            result = train(rep.config, data, rep.epochs, rep.patience, seed, callbacks=[LogEpochs(run)])
            report = split_report(result.model, test, test_cache, data.classes)
            with tempfile.TemporaryDirectory(prefix="bloodsearch-replicate-") as tmp:
                path = Path(tmp) / "model.keras"
                result.model.save(path)  # with optimizer state, as the study measured size
                size_mb = path.stat().st_size / 2**20
            state = "COMPLETE"
        finally:
            run.end(state)
        seed_result = SeedResult(seed, result.best_val_accuracy, result.epochs_run, result.converged, size_mb,
                                 report["accuracy"], report["cells"]["cell_accuracy"])
        metrics = {**result.metrics(size_mb), "test_accuracy": report["accuracy"],
                   "test_cell_accuracy": report["cells"]["cell_accuracy"], "test_macro_f1": report["macro_f1"],
                   **{f"test_recall_{c}": m["recall"] for c, m in report["per_class"].items()}}
        run.log_metrics(metrics)
        results.append(seed_result)
        per_seed.append({"repeat": r, "seed": seed, **metrics, "confusion_matrix": report["confusion_matrix"]})
        say(f"seed {r + 1}/{len(seeds)} ({seed}): TEST accuracy {report['accuracy']:.4f}, per-cell "
            f"{report['cells']['cell_accuracy']:.4f}, val {result.best_val_accuracy:.4f}, "
            f"{result.epochs_run} epochs, {result.train_seconds:.0f} s")
        del result
    return results, per_seed


def _log_summary(parent: TrialRun, summary: RepeatSummary, per_seed: list[dict], classes) -> None:
    parent.log_metrics(summary.metrics("test_"))
    columns = ["repeat", "seed", "test_accuracy", "test_cell_accuracy", "best_val_accuracy", "epochs_run",
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
