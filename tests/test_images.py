import logging

import numpy as np
import pytest
from PIL import Image

from preprocessing import PreprocessConfig, build_cache, load_dataset
from preprocessing.images import UnreadableImage, load_image
from preprocessing.synthetic import sync_groups


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "I;16", "CMYK"])
def test_odd_modes_become_rgb(tmp_path, mode):
    path = tmp_path / "x.png" if mode != "CMYK" else tmp_path / "x.jpg"
    Image.new(mode, (37, 19)).save(path)
    arr = load_image(path, PreprocessConfig(size=(12, 16)))
    assert arr.shape == (12, 16, 3) and arr.dtype == np.uint8


def test_gray_has_one_channel(tmp_path):
    Image.new("RGB", (32, 24), (200, 100, 50)).save(tmp_path / "x.png")
    arr = load_image(tmp_path / "x.png", PreprocessConfig(size=(6, 8), color="gray"))
    assert arr.shape == (6, 8, 1)


def test_resize_is_height_by_width(tmp_path):
    Image.new("RGB", (320, 240)).save(tmp_path / "x.jpeg")
    assert load_image(tmp_path / "x.jpeg", PreprocessConfig(size="120x160")).shape == (120, 160, 3)


def _plant_bad_files(folder):
    (folder / "_90_0.jpg").write_text("this is a text file named .jpg")
    good = sorted(folder.glob("*.png"))[0]
    data = good.read_bytes()
    (folder / "_91_0.png").write_bytes(data[: len(data) // 2])  # truncated
    (folder / "_92_0.jpeg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)  # corrupt JPEG header
    sync_groups(folder.parents[1])


def test_bad_files_are_skipped_named_and_counted(split_dataset, cache_dir, caplog):
    _plant_bad_files(split_dataset / "TRAIN" / "MONOCYTE")
    data = load_dataset(split_dataset)
    with caplog.at_level(logging.WARNING, logger="bloodsearch.cache"):
        cache = build_cache(data.train, PreprocessConfig(size=(12, 16)), cache_dir)
    bad = {u["file"].split("/")[-1] for u in cache.unreadable}
    assert bad == {"_90_0.jpg", "_91_0.png", "_92_0.jpeg"}
    assert int((~cache.valid).sum()) == 3
    for name in bad:
        assert name in caplog.text
    with pytest.raises(UnreadableImage):
        load_image(split_dataset / "TRAIN" / "MONOCYTE" / "_90_0.jpg", PreprocessConfig())
