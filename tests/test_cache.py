import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from preprocessing import PreprocessConfig, build_cache, load_dataset
from preprocessing.images import load_image

ROOT = Path(__file__).resolve().parents[1]

BUILDER = """
import sys, preprocessing.cache as c
real = c._decode_all
def counted(*a, **k):
    with open(sys.argv[3], "a") as f:
        f.write("built\\n")
    return real(*a, **k)
c._decode_all = counted
from preprocessing import load_dataset, PreprocessConfig
cache = c.build_cache(load_dataset(sys.argv[1]).train, PreprocessConfig(size=(12, 16), mask="otsu"), sys.argv[2])
print(cache.read([0, 1, 2]).sum())
"""


def test_cache_holds_the_decoded_images(split_dataset, cache_dir):
    data = load_dataset(split_dataset)
    config = PreprocessConfig(size=(12, 16), color="gray", mask="otsu")
    cache = build_cache(data.train, config, cache_dir)
    idx = np.array([5, 0, 17])
    got = cache.read(idx)
    assert got.shape == (3, 12, 16, 1) and got.dtype == np.uint8
    for row, i in enumerate(idx):
        np.testing.assert_array_equal(got[row], load_image(data.train.path(i), config))
    meta = json.loads((cache.path / "meta.json").read_text())
    assert meta["fingerprint"] == data.train.fingerprint and meta["config"]["mask"] == "otsu"


def test_reopening_does_not_rebuild_and_keys_differ_by_config(split_dataset, cache_dir):
    data = load_dataset(split_dataset)
    a = build_cache(data.train, PreprocessConfig(size=(12, 16)), cache_dir)
    mtime = (a.path / "images.u8").stat().st_mtime_ns
    again = build_cache(data.train, PreprocessConfig(size=(12, 16), scaling="pixel"), cache_dir)
    assert again.path == a.path and (a.path / "images.u8").stat().st_mtime_ns == mtime
    other = build_cache(data.train, PreprocessConfig(size=(6, 8)), cache_dir)
    assert other.path != a.path


def test_concurrent_workers_build_once_and_never_see_half_a_cache(split_dataset, cache_dir, tmp_path):
    counter = tmp_path / "builds.txt"
    procs = [subprocess.Popen([sys.executable, "-c", BUILDER, str(split_dataset), str(cache_dir), str(counter)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert counter.read_text().count("built") == 1
    assert len(set(outs)) == 1
    assert not list((cache_dir / "images").glob("*.tmp*"))


def test_stale_temporary_folder_from_a_killed_builder_is_replaced(split_dataset, cache_dir):
    data = load_dataset(split_dataset)
    config = PreprocessConfig(size=(12, 16))
    from preprocessing.cache import cache_key

    stale = cache_dir / "images" / f"{cache_key(data.train, config)}.tmp99999"
    stale.mkdir(parents=True)
    (stale / "images.u8").write_bytes(b"half")
    cache = build_cache(data.train, config, cache_dir)
    assert not stale.exists()
    assert cache.read([0]).shape == (1, 12, 16, 3)
