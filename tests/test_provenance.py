"""What a trial records is what ran, and what serves it is what it trained on."""
import os
from pathlib import Path

import numpy as np
import pytest

from preprocessing.synthetic import sync_groups, make_split_dataset
from servicetools import fresh_database, pg_available, pg_url
from searchtools import env_for, mlflow_runs, run_search, search_cmd

pytestmark = pytest.mark.slow


def test_a_padded_trial_trains_on_the_pixels_predict_feeds_its_model(tmp_path):
    """fit=pad once trained on stretched images (the memo left `fit` out of its key) while
    predict padded: compare the real trial's training batches with predict's input."""
    from preprocessing import make_batches
    from search.record import read_trial
    from search.serving.predictor import from_trial
    from search.results.study import open_existing, study_tracker
    from search.running.data import DataProvider

    make_split_dataset(tmp_path / "data", cells_per_class=4, copies=2)  # 24x32 images: padding shows
    done = run_search(tmp_path, "launch", "--study", "seed-fcn", "--param", "size=16x16", "--param", "fit=pad",
                      "--param", "width=0.125", "--param", "batch_size=8", "--epochs", "1", "--trials", "1",
                      "--data-dir", "data", "--quiet")
    assert done.returncode == 0, done.stderr
    os.environ["BLOODSEARCH_CACHE_DIR"] = str(tmp_path / "cache")  # as the worker had it
    try:
        handle = open_existing("seed-fcn", f"sqlite:///{tmp_path / 'optuna.db'}",
                               f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "data"))
        trial = read_trial(handle.study.trials[0])
        assert trial.config.preprocess.fit == "pad"
        s = handle.settings
        # What the worker's objective trained on: the same provider, the same config.
        data = DataProvider(s.data_dir, None, s.val_fraction, s.seed).get(trial.config.preprocess)
        idx = data.split.train[:8]
        trained_on = np.concatenate([x for x, _ in make_batches(data.cache, idx, 8).as_numpy_iterator()])
        predictor = from_trial(handle, trial, study_tracker(handle), None)
        served = np.stack([predictor.model_input(data.cache.image_set.path(i)) for i in idx])
    finally:
        del os.environ["BLOODSEARCH_CACHE_DIR"]
    np.testing.assert_array_equal(trained_on, served)
    assert (served[:, :2] == 0).all()  # 24x32 into 16x16 pads top and bottom with black


@pytest.mark.skipif(not pg_available(), reason="PostgreSQL not reachable at 127.0.0.1:5432")
def test_a_password_in_the_storage_url_reaches_no_argv_output_or_record(tmp_path):
    """PostgreSQL here trusts local connections, so any password is accepted and the test can
    follow where it goes: nowhere but the worker's stdin."""
    import subprocess
    import time

    import optuna

    make_split_dataset(tmp_path / "data", cells_per_class=4, copies=2)
    secret = "Sup3rSecretPW"
    with fresh_database("bloodsearch_secret") as db:
        url = pg_url(db).replace("postgresql+psycopg://postgres@", f"postgresql+psycopg://postgres:{secret}@")
        assert secret in url
        log = tmp_path / "launch.log"
        # As the README advises for passwords: the URL in the environment, so not even the
        # launcher's own argv holds it.
        env = {**env_for(tmp_path), "SEARCH_STORAGE": url}
        proc = subprocess.Popen(search_cmd("launch", "--study", "seed-fcn", "--param", "size=16x16", "--param",
                                           "width=0.125", "--param", "batch_size=8", "--epochs", "1", "--trials", "2",
                                           "--data-dir", "data"),
                                cwd=tmp_path, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        seen_workers, leaked = 0, []
        while proc.poll() is None:  # every process's argv, as `ps` shows them, while it runs
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or int(pid) == proc.pid:
                    continue
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                except OSError:
                    continue
                if "search.running.worker" in argv:
                    seen_workers += 1
                if secret in argv:
                    leaked.append(argv)
            time.sleep(0.05)
        assert proc.returncode == 0, log.read_text()[-3000:]
        assert seen_workers and not leaked
        output = log.read_text()
        assert secret not in output
        resumed = subprocess.run(search_cmd("resume", "--study-name", "seed-fcn", "--trials", "3"), cwd=tmp_path,
                                 env=env, capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0 and secret not in resumed.stdout + resumed.stderr, resumed.stderr
        bad = subprocess.run(search_cmd("status", "--study-name", "nope"), cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and ":***@" in bad.stderr and secret not in bad.stderr
        study = optuna.load_study(study_name="seed-fcn", storage=url)
        assert len(study.trials) == 3
        assert secret not in repr(study.user_attrs) and all(secret not in repr(t.user_attrs) for t in study.trials)
    client, parents, runs = mlflow_runs(tmp_path, "seed-fcn")
    for run in parents + runs:
        assert secret not in repr(run.data.params) and secret not in repr(run.data.tags)


TINY = ["--study", "seed-fcn", "--param", "size=16x16", "--param", "width=0.125", "--param", "batch_size=8",
        "--epochs", "1", "--data-dir", "data", "--quiet"]


def test_a_study_keeps_the_settings_that_give_its_values_meaning(tmp_path):
    """A relaunch with another --seed once moved later trials to another validation split."""
    from servicetools import study_user_attrs

    make_split_dataset(tmp_path / "data", cells_per_class=4, copies=2)
    assert run_search(tmp_path, "launch", *TINY, "--trials", "1").returncode == 0
    before = study_user_attrs(tmp_path, "seed-fcn")
    for option, value, stored in (("--seed", "1", "0"), ("--val-fraction", "0.3", "0.2"), ("--epochs", "2", "1"),
                                  ("--patience", "2", "5"), ("--repeats", "2", "1")):
        done = run_search(tmp_path, "launch", *TINY, "--trials", "2", option, value)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert lines[0] == (f"error: study seed-fcn was created with {option} {stored}, this launch says {value}: "
                            f"use another --study-name (or {option} {stored})")
    assert study_user_attrs(tmp_path, "seed-fcn") == before  # nothing written
    # Options that do not change what a value means may change, and the change is said.
    done = run_search(tmp_path, "launch", *TINY[:-1], "--trials", "2", "--sampler", "random")
    assert done.returncode == 0 and "note: study seed-fcn: --sampler is now random (was tpe)" in done.stderr
    # A worker with another copy of the data (a file more) would validate on another split.
    (tmp_path / "data" / "TRAIN" / "EOSINOPHIL" / "_99_0.png").write_bytes(
        next((tmp_path / "data" / "TRAIN" / "EOSINOPHIL").iterdir()).read_bytes())
    sync_groups(tmp_path / "data")
    joined = run_search(tmp_path, "worker", "--study-name", "seed-fcn", "--data-dir", "data")
    assert joined.returncode == 2 and "its TRAIN files differ from the ones study seed-fcn was created on" in joined.stderr


def test_macro_f1_averages_the_classes_that_are_there():
    from search.results.evaluation import classification_metrics

    y = np.array([0, 0, 1, 1, 3, 3])  # no MONOCYTE (2)
    probs = np.eye(4)[y]
    m = classification_metrics(y, probs, ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"])
    assert m["macro_f1"] == 1.0  # was 0.75, with the absent class counted as F1 0
    assert m["per_class"]["MONOCYTE"] == {"precision": None, "recall": None, "f1": None, "support": 0, "absent": True}
    assert m["classes_present"] == ["EOSINOPHIL", "LYMPHOCYTE", "NEUTROPHIL"]


def test_an_export_that_lacks_its_unet_is_refused(tmp_path):
    import json

    from models import ModelConfig, build_model
    from search.errors import SearchError
    from search.serving.predictor import Predictor
    from studies import TrialConfig
    from preprocessing import PreprocessConfig

    config = TrialConfig(PreprocessConfig(size=(16, 16), mask="unet"), ModelConfig("fcn", kernels=(2,) * 5, width=0.125))
    model = build_model(config.model, (16, 16, 3), 4)
    model.save(tmp_path / "model.keras")
    (tmp_path / "preprocess.json").write_text(json.dumps({"config": config.to_dict(), "classes": list("ABCD")}))
    with pytest.raises(SearchError, match="unet.keras is missing"):
        Predictor.from_folder(tmp_path)


def test_a_failed_unet_is_refused_not_used(tmp_path, monkeypatch):
    from preprocessing import load_dataset
    from search.running import unet

    make_split_dataset(tmp_path / "data", cells_per_class=4, copies=2)
    monkeypatch.setattr(unet, "MIN_DICE", 1.01)  # no U-Net reaches it: as one that learned nothing
    with pytest.raises(unet.UnetError, match=r"validation Dice .* below 1.01: its masks would be mostly wrong"):
        unet.ensure_unet(load_dataset(tmp_path / "data").train, (16, 16), tmp_path / "cache", epochs=1)
    assert not list((tmp_path / "cache" / "unet").glob("*/current"))  # nothing stored for trials to use


def test_a_trial_serves_with_its_own_unet_after_a_retrain(tmp_path):
    """`search unet train --retrain` once replaced the stored U-Net, and predict, evaluate and
    export then masked a trial's inputs with a model it was not trained with."""
    from search.record import read_trial
    from searchtools import load

    make_split_dataset(tmp_path / "data", cells_per_class=6, copies=3)
    UNET = ["unet", "train", "--data-dir", "data", "--size", "16x16", "--epochs", "20", "--patience", "20",
            "--batch-size", "8"]
    trained = run_search(tmp_path, *UNET)
    assert trained.returncode == 0, trained.stderr
    done = run_search(tmp_path, "launch", *TINY, "--trials", "1", "--param", "mask=unet")
    assert done.returncode == 0, done.stderr
    trial = read_trial(load(tmp_path, "seed-fcn").trials[0])
    image = str(next((tmp_path / "data" / "TEST" / "EOSINOPHIL").iterdir()))
    before = run_search(tmp_path, "predict", "--study-name", "seed-fcn", image, "--json")
    retrained = run_search(tmp_path, *UNET, "--seed", "7", "--retrain")
    assert retrained.returncode == 0, retrained.stderr
    after = run_search(tmp_path, "predict", "--study-name", "seed-fcn", image, "--json")
    assert before.returncode == after.returncode == 0, after.stderr
    assert before.stdout == after.stdout  # the same U-Net, so the same input and output
    unets = sorted(p.parent.name for p in (tmp_path / "cache" / "unet").glob("*/*/meta.json"))
    assert len(unets) == 2 and trial.unet in unets  # the first is kept beside the new one
    # Its U-Net gone from this machine and from MLflow: a one-line error naming it.
    import shutil

    shutil.rmtree(tmp_path / "cache" / "unet")
    client, _, _ = mlflow_runs(tmp_path, "seed-fcn")
    for run in client.search_runs([client.get_experiment_by_name("unet").experiment_id]):
        client.delete_run(run.info.run_id)
    gone = run_search(tmp_path, "predict", "--study-name", "seed-fcn", image)
    errors = [line for line in gone.stderr.splitlines() if line.startswith("error:")]
    assert gone.returncode == 2 and len(errors) == 1 and trial.unet in errors[0], gone.stderr


def test_a_repeats_trial_is_evaluated_as_its_seeds(tmp_path):
    make_split_dataset(tmp_path / "data", cells_per_class=4, copies=2, test_cells=2)
    done = run_search(tmp_path, "launch", *TINY, "--trials", "1", "--repeats", "2", "--pruner", "none")
    assert done.returncode == 0, done.stderr
    import json

    result = json.loads(run_search(tmp_path, "evaluate", "--study-name", "seed-fcn", "--json").stdout)
    assert result["model"] == "the bag of its 2 seed models (mean probabilities)"
    assert result["splits"]["TEST"]["per_model"]["accuracy"]["n"] == 2
    assert result["row"].startswith("bag of 2 seeds: ")
