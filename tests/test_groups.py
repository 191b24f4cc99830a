"""Groups as an input (issue 25): a groups CSV or a file-name pattern decides what stays on one
side of every split; bad groups files are one line and create nothing; the audit finds what
a grouping leaks; held-out reports leave out the groups TRAIN holds."""
import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest

from preprocessing import DataError, load_dataset, validation_split
from preprocessing.audit import audit
from preprocessing.groups import Grouping
from preprocessing.splits import cv_folds
from preprocessing.synthetic import draw, make_split_dataset, write_groups
from searchtools import load, one_line_error as assert_one_line_error, run_search
from test_cli_user import nothing_created

CLASSES = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")


def rows(path: Path) -> list[list[str]]:
    return list(csv.reader(path.read_text().splitlines()))


def rewrite(path: Path, table: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(table)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return make_split_dataset(tmp_path / "data", cells_per_class=6, copies=3, test_cells=2)


def test_a_groups_file_groups_every_split_and_is_the_data_dirs_default(data):
    loaded = load_dataset(data)
    assert loaded.grouping == Grouping(file=str(data / "groups.csv"))
    assert loaded.train.group_counts() == {c: 6 for c in CLASSES}
    assert loaded.test.group_counts() == {c: 2 for c in CLASSES}


@pytest.mark.parametrize("damage, message", [
    (lambda t: t.pop(5), "has no row for TRAIN/"),  # an image without a group
    (lambda t: t.append(["TRAIN/EOSINOPHIL/nope.png", "x"]), "row 98 names TRAIN/EOSINOPHIL/nope.png, which is not"),
    (lambda t: t.append([t[3][0], "another"]), "row 98 gives TRAIN/"),  # one image, two groups
    (lambda t: t.insert(2, ["only-a-path"]), "row 3 is not 'path,group'"),
])
def test_each_bad_groups_file_is_one_line_naming_the_file_and_row(data, damage, message):
    table = rows(data / "groups.csv")
    damage(table)
    rewrite(data / "groups.csv", table)
    with pytest.raises(DataError, match=message) as err:
        load_dataset(data)
    assert str(data / "groups.csv") in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_a_bad_groups_file_creates_nothing_and_a_good_one_is_said_in_one_line(data):
    work = data.parent
    bad = work / "bad.csv"
    rewrite(bad, rows(data / "groups.csv")[:-1])
    args = ["launch", "--study", "seed-fcn", "--param", "size=16x16", "--param", "width=0.125", "--epochs", "1",
            "--trials", "1", "--data-dir", "data"]
    assert_one_line_error(run_search(work, *args, "--groups", "bad.csv"), "bad.csv has no row for")
    assert nothing_created(work)
    assert_one_line_error(run_search(work, *args, "--group-pattern", "(unclosed"), "--group-pattern", "not a regular")
    assert nothing_created(work)

    done = run_search(work, *args, "--cv", "2")
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if "groups in TRAIN" in line]
    assert len(said) == 1 and f"groups from {data / 'groups.csv'}: 24 groups in TRAIN" in said[0]
    assert "2 folds validating 12-12 groups each" in said[0]
    # The groups are fixed with the study: a relaunch grouped otherwise is refused, nothing written.
    before = load(work, "seed-fcn").user_attrs
    again = run_search(work, *args, "--cv", "2", "--group-pattern", r"^_(\d+)_")
    assert_one_line_error(again, "study seed-fcn was created with --groups/--group-pattern")
    assert load(work, "seed-fcn").user_attrs == before


def test_a_pattern_reads_groups_from_names_and_names_a_file_it_does_not_match(tmp_path):
    root = tmp_path / "flat"
    rng = np.random.default_rng(0)
    from PIL import Image

    for ci, cls in enumerate(("A", "B")):
        (root / cls).mkdir(parents=True)
        for patient in range(5):
            for j in range(2):
                Image.fromarray(draw(ci, rng)).save(root / cls / f"P{patient}_{cls}{j}.png")
    loaded = load_dataset(root, grouping=Grouping(pattern=r"^(P\d+)_"))
    # A patient's cells of both classes are one group, on one side.
    assert set(loaded.train.groups) | set(loaded.test.groups) == {f"P{i}" for i in range(5)}
    assert not set(loaded.train.groups) & set(loaded.test.groups)
    Image.fromarray(draw(0, rng)).save(root / "A" / "stray.png")
    with pytest.raises(DataError, match=r"--group-pattern '\^\(P\\d\+\)_' does not match A/stray.png"):
        load_dataset(root, grouping=Grouping(pattern=r"^(P\d+)_"), record_dir=tmp_path / "records")


def _spanning(n_groups: int = 12, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Groups that hold several classes each (patients), classes of unequal size."""
    rng = random.Random(seed)
    labels, groups = [], []
    for g in range(n_groups):
        for label in rng.sample(range(4), k=rng.randint(1, 3)):
            for _ in range(rng.randint(1, 4)):
                labels.append(label)
                groups.append(f"patient{g}")
    return np.asarray(labels), groups


def test_folds_from_groups_that_span_classes_never_put_a_group_in_two_folds():
    from preprocessing.grouping import grouped_folds, grouped_holdout

    labels, groups = _spanning()
    folds = grouped_folds(labels, groups, 3, seed=1)
    validated = [g for _, val in folds for g in {groups[i] for i in val}]
    assert sorted(validated) == sorted(set(groups))  # each group validated exactly once
    for train, val in folds:
        assert not {groups[i] for i in train} & {groups[i] for i in val}
    keep, held = grouped_holdout(labels, groups, 0.25, seed=2)
    assert not {groups[i] for i in keep} & {groups[i] for i in held}
    assert set(labels[held].tolist()) == set(labels.tolist())  # every class validated...
    assert set(labels[keep].tolist()) == set(labels.tolist())  # ...and trained on


def test_audit_names_the_leak_of_splitting_by_file_name_and_of_a_shared_test_group(data):
    # Rename the files the way Keras' save_to_dir does: k is a batch position, not a cell.
    rng = random.Random(0)
    table = rows(data / "groups.csv")
    renamed = [table[0]]
    for path, group in table[1:]:
        p = data / path
        new = p.with_name(f"_{rng.randrange(4)}_{rng.randrange(10_000)}_{p.stem}.png")
        p.rename(new)
        renamed.append([new.relative_to(data).as_posix(), group])
    # One TEST image is a view of a TRAIN field (overlapping stage positions).
    renamed[-1][1] = renamed[1][1]
    rewrite(data / "groups.csv", renamed)
    truth = load_dataset(data)
    by_name = load_dataset(data, grouping=Grouping(pattern=r"^_(\d+)_"))
    rows_ = {r.what: r for r in audit(truth, by_name, cv=3, seed=0)}
    assert rows_["TEST vs TRAIN"].leaked_images == 1 and rows_["TEST vs TRAIN"].leaked_groups == [renamed[1][1]]
    assert all(rows_[f"validation fold {k} of 3"].share > 0.5 for k in range(3))
    honest = {r.what: r for r in audit(truth, None, cv=3, seed=0)}
    assert all(honest[f"validation fold {k} of 3"].leaked_images == 0 for k in range(3))


def test_held_out_reports_leave_out_the_groups_train_holds(data):
    from search.results.evaluation import held_out_lines, probs_report

    loaded = load_dataset(data)
    test = loaded.test
    idx = np.arange(len(test))
    probs = np.eye(4)[test.labels]  # every image right...
    probs[0] = np.roll(probs[0], 1)  # ...but the first
    report = probs_report(test, idx, probs, loaded.classes, frozenset({test.groups[0]}))
    assert report["clean"]["excluded_images"] == 3 and report["clean"]["excluded_groups"] == [test.groups[0]]
    assert report["clean"]["accuracy"] == 1.0 and report["accuracy"] == pytest.approx(23 / 24)
    lo, hi = report["accuracy_ci95"]
    assert lo < report["accuracy"] <= hi <= 1.0
    assert report["groups"]["group_accuracy"] == 1.0  # the group's vote is still right: 2 of 3
    lines = held_out_lines("TEST", report)
    assert lines[0].startswith("TEST: accuracy 0.9583 [95% over groups") and "clean TEST (without 3 images" in lines[1]


@pytest.mark.slow
def test_search_data_audit_prints_the_table_and_json(data):
    done = run_search(data.parent, "data", "audit", "--data-dir", "data", "--cv", "2", "--split-per-file", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["split_by"].startswith("one group per file")
    assert [r["what"] for r in report["rows"]] == ["TEST vs TRAIN", "validation fold 0 of 2", "validation fold 1 of 2"]
    assert report["rows"][1]["leaked_images"] > 0  # copies of one cell on both sides
