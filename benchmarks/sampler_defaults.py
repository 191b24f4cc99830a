"""Do the search's TPE defaults find a good trial in fewer trials than Optuna's? A cheap replay.

    python benchmarks/sampler_defaults.py [--seeds 100] [--budgets 10 20 40] [--sweep] [--json]

Training a model per trial would make this a week of CPU; instead a synthetic objective is
shaped like the `families` space: a family chosen first and parameters that exist only under
it (conditional), categorical choices that matter a little each, a log-scaled learning rate
whose best value depends on the batch size, a dropout with an interior optimum, and
validation noise (sd 0.01, what a few hundred validation images give). Its true optimum is
known, so each run's regret is exact: the optimum less the noise-free value of the trial the
study calls its best (on its noisy values).

Each sampler runs one study per seed and budget, as a launch with `--trials B` would: ours is
search.running.algorithms.make_sampler("tpe"), Optuna's default TPESampler(seed=...). The
table gives, per budget, the median regret over seeds, the share of seeds whose chosen trial
is within 0.02 of the optimum (a good trial), and, paired on seeds (the same noise, the same
random start-up draws), how often a sampler ended better or worse than Optuna's default.
--sweep adds smaller start-up counts (with group=True), to see what the count alone does.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import warnings
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOOD = 0.02  # within this of the optimum: as good as the study's top trials differ by noise
NOISE = 0.01


def true_value(t) -> float:
    """The noise-free score of a trial's parameters (define-by-run, like studies.families)."""
    family = t.suggest_categorical("family", ["fast", "fcn"])
    if family == "fcn":
        kernel = t.suggest_int("fcn_kernel", 2, 3)
        dropout = t.suggest_float("fcn_dropout", 0.05, 0.3)
        scaling = t.suggest_categorical("fcn_scaling", ["channel", "pixel"])
        score = 0.84 + 0.01 * (kernel == 3) - 0.6 * (dropout - 0.15) ** 2 + 0.01 * (scaling == "channel")
    else:
        depth = t.suggest_int("depth", 3, 5)
        kernel = t.suggest_int("kernel", 3, 5, step=2)
        width = t.suggest_categorical("width", [0.5, 1.0])
        separable = t.suggest_categorical("separable", [True, False])
        pooling = t.suggest_categorical("pooling", ["avg", "max"])
        dropout = t.suggest_float("dropout", 0.0, 0.4)
        augment = t.suggest_categorical("augment", ["flip", "rotate"])
        scaling = t.suggest_categorical("scaling", ["pixel", "channel"])
        score = (0.85 - 0.01 * (depth - 4) ** 2 + 0.005 * (kernel == 3) + 0.01 * (width == 1.0)
                 + 0.01 * (not separable) + 0.02 * (pooling == "avg") - 0.5 * (dropout - 0.2) ** 2
                 + 0.01 * (augment == "rotate") + 0.005 * (scaling == "pixel"))
    batch = t.suggest_categorical("batch_size", [32, 64, 128])
    lr = t.suggest_float("learning_rate", 3e-4, 3e-3, log=True)
    smoothing = t.suggest_float("label_smoothing", 0.0, 0.15)
    decay = t.suggest_float("weight_decay", 1e-6, 1e-3, log=True)
    schedule = t.suggest_categorical("lr_schedule", ["cosine", "constant"])
    best_lr = 1e-3 * math.sqrt(batch / 64)  # a larger batch takes a larger step
    score += (-0.05 * (math.log10(lr) - math.log10(best_lr)) ** 2 - 0.5 * (smoothing - 0.05) ** 2
              - 0.004 * (math.log10(decay) + 4) ** 2 + 0.01 * (schedule == "cosine") + 0.005 * (batch == 64))
    return score


# fast, depth 4, kernel 3, width 1, not separable, avg, dropout 0.2, rotate, pixel; batch 64 at
# its best learning rate, smoothing 0.05, decay 1e-4, cosine.
OPTIMUM = 0.85 + 0.005 + 0.01 + 0.01 + 0.02 + 0.01 + 0.005 + 0.01 + 0.005


def optuna_default(seed: int, budget: int):
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


def ours(seed: int, budget: int):
    from search.running.algorithms import make_sampler

    return make_sampler("tpe", seed)


def fixed_startup(count: int) -> Callable:
    def make(seed: int, budget: int):
        from search.running.algorithms import tpe_sampler

        return tpe_sampler(seed, startup=count)
    return make


def run_study(make_sampler: Callable, seed: int, budget: int) -> float:
    """The regret of the trial a study of `budget` trials would call its best."""
    import random

    import optuna

    noise = random.Random(seed * 7919 + budget)
    truth: dict[int, float] = {}

    def objective(t) -> float:
        truth[t.number] = true_value(t)
        return truth[t.number] + noise.gauss(0.0, NOISE)

    study = optuna.create_study(direction="maximize", sampler=make_sampler(seed, budget))
    study.optimize(objective, n_trials=budget)
    return OPTIMUM - truth[study.best_trial.number]


def table(samplers: dict[str, Callable], seeds: int, budgets: list[int]) -> dict:
    """Per sampler and budget: median regret, share of good trials, and, against the first
    sampler on the same seeds (the same noise, the same random start-up draws), the share of
    seeds where this one ended better and where it ended worse."""
    regrets = {}
    for name, make in samplers.items():
        regrets[name] = {b: [run_study(make, seed, b) for seed in range(seeds)] for b in budgets}
        print(f"  {name}: done", file=sys.stderr, flush=True)
    first = next(iter(regrets.values()))
    return {name: {b: {"median_regret": statistics.median(r[b]), "good_share": sum(x <= GOOD for x in r[b]) / seeds,
                       "better": sum(x < y for x, y in zip(r[b], first[b])) / seeds,
                       "worse": sum(x > y for x, y in zip(r[b], first[b])) / seeds} for b in budgets}
            for name, r in regrets.items()}


def main() -> None:
    import optuna

    from search.running.algorithms import startup_trials

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=100)
    p.add_argument("--budgets", type=int, nargs="+", default=[10, 20, 40])
    p.add_argument("--sweep", action="store_true", help="also start-up counts 3 and 5 (group=True)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")  # group=True is marked experimental
    samplers = {"optuna default": optuna_default, "ours": ours}
    if args.sweep:
        samplers.update({f"start-up {n}": fixed_startup(n) for n in (3, 5)})
    result = table(samplers, args.seeds, args.budgets)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"median regret over {args.seeds} seeds (share of seeds whose best trial is within {GOOD} of the "
          f"optimum; share of seeds ending better/worse than Optuna's default on the same seed)")
    print(f"{'sampler':<16}" + "".join(f"{f'{b} trials':>27}" for b in args.budgets))
    for name, row in result.items():
        print(f"{name:<16}" + "".join(f"{row[b]['median_regret']:>8.4f} ({row[b]['good_share']:>4.0%}; "
                                      f"{row[b]['better']:>3.0%}/{row[b]['worse']:>3.0%})" for b in args.budgets))
    print(f"ours: {startup_trials()} random start-up trials, multivariate TPE with group=True, constant liar")


if __name__ == "__main__":
    main()
