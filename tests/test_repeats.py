"""--repeats and `search replicate`: several seeds per configuration, summarised as the study did."""
import json
import re
from pathlib import Path

import numpy as np
import optuna
import pytest

from searchtools import FAST, load, mlflow_runs, run_search
from preprocessing.synthetic import make_split_dataset

from search.record import read_trial
from search.record import FitResult
from search.repeats import SeedResult, Spread, bag_members, left_out, repeat_seeds, summarize

S = optuna.trial.TrialState


def test_spread_and_row_match_numpy():
    results = [SeedResult(1, 0.8, 20, True, 2.0, 0.86, 0.9), SeedResult(2, 0.7, 30, True, 2.0, 0.88, 0.95),
               SeedResult(3, 0.2, 10, False, 2.0, 0.25, 0.3)]
    summary = summarize(results)
    acc = np.array([0.86, 0.88, 0.25])
    assert summary.accuracy_split == "test"
    assert summary.accuracy.mean == pytest.approx(acc.mean()) and summary.accuracy.std == pytest.approx(acc.std(ddof=1))
    assert (summary.accuracy.min, summary.accuracy.max) == (0.25, 0.88)
    assert summary.epochs.mean == 20 and summary.convergence_rate == pytest.approx(2 / 3)
    cells = np.array([0.9, 0.95, 0.3])
    assert summary.row() == (f"test accuracy {acc.mean():.3f} ± {acc.std(ddof=1):.3f} [0.250, 0.880] (n=3) | "
                             f"per-group {cells.mean():.3f} ± {cells.std(ddof=1):.3f} | model size 2.0 MB | "
                             f"epochs 20 ± 10 | convergence 67%")
    # Without TEST results the summary is of validation accuracy, and says so.
    val = summarize([SeedResult(1, 0.5, 3, True)])
    assert val.accuracy_split == "validation" and val.accuracy == Spread(0.5, 0.0, 0.5, 0.5, 1)


def test_a_bag_keeps_the_models_that_learned_and_all_when_none_did():
    def fits(*learned):
        return [FitResult(seed=1, val_accuracy=0.8 if ok else 0.25, epochs_run=5, best_epoch=2, converged=ok, fold=k)
                for k, ok in enumerate(learned)]

    assert bag_members(fits(True, False, True)) == [0, 2]
    assert left_out(fits(True, False, True), "fold") == " (fold 1 left out: did not learn)"
    assert bag_members(fits(True, True)) == [0, 1] and left_out(fits(True, True), "fold") == ""
    assert bag_members(fits(False, False)) == [0, 1]  # still a model to judge
    seeds = [FitResult(seed=k, val_accuracy=0.25, epochs_run=5, best_epoch=2, converged=k == 0) for k in range(2)]
    assert bag_members(seeds) == [0, 1]  # --repeats measures how often a seed fails: all kept


def test_repeat_seeds_are_distinct_and_shared_by_every_trial():
    seeds = repeat_seeds(0, 5)
    assert len(set(seeds)) == 5 and seeds == repeat_seeds(0, 5) and seeds[:3] == repeat_seeds(0, 3)
    assert repeat_seeds(1, 3) != repeat_seeds(0, 3)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    make_split_dataset(tmp_path / "data", cells_per_class=8, copies=3)
    return tmp_path


@pytest.mark.slow
def test_repeats_give_nested_seed_runs_and_the_mean(work):
    done = run_search(work, "launch", "--study", "fcn", "--trials", "2", "--repeats", "3", "--data-dir", "data",
                      "--quiet", *FAST, "--param", "optimizer=adam")
    assert done.returncode == 0, done.stderr
    study = load(work, "fcn")
    client, parents, runs = mlflow_runs(work, "fcn")
    trial_runs = {r.info.run_id: r for r in runs if "bloodsearch.repeat" not in r.data.tags}
    seed_runs = [r for r in runs if "bloodsearch.repeat" in r.data.tags]
    assert len(trial_runs) == 2 and len(seed_runs) == 6
    seeds = repeat_seeds(0, 3)
    for frozen in study.trials:
        t = read_trial(frozen)
        assert t.state == S.COMPLETE
        mine = sorted((r for r in seed_runs if r.data.tags["mlflow.parentRunId"] == t.run_id),
                      key=lambda r: int(r.data.tags["bloodsearch.repeat"]))
        assert [int(r.data.params["seed"]) for r in mine] == seeds  # the same seeds in every trial: paired
        values = [r.data.metrics["best_val_accuracy"] for r in mine]
        assert t.value == pytest.approx(np.mean(values))
        assert frozen.intermediate_values == pytest.approx(dict(enumerate(values)))  # one step per seed, none per epoch
        assert [f.val_accuracy for f in t.fits] == pytest.approx(values) and [f.seed for f in t.fits] == seeds
        spread = t.summary().accuracy
        assert spread.std == pytest.approx(np.std(values, ddof=1))
        assert (spread.min, spread.max) == pytest.approx((min(values), max(values)))
        trial_run = trial_runs[t.run_id]
        assert trial_run.data.metrics["val_accuracy_std"] == pytest.approx(spread.std)
        assert trial_run.data.metrics["best_val_accuracy"] == pytest.approx(t.value)
        assert {"convergence_rate", "epochs_mean", "epochs_std"} <= set(trial_run.data.metrics)
        assert all(r.info.status == "FINISHED" for r in mine)
        assert len(client.get_metric_history(mine[0].info.run_id, "val_accuracy")) == int(mine[0].data.metrics["epochs_run"])

    best = json.loads(run_search(work, "best", "--study-name", "fcn", "--top", "1", "--json").stdout)[0]
    assert best["repeats_run"] == 3
    assert best["val_accuracy_std"] == pytest.approx(read_trial(study.best_trial).summary().accuracy.std)

    # Replicate the best trial: each seed trained from scratch and evaluated on TEST.
    rep = run_search(work, "replicate", "--study-name", "fcn", "--repeats", "2", "--json")
    assert rep.returncode == 0, rep.stderr
    out = json.loads(rep.stdout)
    _check_replication(work, out, 2, f"fcn-trial{study.best_trial.number}")


@pytest.mark.slow
def test_replicate_a_shipped_fixed_configuration(work):
    rep = run_search(work, "replicate", "--study", "seed-fcn", "--repeats", "3", "--data-dir", "data",
                     "--param", "size=24x32", "--param", "width=0.125", "--param", "batch_size=16",
                     "--epochs", "3", "--patience", "3")
    assert rep.returncode == 0, rep.stderr
    row = rep.stdout.splitlines()[1]
    assert re.fullmatch(r"test accuracy \d\.\d{3} ± \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] \(n=3\) \| per-group .* \| "
                        r"model size \d+\.\d MB \| epochs \d+ ± \d+ \| convergence \d+%", row), row
    client, _, _ = mlflow_runs(work, "replicate")
    exp = client.get_experiment_by_name("replicate")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("bloodsearch.replicate") == "true")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    acc = [r.data.metrics["test_accuracy"] for r in children]
    assert len(children) == 3 and parent.data.metrics["test_accuracy_mean"] == pytest.approx(np.mean(acc))
    assert f"{np.mean(acc):.3f} ± {np.std(acc, ddof=1):.3f} [{min(acc):.3f}, {max(acc):.3f}]" in row
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"seeds.json", "replicate.md", "summary.json"} <= artifacts


def _check_replication(work, out, repeats, name):
    client, _, _ = mlflow_runs(work, "replicate")
    exp = client.get_experiment_by_name("replicate")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.info.run_id == out["run_id"])
    assert parent.info.run_name == name and parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == out["run_id"]]
    acc = [r.data.metrics["test_accuracy"] for r in children]
    assert len(children) == repeats == len(out["seeds"])
    assert out["summary"]["accuracy"]["mean"] == pytest.approx(np.mean(acc))
    assert out["summary"]["accuracy_split"] == "test"


def test_repeats_refuse_epoch_pruners(work):
    done = run_search(work, "launch", "--study", "fcn", "--trials", "1", "--repeats", "3", "--pruner", "median",
                      "--data-dir", "data", timeout=120)
    assert done.returncode == 2 and "--pruner median prunes on epochs" in done.stderr
    assert not (work / "optuna.db").exists()
