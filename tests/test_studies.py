"""Search spaces: every shipped study plans a valid configuration without Optuna, and the
trial configuration survives its round trip through JSON (old records included)."""
import json

import optuna
import pytest

from studies import SHIPPED, Params, TrialConfig, check_params, load_study


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_study_dry_runs_and_round_trips(name):
    config = check_params(load_study(name), {}, name)
    assert TrialConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_fast_study_samples_its_new_choices():
    suggest = load_study("fast")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    configs = []
    for _ in range(12):
        trial = study.ask()
        configs.append(suggest(Params(trial, {})))
        study.tell(trial, 0.5)
    assert {c.model.arch for c in configs} == {"fast"} and {c.preprocess.size for c in configs} == {(60, 80)}
    assert {c.model.batch_norm for c in configs} == {True, False}
    assert {c.lr_schedule for c in configs} == {"cosine", "constant"}
    assert all(0 <= c.label_smoothing <= 0.2 and 1e-6 <= c.weight_decay <= 1e-2 for c in configs)
    assert {len(c.model.kernels) for c in configs} <= {3, 4, 5}
    assert "dihedral" not in study.trials[0].distributions["augment"].choices  # 60x80 is not square
    square = optuna.create_study().ask()
    suggest(Params(square, {"size": "64x64"}))
    assert "dihedral" in square.distributions["augment"].choices


def test_a_config_recorded_before_the_new_fields_still_loads():
    old = {"preprocess": {"size": [60, 80], "color": "rgb", "mask": "none", "scaling": "channel", "fit": "stretch"},
           "model": {"arch": "fcn", "kernels": [2, 2, 2, 2, 2], "dropout": 0.1, "width": 1.0, "dense_units": 128},
           "batch_size": 128, "optimizer": "adam", "learning_rate": 0.001}
    config = TrialConfig.from_dict(old)
    assert config.label_smoothing == 0.0 and config.lr_schedule == "constant"
    assert config.model.to_dict() == {"arch": "fcn", "kernels": [2, 2, 2, 2, 2], "dropout": 0.1, "width": 1.0}


def test_bad_new_values_are_refused():
    with pytest.raises(ValueError, match="lr_schedule 'step'"):
        TrialConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="label_smoothing 1.5"):
        TrialConfig(label_smoothing=1.5)
