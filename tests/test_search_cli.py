"""The search service through its real CLI: Optuna + Keras + MLflow, resume, faults, errors."""
import os
import signal
import textwrap
from pathlib import Path

import optuna
import pytest

from searchtools import FAST, load, mlflow_runs, run_search, running_trial, start_search, wait_for
from preprocessing.synthetic import make_split_dataset

S = optuna.trial.TrialState
pytestmark = pytest.mark.slow


@pytest.fixture
def work(tmp_path: Path) -> Path:
    make_split_dataset(tmp_path / "data", cells_per_class=8, copies=3)
    return tmp_path


def launch(work, *args, study="fcn", trials=3):
    return run_search(work, "launch", "--study", study, "--trials", str(trials), "--data-dir", "data",
                      "--quiet", *FAST, *args)


def test_launch_records_trials_and_runs_then_extends(work):
    done = launch(work, "--pruner", "none", "--param", "optimizer=adam")
    assert done.returncode == 0, done.stderr
    study = load(work, "fcn")
    assert [t.state for t in study.trials] == [S.COMPLETE] * 3
    assert study.best_value > 0.25 + 0.1  # a tiny FCN learns the synthetic shapes: beats chance

    client, parents, children = mlflow_runs(work, "fcn")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.info.run_name for r in children) == ["fcn-0", "fcn-1", "fcn-2"]
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert len(history) == int(run.data.metrics["epochs_run"]) >= 1
        assert {"loss", "accuracy", "val_loss", "best_val_accuracy", "model_size_mb", "params_count",
                "train_seconds", "converged"} <= set(run.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"confusion_matrix.png", "confusion_matrix.json", "learning_curves.png", "scaling.json",
                "model"} <= artifacts
        trial = study.trials[int(run.data.tags["optuna.trial"])]
        assert trial.user_attrs["run_id"] == run.info.run_id
        assert run.data.params["pre.size"] == "24x32" and "model.kernels" in run.data.params

    again = launch(work, "--pruner", "none", "--param", "optimizer=adam", trials=5)
    assert again.returncode == 0, again.stderr
    study = load(work, "fcn")
    assert len(study.trials) == 5 and [t.number for t in study.trials] == list(range(5))
    assert all(t.state == S.COMPLETE for t in study.trials)
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == 5  # five different configurations, none repeated
    assert len(mlflow_runs(work, "fcn")[2]) == 5


def test_kill_minus_9_mid_trial_then_relaunch(work):
    budget = ("--epochs", "10", "--patience", "10")  # fixed for the study: the relaunch gives the same
    proc = start_search(work, "launch", "--study", "fcn", "--trials", "2", "--data-dir", "data", "--quiet",
                        "--pruner", "none", *FAST, *budget, log=work / "first.log")
    victim = wait_for(lambda: running_trial(work, "fcn", min_epoch=2), 240, "a trial in its third epoch")
    os.kill(proc.pid, signal.SIGKILL)  # the launcher; its worker dies with it
    proc.wait()
    wait_for(lambda: not _alive(victim.user_attrs["pid"]), 30, "the worker to die with its launcher")

    relaunch = launch(work, "--pruner", "none", *budget, trials=2)
    assert relaunch.returncode == 0, relaunch.stderr
    study = load(work, "fcn")
    killed = study.trials[victim.number]
    assert killed.state == S.FAIL
    retries = [t for t in study.trials if t.user_attrs.get("origin_trial") == victim.number and t.number != victim.number]
    assert len(retries) == 1 and retries[0].params == killed.params
    assert retries[0].state == S.COMPLETE, retries[0].user_attrs.get("fail_reason")
    assert sum(t.state in (S.COMPLETE, S.PRUNED) for t in study.trials) == 2
    assert not [t for t in study.trials if t.state == S.RUNNING]
    _, _, children = mlflow_runs(work, "fcn")
    status = {r.data.tags["optuna.trial"]: r.info.status for r in children}
    assert status[str(victim.number)] == "FAILED"
    assert "RUNNING" not in status.values()
    assert f"fcn-{retries[0].number}-retry-of-{victim.number}" in {r.info.run_name for r in children}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_ctrl_c_stops_cleanly_and_resume_continues(work):
    proc = start_search(work, "launch", "--study", "fcn", "--trials", "2", "--data-dir", "data",
                        "--pruner", "none", *FAST, "--epochs", "40", "--patience", "40", log=work / "first.log")
    victim = wait_for(lambda: running_trial(work, "fcn", min_epoch=1), 240, "a running trial")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    assert "search resume --study-name fcn" in (work / "first.log").read_text()
    study = load(work, "fcn")
    assert study.trials[victim.number].state == S.FAIL
    _, parents, children = mlflow_runs(work, "fcn")
    assert {r.info.status for r in children} == {"FAILED"} and parents[0].info.status == "KILLED"

    resumed = run_search(work, "resume", "--study-name", "fcn", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    study = load(work, "fcn")
    assert sum(t.state == S.COMPLETE for t in study.trials) == 2
    assert any(t.params == study.trials[victim.number].params and t.state == S.COMPLETE for t in study.trials)


def test_sigterm_stops_a_background_launch_whose_workers_inherited_sigint_ignored(work):
    """The launcher asks its workers to stop with SIGINT; a launch started as a script's
    background job hands them SIGINT ignored, and they once sat out the request for 120 s."""
    proc = start_search(work, "launch", "--study", "fcn", "--trials", "2", "--data-dir", "data", "--pruner", "none",
                        *FAST, "--epochs", "150", "--patience", "150", log=work / "bg.log", sigint_ignored=True)
    victim = wait_for(lambda: running_trial(work, "fcn", min_epoch=1), 240, "a running trial")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) == 143, (work / "bg.log").read_text()[-2000:]
    assert load(work, "fcn").trials[victim.number].state == S.FAIL


def test_a_queued_retry_of_the_last_trial_is_run_not_waited_for(work):
    """The last trial's worker died and its parameters wait in the queue: the relaunch must run
    them (a queued trial once counted as "in flight", and every worker stopped at once)."""
    assert launch(work, "--pruner", "none", trials=1).returncode == 0
    study = load(work, "fcn")
    study.enqueue_trial(study.trials[0].params, user_attrs={"origin_trial": 0})
    again = run_search(work, "launch", "--study", "fcn", "--trials", "2", "--data-dir", "data", "--quiet",
                       "--pruner", "none", *FAST, timeout=300)
    assert again.returncode == 0, again.stderr
    study = load(work, "fcn")
    assert [t.state for t in study.trials] == [S.COMPLETE, S.COMPLETE]
    assert study.trials[1].params == study.trials[0].params and study.trials[1].user_attrs["origin_trial"] == 0


def test_the_fast_study_trains_end_to_end(work):
    done = run_search(work, "launch", "--study", "fast", "--trials", "1", "--data-dir", "data", "--quiet",
                      "--pruner", "none", "--epochs", "4", "--patience", "4", "--param", "size=24x32",
                      "--param", "batch_size=32", "--param", "augment=flip", "--param", "lr_schedule=cosine",
                      "--param", "label_smoothing=0.1", "--param", "batch_norm=true", "--param", "separable=true")
    assert done.returncode == 0, done.stderr
    trial = load(work, "fast").trials[0]
    assert trial.state == S.COMPLETE
    assert trial.user_attrs["config"]["model"]["arch"] == "fast" and trial.user_attrs["config"]["label_smoothing"] == 0.1
    run = mlflow_runs(work, "fast")[2][0]
    assert run.data.params["model.augment"] == "flip" and run.data.params["lr_schedule"] == "cosine"


PRUNE_STUDY = """
from studies.spaces import fixed_config

def suggest(p):
    # Trial 0 learns; later trials cannot (a learning rate of 1e-9), so successive halving
    # must prune them at the first rung.
    lr = 3e-3 if p.trial is None or p.trial.number == 0 else 1e-9
    return fixed_config(p, "fcn", dropout=0.0).__class__(
        **{**fixed_config(p, "fcn", dropout=0.0).__dict__, "learning_rate": lr})
"""


def test_a_pruner_that_must_prune_does(work):
    study_file = work / "prune_me.py"
    study_file.write_text(textwrap.dedent(PRUNE_STUDY))
    done = run_search(work, "launch", "--study", str(study_file), "--trials", "3", "--data-dir", "data", "--quiet",
                      "--pruner", "successive-halving", "--epochs", "4", "--patience", "4",
                      "--param", "size=24x32", "--param", "width=0.25", "--param", "batch_size=16")
    assert done.returncode == 0, done.stderr
    study = load(work, "prune_me")
    assert study.trials[0].state == S.COMPLETE
    pruned = [t for t in study.trials if t.state == S.PRUNED]
    assert pruned
    status = {r.data.tags["optuna.trial"]: r.info.status for r in mlflow_runs(work, "prune_me")[2]}
    assert all(status[str(t.number)] == "KILLED" for t in pruned)


def test_two_workers_on_sqlite(work):
    done = launch(work, "--workers", "2", "--pruner", "none", "--trials-per-worker", "2", trials=4)
    assert done.returncode == 0, done.stderr
    assert "database is locked" not in done.stderr
    study = load(work, "fcn")
    finished = [t for t in study.trials if t.state == S.COMPLETE]
    assert len(finished) == 4
    assert len({t.user_attrs["pid"] for t in study.trials}) >= 2  # both workers trained
    assert not [t for t in study.trials if t.state == S.FAIL and not t.user_attrs.get("surplus")]


@pytest.mark.parametrize("args, message", [
    (["--study", "transformer"], "unknown study 'transformer'"),
    (["--data-dir", "nowhere"], "data dir"),
    (["--param", "colour=gray"], "--param colour: study fcn has no such parameter"),
    (["--param", "batch_size=many"], "--param batch_size=many: expected an integer"),
    (["--param", "nonsense"], "is not NAME=VALUE"),
    (["--param", "scaling=minmax"], "scaling 'minmax'"),
    (["--storage", "postgresql+psycopg://nobody@127.0.0.1:1/none"], "--storage postgresql+psycopg://nobody@127.0.0.1:1/none: cannot connect"),
    (["--tracking-uri", "http://127.0.0.1:1"], "--tracking-uri http://127.0.0.1:1: tracking server unreachable"),
    (["--storage", "sqlite:////no/such/folder/x.db"], "--storage sqlite:////no/such/folder/x.db"),
])
def test_bad_input_is_one_line_and_creates_nothing(work, args, message):
    base = {"--study": "fcn", "--data-dir": "data"}
    for flag, value in zip(args[::2], args[1::2]):
        base.pop(flag, None)
    cli = ["launch", "--trials", "1", *[x for kv in base.items() for x in kv], *args]
    done = run_search(work, *cli, timeout=120)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert not (work / "optuna.db").exists() and not (work / "mlflow.db").exists()


def test_resume_unknown_study(work):
    done = run_search(work, "resume", "--study-name", "ghost")
    # No storage here at all: said so, and none is created (readers never create stores).
    assert done.returncode == 2 and "no such database" in done.stderr and not (work / "optuna.db").exists()
    import optuna

    optuna.create_study(study_name="other", storage=f"sqlite:///{work / 'optuna.db'}")
    done = run_search(work, "resume", "--study-name", "ghost")
    assert done.returncode == 2 and "no study named 'ghost'" in done.stderr


def test_a_trial_with_unet_masks_end_to_end(work):
    # Trained ahead with enough steps to learn (a U-Net below Dice 0.5 is refused, and the
    # defaults' 10 epochs of 3 batches do not learn these 16x16 shapes).
    trained = run_search(work, "unet", "train", "--data-dir", "data", "--size", "16x16", "--epochs", "20",
                         "--patience", "20", "--batch-size", "8")
    assert trained.returncode == 0, trained.stderr
    done = launch(work, "--pruner", "none", "--param", "mask=unet", "--param", "size=16x16", "--param", "fit=stretch",
                  "--param", "optimizer=adam", trials=1)
    assert done.returncode == 0, done.stderr
    trial = load(work, "fcn").trials[0]
    assert trial.state == S.COMPLETE and trial.user_attrs["config"]["preprocess"]["mask"] == "unet"
    client, _, children = mlflow_runs(work, "fcn")
    assert children[0].data.params["pre.mask"] == "unet"
    unet_exp = client.get_experiment_by_name("unet")
    unet_runs = client.search_runs([unet_exp.experiment_id])
    # Logged once, by its training; the study recorded that run instead of logging it again.
    assert len(unet_runs) == 1 and {"val_dice", "val_iou"} <= set(unet_runs[0].data.metrics)
    assert unet_runs[0].data.tags["bloodsearch.unet_digest"] == trial.user_attrs["unet"]

    again = run_search(work, "unet", "train", "--data-dir", "data", "--size", "16x16")
    assert again.returncode == 0 and "trained earlier" in again.stdout  # stored once, reused
