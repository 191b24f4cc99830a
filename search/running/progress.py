"""Where a study stands: counts by state, best so far, and the one-line progress display."""
from __future__ import annotations

import time
from dataclasses import dataclass

import optuna

from search.record import S, best_of, read_trials


@dataclass
class Snapshot:
    complete: int
    pruned: int
    failed: int
    running: int
    waiting: int
    best_value: float | None
    best_trial: int | None

    @property
    def finished(self) -> int:
        return self.complete + self.pruned


def snapshot(study: optuna.Study) -> Snapshot:
    # A race loser that never trained (surplus) is not a failure worth showing.
    trials = [t for t in read_trials(study) if not (t.state == S.FAIL and t.surplus)]
    count = {state: 0 for state in S}
    for t in trials:
        count[t.state] += 1
    best = best_of(trials)
    return Snapshot(count[S.COMPLETE], count[S.PRUNED], count[S.FAIL], count[S.RUNNING], count[S.WAITING],
                    best.value if best else None, best.number if best else None)


def duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_line(snap: Snapshot, target: int, started: float, finished_at_start: int) -> str:
    elapsed = time.time() - started
    done_here = snap.finished - finished_at_start
    remaining = max(0, target - snap.finished)
    eta = duration(elapsed / done_here * remaining) if done_here > 0 and remaining else "?" if remaining else "0:00"
    best = f"best {snap.best_value:.4f} (trial {snap.best_trial})" if snap.best_value is not None else "best -"
    return (f"trials {snap.finished}/{target} (running {snap.running}, pruned {snap.pruned}, "
            f"failed {snap.failed}) | {best} | elapsed {duration(elapsed)} | eta {eta}")
