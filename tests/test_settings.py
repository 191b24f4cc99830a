import json

import optuna
import pytest

from search.running.algorithms import make_pruner, make_sampler, pruner_note
from search.settings import SearchSettings


def settings(**kw) -> SearchSettings:
    return SearchSettings(study="fast", study_name="s", storage="sqlite://", tracking_uri="x", data_dir="d", trials=4, **kw)


def first_draw(s: SearchSettings, sampler: str) -> float:
    study = optuna.create_study(sampler=make_sampler(sampler, s.worker_sampler_seed(0, 0)))
    return study.ask().suggest_float("x", 0.0, 1.0)


def test_sampler_seed_sets_two_studies_on_one_split_apart():
    # Same --seed: TPE's random start-up replays the random sampler's draws (a paired design).
    assert first_draw(settings(), "tpe") == first_draw(settings(), "random")
    apart = settings(sampler_seed=1)
    assert apart.seed == 0 and first_draw(apart, "random") != first_draw(settings(), "tpe")
    assert apart.mlflow_params()["search.sampler_seed"] == 1 and settings().mlflow_params()["search.sampler_seed"] == 0


def test_settings_stored_before_sampler_seed_still_load():
    old = {k: v for k, v in json.loads(settings().to_json()).items() if k != "sampler_seed"}
    assert SearchSettings.from_json(json.dumps(old), storage="sqlite://").sampler_seed_base == 0


@pytest.mark.parametrize("folds", [3, 4, 5])
def test_wilcoxon_cannot_prune_before_a_fifth_fold_and_launch_says_so(folds):
    """What pruner_note claims, checked with Optuna's own pruner: a trial worse than the best
    on every fold is stopped only when a 4th paired value exists before its last fold."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize", pruner=make_pruner("wilcoxon", 1))
    good = study.ask()
    for k in range(folds):
        good.report(0.9 + 0.01 * k, k)
    study.tell(good, 0.9)
    bad, stopped = study.ask(), None
    for k in range(folds):
        bad.report(0.5 + 0.01 * k, k)
        if bad.should_prune():
            stopped = k
            break
    saves_a_fold = stopped is not None and stopped < folds - 1
    assert saves_a_fold == (folds >= 5)
    assert (pruner_note("wilcoxon", 1, folds) is None) == (folds >= 5)
    assert pruner_note("median", 1, folds) is None
