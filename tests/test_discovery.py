"""Group discovery (`search data groups`) on tiny made fields: every image back to its field,
overlapping fields merged, the same groups found without the fields, and the command's
files and errors."""
from __future__ import annotations

import csv
import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from preprocessing import DataError
from preprocessing.discovery import group_by_sources, list_images
from preprocessing.features import align, aligned_correlation, field_features, mirror, mirrored
from preprocessing.near_duplicates import component_names, group_by_similarity
from preprocessing.synthetic import draw_field, make_field_set

# make_field_set's two fields cut from one canvas, half a field apart: one group, named by the lower.
OVERLAPPING = ("field_A0", "field_A1")


def true_group(field: str) -> str:
    return OVERLAPPING[0] if field in OVERLAPPING else field


def partition(groups: dict[str, str]) -> set[frozenset[str]]:
    """The groups as sets of paths: what two groupings share up to renaming."""
    members = defaultdict(set)
    for path, group in groups.items():
        members[group].add(path)
    return {frozenset(m) for m in members.values()}


@pytest.fixture(scope="module")
def fields(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(root, image path -> its field): 7 fields x 5 copies under root/images, fields in root/sources."""
    root = tmp_path_factory.mktemp("fields")
    return root, make_field_set(root, fields=5, copies=5, seed=0)


def test_with_sources_every_image_gets_its_fields_group_and_overlapping_fields_merge(fields):
    root, truth = fields
    grouping = group_by_sources(root / "images", root / "sources")
    assert {r.path: r.group for r in grouping.rows} == {p: true_group(f) for p, f in truth.items()}
    assert all(r.source == f for r in grouping.rows for f in [truth[r.path]] if f not in OVERLAPPING)
    assert grouping.merged == [list(OVERLAPPING)]
    [overlap] = grouping.overlaps
    assert (overlap.a, overlap.b) == OVERLAPPING
    # field_A1 starts 128 px right of field_A0 on the canvas.
    assert abs(overlap.shift[0] - 128) <= 2 and abs(overlap.shift[1]) <= 2
    assert overlap.correlation > 0.9
    assert not grouping.unmatched and not grouping.unreadable
    assert all(r.inliers >= 15 and 0.9 <= r.scale <= 1.1 and r.confidence == 1.0 for r in grouping.rows)


def test_without_sources_the_groups_are_the_true_groups(fields):
    root, truth = fields
    grouping = group_by_similarity(root / "images", vocabulary=128)
    assert partition(grouping.groups()) == partition({p: true_group(f) for p, f in truth.items()})
    assert sorted({r.group for r in grouping.rows}) == [f"g{n:04d}" for n in range(1, 7)]
    assert len(grouping.merged) <= 1  # the overlapping pair, if its copies were first found apart
    assert not grouping.unmatched


def test_group_names_follow_the_sorted_paths_and_a_lone_image_keeps_its_own():
    paths = ["b/1.jpeg", "a/2.jpeg", "a/1.jpeg", "c/9.jpeg", "b/3.jpeg"]
    labels = np.array([7, 3, 7, 5, 3])
    assert component_names(paths, labels) == ["g0001", "g0002", "g0001", "c/9.jpeg", "g0002"]


def test_mirrored_keypoints_match_those_found_in_the_mirror():
    gray = draw_field(np.random.default_rng(3))[:, :, 1]
    found_in_mirror = field_features(mirror(gray))
    alignment = align(found_in_mirror, mirrored(field_features(gray)))
    assert alignment.inliers >= 0.5 * len(found_in_mirror)
    assert abs(alignment.scale - 1) < 0.01 and abs(alignment.angle) < 0.5 and max(map(abs, alignment.shift)) < 1


def test_pixels_of_the_same_cells_correlate_and_of_other_cells_do_not():
    rng = np.random.default_rng(4)
    canvas, other = draw_field(rng)[:, :, 1], draw_field(rng)[:, :, 1]
    # Column x of the first crop is column x - 40 of the second.
    same, area = aligned_correlation(canvas[:, :200], canvas[:, 40:], np.float32([[1, 0, -40], [0, 1, 0]]))
    assert same > 0.95 and area > 0.5
    assert abs(aligned_correlation(canvas, other, np.float32([[1, 0, 0], [0, 1, 0]]))[0]) < 0.3


def test_every_image_file_is_listed_with_forward_slashes_and_an_empty_folder_is_an_error(tmp_path):
    for rel in ("TRAIN/A/x.jpeg", "TRAIN/B/y.PNG", "TEST/A/z.jpg", "TRAIN/A/notes.txt", ".hidden/q.jpeg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert list_images(tmp_path) == ["TEST/A/z.jpg", "TRAIN/A/x.jpeg", "TRAIN/B/y.PNG"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty holds no images"):
        list_images(tmp_path / "empty")


# --- the command ------------------------------------------------------------------------


@pytest.mark.slow
def test_the_command_writes_the_csv_and_report_and_lists_an_unreadable_image(fields, tmp_path):
    from searchtools import run_search

    root, truth = fields
    data = tmp_path / "data"
    shutil.copytree(root / "images", data)
    (data / "TRAIN" / "EOSINOPHIL" / "broken.jpeg").write_text("not a picture")
    done = run_search(tmp_path, "data", "groups", "--data-dir", str(data), "--sources", str(root / "sources"),
                      "--out", "out/groups.csv", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert "warning: skipped unreadable image" in done.stderr and "broken.jpeg" in done.stderr
    with open(tmp_path / "out" / "groups.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:2] == ["path", "group"]
    groups = {r["path"]: r["group"] for r in rows}
    assert groups == {**{p: true_group(f) for p, f in truth.items()},
                      "TRAIN/EOSINOPHIL/broken.jpeg": "TRAIN/EOSINOPHIL/broken.jpeg"}
    report_dir = tmp_path / "out" / "groups-report"
    report = json.loads((report_dir / "groups.json").read_text())
    assert report["images"] == len(truth) + 1 and report["merged"] == [list(OVERLAPPING)]
    assert [u["file"] for u in report["unreadable"]] == ["TRAIN/EOSINOPHIL/broken.jpeg"]
    assert report["unmatched"] == []
    assert "merged clusters: 1" in (report_dir / "summary.txt").read_text()
    assert "merged clusters: 1" in done.stdout


@pytest.mark.slow
def test_the_command_without_sources_groups_the_images_among_themselves(fields, tmp_path):
    from searchtools import run_search

    root, truth = fields
    done = run_search(tmp_path, "data", "groups", "--data-dir", str(root / "images"), "--out", "g.csv",
                      "--report", "report", "--workers", "1")
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "g.csv", newline="") as f:
        found = {r["path"]: r["group"] for r in csv.DictReader(f)}
    assert partition(found) == partition({p: true_group(f) for p, f in truth.items()})
    report = json.loads((tmp_path / "report" / "groups.json").read_text())
    assert report["mode"] == "images" and report["sources"] is None


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing sources", "no images"])
def test_an_unusable_folder_is_a_one_line_error_naming_it(fields, tmp_path, case):
    from searchtools import run_search

    root, _ = fields
    (tmp_path / "empty").mkdir()
    data, sources = ((root / "images", tmp_path / "nowhere") if case == "missing sources"
                     else (tmp_path / "empty", root / "sources"))
    done = run_search(tmp_path, "data", "groups", "--data-dir", str(data), "--sources", str(sources),
                      "--out", "g.csv")
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and str(tmp_path / ("nowhere" if case == "missing sources" else "empty")) in line
    assert not (tmp_path / "g.csv").exists()
