"""One configuration, several seeds: the seeds, their summary and the study's table row.

The study behind this project reported each model as a distribution over 10 runs
("0.882 ± 0.007 [0.870, 0.897], 34.3 MB, epochs 26 ± 8, convergence 90%"): a single run
misleads when a configuration converges only some of the time.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np


def repeat_seeds(base: int, repeats: int) -> list[int]:
    """The seeds of K repeats, the same in every trial of a study: trials are then compared
    seed by seed (paired), which is what the Wilcoxon pruner tests."""
    return [(base * 7_919 + 104_729 * (r + 1)) % (2**31 - 1) for r in range(repeats)]


def bag_members(fits: Sequence) -> list[int]:
    """Which of a trial's (or a replicated seed's) fold models its bag averages: those that
    learned (FitResult.converged). Seed models (--repeats) are all kept: how often a seed fails
    is what such a trial measures. A fold model that ended at chance carries no signal and only
    pulls the others' probabilities towards its one class (warmup-2's winner, replicated: the
    seed whose bag held such a fold model scored 0.833 on clean TEST, the two without 0.860
    and 0.861). The objective still charges the fold it failed: the configuration is less
    reliable, whatever its bag then scores. When none learned, all are kept, so that there is
    a model to judge."""
    learned = [i for i, f in enumerate(fits) if f.converged or f.fold is None]
    return learned or list(range(len(fits)))


def left_out(fits: Sequence, kind: str) -> str:
    """The bag's members in words, for what a report says it evaluated: "" when all are kept."""
    kept = bag_members(fits)
    gone = [i for i in range(len(fits)) if i not in kept]
    return f" ({kind} {', '.join(map(str, gone))} left out: did not learn)" if gone else ""


@dataclass
class SeedResult:
    seed: int
    val_accuracy: float
    epochs_run: int
    converged: bool
    model_size_mb: float | None = None
    test_accuracy: float | None = None
    test_group_accuracy: float | None = None


@dataclass
class Spread:
    mean: float
    std: float  # sample standard deviation (ddof=1); 0 for a single value
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        a = np.asarray(values, dtype=float)
        return cls(float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0, float(a.min()), float(a.max()), len(a))


@dataclass
class RepeatSummary:
    accuracy: Spread  # on TEST when every seed was evaluated there, else on validation
    accuracy_split: str
    epochs: Spread
    convergence_rate: float
    model_size_mb: float | None
    group_accuracy: Spread | None = None

    def row(self) -> str:
        """The study's row: accuracy mean ± std [min, max] | model size | epochs | convergence."""
        a, e = self.accuracy, self.epochs
        parts = [f"{self.accuracy_split} accuracy {a.mean:.3f} ± {a.std:.3f} [{a.min:.3f}, {a.max:.3f}] (n={a.n})"]
        if self.group_accuracy is not None:
            c = self.group_accuracy
            parts.append(f"per-group {c.mean:.3f} ± {c.std:.3f}")
        parts += [f"model size {self.model_size_mb:.1f} MB" if self.model_size_mb is not None else "model size ?",
                  f"epochs {e.mean:.0f} ± {e.std:.0f}", f"convergence {100 * self.convergence_rate:.0f}%"]
        return " | ".join(parts)

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat numbers for MLflow and Optuna user attributes."""
        out = {f"{prefix}accuracy_mean": self.accuracy.mean, f"{prefix}accuracy_std": self.accuracy.std,
               f"{prefix}accuracy_min": self.accuracy.min, f"{prefix}accuracy_max": self.accuracy.max,
               "epochs_mean": self.epochs.mean, "epochs_std": self.epochs.std,
               "convergence_rate": self.convergence_rate, "repeats_run": float(self.accuracy.n)}
        if self.group_accuracy is not None:
            out.update({f"{prefix}group_accuracy_mean": self.group_accuracy.mean,
                        f"{prefix}group_accuracy_std": self.group_accuracy.std})
        if self.model_size_mb is not None:
            out["model_size_mb"] = self.model_size_mb
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(results: Sequence) -> RepeatSummary:
    """results: SeedResults (evaluated on TEST) or a trial's FitResults (validation only)."""
    if not results:
        raise ValueError("no seed finished")
    tests = [getattr(r, "test_accuracy", None) for r in results]
    on_test = all(a is not None for a in tests)
    accuracy = tests if on_test else [r.val_accuracy for r in results]
    cells = [getattr(r, "test_group_accuracy", None) for r in results]
    sizes = [r.model_size_mb for r in results if r.model_size_mb is not None]
    return RepeatSummary(
        accuracy=Spread.of(accuracy), accuracy_split="test" if on_test else "validation",
        epochs=Spread.of([r.epochs_run for r in results]),
        convergence_rate=sum(r.converged for r in results) / len(results),
        model_size_mb=float(np.mean(sizes)) if sizes else None,
        group_accuracy=Spread.of(cells) if on_test and all(c is not None for c in cells) else None)
