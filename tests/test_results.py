"""Results commands on a tiny real study: status, best, evaluate, report, predict, export, ui."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from searchtools import env_for, launched_study, load, mlflow_runs, run_search, search_cmd, wait_for
from search.results.evaluation import group_votes, study_row

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("results")]  # one study, built once
TINY = ["--study", "seed-fcn", "--param", "size=24x32", "--param", "width=0.25", "--param", "batch_size=16",
        "--param", "learning_rate=0.003", "--param", "dropout=0.0", "--epochs", "6", "--patience", "6", "--quiet"]


def test_group_vote_on_a_hand_built_case():
    groups = ["A/1", "A/1", "A/1", "B/2", "B/2", "B/3", "B/3"]
    y_true = np.array([0, 0, 0, 1, 1, 1, 1])
    probs = np.array([
        [0.9, 0.1], [0.2, 0.8], [0.7, 0.3],   # cell A/1: votes 2 for class 0 -> right
        [0.4, 0.6], [0.9, 0.1],               # cell B/2: tie 1-1, mean probs (0.65, 0.35) -> class 0, wrong
        [0.3, 0.7], [0.45, 0.55],             # cell B/3: 2 votes for class 1 -> right
    ])
    votes = group_votes(groups, y_true, probs)
    assert votes["groups"] == 3 and votes["group_accuracy"] == pytest.approx(2 / 3)
    by_cell = {c["group"]: c for c in votes["per_group"]}
    assert by_cell["B/2"]["voted"] == 0 and by_cell["B/2"]["votes"] == [1, 1]
    assert by_cell["A/1"]["images"] == 3
    assert study_row(0.8823, 34.27, 26, True) == "accuracy 0.882 | model size 34.3 MB | epochs 26 | converged"


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    return launched_study(tmp_path_factory, "results", TINY, cells_per_class=6, copies=3, test_cells=2)


def test_status_and_best(study_dir):
    done = run_search(study_dir, "status", "--study-name", "seed-fcn")
    assert done.returncode == 0 and "2/2 finished (complete 2" in done.stdout and "eta 0:00" in done.stdout
    st = json.loads(run_search(study_dir, "status", "--study-name", "seed-fcn", "--json").stdout)
    assert st["states"]["complete"] == 2 and st["running"] == [] and st["finished_per_hour"] > 0
    best = json.loads(run_search(study_dir, "best", "--study-name", "seed-fcn", "--top", "1", "--json").stdout)
    study = load(study_dir, "seed-fcn")
    assert len(best) == 1 and best[0]["trial"] == study.best_trial.number
    assert best[0]["val_accuracy"] == pytest.approx(study.best_value)
    assert best[0]["fixed"]["size"] == "24x32"
    table = run_search(study_dir, "best", "--study-name", "seed-fcn").stdout
    assert re.search(rf"^\s+{study.best_trial.number}\s+{study.best_value:.4f}", table, re.M)


def test_evaluate_logs_test_metrics_and_per_group_accuracy(study_dir):
    done = run_search(study_dir, "evaluate", "--study-name", "seed-fcn", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    test = result["splits"]["TEST"]
    assert test["images"] == 4 * 2 * 3 and test["groups"]["groups"] == 4 * 2
    assert sum(m["support"] for m in test["per_class"].values()) == 24
    assert result["row"].startswith(f"accuracy {test['accuracy']:.3f} | per-group ")
    client, _, children = mlflow_runs(study_dir, "seed-fcn")
    run = next(r for r in children if r.info.run_id == load(study_dir, "seed-fcn").best_trial.user_attrs["run_id"])
    assert run.data.metrics["test_accuracy"] == pytest.approx(test["accuracy"])
    assert "test_group_accuracy" in run.data.metrics and "test_recall_MONOCYTE" in run.data.metrics
    names = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/confusion_matrix_test.png", "evaluation/confusion_matrix_test.json"} <= names
    text = run_search(study_dir, "evaluate", "--study-name", "seed-fcn", "--trial", "0").stdout
    assert "per-group" in text and "clean TEST" in text and "MONOCYTE" in text


def test_predict_export_round_trip_and_bad_files(study_dir):
    (study_dir / "notes.jpg").write_text("not an image")
    images = sorted((study_dir / "data" / "TEST" / "MONOCYTE").glob("*.png"))[:3]
    args = [str(p) for p in images] + [str(study_dir / "notes.jpg")]
    by_study = run_search(study_dir, "predict", "--study-name", "seed-fcn", *args, "--json")
    assert by_study.returncode == 0, by_study.stderr
    rows = json.loads(by_study.stdout)
    assert [r["file"] for r in rows] == args
    assert "error" in rows[-1] and "could not be read" in by_study.stderr
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in rows[:-1])

    exported = run_search(study_dir, "export", "--study-name", "seed-fcn", "--out", "exported", "--register", "tiny")
    assert exported.returncode == 0 and "version 1" in exported.stdout, exported.stderr
    by_folder = json.loads(run_search(study_dir, "predict", "--model", "exported", *args, "--json").stdout)
    for a, b in zip(rows[:-1], by_folder[:-1]):
        assert a["class"] == b["class"]
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)
    csv = run_search(study_dir, "predict", "--model", "exported", str(images[0]), "--csv").stdout.splitlines()
    assert csv[0].startswith("file,class,EOSINOPHIL") and len(csv) == 2
    client, _, _ = mlflow_runs(study_dir, "seed-fcn")
    assert client.get_registered_model("tiny").name == "tiny"
    # The registered version is an MLflow model that takes the files themselves (issue 16).
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(f"sqlite:///{study_dir / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model("models:/tiny/1").predict(pd.DataFrame({"image": args}))
    assert list(served["class"][:-1]) == [r["class"] for r in rows[:-1]] and served["error"].iloc[-1]
    for row, (_, got) in zip(rows[:-1], served.iterrows()):
        assert got[list(row["probabilities"])].astype(float).tolist() == pytest.approx(list(row["probabilities"].values()),
                                                                                       abs=1e-6)


def test_predict_matches_the_cached_pipeline(study_dir):
    """predict's own preprocessing gives the model what the search gave it."""
    from preprocessing import load_dataset, make_batches
    from preprocessing.cache import build_cache
    from search.serving.predictor import Predictor

    assert run_search(study_dir, "export", "--study-name", "seed-fcn", "--out", "for-parity").returncode == 0
    predictor = Predictor.from_folder(study_dir / "for-parity")
    data = load_dataset(study_dir / "data")
    cache = build_cache(data.test, predictor.config.preprocess, study_dir / "cache")
    idx = np.arange(6)
    via_cache = np.asarray(predictor.model.predict(make_batches(cache, idx, 16), verbose=0))
    via_files = predictor.predict([data.test.path(i) for i in idx])
    np.testing.assert_allclose(via_cache, [[r["probabilities"][c] for c in predictor.classes] for r in via_files],
                               atol=1e-5)


def test_report_writes_pictures_and_logs_them(study_dir):
    done = run_search(study_dir, "report", "--study-name", "seed-fcn", "--out", "rep")
    assert done.returncode == 0, done.stderr
    assert (study_dir / "rep" / "optimization_history.png").stat().st_size > 1000
    assert (study_dir / "rep" / "intermediate_values.png").exists()
    assert "<img" in (study_dir / "rep" / "report.html").read_text()
    client, parents, _ = mlflow_runs(study_dir, "seed-fcn")
    logged = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert "report/optimization_history.png" in logged and "report/report.html" in logged


@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="needs Debian's chromium and chromium-driver (installed by .ci/run)")
def test_the_uis_show_the_study_and_its_trials_in_a_browser(study_dir):
    """`search ui`: the study's link opens MLflow's UI on its training runs (not MLflow 3's
    GenAI overview), and optuna-dashboard beside it shows the study and its trials."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from servicetools import free_port

    port, dashboard_port = free_port(), free_port()
    proc = subprocess.Popen(search_cmd("ui", "--port", str(port), "--dashboard-port", str(dashboard_port)),
                            cwd=study_dir, env=env_for(study_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        lines = []
        wait_for(lambda: _read_until(proc, "Ctrl-C to stop", lines), 180, "search ui to print its URLs")
        ui = next(line for line in lines if line.startswith("MLflow UI:")).split("MLflow UI:", 1)[1].strip()
        assert ui == f"http://127.0.0.1:{port}"
        links = [line.strip().split(": ", 1)[1] for line in lines if line.strip().startswith("study seed-fcn:")]
        client, _, children = mlflow_runs(study_dir, "seed-fcn")
        exp_id = children[0].info.experiment_id
        assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"
        assert links[0] == f"{ui}/#/experiments/{exp_id}?workflowType=machine_learning"
        study = load(study_dir, "seed-fcn")
        assert links[1] == f"http://127.0.0.1:{dashboard_port}/dashboard/studies/{study._study_id}"
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        try:
            driver.get(links[0])  # the experiment's own link, as `search ui` prints it
            WebDriverWait(driver, 90).until(lambda d: "/runs" in d.current_url)
            # Trial runs are nested under the study's parent run: expand it, as a user would.
            expander = "//button[contains(@data-component-id, 'runnamecellrenderer')]"
            WebDriverWait(driver, 90).until(lambda d: d.find_elements(By.XPATH, expander))
            assert "No data available" not in driver.page_source  # not the GenAI overview
            driver.find_elements(By.XPATH, expander)[0].click()
            WebDriverWait(driver, 60).until(lambda d: "seed-fcn-0" in d.page_source and "seed-fcn-1" in d.page_source)
            driver.save_screenshot(str(study_dir / "mlflow-ui.png"))

            driver.get(links[1])  # optuna-dashboard: the study, its history, its best trial
            best = f"Best Trial (number={study.best_trial.number})"
            WebDriverWait(driver, 90).until(lambda d: "seed-fcn" in d.find_element(By.TAG_NAME, "body").text
                                            and best in d.find_element(By.TAG_NAME, "body").text)
            driver.get(f"{links[1]}/trials")
            WebDriverWait(driver, 60).until(lambda d: all(f"Trial {t.number}" in d.find_element(By.TAG_NAME, "body").text
                                                          for t in study.trials))
            driver.save_screenshot(str(study_dir / "optuna-dashboard.png"))
        finally:
            driver.quit()
    finally:
        os.killpg(proc.pid, 2)  # Ctrl-C
        assert proc.wait(timeout=30) == 0


def _read_until(proc, marker, lines):
    line = proc.stdout.readline()
    if not line and proc.poll() is not None:
        raise AssertionError(f"search ui exited with {proc.returncode}: {lines}")
    lines.append(line.rstrip("\n"))
    return marker in line


def test_featuremaps_command_writes_and_logs(study_dir):
    image = sorted((study_dir / "data" / "TEST" / "EOSINOPHIL").glob("*.png"))[0]
    done = run_search(study_dir, "featuremaps", "--study-name", "seed-fcn", str(image), "--out", "maps")
    assert done.returncode == 0, done.stderr
    pngs = sorted((study_dir / "maps").glob("*.png"))
    assert len(pngs) == 12 and pngs[0].name == "01_conv1.png"
    client, _, _ = mlflow_runs(study_dir, "seed-fcn")
    run_id = load(study_dir, "seed-fcn").best_trial.user_attrs["run_id"]
    logged = client.list_artifacts(run_id, f"featuremaps/{image.stem}")
    assert len(logged) == 12


def test_compare_command(study_dir):
    done = run_search(study_dir, "compare", "--study-name", "seed-fcn", "--out", "cmp.png")
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("seed-fcn"))
    assert row.split()[1] == "2"  # trials finished
    assert (study_dir / "cmp.png").stat().st_size > 1000
    missing = run_search(study_dir, "compare", "--study-name", "seed-fcn", "--study-name", "nope")
    assert missing.returncode == 2 and "no study named 'nope'" in missing.stderr


def test_evaluate_names_a_tracking_store_without_the_trials_run(study_dir, tmp_path):
    # A study's MLflow store moved or lost (a new machine): the error says the run is missing
    # from that store, not that the model was never logged.
    from mlflow import MlflowClient

    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    MlflowClient(tracking_uri=elsewhere).search_experiments()  # an existing store, of other runs
    done = run_search(study_dir, "evaluate", "--study-name", "seed-fcn", "--trial", "0", "--tracking-uri", elsewhere)
    assert done.returncode != 0
    line = done.stderr.strip().splitlines()[-1]
    assert "no such run in the tracking store" in line and "elsewhere.db" in line
