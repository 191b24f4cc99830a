"""`search compare`: several studies against wall time, e.g. a pruned search and its
unpruned random baseline given the same budget. Best validation accuracy so far against
hours since each study's first trial started, plus trials finished and epochs spent."""
from __future__ import annotations

from pathlib import Path

import optuna

from .errors import SearchError

S = optuna.trial.TrialState


def epochs_spent(trial: optuna.trial.FrozenTrial) -> float:
    """Epochs a trial trained, whatever its end: all seeds' with --repeats, the epochs it
    reached when pruned or failed."""
    attrs = trial.user_attrs
    if "epochs_run" in attrs:
        return float(attrs["epochs_run"]) * float(attrs.get("repeats_run", 1))
    return float(attrs.get("epoch", 0))


def curve(study: optuna.Study) -> dict:
    """Best value after each finished trial, on the study's own clock."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start]
    if not trials:
        raise SearchError(f"study {study.study_name!r} has no trials yet")
    start = min(t.datetime_start for t in trials)
    done = sorted((t for t in trials if t.state.is_finished() and t.datetime_complete), key=lambda t: t.datetime_complete)
    hours, best, value = [], [], None
    for t in done:
        if t.state == S.COMPLETE and t.value is not None and (value is None or t.value > value):
            value = t.value
        hours.append((t.datetime_complete - start).total_seconds() / 3600)
        best.append(value)
    finished = [t for t in done if t.state in (S.COMPLETE, S.PRUNED)]
    return {"study": study.study_name, "hours": hours, "best": best,
            "wall_hours": hours[-1] if hours else 0.0,
            "complete": sum(t.state == S.COMPLETE for t in done), "pruned": sum(t.state == S.PRUNED for t in done),
            "finished": len(finished), "epochs_spent": sum(epochs_spent(t) for t in done),
            "best_value": value, "best_trial": study.best_trial.number if value is not None else None}


def plot(curves: list[dict], path: Path, title: str = "best validation accuracy against wall time") -> None:
    from .plots import plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for c in curves:
        points = [(h, b) for h, b in zip(c["hours"], c["best"]) if b is not None]
        if points:
            xs, ys = zip(*points)
            ax.step(xs, ys, where="post", marker="o", markersize=3,
                    label=f"{c['study']}: {c['finished']} trials, {c['epochs_spent']:.0f} epochs")
    ax.set_xlabel("hours since the study's first trial started")
    ax.set_ylabel("best val_accuracy so far")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
