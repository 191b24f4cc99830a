import numpy as np
import pytest

from preprocessing import DataError, load_dataset, validation_split


def test_no_group_on_both_sides_and_every_class_validated(tmp_path):
    from preprocessing.synthetic import make_split_dataset

    data = load_dataset(make_split_dataset(tmp_path / "d", cells_per_class=10, copies=4))
    split = validation_split(data.train, fraction=0.2, seed=3)
    train_groups = {data.train.groups[i] for i in split.train}
    val_groups = {data.train.groups[i] for i in split.val}
    assert not train_groups & val_groups
    assert len(split.train) + len(split.val) == len(data.train)
    assert all(side["groups"] >= 1 for side in split.report["val"].values())
    assert sum(v["groups"] for v in split.report["val"].values()) == len(val_groups)


def test_deterministic_for_a_seed(split_dataset):
    data = load_dataset(split_dataset)
    a, b = validation_split(data.train, seed=1), validation_split(data.train, seed=1)
    assert np.array_equal(a.val, b.val)
    others = [validation_split(data.train, seed=s).val for s in range(2, 8)]
    assert any(not np.array_equal(a.val, o) for o in others)


def test_unreadable_files_are_left_out(split_dataset):
    data = load_dataset(split_dataset)
    valid = np.ones(len(data.train), bool)
    valid[[0, 5]] = False
    split = validation_split(data.train, valid=valid)
    assert not {0, 5} & set(split.train.tolist() + split.val.tolist())


def test_too_few_groups_is_a_clear_error(tmp_path):
    from preprocessing.synthetic import make_split_dataset

    data = load_dataset(make_split_dataset(tmp_path / "d", cells_per_class=1, copies=2, classes=("A", "B")))
    with pytest.raises(DataError, match="class A has 1 group.*needs at least 2 per class"):
        validation_split(data.train, fraction=0.2)


@pytest.mark.parametrize("fraction", [0.2, 0.3, 0.4])
def test_the_share_held_out_is_the_share_asked_for(tmp_path, fraction):
    """It used to be 1/round(1/f): 0.4 held out half the cells and 0.3 a third."""
    from preprocessing.synthetic import make_split_dataset

    data = load_dataset(make_split_dataset(tmp_path / "d", cells_per_class=10, copies=2))
    split = validation_split(data.train, fraction=fraction, seed=0)
    assert all(side["groups"] == round(10 * fraction) for side in split.report["val"].values())
    assert split.report["held_out_share"] == pytest.approx(fraction)
