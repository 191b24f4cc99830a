"""`search compare`: several studies against wall time, e.g. a pruned search and its
unpruned random baseline given the same budget. Best validation accuracy so far against
hours since each study's first trial started, plus trials finished and epochs spent."""
from __future__ import annotations

from pathlib import Path

from dataclasses import dataclass

import optuna

from search.errors import SearchError
from search.record import S, best_of, read_trials


@dataclass(frozen=True)
class Curve:
    """A study on its own clock: best value after each finished trial."""

    study: str
    hours: list[float]
    best: list[float | None]
    complete: int
    pruned: int
    epochs_spent: float
    best_value: float | None
    best_trial: int | None

    @property
    def finished(self) -> int:
        return self.complete + self.pruned

    @property
    def wall_hours(self) -> float:
        return self.hours[-1] if self.hours else 0.0

    def to_dict(self) -> dict:
        """For --json: the counts, not the points."""
        return {"study": self.study, "wall_hours": self.wall_hours, "complete": self.complete, "pruned": self.pruned,
                "finished": self.finished, "epochs_spent": self.epochs_spent, "best_value": self.best_value,
                "best_trial": self.best_trial}


def curve(study: optuna.Study) -> Curve:
    trials = [t for t in read_trials(study) if t.started]
    if not trials:
        raise SearchError(f"study {study.study_name!r} has no trials yet")
    start = min(t.started for t in trials)
    done = sorted((t for t in trials if t.state.is_finished() and t.completed), key=lambda t: t.completed)
    hours, best, value = [], [], None
    for t in done:
        if t.state == S.COMPLETE and t.value is not None and (value is None or t.value > value):
            value = t.value
        hours.append((t.completed - start).total_seconds() / 3600)
        best.append(value)
    top = best_of(done)
    return Curve(study.study_name, hours, best, sum(t.state == S.COMPLETE for t in done),
                 sum(t.state == S.PRUNED for t in done), sum(t.epochs_spent for t in done),
                 top.value if top else None, top.number if top else None)


def plot(curves: list[Curve], path: Path, title: str = "best validation accuracy against wall time") -> None:
    from search.plots import plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for c in curves:
        points = [(h, b) for h, b in zip(c.hours, c.best) if b is not None]
        if points:
            xs, ys = zip(*points)
            ax.step(xs, ys, where="post", marker="o", markersize=3,
                    label=f"{c.study}: {c.finished} trials, {c.epochs_spent:.0f} epochs")
    ax.set_xlabel("hours since the study's first trial started")
    ax.set_ylabel("best val_accuracy so far")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # no complete trial yet: no line, so no legend (nor its warning)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
