"""Held-out evaluation of one trial's model on TEST (and TEST_SIMPLE): the first and only
use of those splits. Image-level accuracy overstates how many cells are told apart (the
public TEST has 71 original cells behind 2,487 images), so every result also reports
per-cell accuracy: a majority vote over the augmented copies of each original cell."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def cell_votes(groups: Sequence[str], y_true: np.ndarray, probs: np.ndarray) -> dict:
    """Majority vote of the predicted classes of each cell's images; a tie goes to the class
    with the highest mean probability among the tied ones."""
    y_pred = probs.argmax(axis=1)
    k = probs.shape[1]
    cells = []
    order: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        order.setdefault(g, []).append(i)
    for group, idx in order.items():
        votes = np.bincount(y_pred[idx], minlength=k)
        tied = np.flatnonzero(votes == votes.max())
        voted = int(tied[np.argmax(probs[idx][:, tied].mean(axis=0))])
        cells.append({"cell": group, "true": int(y_true[idx[0]]), "voted": voted, "images": len(idx),
                      "votes": votes.tolist()})
    correct = sum(c["true"] == c["voted"] for c in cells)
    return {"cells": len(cells), "cell_accuracy": correct / len(cells) if cells else float("nan"), "per_cell": cells}


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict:
    y_pred = probs.argmax(axis=1)
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "images": int(len(y_true)),
        "per_class": {c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for c, p, r, f, s in zip(classes, precision, recall, f1, support)},
        "macro_f1": float(np.mean(f1)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def study_row(accuracy: float, size_mb: float | None, epochs: int | None, converged: bool | None,
              cell_accuracy: float | None = None) -> str:
    """The study's table row: accuracy, model size (MB), epochs, converged."""
    parts = [f"accuracy {accuracy:.3f}"]
    if cell_accuracy is not None:
        parts.append(f"per-cell {cell_accuracy:.3f}")
    parts += [f"model size {size_mb:.1f} MB" if size_mb is not None else "model size ?",
              f"epochs {epochs}" if epochs is not None else "epochs ?",
              "converged" if converged else "not converged"]
    return " | ".join(parts)


def split_report(model, split, cache, classes: Sequence[str], batch_size: int = 128) -> dict:
    """Image-level metrics and per-cell votes of a model on one held-out split's cache."""
    from preprocessing import make_batches

    idx = np.flatnonzero(cache.valid)
    probs = np.asarray(model.predict(make_batches(cache, idx, batch_size), verbose=0))
    y_true = split.labels[idx]
    report = classification_metrics(y_true, probs, classes)
    report["cells"] = cell_votes([split.groups[i] for i in idx], y_true, probs)
    report["unreadable"] = len(cache.unreadable)
    return report


def evaluate_trial(handle, trial, tracker, cache_dir: str | None, batch_size: int = 128) -> dict:
    """Evaluate the trial's model on TEST (and TEST_SIMPLE) and log it all to the trial's run."""
    import json
    import tempfile
    from pathlib import Path

    from preprocessing import load_dataset
    from preprocessing.cache import build_cache

    from .inference import from_trial
    from .plots import confusion_png

    predictor = from_trial(handle, trial, tracker, cache_dir)
    data = load_dataset(handle.settings.data_dir, record_dir=cache_dir)
    results: dict = {"trial": trial.number, "val_accuracy": trial.value, "splits": {}}
    metrics: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bloodsearch-eval-") as tmp:
        for name in ("TEST", "TEST_SIMPLE"):
            if name not in data.splits:
                continue
            split = data.splits[name]
            cache = build_cache(split, predictor.config.preprocess, cache_dir, unet_from=data.train)
            report = split_report(predictor.model, split, cache, predictor.classes, batch_size)
            results["splits"][name] = report
            prefix = name.lower()
            metrics[f"{prefix}_accuracy"] = report["accuracy"]
            metrics[f"{prefix}_cell_accuracy"] = report["cells"]["cell_accuracy"]
            metrics[f"{prefix}_macro_f1"] = report["macro_f1"]
            for cls, m in report["per_class"].items():
                for key in ("precision", "recall", "f1"):
                    metrics[f"{prefix}_{key}_{cls}"] = m[key]
            matrix = np.asarray(report["confusion_matrix"])
            (Path(tmp) / f"confusion_matrix_{prefix}.json").write_text(
                json.dumps({"classes": predictor.classes, "matrix": matrix.tolist(), "split": name}))
            confusion_png(matrix, predictor.classes, Path(tmp) / f"confusion_matrix_{prefix}.png",
                          f"{handle.study.study_name} trial {trial.number}: {name}")
        if not results["splits"]:
            from .errors import SearchError

            raise SearchError(f"data dir {handle.settings.data_dir} has no TEST split to evaluate on")
        (Path(tmp) / "evaluation.json").write_text(json.dumps(results, indent=1))
        tracker.log_evaluation(trial.user_attrs["run_id"], metrics, tmp)
    test = results["splits"].get("TEST") or next(iter(results["splits"].values()))
    results["row"] = study_row(test["accuracy"], trial.user_attrs.get("model_size_mb"),
                               trial.user_attrs.get("epochs_run"), trial.user_attrs.get("converged"),
                               test["cells"]["cell_accuracy"])
    return results
