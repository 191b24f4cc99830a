"""Scores of class probabilities against labels, shared by trials (validation, out-of-fold)
and results (TEST): image accuracy, log-loss, per-class metrics, the per-group verdicts
(majority vote and mean probability over a group's images) and intervals over groups."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, log_loss, precision_recall_fscore_support

from search.settings import METRICS  # noqa: F401  (the names; the scores are here)


def group_votes(groups: Sequence[str], y_true: np.ndarray, probs: np.ndarray) -> dict:
    """One verdict per group and true class (a patient's eosinophils, one field's cell): by
    majority vote of its images' predicted classes (a tie goes to the class with the highest
    mean probability among the tied ones), and by the highest mean probability."""
    y_pred = probs.argmax(axis=1)
    k = probs.shape[1]
    members: dict[tuple[str, int], list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault((g, int(y_true[i])), []).append(i)
    rows = []
    for (group, true), idx in members.items():
        votes = np.bincount(y_pred[idx], minlength=k)
        tied = np.flatnonzero(votes == votes.max())
        mean = probs[idx].mean(axis=0)
        rows.append({"group": group, "true": true, "voted": int(tied[np.argmax(mean[tied])]),
                     "mean_prob": int(np.argmax(mean)), "images": len(idx), "votes": votes.tolist()})
    n = len(rows)
    return {"groups": n, "group_accuracy": sum(r["true"] == r["voted"] for r in rows) / n if n else float("nan"),
            "group_accuracy_mean_prob": sum(r["true"] == r["mean_prob"] for r in rows) / n if n else float("nan"),
            "per_group": rows}


def group_bootstrap(y_true: np.ndarray, y_pred: np.ndarray, groups: Sequence[str], n_boot: int = 2000,
                    seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of image accuracy when whole groups are resampled: a held-out set
    of 2,487 images from 71 fields is 71 draws, not 2,487 (4 monocyte fields make a quarter of
    the public TEST's monocytes each)."""
    ids, inverse = np.unique(np.asarray(groups), return_inverse=True)
    correct = np.bincount(inverse, weights=(np.asarray(y_true) == np.asarray(y_pred)).astype(float), minlength=len(ids))
    sizes = np.bincount(inverse, minlength=len(ids)).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), size=(n_boot, len(ids)))
    accs = correct[draws].sum(axis=1) / sizes[draws].sum(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(accs, tail)), float(np.quantile(accs, 1 - tail))


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
            "group-accuracy": float(group_votes(groups, y_true, np.asarray(probs))["group_accuracy"])}


def objective(metric_values: dict[str, float], metric: str) -> float:
    """The value Optuna maximises for `metric`: log-loss is negated."""
    return -metric_values["log-loss"] if metric == "log-loss" else metric_values[metric]


def value_name(metric: str, cv: int = 0) -> str:
    """What a study's trial value is, for people: e.g. "-log-loss (mean of 3 folds)"."""
    name = {"accuracy": "val_accuracy", "log-loss": "-val_log_loss", "group-accuracy": "val_group_accuracy"}[metric]
    return f"{name} (mean of {cv} folds)" if cv >= 2 else name
