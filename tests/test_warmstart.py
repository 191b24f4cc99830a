"""Issue 26, parts 1-3: known configurations first (--enqueue, --enqueue-study), the finished
trials of an earlier study (--warm-start-from), and TPE defaults for small budgets."""
import json
from pathlib import Path

import optuna
import pytest

from preprocessing.synthetic import make_split_dataset
from search.errors import SearchError
from search.running.algorithms import make_sampler, startup_trials
from search.running.seeding import enqueued_params, mapped_params, parse_assignments
from search.settings import SearchSettings
from searchtools import FAST, load, mlflow_runs, one_line_error, run_search
from studies import load_study
from studies.params import Domain

S = optuna.trial.TrialState
ENQUEUED, WARM = "bloodsearch.enqueued", "bloodsearch.warm_start"
FIXED = dict(p.split("=") for p in FAST[5::2])  # FAST's --param values


def settings(study: str = "fcn", **params) -> SearchSettings:
    return SearchSettings(study=study, study_name=study, storage="sqlite:///unused.db", tracking_uri="unused",
                          data_dir="unused", trials=10, params=params)


# --- without training -----------------------------------------------------------------------


@pytest.mark.parametrize("text, fragments", [
    ("dropout=0.9", ["--enqueue dropout=0.9", "a number from 0.1 to 0.5"]),
    ("width=0.3", ["--enqueue width=0.3", "one of 0.25, 0.5, 1.0"]),
    ("kernel_1=2.5", ["--enqueue kernel_1=2.5", "expected an integer"]),
    ("nope=1", ["--enqueue nope=1", "study fcn has no parameter nope"]),
    ("size", ["--enqueue 'size'", "NAME=VALUE"]),
])
def test_enqueued_values_outside_the_space_name_the_parameter(text, fragments):
    with pytest.raises(SearchError) as err:
        enqueued_params(parse_assignments(text), settings(), load_study("fcn"))
    for fragment in fragments:
        assert fragment in str(err.value)


def test_enqueued_values_take_the_space_s_types_and_respect_param_and_constants():
    got = enqueued_params(parse_assignments("size=60x80, learning_rate=1e-3,width=1,kernel_1=3"), settings(),
                          load_study("fcn"))
    assert got == {"size": "60x80", "learning_rate": 0.001, "width": 1.0, "kernel_1": 3}
    assert isinstance(got["width"], float) and isinstance(got["kernel_1"], int)
    with pytest.raises(SearchError, match="this launch fixes size with --param size=24x32"):
        enqueued_params({"size": "60x80"}, settings(size="24x32"), load_study("fcn"))
    with pytest.raises(SearchError, match="does not search size \\(a constant"):
        enqueued_params({"size": "60x80"}, settings("fast"), load_study("fast"))
    # Conditional: a branch's parameters exist only under it.
    assert enqueued_params({"family": "fcn", "fcn_kernel": "3"}, settings("families"), load_study("families")) == \
        {"family": "fcn", "fcn_kernel": 3}
    with pytest.raises(SearchError, match="no parameter depth with these values"):
        enqueued_params({"family": "fcn", "depth": "4"}, settings("families"), load_study("families"))


def test_a_fixed_study_maps_into_a_space_by_name_or_says_what_it_cannot_hold():
    got, notes = mapped_params("seed-fcn", settings(**FIXED), load_study("fcn"))
    assert got == {"kernel_1": 2, "kernel_2": 2, "kernel_3": 2, "kernel_4": 2, "kernel_5": 2, "dropout": 0.1,
                   "scaling": "channel", "fit": "stretch", "optimizer": "adam", "learning_rate": 0.001}
    assert "size" not in got and notes == []  # --param fixes it for both
    with pytest.raises(SearchError, match="study cnn cannot hold its configuration: model.arch fcn \\(here cnn\\)"):
        mapped_params("seed-fcn", settings("cnn"), load_study("cnn"))
    with pytest.raises(SearchError, match="it searches depth, kernel, which seed-fcn does not set"):
        mapped_params("seed-fcn", settings("families"), load_study("families"))
    with pytest.raises(SearchError, match="--enqueue-study fcn is a search space"):
        mapped_params("fcn", settings(), load_study("fcn"))


def test_a_fixed_study_finds_its_branch_and_takes_the_spaces_constants():
    """`campaign` searches `family`, which seed-fcn does not name: the choice that builds the
    same model is found, and the space's own resolution stands, said in a note."""
    got, notes = mapped_params("seed-fcn", settings("campaign"), load_study("campaign"))
    assert got == {"family": "fcn", "fcn_kernel": 2, "fcn_width": 1.0, "dropout": 0.1, "scaling": "channel",
                   "batch_size": 128, "learning_rate": 0.001, "label_smoothing": 0.0, "lr_schedule": "constant"}
    assert notes == ["size=60x80 (this space's; seed-fcn has 120x160)"]
    # A launch that fixes another width leaves no branch that builds the study's FCN: one line.
    with pytest.raises(SearchError, match="campaign cannot hold its configuration: model.width 1.0 \\(here 0.5\\)"):
        mapped_params("seed-fcn", settings("campaign", fcn_width="0.5"), load_study("campaign"))


def test_domains_hold_what_optuna_would_accept():
    assert Domain("int", low=3, high=5, step=2).holds(5) and not Domain("int", low=3, high=5, step=2).holds(4)
    assert not Domain("categorical", (0.5, 1.0)).holds(True) and Domain("categorical", (True, False)).holds(True)
    assert Domain("float", low=1e-4, high=1e-2, log=True).holds(1e-3)
    assert str(Domain("float", low=1e-4, high=1e-2, log=True)) == "a number from 0.0001 to 0.01, log scale"


def test_tpe_defaults_model_parameter_groups_after_a_random_start_up():
    assert startup_trials() == 10 and startup_trials(enqueued=2) == 12  # known configurations are not exploration
    sampler = make_sampler("tpe", 0, enqueued=1)
    assert sampler._n_startup_trials == 11 and sampler._group and sampler._constant_liar
    assert sampler._multivariate is True
    assert isinstance(make_sampler("random", 0), optuna.samplers.RandomSampler)


def test_the_sampler_models_warm_started_trials_of_a_conditional_space():
    """Past the start-up, TPE samples from the copied trials (group=True over families' two
    branches), and the new study's best is theirs until a new trial beats it."""
    from search.running.seeding import warm_copy
    from studies import Params

    suggest = load_study("families")

    def objective(trial):
        config = suggest(Params(trial))
        return config.learning_rate * 100 + (config.model.arch == "fcn")

    old = optuna.create_study(direction="maximize", sampler=make_sampler("tpe", 0))
    old.optimize(objective, n_trials=12)
    new = optuna.create_study(direction="maximize", sampler=make_sampler("tpe", 1))
    new.add_trials([warm_copy(t, "old") for t in old.trials])
    assert len(new.trials) == 12 and new.best_value == old.best_value
    new.optimize(objective, n_trials=3)
    assert len(new.trials) == 15 and new.best_value >= old.best_value
    assert all(t.state == S.COMPLETE for t in new.trials)


def test_a_trial_copied_twice_names_the_study_that_trained_it():
    """Its MLflow run is in the store of the study that trained it, not of the one between."""
    from search.record import WARM_START
    from search.running.seeding import warm_copy

    first = optuna.create_study()
    first.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    second = optuna.create_study(study_name="second")
    second.add_trials([warm_copy(t, "first") for t in first.trials])
    second.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    third = optuna.create_study()
    third.add_trials([warm_copy(t, "second") for t in second.trials])
    assert [t.user_attrs[WARM_START] for t in third.trials] == [
        {"study": "first", "trial": 0}, {"study": "first", "trial": 1}, {"study": "second", "trial": 2}]
    from search.running.seeding import WarmStart

    again = WarmStart(second, None)
    assert again.add_to(third) == 0 and len(third.trials) == 3  # a relaunch copies none twice


# --- through the CLI ------------------------------------------------------------------------


@pytest.fixture
def work(tmp_path: Path) -> Path:
    make_split_dataset(tmp_path / "data", cells_per_class=8, copies=3)
    return tmp_path


def launch(work, *args, name="fcn", trials=3):
    return run_search(work, "launch", "--study", "fcn", "--study-name", name, "--trials", str(trials),
                      "--data-dir", "data", "--quiet", "--pruner", "none", *FAST, *args)


@pytest.mark.slow
def test_known_configurations_run_first_and_read_as_the_baseline(work):
    refused = launch(work, "--enqueue", "dropout=0.7")
    one_line_error(refused, "--enqueue dropout=0.7", "a number from 0.1 to 0.5")
    refused = launch(work, "--enqueue-study", "seed-cnn")
    one_line_error(refused, "--enqueue-study seed-cnn", "model.arch cnn (here fcn)")
    assert not (work / "optuna.db").exists() and not (work / "mlflow.db").exists()

    given = ("--enqueue-study", "seed-fcn", "--enqueue", "learning_rate=0.003,dropout=0.2")
    done = launch(work, *given, trials=3)
    assert done.returncode == 0, done.stderr
    trials = load(work, "fcn").trials
    assert [t.user_attrs.get(ENQUEUED) for t in trials] == ["seed-fcn", "--enqueue", None]
    assert trials[0].params["dropout"] == 0.1 and trials[0].params["kernel_1"] == 2
    assert trials[1].params["learning_rate"] == 0.003 and trials[1].params["dropout"] == 0.2
    _, _, runs = mlflow_runs(work, "fcn")
    tags = {r.data.tags["optuna.trial"]: r.data.tags.get(ENQUEUED) for r in runs}
    assert tags == {"0": "seed-fcn", "1": "--enqueue", "2": None}

    best = run_search(work, "best", "--study-name", "fcn", "--top", "1", "--json")
    rows = json.loads(best.stdout)
    assert any(r["baseline"] == "seed-fcn" and r["trial"] == 0 for r in rows)  # listed even when not the top
    assert "[baseline (seed-fcn)]" in run_search(work, "best", "--study-name", "fcn").stdout
    status = run_search(work, "status", "--study-name", "fcn")
    assert "baseline: trial" in status.stdout and "against it" in status.stdout, status.stdout

    again = launch(work, *given, trials=4)  # a relaunch does not queue them twice
    assert again.returncode == 0, again.stderr
    trials = load(work, "fcn").trials
    assert len(trials) == 4 and sum(ENQUEUED in t.user_attrs for t in trials) == 2


@pytest.mark.slow
def test_warm_start_adds_a_compatible_study_s_trials_once(work):
    assert launch(work, name="old", trials=2).returncode == 0
    old = load(work, "old")
    other = launch(work, "--warm-start-from", "old", "--epochs", "2", name="other")
    one_line_error(other, "--warm-start-from old", "--epochs 3", "says 2")
    missing = launch(work, "--warm-start-from", "nowhere", name="other")
    one_line_error(missing, "--warm-start-from nowhere", "no study named 'nowhere'")
    assert "other" not in {s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{work / 'optuna.db'}")}

    done = run_search(work, "launch", "--study", "fcn", "--study-name", "new", "--trials", "3", "--data-dir", "data",
                      "--pruner", "none", *FAST, "--warm-start-from", "old", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "2 finished trial(s) of old added (warm start)" in done.stderr
    new = load(work, "new")
    assert len(new.trials) == 3 and new.best_value >= old.best_value  # the sampler's study holds them
    for copied, source in zip(new.trials[:2], old.trials):
        assert copied.params == source.params and copied.value == source.value
        assert copied.distributions == source.distributions
        assert copied.user_attrs["run_id"] == source.user_attrs["run_id"]  # its MLflow run and model
        assert copied.user_attrs[WARM] == {"study": "old", "trial": source.number}
    assert WARM not in new.trials[2].user_attrs

    listed = run_search(work, "best", "--study-name", "new")
    assert "[from old trial 0]" in listed.stdout and "[from old trial 1]" in listed.stdout, listed.stdout
    evaluated = run_search(work, "evaluate", "--study-name", "new", "--trial", "0", "--json")
    assert evaluated.returncode == 0, evaluated.stderr  # its model, without retraining

    again = launch(work, "--warm-start-from", "old", name="new", trials=4)
    assert again.returncode == 0, again.stderr
    new = load(work, "new")
    assert len(new.trials) == 4 and sum(WARM in t.user_attrs for t in new.trials) == 2

    import mlflow

    empty = f"sqlite:///{work / 'elsewhere.db'}"
    mlflow.MlflowClient(empty).search_experiments()  # a tracking store without the copied trials' runs
    elsewhere = run_search(work, "evaluate", "--study-name", "new", "--trial", "0", "--tracking-uri", empty)
    one_line_error(elsewhere, "trial 0", "copied from study old (warm start)", "--tracking-uri")
