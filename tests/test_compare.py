"""search compare: best value against wall time, trials and epochs, from a study's records."""
import datetime as dt

import optuna
import pytest

from search.record import FitResult, read_trial
from search.results.compare import curve, plot

S = optuna.trial.TrialState
T0 = dt.datetime(2026, 11, 29, 1, 0, 0)


def _fits(*epochs):
    return {"fits": [FitResult(seed=i, val_accuracy=0.5, epochs_run=e, best_epoch=e, converged=True).to_dict()
                     for i, e in enumerate(epochs)]}


def _trial(number, state, value, start_min, end_min, **attrs):
    return optuna.trial.FrozenTrial(
        number=number, state=state, value=value, datetime_start=T0 + dt.timedelta(minutes=start_min),
        datetime_complete=T0 + dt.timedelta(minutes=end_min), params={}, distributions={}, user_attrs=attrs,
        system_attrs={}, intermediate_values={}, trial_id=number)


def test_curve_counts_and_best_so_far(tmp_path):
    study = optuna.create_study(direction="maximize", study_name="hb")
    for t in [_trial(0, S.COMPLETE, 0.6, 0, 30, **_fits(10)),
              _trial(1, S.PRUNED, None, 30, 36, epoch=2),
              _trial(2, S.COMPLETE, 0.8, 36, 90, **_fits(6, 6, 6)),
              _trial(3, S.COMPLETE, 0.7, 90, 120, **_fits(8)),
              _trial(4, S.FAIL, None, 120, 121, epoch=1)]:
        study.add_trial(t)
    c = curve(study)
    assert c.hours == pytest.approx([0.5, 0.6, 1.5, 2.0, 121 / 60])
    assert c.best == [0.6, 0.6, 0.8, 0.8, 0.8]
    assert (c.finished, c.complete, c.pruned) == (4, 3, 1)
    assert c.epochs_spent == 10 + 2 + 18 + 8 + 1 and c.best_trial == 2
    assert read_trial(study.trials[2]).epochs_spent == 18  # three seeds of six epochs
    plot([c], tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_a_study_without_trials_is_a_clear_error():
    from search.errors import SearchError

    with pytest.raises(SearchError, match="has no trials yet"):
        curve(optuna.create_study(study_name="empty"))
