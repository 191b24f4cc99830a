"""The newcomer's issue, points 1 to 5, through the real CLI on tiny data: `export --force`
replaces only what an export wrote; `search ui` keeps passwords off command lines; every
credential form of a URL is masked; `export --register` works from any folder; MLflow's
telemetry is off. Each test names the point it guards."""
import json
import os
import signal
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

from servicetools import fresh_database, free_port, pg_available, pg_url
from search.urls import MASK, normalise, redact, scrub, secrets
from searchtools import env_for, launched_study, load, one_line_error, run_search, search_cmd, wait_for

STUDY = "seed-fcn"
TINY = ["--study", STUDY, "--param", "size=16x16", "--param", "width=0.125", "--param", "batch_size=8",
        "--epochs", "1", "--quiet"]
# Two pieces around an unencoded @: neither may show anywhere (SQLAlchemy once printed the
# second as part of a host name).
PASSWORD = "Zq7s3cret@x9Kpw"
PIECES = ("Zq7s3cret", "x9Kpw")
needs_pg = pytest.mark.skipif(not pg_available(), reason="needs the machine's PostgreSQL")


def no_password(text: str) -> None:
    for piece in PIECES:
        assert piece not in text, text


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return launched_study(tmp_path_factory, "newcomer", TINY, trials=1, cells_per_class=4, copies=2)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- 1. export --force replaces only what an export wrote -----------------------------------

@pytest.mark.slow
def test_1_force_refuses_the_working_folder_its_parents_and_stores(study):
    (study / "notes.txt").write_text("my notes")
    before = _listing(study)
    for out in (".", str(study)):
        refused = run_search(study, "export", "--study-name", STUDY, "--out", out, "--force")
        one_line_error(refused, f"--out {out}: is the working folder (holds ", "mlflow.db", "notes.txt", "optuna.db")
    parent = run_search(study, "export", "--study-name", STUDY, "--out", "..", "--force")
    one_line_error(parent, "--out ..: is a parent of the working folder")
    ensemble = run_search(study, "ensemble", "--study-name", STUDY, "--export", ".", "--force")
    one_line_error(ensemble, "--export .: is the working folder")
    into_data = run_search(study, "export", "--study-name", STUDY, "--out", "data/exported", "--force")
    one_line_error(into_data, "--out data/exported: is inside the data")
    elsewhere = study.parent / f"{study.name}-elsewhere"
    elsewhere.mkdir(exist_ok=True)
    stores = run_search(elsewhere, "export", "--study-name", STUDY, "--storage", f"sqlite:///{study / 'optuna.db'}",
                        "--out", str(study), "--force")
    one_line_error(stores, f"--out {study}: holds the study's storage ({study / 'optuna.db'})")
    assert _listing(study) == before and (study / "notes.txt").read_text() == "my notes"


@pytest.mark.slow
def test_1_force_replaces_an_earlier_export_and_nothing_else(study):
    mine = study / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    refused = run_search(study, "export", "--study-name", STUDY, "--out", "mine", "--force")
    one_line_error(refused, "--out mine: exists and was not written by an export (holds notes.txt)")
    assert (mine / "notes.txt").read_text() == "keep"

    first = run_search(study, "export", "--study-name", STUDY, "--out", "out")
    assert first.returncode == 0, first.stderr
    marker = json.loads((study / "out" / ".bloodsearch-export.json").read_text())
    assert sorted(marker["written"]) == ["model.keras", "preprocess.json"]
    again = run_search(study, "export", "--study-name", STUDY, "--out", "out")
    one_line_error(again, "--out out: holds an earlier export; give --force to replace it")
    forced = run_search(study, "export", "--study-name", STUDY, "--out", "out", "--force")
    assert forced.returncode == 0, forced.stderr
    assert _listing(study / "out") == [".bloodsearch-export.json", "model.keras", "preprocess.json"]

    (study / "out" / "notes.txt").write_text("added after the export")
    extra = run_search(study, "export", "--study-name", STUDY, "--out", "out", "--force")
    one_line_error(extra, "--out out: holds files the export did not write (notes.txt)")
    assert (study / "out" / "notes.txt").exists() and (study / "out" / "model.keras").exists()


# --- 2. search ui passes credentials by environment and standard input ----------------------

def _command_lines() -> str:
    lines = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                lines.append(Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue  # ended while we looked
    return "\n".join(lines)


@pytest.mark.slow
@needs_pg
def test_2_3_ui_and_a_postgresql_study_keep_passwords_off_command_lines_and_settings(tmp_path):
    from preprocessing.synthetic import make_split_dataset

    from search.settings import SETTINGS_ATTR

    make_split_dataset(tmp_path / "data", cells_per_class=4, copies=2)
    with fresh_database("newcomer_optuna") as optuna_db, fresh_database("newcomer_mlflow") as mlflow_db:
        # The server trusts local connections: it ignores the passwords, the URLs still carry them.
        storage = pg_url(optuna_db).replace("postgres@", f"postgres:{PASSWORD}@")
        tracking = f"{pg_url(mlflow_db)}?sslmode=disable&password={PASSWORD}"
        env = {**env_for(tmp_path), "SEARCH_STORAGE": storage, "SEARCH_TRACKING_URI": tracking}
        launched = subprocess.run(search_cmd("launch", *TINY, "--trials", "1", "--data-dir", "data"), cwd=tmp_path,
                                  env=env, capture_output=True, text=True, timeout=600)
        assert launched.returncode == 0, launched.stderr
        no_password(launched.stdout + launched.stderr)
        import optuna

        settings = optuna.load_study(study_name=STUDY, storage=pg_url(optuna_db)).user_attrs[SETTINGS_ATTR]
        no_password(settings)
        assert f"password={MASK}" in json.loads(settings)["tracking_uri"]

        log = tmp_path / "ui.log"
        ui = subprocess.Popen(search_cmd("ui", "--port", str(free_port()), "--dashboard-port", str(free_port())),
                              cwd=tmp_path, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: "Ctrl-C to stop." in log.read_text() or ui.poll() is not None, 240, "search ui")
            shown = log.read_text()
            assert ui.poll() is None, shown
            assert f"study {STUDY}: http://127.0.0.1:" in shown  # the dashboard read its storage
            running = _command_lines()
            assert "search.results.dashboard" in running and "mlflow ui" in running
            no_password(running)
            no_password(shown)
        finally:
            ui.send_signal(signal.SIGTERM)
            ui.wait(timeout=60)


# --- 3. every credential form is masked -----------------------------------------------------

URLS = [
    ("postgresql+psycopg://postgres:{pw}@127.0.0.1:1/db", "postgresql+psycopg://postgres:***@127.0.0.1:1/db"),
    ("postgresql+psycopg://user:{raw}@127.0.0.1:1/db", "postgresql+psycopg://user:***@127.0.0.1:1/db"),  # an @
    ("postgresql+psycopg://user:{enc}@127.0.0.1:1/db", "postgresql+psycopg://user:***@127.0.0.1:1/db"),  # encoded
    ("postgresql+psycopg://127.0.0.1:1/db?password={pw}", "postgresql+psycopg://127.0.0.1:1/db?password=***"),
    ("postgresql+psycopg://127.0.0.1:1/db?sslmode=disable&password={pw}&connect_timeout=3",
     "postgresql+psycopg://127.0.0.1:1/db?sslmode=disable&password=***&connect_timeout=3"),
    ("postgresql+psycopg://postgres@127.0.0.1:1/db?password={raw}",  # an @ in the query
     "postgresql+psycopg://postgres@127.0.0.1:1/db?password=***"),
    ("postgresql+psycopg://127.0.0.1:1/db?user=u&password={pw}",
     "postgresql+psycopg://127.0.0.1:1/db?user=u&password=***"),
    ("mysql+pymysql://u@127.0.0.1:1/db?passwd={pw}", "mysql+pymysql://u@127.0.0.1:1/db?passwd=***"),
    ("mssql+pyodbc:///?odbc_connect=DRIVER%3Dx%3BSERVER%3Dh%3BPWD%3D{pw}%3B",
     "mssql+pyodbc:///?odbc_connect=DRIVER%3Dx%3BSERVER%3Dh%3BPWD%3D***%3B"),
    ("http://user:{pw}@127.0.0.1:1", "http://user:***@127.0.0.1:1"),  # an MLflow server behind basic auth
    ("https://user:{raw}@mlflow.example/", "https://user:***@mlflow.example/"),
]
SIMPLE = "hunter2xyz"


def _url(template: str) -> str:
    from urllib.parse import quote

    return template.format(pw=SIMPLE, raw=PASSWORD, enc=quote(PASSWORD, safe=""))


@pytest.mark.parametrize("template, shown", URLS)
def test_3_redact_and_scrub_mask_every_credential_form(template, shown):
    url = _url(template)
    assert redact(url) == shown
    assert secrets(redact(url)) == [MASK]
    quoted = "".join(f", password {unquote(secret)!r} refused" for secret in secrets(url))  # as a driver may
    message = scrub(f"cannot connect to {url}{quoted}", url)
    no_password(message)
    assert SIMPLE not in message


def test_3_nothing_to_mask_is_left_alone():
    for url in ("sqlite:////tmp/optuna.db", "postgresql+psycopg://postgres@127.0.0.1:5432/optuna",
                "http://127.0.0.1:5000", "postgresql://u@host:5432/db?options=a@b"):
        assert redact(url) == url and secrets(url) == []


def test_3_scrub_masks_what_sqlalchemy_made_of_an_unencoded_at():
    url = f"postgresql://user:{PASSWORD}@db.example/x"
    assert scrub("failed to resolve host 'x9Kpw@db.example'", url) == "failed to resolve host '***@db.example'"
    query = f"postgresql://u@h:5432/db?password={PASSWORD}"
    assert scrub("failed to resolve host 'x9Kpw'", query) == "failed to resolve host '***'"
    assert scrub("failed to resolve host 'ss@h'", "postgresql://u:p@ss@h/db") == "failed to resolve host '***@h'"


def test_3_an_unencoded_at_is_read_as_the_user_meant():
    assert normalise(f"postgresql://user:{PASSWORD}@host/db") == "postgresql://user:Zq7s3cret%40x9Kpw@host/db"
    assert normalise(f"postgresql://u@host:5432/db?password={PASSWORD}") == \
        "postgresql://u@host:5432/db?password=Zq7s3cret%40x9Kpw"
    for url in ("postgresql://user:plain@host/db", "postgresql://user@host:5432/db?sslmode=disable",
                "sqlite:////tmp/optuna.db", "http://user:pw@127.0.0.1:5000"):
        assert normalise(url) == url


@pytest.mark.slow
@pytest.mark.parametrize("template", [t for t, _ in URLS if not t.startswith(("http", "mysql", "mssql"))])
def test_3_storage_errors_never_show_a_password(tmp_path, template):
    url = _url(template)
    done = run_search(tmp_path, "studies", "--storage", url, timeout=120)
    line = one_line_error(done, "--storage ", "cannot connect")
    no_password(line)
    assert SIMPLE not in line and MASK in line


@pytest.mark.slow
@pytest.mark.parametrize("uri, fragment", [
    (f"http://user:{PASSWORD}@127.0.0.1:1", "tracking server unreachable"),
    (f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/db?password={SIMPLE}", "cannot connect"),
])
def test_3_tracking_errors_never_show_a_password(tmp_path, uri, fragment):
    from preprocessing.synthetic import make_split_dataset

    make_split_dataset(tmp_path / "data", cells_per_class=4, copies=2)
    done = run_search(tmp_path, "launch", *TINY, "--trials", "1", "--data-dir", "data", "--tracking-uri", uri)
    line = one_line_error(done, "--tracking-uri ", fragment)
    no_password(line)
    assert SIMPLE not in line


# --- 4. export --register from any folder ---------------------------------------------------

@pytest.mark.slow
def test_4_register_from_another_folder_uses_the_given_tracking_store(study):
    from mlflow import MlflowClient

    elsewhere = study.parent / f"{study.name}-register"
    elsewhere.mkdir(exist_ok=True)
    tracking = f"sqlite:///{study / 'mlflow.db'}"
    done = run_search(elsewhere, "export", "--study-name", STUDY, "--storage", f"sqlite:///{study / 'optuna.db'}",
                      "--tracking-uri", tracking, "--register", "tiny-elsewhere", "--alias", "champion")
    assert done.returncode == 0, done.stderr
    assert "registered as model 'tiny-elsewhere' version 1" in done.stdout
    assert _listing(elsewhere) == []  # no stray ./mlflow.db
    version = MlflowClient(tracking_uri=tracking).get_model_version_by_alias("tiny-elsewhere", "champion")
    assert version.run_id == load(study, STUDY).best_trial.user_attrs["run_id"]


# --- 5. MLflow telemetry is off unless turned on --------------------------------------------

# MLflow keeps telemetry off by itself under pytest and CI: a user's shell has none of these.
NOT_A_USERS_SHELL = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "DO_NOT_TRACK", "MLFLOW_DISABLE_TELEMETRY",
                     "XDG_CONFIG_HOME")


def _as_a_user(workdir: Path, home: Path, **extra: str) -> dict:
    env = {k: v for k, v in env_for(workdir).items() if k not in NOT_A_USERS_SHELL}
    return {**env, "HOME": str(home), **extra}


@pytest.mark.slow
def test_5_mlflow_telemetry_is_off_by_default_and_can_be_turned_on(study, tmp_path):
    def report(home: Path, **extra: str) -> Path:
        done = subprocess.run(search_cmd("report", "--study-name", STUDY, "--out", str(tmp_path / home.name)),
                              cwd=study, env=_as_a_user(study, home, **extra), capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr
        return home / ".config" / "mlflow" / "telemetry.json"

    assert not report(tmp_path / "home-default").exists()
    assert report(tmp_path / "home-on", MLFLOW_DISABLE_TELEMETRY="false").exists()  # the documented switch


# Points 6, 10, 11 (the size's form) and 12: refused before anything is made.
@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    from preprocessing.synthetic import make_split_dataset

    make_split_dataset(tmp_path / "data", cells_per_class=3, copies=2)
    return tmp_path


def nothing_made(folder: Path) -> bool:
    return not (folder / "optuna.db").exists() and not (folder / "mlflow.db").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fast.v2", "a/b", "a:b", "50%", "it's", 'say"', "x" * 600, ""])
def test_6_a_study_name_that_mlflow_or_optuna_cannot_hold_is_refused_first(tiny_data, name):
    done = run_search(tiny_data, "launch", *TINY, "--trials", "1", "--data-dir", "data", "--study-name", name)
    one_line_error(done, "--study-name", "a study name is 1 to 64 letters")
    assert nothing_made(tiny_data)


@pytest.mark.slow
@pytest.mark.parametrize("body, fragment", [
    ("def suggest(p):\n    return {'size': '16x16'}\n", "suggest() returned a dict, not a TrialConfig"),
    ("def suggest(p):\n    raise KeyError('oops')\n", "its suggest() raised KeyError: 'oops'"),
])
def test_10_a_study_file_that_cannot_make_a_configuration_is_named_not_the_options(tiny_data, body, fragment):
    (tiny_data / "space.py").write_text(body)
    done = run_search(tiny_data, "launch", "--study", "space.py", "--trials", "1", "--data-dir", "data")
    one_line_error(done, "study ", fragment)
    assert nothing_made(tiny_data)


@pytest.mark.slow
def test_10_a_param_for_a_study_without_parameters_says_so(tiny_data):
    (tiny_data / "fixed.py").write_text("from studies.seed_fcn import suggest as _s\n"
                                        "def suggest(p):\n    from studies.spaces import fixed_config\n"
                                        "    return _s(p)\n")
    done = run_search(tiny_data, "launch", "--study", "fixed.py", "--trials", "1", "--data-dir", "data",
                      "--param", "nosuch=1")
    one_line_error(done, "--param nosuch: study")


@pytest.mark.slow
@pytest.mark.parametrize("size", ["120x", "30x40x3", "axb"])
def test_11_a_size_that_is_not_heightxwidth_says_what_one_looks_like(tiny_data, size):
    done = run_search(tiny_data, "launch", "--study", "fast", "--trials", "1", "--data-dir", "data",
                      "--param", f"size={size}")
    one_line_error(done, "is not HEIGHTxWIDTH, e.g. 120x160")
    assert nothing_made(tiny_data)


@pytest.mark.slow
def test_11_a_size_whose_cache_cannot_fit_is_refused_naming_the_numbers(tiny_data):
    done = run_search(tiny_data, "launch", "--study", "fast", "--trials", "1", "--data-dir", "data",
                      "--param", "size=100000x100000")
    one_line_error(done, "--param size 100000x100000: its image cache would take 670.6 GiB (24 images x "
                         "100000x100000x3 bytes) and ", " GiB free; choose a smaller size or a --cache-dir with room")
    assert nothing_made(tiny_data)


def test_11_a_model_too_large_for_memory_is_refused_before_it_trains():
    from models import ModelConfig, build_model, training_bytes
    from search.running.capacity import TooLarge, check_memory

    small = build_model(ModelConfig("fast", kernels=(3,) * 3, width=0.5), (16, 16, 3), 4)
    deep = build_model(ModelConfig("fast", kernels=(3,) * 12, width=0.5), (16, 16, 3), 4)
    need, what = training_bytes(small, 32)
    assert need < training_bytes(deep, 32)[0] and need < training_bytes(small, 64)[0]
    assert what.endswith("activations per image, batch 32")
    check_memory(need, what, available=2 * need)
    with pytest.raises(TooLarge, match=r"the model needs about .* to train \(.* weights, .*\) and this machine has "):
        check_memory(need, what, available=need)


@pytest.mark.slow
@pytest.mark.parametrize("option, value", [("--seed", "-1"), ("--timeout", "-5"), ("--timeout", "0")])
def test_12_negative_seeds_and_timeouts_are_refused(tiny_data, option, value):
    done = run_search(tiny_data, "launch", *TINY, "--trials", "1", "--data-dir", "data", option, value)
    assert done.returncode == 2 and f"Invalid value for '{option}'" in done.stderr
    assert "Traceback" not in done.stderr and nothing_made(tiny_data)


# --- 15. a failed trial is one line; its traceback is in its MLflow run ------------------------

BROKEN_TRAINING = '''import sys
from studies.seed_fcn import suggest

if "tensorflow" in sys.modules:  # in the worker only: the launcher's dry run stays TensorFlow-free
    import search.running.objective as objective

    def _broken(*args, **kwargs):
        raise RuntimeError("the training broke\\nwith a second line")

    objective.train_saved = _broken
'''


@pytest.mark.slow
def test_15_each_failed_trial_is_one_line_and_its_traceback_is_in_mlflow(tiny_data):
    (tiny_data / "broken.py").write_text(BROKEN_TRAINING)
    done = run_search(tiny_data, "launch", "--study", "broken.py", "--param", "size=16x16", "--epochs", "1",
                      "--trials", "2", "--data-dir", "data", "--quiet")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    failed = [line for line in lines if line.startswith("trial ")]
    assert lines == [*failed, "error: trials keep failing; stopped. Last failure: RuntimeError: the training broke"]
    assert len(failed) == 3 and "Traceback" not in done.stderr and "failed with value" not in done.stderr
    run_id = failed[0].split("MLflow run ")[1].split(",")[0]
    assert failed[0] == (f"trial 0 failed: RuntimeError: the training broke (traceback: MLflow run {run_id}, "
                         "failure/traceback.txt)")
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tiny_data / 'mlflow.db'}")
    local = client.download_artifacts(run_id, "failure/traceback.txt", str(tiny_data))
    text = Path(local).read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: the training broke" in text


# --- 16. what the output no longer buries, and what it now says ---------------------------------

def test_16_workers_that_ask_for_more_threads_than_cores_are_questioned():
    from search.running.launcher import oversubscribed

    assert oversubscribed(4, None, cores=2) == (
        "--workers 4, each with TensorFlow's default of all 2 cores: 8 threads on 2 cores, which contend and slow "
        "every trial (--workers 2 --threads 1 uses each core once)")
    assert "4 threads on 2 cores" in oversubscribed(4, 1, cores=2)
    assert oversubscribed(2, 1, cores=2) is None and oversubscribed(1, None, cores=2) is None
    assert oversubscribed(2, 4, cores=8) is None


QUIET_PICTURES = """
import sys
from pathlib import Path
import numpy as np
from PIL import Image
from preprocessing import PreprocessConfig
from preprocessing.images import load_image
from search.plots import confusion_png

out = Path(sys.argv[1])
Image.new("RGB", (10000, 9000), (200, 30, 30)).save(out / "scan.png")  # 90 megapixels: above PIL's warning
assert load_image(out / "scan.png", PreprocessConfig(size=(12, 16))).shape == (12, 16, 3)
confusion_png(np.eye(2, dtype=int), ["\u597d\u9178\u7403", "\u30ea\u30f3\u30d1\u7403"], out / "c.png", "x")
"""


def test_16_a_huge_image_and_a_class_name_the_font_lacks_print_no_warnings(tmp_path):
    # In a process of its own: pytest records every warning, whatever filters the code set.
    import sys

    done = subprocess.run([sys.executable, "-c", QUIET_PICTURES, str(tmp_path)], capture_output=True, text=True,
                          env=env_for(tmp_path), timeout=300)
    assert done.returncode == 0 and (tmp_path / "c.png").exists(), done.stderr
    assert "Glyph" not in done.stderr and "DecompressionBomb" not in done.stderr, done.stderr


def test_16_psycopg_pipeline_warnings_at_exit_are_not_shown():
    import logging

    from search.quiet import quiet_libraries

    quiet_libraries()
    record = logging.LogRecord("psycopg", logging.WARNING, __file__, 1,
                               "error ignored terminating <psycopg.Pipeline [IDLE]>: pipeline aborted", None, None)
    assert not logging.getLogger("psycopg").isEnabledFor(logging.WARNING) and record.levelno < logging.ERROR


# The first training finds its image cache deleted under it (as `rm -rf ~/.cache/bloodsearch`
# mid-study would leave it); later ones train for real. Only in the worker, which has imported
# TensorFlow; the launcher's dry run has not.
CACHE_DELETED_ONCE = '''import os, shutil, sys
from pathlib import Path
from studies.seed_fcn import suggest

if "tensorflow" in sys.modules:
    import search.running.objective as objective

    _train = objective.train_saved

    def _first_finds_its_cache_gone(config, data, *args, **kwargs):
        marker = Path("cache-deleted")
        if not marker.exists():
            marker.write_text("once")
            shutil.rmtree(data.cache.path)
            os.pread(os.open(data.cache.path / "images.u8", os.O_RDONLY), 1, 0)
        return _train(config, data, *args, **kwargs)

    objective.train_saved = _first_finds_its_cache_gone
'''


@pytest.mark.slow
def test_16_a_trial_whose_cache_vanished_is_one_line_and_runs_again(tiny_data):
    (tiny_data / "gone.py").write_text(CACHE_DELETED_ONCE)
    done = run_search(tiny_data, "launch", "--study", "gone.py", "--param", "size=16x16", "--epochs", "1",
                      "--trials", "1", "--data-dir", "data", "--quiet")
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert line.startswith("trial 0 failed: FileNotFoundError: ") and line.endswith(
        "images.u8 vanished during the trial, so it is queued again once"), line
    study = load(tiny_data, "gone")
    states = {t.number: t.state.name for t in study.trials}
    assert states == {0: "FAIL", 1: "COMPLETE"} and study.trials[1].user_attrs["origin_trial"] == 0
