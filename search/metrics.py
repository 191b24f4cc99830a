"""Scores of class probabilities against labels, shared by trials (validation, out-of-fold)
and results (TEST): image accuracy, log-loss, per-class metrics, the per-group verdicts
(majority vote and mean probability over a group's images) and intervals over groups.

`REGISTRY` is the one place a metric a study can optimise (`--metric`) is described: its
name, direction, how it is computed, its MLflow key, its display name and what Keras early
stopping watches for it. Every trained model records every metric in it, so adding one here
adds it to the record, the CLI, `best`, `evaluate` and the MLflow runs.

scikit-learn is imported where it is used: the `search` CLI imports this module to start.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

# Keras logs early stopping and the epoch pruners can watch, and which way is better.
MONITORS = {"val_accuracy": "max", "val_loss": "min"}


@dataclass(frozen=True)
class Metric:
    name: str  # --metric, and its key in scores() and a record's val_scores
    label: str  # for people, in prose and tables
    maximize: bool  # Optuna maximises the trial's value: a lower-is-better metric is negated
    compute: Callable[[np.ndarray, np.ndarray, Sequence[str]], float]  # (true labels, probabilities, groups)
    mlflow_key: str  # a trained model's final validation score in its MLflow run
    monitor: str  # the Keras log early stopping restores the best of, and epoch pruners see

    @property
    def key(self) -> str:
        """The name as MLflow and JSON keys spell it: test_<key>, val_<key>_mean."""
        return self.name.replace("-", "_")

    @property
    def value_name(self) -> str:
        """What a trial's value is when this metric is optimised (negated when lower is better)."""
        return ("" if self.maximize else "-") + f"val_{self.key}"

    @property
    def value_key(self) -> str:
        """The same as an MLflow key: val_accuracy, neg_val_log_loss."""
        return ("" if self.maximize else "neg_") + f"val_{self.key}"

    def value(self, y_true: np.ndarray, probs: np.ndarray, groups: Sequence[str]) -> float:
        return float(self.compute(np.asarray(y_true), np.asarray(probs), groups))

    def objective(self, score: float) -> float:
        """The value Optuna maximises for a score of this metric."""
        return score if self.maximize else -score


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
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

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
    from sklearn.metrics import log_loss

    probs = np.clip(np.nan_to_num(np.asarray(probs, dtype=np.float64), nan=0.0), 1e-7, 1.0)
    probs /= probs.sum(axis=1, keepdims=True)
    return float(log_loss(y_true, probs, labels=list(range(probs.shape[1]))))


def accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Image accuracy of the most probable class."""
    return float(np.mean(np.asarray(y_true) == np.asarray(probs).argmax(axis=1))) if len(y_true) else float("nan")


def balanced_accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean recall over the classes present in y_true (scikit-learn's balanced_accuracy_score)."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():  # a predicted class absent from y_true is not a recall
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y_true, np.asarray(probs).argmax(axis=1)))


# The metrics a study can optimise, in the order they are shown. One Keras cannot compute
# per epoch names the fallback monitor early stopping watches instead, and says why.
REGISTRY: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy", "accuracy", True, lambda y, p, g: accuracy(y, p), "best_val_accuracy", "val_accuracy"),
    Metric("log-loss", "log-loss", False, lambda y, p, g: mean_log_loss(y, p), "val_log_loss", "val_loss"),
    # A verdict per group needs every image of the group: Keras' per-epoch metrics see
    # batches, so early stopping watches image accuracy, which the vote is made of.
    Metric("group-accuracy", "per-group accuracy", True, lambda y, p, g: group_votes(g, y, p)["group_accuracy"],
           "val_group_accuracy", "val_accuracy"),
    # Mean recall over classes: a rare class counts as much as a common one, which imbalanced
    # medical sets need. Keras has no per-epoch recall over classes, so early stopping
    # watches image accuracy, its nearest per-epoch log.
    Metric("balanced-accuracy", "balanced accuracy", True, lambda y, p, g: balanced_accuracy(y, p),
           "val_balanced_accuracy", "val_accuracy"),
)}
METRICS = tuple(REGISTRY)  # the names, for --metric and the settings


def metric(name: str) -> Metric:
    return REGISTRY[name]


def scores(y_true: np.ndarray, probs: np.ndarray, groups: Sequence[str]) -> dict[str, float]:
    """Every registered metric of one set of predictions (each trial records all of them,
    whichever it optimises, so a study can be re-ranked later without retraining)."""
    return {name: m.value(y_true, probs, groups) for name, m in REGISTRY.items()}


def objective(metric_values: dict[str, float], name: str) -> float:
    """The value Optuna maximises for metric `name` (negated when lower is better)."""
    return REGISTRY[name].objective(metric_values[name])


def value_name(name: str, cv: int = 0) -> str:
    """What a study's trial value is, for people: e.g. "-val_log_loss (mean of 3 folds)"."""
    named = REGISTRY[name].value_name
    return f"{named} (mean of {cv} folds)" if cv >= 2 else named


def monitor_mode(monitor: str) -> str:
    """"min" or "max": which way a Keras log gets better."""
    return MONITORS[monitor]


def reported(monitor: str, value: float) -> float:
    """What an epoch pruner is told of a Keras log's value: negated when lower is better, as
    Optuna maximises. Its own inverse: a reported value back to the log's."""
    return -value if MONITORS[monitor] == "min" else value
