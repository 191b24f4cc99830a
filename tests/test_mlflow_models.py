"""Models the MLflow way (issue 16): each trial's run logs an MLflow model (a pyfunc that takes
raw images and applies the trial's own preprocessing, with the network as its keras flavour)
and the data it saw (mlflow.data); export and ensemble register that model with aliases; a
registered model loads and serves; the optuna CLI reads our studies. On one tiny --cv study,
so the models are fold bags, as `search predict` serves them."""
import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from searchtools import ROOT, env_for, launched_study, load, mlflow_runs, run_search, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mlflow-models")]  # one study, built once
STUDY = "seed-fcn"
TINY = ["--study", STUDY, "--param", "size=16x16", "--param", "width=0.125", "--param", "batch_size=8",
        "--param", "learning_rate=0.003", "--param", "dropout=0.0", "--epochs", "3", "--patience", "3",
        "--cv", "2", "--quiet"]
SAMPLE = ROOT / "sample" / "blood-cells" / "TEST"


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    return launched_study(tmp_path_factory, "mlflow-models", TINY, cells_per_class=4, copies=3, test_cells=1)


def _images(study_dir: Path) -> list[Path]:
    """Synthetic PNGs of the study's own TEST split and JPEGs of the bundled sample."""
    return sorted((study_dir / "data" / "TEST").rglob("*.png"))[:4] + sorted(SAMPLE.rglob("*.jpeg"))[::10]


def _predicted(study_dir: Path, files: list[Path], *args: str) -> list[dict]:
    done = run_search(study_dir, "predict", *(args or ("--study-name", STUDY)), "--json", *map(str, files))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _same(rows: list[dict], frame) -> None:
    """pyfunc output == `search predict` rows: classes and every probability."""
    assert len(frame) == len(rows)
    for row, (_, got) in zip(rows, frame.iterrows()):
        assert got["class"] == row["class"] and got["error"] is None
        for c, p in row["probabilities"].items():
            assert got[c] == pytest.approx(p, abs=1e-5)


def _tracking(study_dir: Path) -> str:
    return f"sqlite:///{study_dir / 'mlflow.db'}"


def _best_trial_model(study_dir: Path):
    client, _, _ = mlflow_runs(study_dir, STUDY)
    run_id = load(study_dir, STUDY).best_trial.user_attrs["run_id"]
    run = client.get_run(run_id)
    assert run.outputs and run.outputs.model_outputs, "the trial's run logged no MLflow model"
    return client, run, client.get_logged_model(run.outputs.model_outputs[0].model_id)


def test_a_trials_run_logs_its_mlflow_model_and_the_data_it_saw(study_dir):
    client, run, model = _best_trial_model(study_dir)
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # opens on its runs, not traces
    from mlflow.entities import LoggedModelStatus

    assert model.status == LoggedModelStatus.READY
    assert model.name == run.info.run_name and model.source_run_id == run.info.run_id
    import mlflow

    mlflow.set_tracking_uri(_tracking(study_dir))
    info = mlflow.models.get_model_info(f"models:/{model.model_id}")
    assert {"python_function", "keras"} <= set(info.flavors)  # the network is the keras flavour
    assert [c.name for c in info.signature.inputs.inputs] == ["image"]
    assert info.signature.outputs.input_names()[:2] == ["class", "EOSINOPHIL"]

    # Lineage: the trial's run holds both sides of both folds; each fold's run its own two.
    from search.record import read_trial

    record = read_trial(load(study_dir, STUDY).best_trial)
    inputs = run.inputs.dataset_inputs
    contexts = sorted((d.dataset.name, [t.value for t in d.tags if t.key == "mlflow.data.context"][0]) for d in inputs)
    assert contexts == [("data/TRAIN fold 0 training", "training"), ("data/TRAIN fold 0 validation", "validation"),
                        ("data/TRAIN fold 1 training", "training"), ("data/TRAIN fold 1 validation", "validation")]
    fold0 = {d.dataset.name: d.dataset for d in inputs}
    profile = json.loads(fold0["data/TRAIN fold 0 validation"].profile)
    assert profile["per_class"] == record.split["val"] and profile["fold"] == 0
    assert profile["groups"] == sum(v["groups"] for v in record.split["val"].values())
    train_profile = json.loads(fold0["data/TRAIN fold 0 training"].profile)
    assert train_profile["per_class"] == record.split["train"]
    assert json.loads(fold0["data/TRAIN fold 0 training"].source)["uri"] == str(study_dir / "data")
    # Names, sizes and groups: any machine's copy split by the same groups is the same data set.
    import hashlib

    from search.settings import SETTINGS_ATTR

    stored = json.loads(load(study_dir, STUDY).user_attrs[SETTINGS_ATTR])
    assert profile["groups_digest"] == stored["groups_digest"]
    assert fold0["data/TRAIN fold 0 training"].digest == hashlib.sha256(
        f"{profile['listing']}/{profile['groups_digest']}".encode()).hexdigest()[:16]
    fold_runs = [r for r in mlflow_runs(study_dir, STUDY)[2]
                 if r.data.tags.get("mlflow.parentRunId") == run.info.run_id]
    assert len(fold_runs) == 2
    for fold_run in fold_runs:
        k = fold_run.data.tags["bloodsearch.fold"]
        assert sorted(d.dataset.name for d in fold_run.inputs.dataset_inputs) == [
            f"data/TRAIN fold {k} training", f"data/TRAIN fold {k} validation"]


def test_the_trials_mlflow_model_predicts_what_search_predict_does(study_dir):
    import mlflow
    import pandas as pd

    _, _, model = _best_trial_model(study_dir)
    files = _images(study_dir)
    rows = _predicted(study_dir, files)
    mlflow.set_tracking_uri(_tracking(study_dir))
    pyfunc = mlflow.pyfunc.load_model(f"models:/{model.model_id}")
    _same(rows, pyfunc.predict(pd.DataFrame({"image": [str(f) for f in files]})))
    _same(rows, pyfunc.predict(pd.DataFrame({"image": [base64.b64encode(f.read_bytes()).decode() for f in files]})))
    _same(rows, pyfunc.predict(pd.DataFrame({"image": [f.read_bytes() for f in files]})))
    bad = pyfunc.predict(pd.DataFrame({"image": [str(study_dir / "missing.jpg"), base64.b64encode(b"junk").decode(),
                                                 str(files[0])]}))
    assert bad["class"][0] is None and "neither a file" in bad["error"][0]
    assert bad["class"][1] is None and bad["error"][1] == "not a readable image"
    assert bad["class"][2] == rows[0]["class"] and bad["error"][2] is None  # one bad image never fails the batch

    import models  # noqa: F401  (registers our layers, as the keras flavour's users must)

    network = mlflow.keras.load_model(f"models:/{model.model_id}")
    assert tuple(network.input_shape[1:3]) == (16, 16)


def test_export_registers_the_mlflow_model_under_an_alias(study_dir):
    import mlflow
    import pandas as pd

    first = run_search(study_dir, "export", "--study-name", STUDY, "--register", "tiny", "--alias", "champion")
    assert first.returncode == 0, first.stderr
    assert "version 1" in first.stdout and "models:/tiny@champion" in first.stdout
    again = run_search(study_dir, "export", "--study-name", STUDY, "--trial", "0", "--register", "tiny",
                       "--alias", "champion", "--out", "exported")
    assert again.returncode == 0 and "version 2" in again.stdout, again.stderr  # an existing name: a new version
    client, _, _ = mlflow_runs(study_dir, STUDY)
    version = client.get_model_version_by_alias("tiny", "champion")
    assert str(version.version) == "2" and version.run_id == load(study_dir, STUDY).trials[0].user_attrs["run_id"]
    assert version.source.startswith("models:/m-")  # a logged MLflow model, not a bare folder of the run
    assert client.get_logged_model(version.source.split("/", 1)[1]).source_run_id == version.run_id

    files = _images(study_dir)
    mlflow.set_tracking_uri(_tracking(study_dir))
    served = mlflow.pyfunc.load_model("models:/tiny@champion").predict(pd.DataFrame({"image": list(map(str, files))}))
    _same(_predicted(study_dir, files, "--study-name", STUDY, "--trial", "0"), served)
    _same(_predicted(study_dir, files, "--model", "exported"), served)  # the folder and the registered model agree


def test_registration_errors_are_one_line(study_dir):
    reserved = run_search(study_dir, "export", "--study-name", STUDY, "--register", "tiny-errors", "--alias", "v1")
    assert reserved.returncode == 2
    lines = reserved.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --alias v1:"), reserved.stderr
    lonely = run_search(study_dir, "export", "--study-name", STUDY, "--alias", "champion", "--out", "x")
    assert lonely.returncode == 2 and lonely.stderr.strip() == "error: --alias goes with --register"
    nowhere = run_search(study_dir, "export", "--study-name", STUDY)
    assert nowhere.returncode == 2 and "--out DIR, --log-model or --register NAME" in nowhere.stderr

    from search.errors import SearchError
    from search.stores.tracking import Tracker

    class Refusing:
        def create_registered_model(self, name):
            raise PermissionError("permission denied for user bob\nTraceback ...")

    tracker = Tracker(_tracking(study_dir))
    tracker.client = Refusing()
    with pytest.raises(SearchError) as caught:
        tracker.register("m-0", "tiny")
    assert str(caught.value.message) == "--register tiny: permission denied for user bob"


def test_an_ensemble_registers_as_one_mlflow_model(study_dir):
    import mlflow
    import pandas as pd

    done = run_search(study_dir, "ensemble", "--study-name", STUDY, "--size", "2", "--export", "ens",
                      "--register", "tiny-ensemble", "--alias", "champion", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["registered"]["version"] == "1" and out["mlflow"]["model_uri"].startswith("models:/m-")
    files = _images(study_dir)
    mlflow.set_tracking_uri(_tracking(study_dir))
    served = mlflow.pyfunc.load_model("models:/tiny-ensemble@champion").predict(
        pd.DataFrame({"image": list(map(str, files))}))
    _same(_predicted(study_dir, files, "--model", "ens"), served)


def test_mlflow_models_serve_answers_with_the_classes_of_search_predict(study_dir):
    """The real server: `mlflow models serve -m models:/NAME@champion --env-manager local`."""
    import requests

    from servicetools import free_port, stop_process_group

    done = run_search(study_dir, "export", "--study-name", STUDY, "--register", "served", "--alias", "champion")
    assert done.returncode == 0, done.stderr
    files = sorted(SAMPLE.rglob("*.jpeg"))[::5]  # base64 JPEGs from the bundled sample, every class
    rows = _predicted(study_dir, files)
    port = free_port()
    bindir = str(Path(sys.executable).parent)  # the server runs `uvicorn` from PATH: the venv's, as when activated
    log = (study_dir / "serve.log").open("w")
    proc = subprocess.Popen(["mlflow", "models", "serve", "-m", "models:/served@champion", "--env-manager", "local",
                             "--host", "127.0.0.1", "--port", str(port)], cwd=study_dir, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**env_for(study_dir), "MLFLOW_TRACKING_URI": _tracking(study_dir),
                                 "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(f"{url}/ping", proc, study_dir / "serve.log"), 240, "mlflow models serve to answer")
        payload = {"dataframe_split": {"columns": ["image"],
                                       "data": [[base64.b64encode(f.read_bytes()).decode()] for f in files]}}
        started = time.monotonic()
        answer = requests.post(f"{url}/invocations", json=payload, timeout=120)
        seconds = time.monotonic() - started
        assert answer.status_code == 200, answer.text[:500]
        predictions = answer.json()["predictions"]
        assert [p["class"] for p in predictions] == [r["class"] for r in rows]
        for p, r in zip(predictions, rows):
            assert all(p[c] == pytest.approx(v, abs=1e-5) for c, v in r["probabilities"].items())
        print(f"served {len(files)} images in {seconds:.2f} s")
    finally:
        stop_process_group(proc)
        log.close()


def _answers(url: str, proc, log: Path) -> bool:
    import requests

    if proc.poll() is not None:
        raise AssertionError(f"the server exited with {proc.returncode}: {log.read_text()[-2000:]}")
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_the_optuna_cli_reads_our_studies(study_dir):
    optuna = shutil.which("optuna", path=str(Path(sys.executable).parent)) or "optuna"
    storage = f"sqlite:///{study_dir / 'optuna.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    studies = subprocess.run([optuna, "studies", "--storage", storage, "-f", "json"], capture_output=True, text=True,
                             env=env, timeout=120)
    assert studies.returncode == 0, studies.stderr
    listed = {s["name"]: s for s in json.loads(studies.stdout)}
    assert listed[STUDY]["n_trials"] == 2
    best = subprocess.run([optuna, "best-trial", "--study-name", STUDY, "--storage", storage, "-f", "json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert best.returncode == 0, best.stderr
    trial = json.loads(best.stdout)
    study = load(study_dir, STUDY)
    assert trial["number"] == study.best_trial.number and trial["value"] == pytest.approx(study.best_value)


def test_a_cv_study_launched_without_metric_is_judged_by_log_loss(study_dir):
    """--metric's default with --cv is log-loss (what ranked the campaign's trials as TEST did)."""
    import json as _json

    from search.record import read_trial
    from search.settings import SETTINGS_ATTR

    study = load(study_dir, STUDY)
    assert _json.loads(study.user_attrs[SETTINGS_ATTR])["metric"] == "log-loss"
    fits = read_trial(study.best_trial).fits
    assert len(fits) == 2 and study.best_value == pytest.approx(-sum(f.scores()["log-loss"] for f in fits) / 2, abs=1e-5)
