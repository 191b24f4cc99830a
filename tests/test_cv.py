"""Cross-validated trials (--cv K), the metrics a trial is judged by, test-time augmentation,
bagged fold models and ensembles."""
import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import optuna
import pytest

from preprocessing import cv_folds, load_dataset
from preprocessing.synthetic import make_split_dataset
from searchtools import load, mlflow_runs, run_search

TINY = ["--study", "seed-fcn", "--param", "size=16x16", "--param", "width=0.125", "--param", "batch_size=8",
        "--param", "learning_rate=0.003", "--param", "dropout=0.0", "--epochs", "4", "--patience", "4"]


def test_folds_are_grouped_stratified_and_fixed(tmp_path):
    data = load_dataset(make_split_dataset(tmp_path / "d", cells_per_class=6, copies=3))
    folds = cv_folds(data.train, 3, seed=5)
    validated = np.concatenate([f.val for f in folds])
    assert sorted(validated.tolist()) == list(range(len(data.train)))  # every image once
    for f in folds:
        assert not {data.train.groups[i] for i in f.train} & {data.train.groups[i] for i in f.val}
        assert all(side["groups"] == 2 for side in f.report["val"].values())  # 6 cells per class / 3 folds
    again = cv_folds(data.train, 3, seed=5)
    assert all(np.array_equal(a.val, b.val) for a, b in zip(folds, again))  # the same in every trial


def test_tta_of_a_flip_symmetric_image_is_the_plain_prediction():
    from models import ModelConfig, build_model
    from models.combine import with_tta

    model = build_model(ModelConfig("fcn", kernels=(2,) * 5, width=0.125), (16, 16, 3), 4)
    yy, xx = np.mgrid[:16, :16]
    ring = (np.abs(np.hypot(yy - 7.5, xx - 7.5) - 5) < 1.5)[..., None] * np.array([200, 90, 120])
    image = ring.astype("uint8")[None]
    assert np.array_equal(image, image[:, ::-1]) and np.array_equal(image, image[:, :, ::-1])
    for mode in ("flip", "dihedral"):
        np.testing.assert_allclose(with_tta(model, mode).predict(image, verbose=0), model.predict(image, verbose=0),
                                   atol=1e-6)


def test_the_best_epoch_recorded_is_the_one_early_stopping_kept():
    """Under --metric log-loss early stopping watches val_loss and restores its best epoch; the
    record once named the epoch of the best accuracy instead (fold 1 of the 2026-12 campaign's
    trial 1: weights of epoch 1 kept, "best epoch 6" recorded)."""
    from search.running.training import _best_epoch

    history = {"val_loss": [1.37, 2.35, 3.06, 3.35, 2.25, 2.26], "val_accuracy": [0.34, 0.3, 0.31, 0.33, 0.35, 0.4]}
    assert _best_epoch(history, "val_loss") == 1 and _best_epoch(history, "val_accuracy") == 6
    assert _best_epoch({}, "val_loss") == 0
    # Early stopping does not watch the warm-up epochs, so neither does the record.
    assert _best_epoch(history, "val_loss", warmup=2) == 5


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_a_warm_up_rises_to_the_trial_rate_then_follows_its_schedule(schedule):
    from search.running.training import learning_rate
    from studies import TrialConfig

    config = TrialConfig(learning_rate=0.003, lr_schedule=schedule)
    rate = learning_rate(config, steps=100, warmup_steps=10)
    first, peak, later, last = (float(rate(step)) for step in (0, 10, 50, 99))
    assert first < 0.0005 and math.isclose(peak, 0.003, rel_tol=1e-5)
    if schedule == "constant":
        assert math.isclose(later, 0.003, rel_tol=1e-5) and math.isclose(last, 0.003, rel_tol=1e-5)
    else:
        assert last < later < peak
    without = learning_rate(config, steps=100)  # no warm-up: the schedule as before
    assert (without == 0.003) if schedule == "constant" else math.isclose(float(without(0)), 0.003, rel_tol=1e-5)


def test_ensemble_selection_picks_the_trial_better_on_every_fold():
    from search.results.ensemble import greedy_selection

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    groups = np.array([f"c{i // 2}" for i in range(40)])
    good = np.full((40, 4), 0.1)
    good[np.arange(40), labels] = 0.7
    bad = rng.dirichlet(np.ones(4), 40)
    weights, curve = greedy_selection({0: bad, 1: good}, labels, groups, "log-loss", 5)
    assert weights == {1: 5} and len(curve) == 5


def test_the_default_cv_pruner_compares_trials_fold_by_fold_and_prunes_a_worse_one():
    """Fold k's epoch e is step k x epochs + e in every trial, so the median pruner compares
    the same fold and epoch; a trial worse from fold 0 on is stopped there."""
    from search.running.algorithms import make_pruner
    from search.running.objective import PruneOnEpochs

    epochs, k = 4, 3
    study = optuna.create_study(direction="maximize", pruner=make_pruner("median", epochs * k))
    for _ in range(5):
        trial = study.ask()
        for fold in range(k):
            callback = PruneOnEpochs(trial, fold * epochs)
            for e in range(epochs):
                callback.on_epoch_end(e, {"val_accuracy": 0.8 + 0.01 * e})
        study.tell(trial, 0.83)
    worse = study.ask()
    callback = PruneOnEpochs(worse, 0)
    with pytest.raises(optuna.TrialPruned, match="pruned at step 3"):
        for e in range(epochs):
            callback.on_epoch_end(e, {"val_accuracy": 0.3})


@pytest.mark.parametrize("args, fragment", [
    (["--cv", "1"], "--cv 1: cross-validation needs at least 2 folds"),
    (["--cv", "9"], "9 folds need at least 9 per class"),
    (["--cv", "2", "--repeats", "2"], "give one of them"),
    (["--metric", "f1"], "Invalid value for '--metric'"),
    (["--tta", "rot"], "Invalid value for '--tta'"),
])
def test_bad_cv_metric_and_tta_are_one_line_and_create_nothing(tmp_path, args, fragment):
    make_split_dataset(tmp_path / "data", cells_per_class=4, copies=2)
    done = run_search(tmp_path, "launch", *TINY, "--data-dir", "data", *args)
    assert done.returncode == 2 and fragment in done.stderr, done.stderr
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_a_cv_study_end_to_end(tmp_path):
    """--cv 2: fold runs nested in each trial, the value their mean, out-of-fold predictions of
    every TRAIN image once, the trial's model their bag (evaluate, export, predict), an
    ensemble chosen on out-of-fold predictions and exported as one model."""
    make_split_dataset(tmp_path / "data", cells_per_class=4, copies=2, test_cells=2)
    done = run_search(tmp_path, "launch", *TINY, "--cv", "2", "--metric", "log-loss", "--trials", "2",
                      "--data-dir", "data", "--pruner", "none", "--quiet")
    assert done.returncode == 0, done.stderr
    from search.record import read_trial
    from search.running.oof import ARTIFACT, OutOfFoldPredictions

    study = load(tmp_path, "seed-fcn")
    client, _, runs = mlflow_runs(tmp_path, "seed-fcn")
    data = load_dataset(tmp_path / "data")
    for frozen in study.trials:
        t = read_trial(frozen)
        assert t.cv and [f.fold for f in t.fits] == [0, 1]
        folds = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == t.run_id),
                       key=lambda r: int(r.data.tags["bloodsearch.fold"]))
        assert [r.info.run_name for r in folds] == [f"seed-fcn-{t.number}-fold0", f"seed-fcn-{t.number}-fold1"]
        losses = [r.data.metrics["val_log_loss"] for r in folds]
        assert t.value == pytest.approx(-np.mean(losses), abs=1e-5)  # the study's metric: log-loss, negated
        assert {"val_accuracy", "val_group_accuracy"} <= {k.replace("_mean", "") for k in
                                                         client.get_run(t.run_id).data.metrics}
        oof = OutOfFoldPredictions.load(client.download_artifacts(t.run_id, ARTIFACT, str(tmp_path)))
        assert oof.indices.tolist() == list(range(len(data.train)))  # every TRAIN image, once
        assert sorted(set(oof.folds.tolist())) == [0, 1] and oof.probs.shape == (len(data.train), 4)

    evaluated = json.loads(run_search(tmp_path, "evaluate", "--study-name", "seed-fcn", "--tta", "flip",
                                      "--json").stdout)
    assert evaluated["model"] == "the bag of its 2 fold models (mean probabilities), TTA flip"
    assert evaluated["splits"]["TEST"]["per_model"]["kind"] == "fold"
    assert run_search(tmp_path, "export", "--study-name", "seed-fcn", "--tta", "flip", "--out", "bag").returncode == 0
    files = [str(data.test.path(i)) for i in range(len(data.test))]
    rows = json.loads(run_search(tmp_path, "predict", "--model", "bag", *files, "--json").stdout)
    accuracy = np.mean([r["class"] == data.classes[data.test.labels[i]] for i, r in enumerate(rows)])
    assert accuracy == pytest.approx(evaluated["splits"]["TEST"]["accuracy"])  # served == evaluated
    served = json.loads(run_search(tmp_path, "predict", "--study-name", "seed-fcn", "--tta", "flip", *files[:3],
                                   "--json").stdout)
    for a, b in zip(served, rows[:3]):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-5)

    chosen = run_search(tmp_path, "ensemble", "--study-name", "seed-fcn", "--size", "3", "--evaluate",
                        "--export", "ens", "--json")
    assert chosen.returncode == 0, chosen.stderr
    out = json.loads(chosen.stdout)
    assert sum(m["weight"] for m in out["selection"]["members"]) == pytest.approx(1.0)
    assert out["evaluation"]["splits"]["TEST"]["images"] == len(data.test)
    ens_rows = json.loads(run_search(tmp_path, "predict", "--model", "ens", *files[:2], "--json").stdout)
    assert [set(r["probabilities"]) for r in ens_rows] == [set(data.classes)] * 2
    _, _, runs = mlflow_runs(tmp_path, "seed-fcn")
    assert any(r.data.tags.get("bloodsearch.ensemble") == "true" for r in runs)


@pytest.mark.slow
def test_a_fold_model_that_did_not_learn_is_left_out_of_the_trials_bag(tmp_path):
    """The bag a --cv trial is evaluated, exported and served as averages only the fold models
    that learned: a fold at chance would pull every prediction towards its one class."""
    make_split_dataset(tmp_path / "data", cells_per_class=4, copies=2, test_cells=2)
    done = run_search(tmp_path, "launch", *TINY, "--cv", "2", "--trials", "1", "--data-dir", "data", "--pruner",
                      "none", "--quiet")
    assert done.returncode == 0, done.stderr

    def test_split():
        out = run_search(tmp_path, "evaluate", "--study-name", "seed-fcn", "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    both = test_split()
    assert both["model"] == "the bag of its 2 fold models (mean probabilities)"
    alone = both["splits"]["TEST"]["per_model"]["accuracy"]
    # The record says fold 1 ended at chance, as a diverged or stuck training records it.
    # Optuna refuses to update a finished trial, so the record is rewritten in its database.
    trial = load(tmp_path, "seed-fcn").trials[0]
    fits = trial.user_attrs["fits"]
    fits[1]["converged"] = False
    with sqlite3.connect(tmp_path / "optuna.db") as db:
        db.execute("UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND key = 'fits'",
                   (json.dumps(fits), trial._trial_id))
    one = test_split()
    assert one["model"] == "the bag of its 1 fold models (mean probabilities) (fold 1 left out: did not learn)"
    assert one["splits"]["TEST"]["accuracy"] in (pytest.approx(alone["min"]), pytest.approx(alone["max"]))
    assert "per_model" not in one["splits"]["TEST"]


def test_an_ensemble_leaves_out_a_trial_whose_out_of_fold_predictions_cannot_be_read(tmp_path, monkeypatch):
    """A warm-started trial's run is in the earlier study's MLflow store, which may be gone:
    the trials that can be read still make the ensemble, and the left-out one is named."""
    from types import SimpleNamespace

    from search.errors import SearchError
    from search.results import ensemble as ens

    labels = np.repeat(np.arange(4), 5)
    n = len(labels)

    def saved(folder: Path, probs: np.ndarray) -> Path:
        folder.mkdir(parents=True)
        np.savez_compressed(folder / "oof.npz", indices=np.arange(n), files=np.asarray([f"{i}.jpeg" for i in range(n)]),
                            labels=labels, groups=np.asarray([str(i) for i in range(n)]), folds=np.arange(n) % 2,
                            probs=probs, classes=np.asarray(list("ABCD")))
        return folder / "oof.npz"

    runs = {"good": saved(tmp_path / "good", np.eye(4)[labels] * 0.7 + 0.075),
            "chance": saved(tmp_path / "chance", np.full((n, 4), 0.25))}

    class Tracker:
        def download(self, run_id: str, path: str, dst) -> Path:
            if run_id not in runs:
                raise OSError(f"{run_id}: no such run")
            return runs[run_id]

    trials = [SimpleNamespace(number=0, run_id="lost"), SimpleNamespace(number=1, run_id="good"),
              SimpleNamespace(number=2, run_id="chance")]
    study = SimpleNamespace(study_name="warm")
    monkeypatch.setattr(ens, "cv_trials", lambda _: trials)
    selection = ens.select(study, Tracker(), 3, "log-loss")
    assert list(selection.left_out) == [0] and "MLflow run lost" in selection.left_out[0]
    assert selection.best_single == 1 and set(selection.weights) <= {1, 2}
    assert selection.to_dict()["left_out"] == {"0": selection.left_out[0]}

    monkeypatch.setattr(ens, "cv_trials", lambda _: trials[:1])
    with pytest.raises(SearchError, match="trial 0: no out-of-fold predictions in MLflow run lost"):
        ens.select(study, Tracker(), 3, "log-loss")
