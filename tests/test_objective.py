"""The objective and the recorder in one process (issue 27, point 8): a --cv trial of a tiny
model, trained by `Objective.__call__` as a worker's `study.optimize` calls it, with no
launcher and no subprocess. The end-to-end tests cover the same path through the CLI."""
from __future__ import annotations

import math
from pathlib import Path

import mlflow
import optuna

from preprocessing.synthetic import make_split_dataset
from search.metrics import objective
from search.record import S, read_trial
from search.running.data import DataProvider
from search.running.objective import Objective
from search.settings import PARENT_RUN_ATTR, SearchSettings
from search.stores.tracking import Tracker
from studies import load_study


def test_a_cv_trial_trains_its_folds_records_them_and_logs_runs_and_models(tmp_path: Path):
    root = make_split_dataset(tmp_path / "data")
    s = SearchSettings(study="seed-fcn", study_name="in-process", storage=f"sqlite:///{tmp_path}/optuna.db",
                       tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", data_dir=str(root), trials=1,
                       cache_dir=str(tmp_path / "cache"), epochs=2, patience=2, warmup_epochs=1, params={"size": "16x16"}, cv=2,
                       groups=str(root / "groups.csv"), pruner="none", metric="log-loss")
    tracker = Tracker(s.tracking_uri)
    study = optuna.create_study(study_name=s.study_name, storage=s.storage, direction="maximize")
    study.set_user_attr(PARENT_RUN_ATTR, tracker.parent_run(s.study_name, s.mlflow_params()))
    provider = DataProvider(s.data_dir, s.cache_dir, s.val_fraction, s.seed, cv=s.cv, grouping=s.grouping())

    study.optimize(Objective(s, load_study(s.study), tracker, provider), n_trials=1)

    (trial,) = study.trials
    record = read_trial(trial)
    assert record.state == S.COMPLETE, record.fail_reason
    assert [f.fold for f in record.fits] == [0, 1] and all(f.model_size_mb > 0 for f in record.fits)
    # The trial's value is the mean over its folds of the study's metric, as Optuna maximises it.
    per_fold = [objective(f.scores(), "log-loss") for f in record.fits]
    assert math.isclose(trial.value, sum(per_fold) / 2) and trial.value < 0
    assert record.config.preprocess.size == (16, 16) and record.split is not None

    client = mlflow.MlflowClient(s.tracking_uri)
    run = client.get_run(record.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["optuna.trial"] == "0"
    folds = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{record.run_id}'")
    assert sorted(r.data.tags["bloodsearch.fold"] for r in folds) == ["0", "1"]
    for fold_run in folds:  # each fold's model and pictures in its own run
        logged = {a.path for a in client.list_artifacts(fold_run.info.run_id)}
        assert {"model", "confusion_matrix.png", "learning_curves.png"} <= logged
    logged = {a.path for a in client.list_artifacts(record.run_id)}
    assert {"model", "oof"} <= logged  # the first model, and the out-of-fold predictions for ensembles


def test_only_a_trial_numbered_past_the_count_reads_the_study_to_claim_its_place(tmp_path: Path, monkeypatch):
    """The claim reads every trial (through the gRPC proxy, every running one with its
    attributes) only when the trial could be a surplus one: numbered at or past the count."""
    import pytest

    from search.running.objective import SurplusTrial
    from search.running.recorder import TrialRecorder

    s = SearchSettings(study="seed-fcn", study_name="claims", storage="sqlite:///:memory:",
                       tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", data_dir=str(tmp_path), trials=2)
    study = optuna.create_study()
    first, second, third = study.ask(), study.ask(), study.ask()
    objective = Objective(s, load_study(s.study), None, None)
    reads = []
    original = optuna.Study.get_trials
    monkeypatch.setattr(optuna.Study, "get_trials", lambda self, *a, **k: reads.append(1) or original(self, *a, **k))
    monkeypatch.setattr(optuna.Study, "stop", lambda self: None)  # outside optimize() here
    objective._claim(first, TrialRecorder(first))
    objective._claim(second, TrialRecorder(second))
    assert reads == []
    with pytest.raises(SurplusTrial):  # 3 running trials, the study wants 2
        objective._claim(third, TrialRecorder(third))
    assert reads == [1] and read_trial(study.trials[2]).surplus


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_a_known_configuration_is_never_pruned_and_still_reports_its_curve(tmp_path: Path):
    """The baseline (--enqueue, --enqueue-study) is what every other trial is read against,
    so the pruner may stop any trial but it."""
    from search.record import ENQUEUED

    root = make_split_dataset(tmp_path / "data")
    s = SearchSettings(study="seed-fcn", study_name="baseline-kept", storage=f"sqlite:///{tmp_path}/optuna.db",
                       tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", data_dir=str(root), trials=2,
                       cache_dir=str(tmp_path / "cache"), epochs=2, patience=2, params={"size": "16x16"},
                       pruner="median")
    tracker = Tracker(s.tracking_uri)
    study = optuna.create_study(study_name=s.study_name, storage=s.storage, direction="maximize",
                                pruner=_AlwaysPrune())
    study.set_user_attr(PARENT_RUN_ATTR, tracker.parent_run(s.study_name, s.mlflow_params()))
    study.enqueue_trial({}, user_attrs={ENQUEUED: "seed-fcn"})
    provider = DataProvider(s.data_dir, s.cache_dir, s.val_fraction, s.seed)

    study.optimize(Objective(s, load_study(s.study), tracker, provider), n_trials=2)

    baseline, other = (read_trial(t) for t in study.trials)
    assert baseline.baseline and baseline.state == S.COMPLETE, baseline.fail_reason
    assert len(study.trials[0].intermediate_values) == 2  # both epochs reported to the pruner
    assert not other.baseline and other.state == S.PRUNED
