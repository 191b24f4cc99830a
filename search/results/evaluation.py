"""Held-out evaluation of one trial's model on TEST (and TEST_SIMPLE): the first and only
use of those splits. Image-level accuracy overstates how many cells are told apart (the
public TEST has 71 original cells behind 2,487 images), so every result also reports
per-cell accuracy: a majority vote over the augmented copies of each original cell."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from search.metrics import cell_votes, classification_metrics  # noqa: F401  (part of this module's API)
from search.record import TrialRecord


def study_row(accuracy: float, size_mb: float | None, epochs: float | None, converged: bool | None,
              cell_accuracy: float | None = None) -> str:
    """The study's table row: accuracy, model size (MB), epochs, converged."""
    parts = [f"accuracy {accuracy:.3f}"]
    if cell_accuracy is not None:
        parts.append(f"per-cell {cell_accuracy:.3f}")
    parts += [f"model size {size_mb:.1f} MB" if size_mb is not None else "model size ?",
              f"epochs {epochs:g}" if epochs is not None else "epochs ?",
              "converged" if converged else "not converged"]
    return " | ".join(parts)


def predict_split(model, cache, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the readable images, the model's class probabilities for them)."""
    from preprocessing import make_batches

    idx = np.flatnonzero(cache.valid)
    return idx, np.asarray(model.predict(make_batches(cache, idx, batch_size), verbose=0))


def probs_report(split, idx: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict:
    """Image-level metrics and per-cell votes of class probabilities on a held-out split."""
    y_true = split.labels[idx]
    report = classification_metrics(y_true, probs, classes)
    report["cells"] = cell_votes([split.groups[i] for i in idx], y_true, probs)
    return report


def split_report(model, split, cache, classes: Sequence[str], batch_size: int = 128) -> dict:
    """Image-level metrics and per-cell votes of a model on one held-out split's cache."""
    idx, probs = predict_split(model, cache, batch_size)
    report = probs_report(split, idx, probs, classes)
    report["unreadable"] = len(cache.unreadable)
    return report


@dataclass(frozen=True)
class Evaluation:
    trial: int
    val_accuracy: float | None
    model: str  # what was evaluated: "the trial's model", or "the bag of its K seed models"
    splits: dict[str, dict]  # split name -> split_report() of that model (with "per_seed" for a bag)
    row: str  # the study's table row, for TEST

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_trial(handle, trial: TrialRecord, tracker, cache_dir: str | None, batch_size: int = 128,
                   tta: str = "none") -> Evaluation:
    """Evaluate the trial on TEST (and TEST_SIMPLE) and log it all to the trial's run. A --cv
    or --repeats trial is its K fold or seed models: their bag (mean probabilities) is
    evaluated, and each model alone too (mean ± std). tta: each model's test-time augmentation."""
    import json
    import tempfile

    from preprocessing import load_dataset
    from preprocessing.cache import build_cache

    from search.plots import confusion_png
    from search.results.inference import from_trial
    from search.running.repeats import Spread
    from search.running.unet import masker_for

    from models.combine import with_tta

    from search.results.inference import member_models

    predictor = from_trial(handle, trial, tracker, cache_dir, whole=False)
    members, kind = member_models(trial, tracker)
    models = [with_tta(m, tta) for m in (members or [predictor.model])]
    what = (f"the bag of its {len(models)} {kind} models (mean probabilities)" if members else "the trial's model") + (
        f", TTA {tta}" if tta != "none" else "")
    data = load_dataset(handle.settings.data_dir, record_dir=cache_dir)
    splits: dict[str, dict] = {}
    metrics: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bloodsearch-eval-") as tmp:
        for name in ("TEST", "TEST_SIMPLE"):
            if name not in data.splits:
                continue
            split = data.splits[name]
            cache = build_cache(split, predictor.config.preprocess, cache_dir,
                                masker=masker_for(predictor.config.preprocess.image, data.train, cache_dir,
                                                  digest=trial.unet, tracker=tracker))
            runs = [predict_split(m, cache, batch_size) for m in models]
            idx = runs[0][0]
            report = probs_report(split, idx, np.mean([p for _, p in runs], axis=0), predictor.classes)
            report["unreadable"] = len(cache.unreadable)
            prefix = name.lower()
            if len(models) > 1:
                alone = [probs_report(split, idx, p, predictor.classes) for _, p in runs]
                report["per_model"] = {"kind": kind, "accuracy": asdict(Spread.of([r["accuracy"] for r in alone])),
                                       "cell_accuracy": asdict(Spread.of([r["cells"]["cell_accuracy"] for r in alone]))}
                metrics[f"{prefix}_{kind}_accuracy_mean"] = report["per_model"]["accuracy"]["mean"]
                metrics[f"{prefix}_{kind}_accuracy_std"] = report["per_model"]["accuracy"]["std"]
            splits[name] = report
            metrics[f"{prefix}_accuracy"] = report["accuracy"]
            metrics[f"{prefix}_cell_accuracy"] = report["cells"]["cell_accuracy"]
            metrics[f"{prefix}_macro_f1"] = report["macro_f1"]
            for cls, m in report["per_class"].items():
                for key in ("precision", "recall", "f1"):
                    if m[key] is not None:  # an absent class has no metric, not a zero
                        metrics[f"{prefix}_{key}_{cls}"] = m[key]
            matrix = np.asarray(report["confusion_matrix"])
            (Path(tmp) / f"confusion_matrix_{prefix}.json").write_text(
                json.dumps({"classes": predictor.classes, "matrix": matrix.tolist(), "split": name}))
            confusion_png(matrix, predictor.classes, Path(tmp) / f"confusion_matrix_{prefix}.png",
                          f"{handle.study.study_name} trial {trial.number}: {name}")
        if not splits:
            from search.errors import SearchError

            raise SearchError(f"data dir {handle.settings.data_dir} has no TEST split to evaluate on")
        (Path(tmp) / "evaluation.json").write_text(json.dumps(
            {"trial": trial.number, "val_accuracy": trial.value, "model": what, "tta": tta, "splits": splits}, indent=1))
        if tta != "none":  # each TTA mode its own metrics and folder, beside the plain evaluation
            metrics = {f"{k}_tta_{tta}": v for k, v in metrics.items()}
        tracker.log_evaluation(trial.run_id, metrics, tmp, "evaluation" if tta == "none" else f"evaluation-tta-{tta}")
    test = splits.get("TEST") or next(iter(splits.values()))
    row = study_row(test["accuracy"], trial.model_size_mb, trial.epochs_run, trial.converged,
                    test["cells"]["cell_accuracy"])
    if "per_model" in test:
        a, k = test["per_model"]["accuracy"], test["per_model"]["kind"]
        row = (f"bag of {a['n']} {k}s: {row} | each {k} alone {a['mean']:.3f} ± {a['std']:.3f} "
               f"[{a['min']:.3f}, {a['max']:.3f}]")
    return Evaluation(trial.number, trial.value, what, splits, row)
