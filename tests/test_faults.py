"""Faults the chaos soak (benchmarks/chaos.py) found, each pinned by a test of its own."""
import optuna
import pytest

from models import ModelConfig
from preprocessing import PreprocessConfig
from search.record import FitResult
from search.settings import PARENT_RUN_ATTR, SearchSettings
from studies import TrialConfig


def test_a_trial_finished_during_a_tracking_outage_gets_its_run_back(tmp_path):
    """Its MLflow logging stopped at the first error, so it had no run, or one without its
    metrics; the launch now rebuilds the run from the trial's record."""
    from search.running.launcher import repair_runs
    from search.stores.tracking import Tracker

    settings = SearchSettings(study="seed-fcn", study_name="s", storage=f"sqlite:///{tmp_path / 'o.db'}",
                              tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", data_dir=str(tmp_path), trials=1)
    tracker = Tracker(settings.tracking_uri)
    study = optuna.create_study(study_name="s", storage=settings.storage, direction="maximize")
    study.set_user_attr(PARENT_RUN_ATTR, tracker.parent_run("s", settings.mlflow_params()))
    config = TrialConfig(PreprocessConfig(size=(16, 16)), ModelConfig("fcn", kernels=(2,) * 5))
    fit = FitResult(seed=3, val_accuracy=0.75, epochs_run=4, best_epoch=3, converged=True)
    trial = study.ask()
    for step, value in enumerate((0.5, 0.7, 0.75, 0.74)):
        trial.report(value, step)
    for key, value in {"config": config.to_dict(), "seed": 3, "fits": [fit.to_dict()],
                       "tracking_error": "ConnectionError: tracking server restarting"}.items():
        trial.set_user_attr(key, value)
    study.tell(trial, 0.75)

    assert repair_runs(study, tracker, settings) == [0]
    runs = tracker.trial_runs("s")[0]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = tracker.client.get_run(runs[0].info.run_id)
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(0.75)
    assert run.data.tags["bloodsearch.repaired"] and run.data.params["model.arch"] == "fcn"
    assert [m.value for m in tracker.client.get_metric_history(run.info.run_id, "val_accuracy")] == [0.5, 0.7, 0.75, 0.74]
    assert repair_runs(study, tracker, settings) == []  # safe to run again: nothing is missing now
