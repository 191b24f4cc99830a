import json

import optuna

from search.running.algorithms import make_sampler
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
