"""Square padding, feature-map pictures and the data-set overview."""
import json

import numpy as np
import pytest
from PIL import Image

from models import ModelConfig, build_model
from preprocessing import DataError, PreprocessConfig, build_cache, load_dataset
from preprocessing.images import load_image
from searchtools import run_search
from search.results.featuremaps import feature_layers, write_featuremaps
from preprocessing.synthetic import sync_groups, make_split_dataset


def _bbox(mask: np.ndarray) -> tuple[int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def test_pad_keeps_the_aspect_ratio_and_stretch_does_not(tmp_path):
    image = np.full((240, 320, 3), 255, np.uint8)
    image[70:170, 110:210] = 0  # a 100x100 black square in a 320x240 image
    Image.fromarray(image).save(tmp_path / "square.png")
    padded = load_image(tmp_path / "square.png", PreprocessConfig(size=(60, 60), fit="pad"))[:, :, 0]
    stretched = load_image(tmp_path / "square.png", PreprocessConfig(size=(60, 60)))[:, :, 0]
    # The picture is 60x45 in the middle, black bands of 7-8 rows above and below.
    assert np.all(padded[:7] == 0) and np.all(padded[-7:] == 0) and padded[30, 1] > 200
    h, w = _bbox((padded < 100)[8:-8])
    assert abs(h - w) <= 1 and abs(h - 100 * 60 / 320) <= 1.5
    sh, sw = _bbox(stretched < 100)
    assert sh - sw >= 4  # stretched: the square became a tall rectangle (25x19)


def test_fit_is_part_of_the_cache_key_and_checked(tmp_path):
    make_split_dataset(tmp_path / "data", cells_per_class=3, copies=2)
    data = load_dataset(tmp_path / "data")
    a = build_cache(data.train, PreprocessConfig(size=(16, 16)), tmp_path / "cache")
    b = build_cache(data.train, PreprocessConfig(size=(16, 16), fit="pad"), tmp_path / "cache")
    assert a.path != b.path and not np.array_equal(a.read([0]), b.read([0]))
    with pytest.raises(DataError, match="fit 'crop' is not one of stretch, pad"):
        PreprocessConfig(fit="crop")


def test_featuremaps_one_png_per_conv_and_pool_layer(tmp_path):
    model = build_model(ModelConfig("fcn", kernels=(3,) * 5, width=0.125), (24, 32, 3), 4)
    written = write_featuremaps(model, np.zeros((24, 32, 3), np.uint8), tmp_path / "maps", "tiny")
    layers = feature_layers(model)
    assert len(layers) == 5 + 5 + 2  # five conv+pool sections, then two 1x1 convolutions
    assert [p.name for p in written] == [f"{i + 1:02d}_{layer.name}.png" for i, layer in enumerate(layers)]
    assert all(Image.open(p).size[0] > 50 for p in written)


def test_data_inspect_counts_groups_and_finds_the_corrupt_file(tmp_path):
    make_split_dataset(tmp_path / "data", cells_per_class=5, copies=3, test_cells=2)
    Image.new("RGB", (50, 40)).save(tmp_path / "data" / "TRAIN" / "LYMPHOCYTE" / "_77_1.png")
    (tmp_path / "data" / "TRAIN" / "MONOCYTE" / "_88_1.jpg").write_text("corrupt")
    sync_groups(tmp_path / "data")
    done = run_search(tmp_path, "data", "inspect", "--data-dir", "data", "--sheet", "sheet.png", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    train, test = report["splits"]["TRAIN"], report["splits"]["TEST"]
    assert train["images"] == {"EOSINOPHIL": 15, "LYMPHOCYTE": 16, "MONOCYTE": 16, "NEUTROPHIL": 15}
    assert train["groups"] == {"EOSINOPHIL": 5, "LYMPHOCYTE": 6, "MONOCYTE": 6, "NEUTROPHIL": 5}
    assert test["groups"] == {c: 2 for c in report["classes"]}
    assert train["sizes_wxh"] == {"32x24": 60, "50x40": 1}
    assert [u["file"] for u in train["unreadable"]] == ["TRAIN/MONOCYTE/_88_1.jpg"]
    sheet = Image.open(tmp_path / "sheet.png")
    assert sheet.size[0] > sheet.size[1] > 100
    text = run_search(tmp_path, "data", "inspect", "--data-dir", "data", "--sheet", "sheet2.png").stdout
    assert "unreadable: TRAIN/MONOCYTE/_88_1.jpg" in text and "MONOCYTE" in text


def test_data_inspect_bad_dir_is_one_line(tmp_path):
    done = run_search(tmp_path, "data", "inspect", "--data-dir", "missing")
    assert done.returncode != 0 and done.stderr.strip().count("\n") == 0 and "does not exist" in done.stderr
