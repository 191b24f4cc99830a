"""Scores of class probabilities against labels, shared by trials (validation, out-of-fold)
and results (TEST): image accuracy, log-loss, per-class metrics, and the per-cell majority
vote over an original cell's augmented copies."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, log_loss, precision_recall_fscore_support

from search.settings import METRICS  # noqa: F401  (the names; the scores are here)


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
    """Image-level metrics. Averages run over the classes the split holds: a class with no
    images is reported as absent (None), never as an F1 of 0 that would drag the macro mean."""
    y_pred = probs.argmax(axis=1)
    present = sorted(set(int(y) for y in y_true))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=present, zero_division=0)
    per_class = {c: {"precision": None, "recall": None, "f1": None, "support": 0, "absent": True} for c in classes}
    for label, p, r, f, s in zip(present, precision, recall, f1, support):
        per_class[classes[label]] = {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "images": int(len(y_true)),
        "per_class": per_class,
        "macro_f1": float(np.mean(f1)) if present else float("nan"),
        "classes_present": [classes[i] for i in present],
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=list(range(len(classes)))).tolist(),
    }


def mean_log_loss(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean cross-entropy of the true classes (a proper scoring rule: not saturated when
    accuracy is), with probabilities clipped away from 0 so one sure mistake stays finite."""
    probs = np.clip(np.nan_to_num(np.asarray(probs, dtype=np.float64), nan=0.0), 1e-7, 1.0)
    probs /= probs.sum(axis=1, keepdims=True)
    return float(log_loss(y_true, probs, labels=list(range(probs.shape[1]))))


def scores(y_true: np.ndarray, probs: np.ndarray, groups: Sequence[str]) -> dict[str, float]:
    """All three objective metrics of one set of predictions (each trial records all three,
    whichever it optimises, so a study can be re-ranked later without retraining)."""
    return {"accuracy": float(accuracy_score(y_true, np.asarray(probs).argmax(axis=1))),
            "log-loss": mean_log_loss(y_true, probs),
            "cell-accuracy": float(cell_votes(groups, y_true, np.asarray(probs))["cell_accuracy"])}


def objective(metric_values: dict[str, float], metric: str) -> float:
    """The value Optuna maximises for `metric`: log-loss is negated."""
    return -metric_values["log-loss"] if metric == "log-loss" else metric_values[metric]


def value_name(metric: str, cv: int = 0) -> str:
    """What a study's trial value is, for people: e.g. "-log-loss (mean of 3 folds)"."""
    name = {"accuracy": "val_accuracy", "log-loss": "-val_log_loss", "cell-accuracy": "val_cell_accuracy"}[metric]
    return f"{name} (mean of {cv} folds)" if cv >= 2 else name
