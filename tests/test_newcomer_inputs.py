"""The newcomer's issue, points 8, 9 and 14, through the real CLI on tiny data: --tta dihedral at
a non-square size is refused in one line before anything is spent; a PostgreSQL store naming a
missing database fails fast in one masked line; files a data set leaves out, a read-only
command's writes and a class TEST lacks are said, not silent. Each test names the point it guards."""
import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from search.settings import DATA_ATTR
from servicetools import pg_available
from search.urls import MASK, redact
from searchtools import launched_study, load, one_line_error, run_search

STUDY = "seed-fcn"
TINY = ["--study", STUDY, "--param", "width=0.125", "--param", "batch_size=8", "--epochs", "1", "--quiet"]
SQUARE, OBLONG = ["--param", "size=16x16"], ["--param", "size=16x20"]
DIHEDRAL = "--tta dihedral needs a square size"
needs_pg = pytest.mark.skipif(not pg_available(), reason="needs the machine's PostgreSQL")


def _tiny_data(root: Path) -> Path:
    from preprocessing.synthetic import make_split_dataset

    return make_split_dataset(root, cells_per_class=4, copies=2)


def _nothing_created(work: Path) -> None:
    assert not (work / "optuna.db").exists() and not (work / "mlflow.db").exists(), sorted(os.listdir(work))


# --- 8. --tta dihedral needs a square size --------------------------------------------------

@pytest.mark.slow
def test_8_launch_refuses_dihedral_at_the_study_size_before_any_study(tmp_path):
    _tiny_data(tmp_path / "data")
    done = run_search(tmp_path, "launch", *TINY, *OBLONG, "--tta", "dihedral", "--trials", "1", "--data-dir", "data")
    one_line_error(done, DIHEDRAL, "the size of study seed-fcn is 16x20", "--param size=16x16", "--tta flip")
    _nothing_created(tmp_path)


@pytest.mark.slow
def test_8_launch_refuses_a_space_that_searches_a_non_square_size(tmp_path):
    _tiny_data(tmp_path / "data")
    none_square = run_search(tmp_path, "launch", "--study", "cnn", "--tta", "dihedral", "--data-dir", "data")
    one_line_error(none_square, DIHEDRAL, "study cnn searches size 120x160, 60x80", "none of them square")
    space = tmp_path / "mixed.py"
    space.write_text("from preprocessing import PreprocessConfig\nfrom studies import TrialConfig\n\n"
                     "def suggest(p):\n"
                     "    return TrialConfig(PreprocessConfig(size=p.categorical('size', ('16x16', '16x20'))))\n")
    # The dry run builds 16x16, the first choice; the searched choices say 16x20 may come.
    mixed = run_search(tmp_path, "launch", "--study", str(space), "--tta", "dihedral", "--data-dir", "data")
    one_line_error(mixed, DIHEDRAL, "searches size 16x16, 16x20, 16x20 not square", "--param size=16x16")
    _nothing_created(tmp_path)


@pytest.fixture(scope="module")
def oblong(tmp_path_factory) -> Path:
    return launched_study(tmp_path_factory, "oblong", [*TINY, *OBLONG], trials=1, cells_per_class=4, copies=2)


@pytest.mark.slow
@pytest.mark.parametrize("command", [
    ["evaluate", "--study-name", STUDY],
    ["predict", "--study-name", STUDY, "data/TEST"],
    ["export", "--study-name", STUDY, "--out", "exported"],
])
def test_8_trial_commands_refuse_dihedral_at_the_trial_size(oblong, command):
    done = run_search(oblong, *command, "--tta", "dihedral")
    one_line_error(done, DIHEDRAL, "the size of trial 0 of study seed-fcn is 16x20", "--tta flip")
    assert not (oblong / "exported").exists()


@pytest.mark.slow
def test_8_flip_still_serves_the_oblong_trial(oblong):
    done = run_search(oblong, "predict", "--study-name", STUDY, "--tta", "flip", "--json", "data/TEST/MONOCYTE")
    assert done.returncode == 0, done.stderr
    assert all("class" in row for row in json.loads(done.stdout))


# --- 9. a PostgreSQL store naming a missing database ----------------------------------------

@needs_pg
@pytest.mark.slow
@pytest.mark.parametrize("option", ["--tracking-uri", "--storage"])
def test_9_a_missing_database_fails_fast_in_one_masked_line(tmp_path, option):
    _tiny_data(tmp_path / "data")
    missing = f"nosuchdb_{uuid.uuid4().hex[:8]}"
    url = f"postgresql+psycopg://postgres:Zq7s3cret@127.0.0.1:5432/{missing}"
    # No retries: the bound is generous, the check is the single line (MLflow's own retries
    # took ~106 s and printed ~203 lines).
    done = run_search(tmp_path, "launch", *TINY, *SQUARE, "--trials", "1", "--data-dir", "data", option, url,
                      timeout=60)
    line = one_line_error(done, f"{option} {redact(url)}: cannot connect", f'database "{missing}" does not exist')
    assert MASK in line and "Zq7s3cret" not in done.stderr + done.stdout
    _nothing_created(tmp_path)


# --- 14. what a data set leaves out is said ---------------------------------------------------

def _flat_data(root: Path) -> Path:
    """A flat layout with a sub-folder of images in one class and a broken link in another."""
    from preprocessing.synthetic import make_image_set

    make_image_set(root, cells_per_class=5, copies=2, groups_file=False)
    (root / "MONOCYTE" / "patient-7").mkdir()
    for f in sorted((root / "MONOCYTE").glob("_4_*.png")):
        f.rename(root / "MONOCYTE" / "patient-7" / f.name)
    (root / "EOSINOPHIL" / "gone.png").symlink_to(root / "nowhere.png")
    return root


def _state(folder: Path) -> list[tuple]:
    """Every entry under folder with its size and mtime: what a read-only command must leave."""
    return sorted((p.relative_to(folder).as_posix(), p.lstat().st_size, p.lstat().st_mtime_ns)
                  for p in folder.rglob("*"))


def _warnings(done) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("warning: ")]


def _inspect(work: Path) -> tuple[dict, list[str]]:
    done = run_search(work, "data", "inspect", "--data-dir", "data", "--json", "--sheet", "sheet.png")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), _warnings(done)


def _images(report: dict, split: str) -> int:
    return sum(report["splits"][split]["images"].values())


@pytest.mark.slow
def test_14_inspect_counts_sub_folder_images_warns_of_broken_links_and_writes_nothing(tmp_path):
    data = _flat_data(tmp_path / "data")
    before = _state(data)
    report, warnings = _inspect(tmp_path)
    assert _images(report, "TRAIN") + _images(report, "TEST") == 40  # the sub-folder's 2 included
    assert warnings == ["warning: 1 broken symbolic link(s) skipped in "
                        f"{data.resolve()}, e.g. EOSINOPHIL/gone.png"]
    assert report["test_split"] == {"record": str(data.resolve() / ".bloodsearch-test-split.json"), "recorded": False}
    assert _state(data) == before  # no split record, nothing else


@pytest.mark.slow
def test_14_a_class_added_after_the_split_is_named_with_its_record(tmp_path):
    data = _flat_data(tmp_path / "data")
    shown, _ = _inspect(tmp_path)
    launched = run_search(tmp_path, "launch", *TINY, *SQUARE, "--trials", "1", "--data-dir", "data")
    assert launched.returncode == 0, launched.stderr
    assert any("broken symbolic link" in w for w in _warnings(launched))
    # The launch recorded the split inspect showed, sub-folder images included.
    assert load(tmp_path, STUDY).user_attrs[DATA_ATTR]["images"] == _images(shown, "TRAIN")
    record = data.resolve() / ".bloodsearch-test-split.json"
    assert json.loads(record.read_text())["test_groups"] and _inspect(tmp_path)[0]["splits"] == shown["splits"]

    shutil.copytree(data / "NEUTROPHIL", data / "BASOPHIL")
    report, warnings = _inspect(tmp_path)
    assert report["splits"]["TEST"]["images"]["BASOPHIL"] == 0
    expected = f"warning: class BASOPHIL has no TEST image: none of its groups is in the TEST split recorded in {record}"
    assert [w for w in warnings if "BASOPHIL" in w][0].startswith(expected)
    assert "delete that file" in warnings[-1]
    again = run_search(tmp_path, "launch", *TINY, *SQUARE, "--trials", "1", "--data-dir", "data")
    assert any(w.startswith(expected) for w in _warnings(again))  # said by the launch too, before its refusal
    assert "its TRAIN files differ" in again.stderr.splitlines()[-1]
