"""Samplers and pruners by name, from Optuna, with their optional dependencies checked up front."""
from __future__ import annotations

import importlib.util
import warnings

import optuna

from search.errors import SearchError
from search.settings import EPOCH_PRUNERS

NEEDS = {"gp": ("torch", "PyTorch (pip install torch)"), "cmaes": ("cmaes", "the cmaes package (pip install cmaes)")}


def check_sampler(name: str) -> None:
    if name in NEEDS and importlib.util.find_spec(NEEDS[name][0]) is None:
        raise SearchError(f"--sampler {name} needs {NEEDS[name][1]}")


STARTUP = 10  # Optuna's: fewer, scaled to a small --trials, found good trials later, not sooner


def startup_trials(enqueued: int = 0) -> int:
    """Random trials before TPE models the study. Measured (benchmarks/sampler_defaults.py,
    README): 3 or 5 instead of 10 lost to all-random at 10 trials and did no better at 20 or
    40; what helped was modelling parameter groups. Enqueued trials are known configurations,
    not exploration: they come on top, so the random ones still spread over the space."""
    return enqueued + STARTUP


def tpe_sampler(seed: int | None, startup: int) -> optuna.samplers.TPESampler:
    """Multivariate TPE that models each group of parameters that occur together (our spaces
    are conditional: a family's parameters exist only under it), and a constant liar, so that
    workers running at once (several local ones, or `search worker` on other machines) do
    not all sample beside the best trial."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # group=True, knowingly
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, group=True,
                                          constant_liar=True)


def make_sampler(name: str, seed: int | None, enqueued: int = 0) -> optuna.samplers.BaseSampler:
    """enqueued: the study's known configurations (they lengthen TPE's start-up)."""
    check_sampler(name)
    if name == "tpe":
        return tpe_sampler(seed, startup_trials(enqueued))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        # CMA-ES handles the numeric part; categorical choices fall back to TPE, not random.
        return optuna.samplers.CmaEsSampler(seed=seed, independent_sampler=optuna.samplers.TPESampler(seed=seed),
                                            warn_independent_sampling=False)
    raise SearchError(f"--sampler {name!r} is not one of tpe, random, gp, cmaes")


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "wilcoxon":
        # Seeds, not epochs, are its steps (--repeats): p < 0.1 needs at least 4 of them.
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise SearchError(f"--pruner {name!r} is not one of median, hyperband, successive-halving, wilcoxon, none")


def check_pruner(name: str, repeats: int, cv: int = 0) -> None:
    """Epoch pruners need one learning curve per trial (with --cv: the folds' curves one after
    another, always in the same fold order); Wilcoxon needs several paired values per trial
    (seeds, or folds)."""
    if repeats > 1 and name in EPOCH_PRUNERS:
        raise SearchError(f"--pruner {name} prunes on epochs, and with --repeats {repeats} each seed has its own "
                          f"epochs; use --pruner wilcoxon or none")
    if repeats == 1 and cv < 2 and name == "wilcoxon":
        raise SearchError("--pruner wilcoxon compares trials seed by seed or fold by fold; it needs --repeats 2 "
                          "or more, or --cv")


def pruner_note(name: str, repeats: int, cv: int = 0) -> str | None:
    """Wilcoxon's one-sided test on n pairs cannot go below p = 1/2**n: p < 0.1 takes 4 pairs,
    and when the 4th is the trial's last seed or fold, stopping then saves nothing."""
    pairs, kind = (cv, "folds") if cv >= 2 else (repeats, "seeds")
    if name == "wilcoxon" and pairs <= 4:
        instead = "--pruner median (or none, to say so)" if cv >= 2 else "5 or more seeds, or --pruner none to say so"
        return (f"--pruner wilcoxon never saves anything with {pairs} {kind}: p < 0.1 needs 4 paired values, and "
                f"the 4th is the last (use {instead})")
    return None
