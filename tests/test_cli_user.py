"""The CLI as a new user meets it: every point of the user-trial issue, through the real CLI
on tiny data. Each test names the point it guards."""
import json
import shutil
from pathlib import Path

import pytest

from preprocessing.synthetic import sync_groups, make_split_dataset
from searchtools import load, run_search
from searchtools import one_line_error as assert_one_line_error

pytestmark = pytest.mark.slow
TINY = ["--study", "seed-fcn", "--param", "size=16x16", "--param", "width=0.125", "--param", "batch_size=8",
        "--epochs", "1"]


def error_lines(done) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.strip()]


def nothing_created(folder: Path) -> bool:
    return not (folder / "optuna.db").exists() and not (folder / "mlflow.db").exists()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    make_split_dataset(tmp_path / "data", cells_per_class=4, copies=2)
    return tmp_path


def test_1_2_unreadable_classes_and_too_few_cells_are_one_line_before_anything(work):
    for f in (work / "data" / "TRAIN" / "LYMPHOCYTE").iterdir():
        f.unlink()
    for k in range(3):
        (work / "data" / "TRAIN" / "LYMPHOCYTE" / f"_{k}_0.jpeg").write_text("not an image")
    sync_groups(work / "data")
    done = run_search(work, "launch", *TINY, "--data-dir", "data")
    assert_one_line_error(done, "class LYMPHOCYTE", "has no readable image (3 file(s), all unreadable")
    assert nothing_created(work)
    shutil.rmtree(work / "data" / "TRAIN" / "LYMPHOCYTE")
    make_split_dataset(work / "few", cells_per_class=4, copies=2)
    for f in (work / "few" / "TRAIN" / "MONOCYTE").glob("_[123]_*"):
        f.unlink()  # one original cell left
    sync_groups(work / "few")
    done = run_search(work, "launch", *TINY, "--data-dir", "few")
    assert_one_line_error(done, "class MONOCYTE has 1 group(s)", "needs at least 2 per class")
    assert nothing_created(work)


def test_3_paths_are_stored_absolute_and_commands_work_from_anywhere(work):
    study_file = work / "my_space.py"
    study_file.write_text("from studies.seed_fcn import suggest  # the study's FCN, as a file of one's own\n")
    done = run_search(work, "launch", "--study", "my_space.py", *TINY[2:], "--trials", "1", "--data-dir", "data",
                      "--quiet")
    assert done.returncode == 0, done.stderr
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    storage = f"sqlite:///{work / 'optuna.db'}"
    report = run_search(elsewhere, "report", "--study-name", "my_space", "--storage", storage, "--out", "rep")
    assert report.returncode == 0, report.stderr
    assert not (elsewhere / "mlflow.db").exists()  # the stored, absolute tracking URI was used
    resumed = run_search(elsewhere, "resume", "--study-name", "my_space", "--storage", storage, "--trials", "2",
                         "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    study_file.write_text(study_file.read_text() + "# edited\n")
    changed = run_search(elsewhere, "resume", "--study-name", "my_space", "--storage", storage, "--trials", "3")
    assert_one_line_error(changed, f"study file {study_file} changed since the study was created")


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "./mlr", "127.0.0.1:5999"])
def test_4_unsupported_tracking_uris_are_one_line_with_a_working_form(work, uri):
    done = run_search(work, "launch", *TINY, "--data-dir", "data", "--tracking-uri", uri)
    assert_one_line_error(done, f"--tracking-uri {uri}", "use sqlite:///path/to/mlflow.db or http://host:5000")
    assert nothing_created(work)


@pytest.mark.parametrize("args, fragment", [
    (["--study", "fast", "--param", "augment=dihedral"], "augment dihedral turns images by 90 degrees"),
    (["--study", "cnn", "--param", "dense_units=0"], "dense_units 0 must be at least 1"),
])
def test_5_values_that_fail_in_every_trial_are_refused_by_the_dry_run(work, args, fragment):
    done = run_search(work, "launch", *args, "--data-dir", "data")
    assert_one_line_error(done, fragment)
    assert nothing_created(work)


def test_6_7_12_16_timeout_worker_output_folders_and_small_slips(work):
    done = run_search(work, "launch", *TINY, "--trials", "2", "--timeout", "0.5", "--data-dir", "data")
    assert done.returncode == 0, done.stderr
    assert "study seed-fcn: stopped by --timeout 0.5 s with 1 trial of 2 finished, 1 to go" in done.stderr
    assert "Continue with: search resume --study-name seed-fcn" in done.stderr
    # A worker does not inherit the launch's --timeout: it works until the study has its count.
    joined = run_search(work, "worker", "--study-name", "seed-fcn", "--quiet")
    assert joined.returncode == 0, joined.stderr
    assert sum(t.state.name == "COMPLETE" for t in load(work, "seed-fcn").trials) == 2
    compared = run_search(work, "compare", "--study-name", "seed-fcn", "--out", "new/dir/c.png")
    assert compared.returncode == 0 and (work / "new" / "dir" / "c.png").is_file(), compared.stderr
    assert "Warning" not in compared.stderr
    sheet = run_search(work, "data", "inspect", "--data-dir", "data", "--sheet", "sheets/x.png", "--per-class", "1")
    assert sheet.returncode == 0 and (work / "sheets" / "x.png").is_file(), sheet.stderr
    best = json.loads(run_search(work, "best", "--study-name", "seed-fcn", "--json").stdout)
    assert "batch_norm" not in best[0]["fixed"] and "dense_units" not in best[0]["fixed"]  # an FCN has neither
    assert best[0]["converged"] in (True, False) and len(repr(best[0]["val_accuracy"])) <= 8
    version = run_search(work, "--version")
    assert version.returncode == 0 and version.stdout.startswith("search, version ")
    typed = run_search(work, "launch", *TINY, "--data-dir", "data", "--param", "batch_size=many")
    assert_one_line_error(typed, "--param batch_size=many: expected an integer")
    help_text = run_search(work, "launch", "--help").stdout
    assert "SEARCH_STORAGE" in help_text and "SEARCH_TRACKING_URI" in help_text


def test_8_13_readers_never_create_stores(work):
    for cmd in (["studies"], ["status", "--study-name", "x"], ["studies", "--storage", "sqlite:///typo.db"],
                ["ui", "--storage", "sqlite:///typo.db", "--port", "0"]):
        done = run_search(work, *cmd, timeout=120)
        assert_one_line_error(done, "no such database")
    assert not list(work.glob("*.db"))


def test_9_10_11_15_export_predict_replicate_and_quiet_output(work):
    done = run_search(work, "launch", *TINY, "--trials", "1", "--data-dir", "data", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "A new study created" not in done.stderr and "Creating initial MLflow database tables" not in done.stderr
    from search.serving.destination import MARKER

    (work / "out").mkdir()
    (work / "out" / "unet.keras").write_text("stale")  # an earlier export's, of a model that masked
    (work / "out" / MARKER).write_text(json.dumps({"written": ["unet.keras"]}))
    refused = run_search(work, "export", "--study-name", "seed-fcn", "--out", "out")
    assert_one_line_error(refused, "--out out: holds an earlier export; give --force to replace it")
    forced = run_search(work, "export", "--study-name", "seed-fcn", "--out", "out", "--force")
    assert forced.returncode == 0 and not (work / "out" / "unet.keras").exists(), forced.stderr
    assert not [line for line in forced.stderr.splitlines() if "cuda" in line or "absl" in line], forced.stderr
    image = str(next((work / "data" / "TEST" / "EOSINOPHIL").iterdir()))
    mixed = run_search(work, "predict", "--model", "out", image, "missing.png", "--json")
    rows = json.loads(mixed.stdout)
    assert mixed.returncode == 0 and rows[1] == {"file": "missing.png", "error": "no such file or folder"}
    assert "class" in rows[0]
    none = run_search(work, "predict", "--model", "out", "missing.png")
    assert none.returncode == 1 and "none of the 1 file(s) could be predicted" in none.stderr
    both = run_search(work, "predict", "--model", "out", image, "--json", "--csv")
    assert_one_line_error(both, "--json and --csv")
    space = run_search(work, "replicate", "--study", "cnn", "--data-dir", "data", "--repeats", "1")
    assert_one_line_error(space, "study cnn is a search space", "dense_units=...")
    import optuna

    from search.settings import SETTINGS_ATTR

    storage = f"sqlite:///{work / 'optuna.db'}"
    empty = optuna.create_study(study_name="empty", storage=storage)  # launched, no trial finished yet
    empty.set_user_attr(SETTINGS_ATTR, load(work, "seed-fcn").user_attrs[SETTINGS_ATTR])
    nothing = run_search(work, "report", "--study-name", "empty")
    assert_one_line_error(nothing, "has no complete trial yet: nothing to report")
    assert not (work / "report-empty").exists()


def test_14_a_stop_is_one_line(work):
    import signal

    from searchtools import running_trial, start_search, wait_for

    log = work / "stop.log"
    proc = start_search(work, "launch", *TINY[:-1], "40", "--patience", "40", "--trials", "2", "--data-dir", "data",
                        "--pruner", "none", log=log)
    wait_for(lambda: running_trial(work, "seed-fcn", min_epoch=1), 240, "a running trial")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    stops = [line for line in text.splitlines() if "stopped by SIGTERM" in line]
    assert len(stops) == 1 and "Resume with: search resume --study-name seed-fcn" in stops[0]
