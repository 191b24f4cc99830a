import json
import os

import numpy as np
import pytest
from PIL import Image

from preprocessing import DataError, load_dataset
from preprocessing.dataset import SPLIT_RECORD
from preprocessing.groups import Grouping
from preprocessing.synthetic import CLASSES, sync_groups, make_image_set


def test_split_layout_classes_counts_and_groups(split_dataset):
    data = load_dataset(split_dataset)
    assert data.layout == "split"
    assert data.classes == tuple(sorted(CLASSES))
    assert data.train.class_counts() == {c: 18 for c in CLASSES}
    assert data.train.group_counts() == {c: 6 for c in CLASSES}
    assert data.test.group_counts() == {c: 2 for c in CLASSES}
    assert "TEST_SIMPLE" not in data.splits


def test_file_names_are_not_groups_without_a_groups_file(split_dataset):
    """`_<k>_<n>` is a Keras batch position, not a cell: with no groups given, each file is alone."""
    (split_dataset / "groups.csv").unlink()
    data = load_dataset(split_dataset)
    assert data.train.group_counts() == {c: 18 for c in CLASSES}
    assert data.grouping == Grouping()


def test_hidden_files_ignored_and_suffix_case_free(split_dataset):
    folder = split_dataset / "TRAIN" / "EOSINOPHIL"
    (folder / ".DS_Store").write_bytes(b"junk")
    (folder / "notes.txt").write_text("not an image")
    Image.new("RGB", (32, 24)).save(folder / "UPPER.JPG")
    sync_groups(split_dataset)
    (split_dataset / "TRAIN" / ".hidden_class").mkdir()
    data = load_dataset(split_dataset)
    assert data.train.class_counts()["EOSINOPHIL"] == 19
    assert ".hidden_class" not in data.classes


def test_fingerprint_changes_with_files(split_dataset):
    before = load_dataset(split_dataset).train.fingerprint
    assert load_dataset(split_dataset).train.fingerprint == before
    path = split_dataset / "TRAIN" / "EOSINOPHIL" / "_0_0.png"
    os.utime(path, ns=(0, 12345))
    assert load_dataset(split_dataset).train.fingerprint != before


def test_flat_layout_makes_a_grouped_test_split_once(tmp_path):
    root = make_image_set(tmp_path / "flat", cells_per_class=10, copies=3)
    data = load_dataset(root)
    assert data.layout == "flat"
    train_groups, test_groups = set(data.train.groups), set(data.test.groups)
    assert not train_groups & test_groups
    assert all(n >= 1 for n in data.test.group_counts().values())  # stratified: every class held out
    record = json.loads((root / SPLIT_RECORD).read_text())
    assert sorted(record["test_groups"]) == sorted(test_groups)
    # New groups later go to TRAIN; recorded TEST groups never move.
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(root / "MONOCYTE" / "_99_0.png")
    with (root / "groups.csv").open("a") as f:
        f.write("MONOCYTE/_99_0.png,new-field\n")
    again = load_dataset(root)
    assert set(again.test.groups) == test_groups
    assert "new-field" in again.train.groups
    # A split recorded under one grouping is not silently read under another.
    with pytest.raises(DataError, match="was made with csv, this data is grouped by per-file"):
        load_dataset(root, grouping=Grouping())


def test_flat_layout_read_only_records_in_cache(tmp_path, monkeypatch):
    root = make_image_set(tmp_path / "flat", cells_per_class=5, copies=2)
    record_dir = tmp_path / "records"
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    first = load_dataset(root, record_dir=record_dir)
    assert not (root / SPLIT_RECORD).exists()
    assert len(list((record_dir / "splits").glob("*.json"))) == 1
    assert load_dataset(root, record_dir=record_dir).test.files == first.test.files


@pytest.mark.parametrize("setup, message", [
    (lambda r: None, "does not exist"),
    (lambda r: (r / "TEST" / "A").mkdir(parents=True), "no TRAIN folder"),
    (lambda r: r.mkdir(), "needs at least two class folders"),
])
def test_bad_data_dirs_are_one_line_errors(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DataError, match=message) as err:
        load_dataset(root)
    assert "\n" not in str(err.value)


def test_empty_class_folder_is_named(split_dataset):
    (split_dataset / "TRAIN" / "BASOPHIL").mkdir()
    with pytest.raises(DataError, match=r"class folder .*BASOPHIL holds no images"):
        load_dataset(split_dataset)


def test_test_class_unknown_to_train(split_dataset):
    make_image_set(split_dataset / "TEST", 1, 1, classes=("PLATELET",))
    with pytest.raises(DataError, match="PLATELET"):
        load_dataset(split_dataset)


def test_data_dir_that_is_a_file(tmp_path):
    f = tmp_path / "x.jpg"
    f.write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(f)
