"""The metric registry (search.metrics.REGISTRY): one place that names, computes, records and
labels every metric a study can optimise; and balanced accuracy, added through it alone."""
import json
import re

import numpy as np
import pytest

from search.metrics import METRICS, REGISTRY, objective, scores, value_name
from search.record import FitResult
from searchtools import load, mlflow_runs, run_search


def test_the_registry_drives_settings_cli_choices_and_labels():
    from click import Choice

    from search.cli.results import ensemble
    from search.cli.running import launch
    from search.settings import METRICS as SETTINGS_METRICS

    assert SETTINGS_METRICS == METRICS == tuple(REGISTRY) and "balanced-accuracy" in METRICS
    for command in (launch, ensemble):
        option = next(p for p in command.params if p.name == "metric")
        assert isinstance(option.type, Choice) and tuple(option.type.choices) == METRICS
    assert value_name("accuracy") == "val_accuracy" and value_name("log-loss", cv=3) == "-val_log_loss (mean of 3 folds)"
    assert value_name("balanced-accuracy") == "val_balanced_accuracy"
    assert REGISTRY["log-loss"].monitor == "val_loss" and REGISTRY["balanced-accuracy"].monitor == "val_accuracy"
    fit = FitResult(seed=0, val_accuracy=0.5, epochs_run=1, best_epoch=1, converged=True,
                    val_scores={"log-loss": 1.5, "group-accuracy": 0.25, "balanced-accuracy": 0.4})
    assert fit.metrics()["val_balanced_accuracy"] == 0.4 and fit.metrics()["best_val_accuracy"] == 0.5
    assert objective(fit.scores(), "log-loss") == -1.5 and objective(fit.scores(), "balanced-accuracy") == 0.4


def test_balanced_accuracy_is_the_mean_recall_over_classes():
    y = np.array([0, 0, 0, 0, 1, 1])
    probs = np.array([[0.9, 0.1]] * 6)  # always class 0: 4 of 6 images right, half the classes recalled
    s = scores(y, probs, [str(i) for i in range(6)])
    assert s["accuracy"] == pytest.approx(4 / 6) and s["balanced-accuracy"] == pytest.approx(0.5)


def test_records_written_before_val_scores_still_read():
    from search.record import read_trial
    import optuna

    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    old = [{"seed": 1, "val_accuracy": 0.5, "epochs_run": 3, "best_epoch": 2, "converged": True, "val_loss": 1.25,
            "val_group_accuracy": 0.75},
           {"seed": 2, "val_accuracy": 0.7, "epochs_run": 3, "best_epoch": 3, "converged": True, "val_loss": 0.75,
            "val_cell_accuracy": 0.25}]  # the name before groups were an input
    trial.set_user_attr("fits", old)
    study.tell(trial, 0.6)
    record = read_trial(study.trials[0])
    assert [f.scores()["log-loss"] for f in record.fits] == [1.25, 0.75]
    assert [f.scores()["group-accuracy"] for f in record.fits] == [0.75, 0.25]
    assert record.mean_score("log-loss") == pytest.approx(1.0) and record.mean_score("accuracy") == pytest.approx(0.6)
    assert record.mean_score("balanced-accuracy") is None  # not measured then: absent, not 0
    again = FitResult.from_dict(record.fits[0].to_dict())
    assert again == record.fits[0] and "val_loss" not in record.fits[0].to_dict()


def test_repaired_runs_log_the_curve_the_pruner_saw_under_its_own_key(tmp_path):
    """Under --metric log-loss the epoch pruner is told -val_loss; a repaired run once logged
    that as val_accuracy."""
    import optuna

    from models import ModelConfig
    from preprocessing import PreprocessConfig
    from search.running.launcher import repair_runs
    from search.settings import PARENT_RUN_ATTR, SearchSettings
    from search.stores.tracking import Tracker
    from studies import TrialConfig

    settings = SearchSettings(study="seed-fcn", study_name="s", storage=f"sqlite:///{tmp_path / 'o.db'}",
                              tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", data_dir=str(tmp_path), trials=1,
                              metric="log-loss")
    tracker = Tracker(settings.tracking_uri)
    study = optuna.create_study(study_name="s", storage=settings.storage, direction="maximize")
    study.set_user_attr(PARENT_RUN_ATTR, tracker.parent_run("s", settings.mlflow_params()))
    fit = FitResult(seed=3, val_accuracy=0.75, epochs_run=3, best_epoch=2, converged=True,
                    val_scores={"log-loss": 0.5, "balanced-accuracy": 0.7})
    trial = study.ask()
    for step, value in enumerate((-1.5, -0.5, -0.6)):
        trial.report(value, step)
    config = TrialConfig(PreprocessConfig(size=(16, 16)), ModelConfig("fcn", kernels=(2,) * 5))
    for key, value in {"config": config.to_dict(), "seed": 3, "fits": [fit.to_dict()],
                       "tracking_error": "ConnectionError: tracking server restarting"}.items():
        trial.set_user_attr(key, value)
    study.tell(trial, -0.5)

    assert repair_runs(study, tracker, settings) == [0]
    run = tracker.client.get_run(tracker.trial_runs("s")[0][0].info.run_id)
    assert [m.value for m in tracker.client.get_metric_history(run.info.run_id, "val_loss")] == [1.5, 0.5, 0.6]
    assert "val_accuracy" not in run.data.metrics
    assert run.data.metrics["val_log_loss"] == 0.5 and run.data.metrics["val_balanced_accuracy"] == 0.7
    assert run.data.tags["metric"] == "log-loss" and run.data.params["search.metric"] == "log-loss"


@pytest.mark.slow
def test_a_balanced_accuracy_study_records_shows_and_evaluates_it(tmp_path):
    from preprocessing.synthetic import make_split_dataset
    from search.record import read_trial

    make_split_dataset(tmp_path / "data", cells_per_class=4, copies=2, test_cells=2)
    # One TEST cell shares a TRAIN cell's group, so clean TEST is TEST without it.
    groups = tmp_path / "data" / "groups.csv"
    groups.write_text(groups.read_text().replace("TEST-EOSINOPHIL-0\n", "TRAIN-EOSINOPHIL-0\n"))
    done = run_search(tmp_path, "launch", "--study", "seed-fcn", "--param", "size=16x16", "--param", "width=0.125",
                      "--param", "batch_size=8", "--epochs", "1", "--quiet", "--trials", "1", "--data-dir", "data",
                      "--metric", "balanced-accuracy")
    assert done.returncode == 0, done.stderr
    t = read_trial(load(tmp_path, "seed-fcn").trials[0])
    assert all(f.scores()["balanced-accuracy"] is not None for f in t.fits)
    assert t.value == pytest.approx(t.mean_score("balanced-accuracy"))

    best = json.loads(run_search(tmp_path, "best", "--study-name", "seed-fcn", "--json").stdout)[0]
    assert best["metric"] == "balanced-accuracy" and best["value"] == pytest.approx(t.value)
    assert "val_accuracy" not in best and best["val_scores"]["balanced-accuracy"] == pytest.approx(t.value)
    table = run_search(tmp_path, "best", "--study-name", "seed-fcn").stdout
    assert "val_balanced_accuracy" in table.splitlines()[0] and re.search(rf"^\s+0\s+{t.value:.4f}", table, re.M)

    client, _, runs = mlflow_runs(tmp_path, "seed-fcn")
    assert runs[0].data.metrics["val_balanced_accuracy"] == pytest.approx(t.value)
    assert runs[0].data.tags["metric"] == "balanced-accuracy"

    text = run_search(tmp_path, "evaluate", "--study-name", "seed-fcn")
    assert text.returncode == 0, text.stderr
    assert "val_balanced_accuracy" in text.stdout
    whole, clean = [line for line in text.stdout.splitlines() if "TEST" in line and "balanced accuracy" in line]
    assert whole.startswith("TEST:") and clean.lstrip().startswith("clean TEST (without 2 images")
    evaluated = json.loads(run_search(tmp_path, "evaluate", "--study-name", "seed-fcn", "--json").stdout)
    assert evaluated["metric"] == "balanced-accuracy" and evaluated["value"] == pytest.approx(t.value)
    test = evaluated["splits"]["TEST"]
    assert 0 <= test["scores"]["balanced-accuracy"] <= 1 and "balanced-accuracy" in test["clean"]["scores"]
    logged = client.get_run(t.run_id).data.metrics
    assert logged["test_balanced_accuracy"] == pytest.approx(test["scores"]["balanced-accuracy"])
    assert logged["test_clean_balanced_accuracy"] == pytest.approx(test["clean"]["scores"]["balanced-accuracy"])
