"""Streaming vs. in-RAM: throughput and peak memory of the data pipeline on a real data set.

    python benchmarks/pipeline.py --data-dir ../shared/data/blood-cells/dataset2-master/images --json

prints {"baseline_rss_mb": ..., "120x160": {...}, "240x320": {...}} where each size holds
cold_images_per_s (decode + resize into a fresh cache), cached_images_per_s (one shuffled
epoch of uint8 batches streamed from the cache, as a trial's model receives them; median of
3 epochs after a warm-up epoch), streaming_peak_rss_mb (that fresh process's peak RSS),
in_ram_peak_rss_mb (a fresh process doing what the study did: every image in a numpy array,
then StandardScaler), or in_ram_limit_hit_mb where that passes the memory limit.
Each measurement that reports memory runs in its own fresh process.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def child_baseline(_args) -> dict:
    import keras  # noqa: F401
    import tensorflow  # noqa: F401

    return {"peak_rss_mb": peak_rss_mb()}


def child_stream(args) -> dict:
    import tensorflow  # noqa: F401

    from preprocessing import PreprocessConfig, build_cache, load_dataset, make_batches

    data = load_dataset(args.data_dir)
    cache = build_cache(data.train, PreprocessConfig(size=args.size), args.cache_dir)
    import numpy as np

    ds = make_batches(cache, np.flatnonzero(cache.valid), batch_size=args.batch_size, shuffle=True, seed=0)
    rates = []
    for epoch in range(4):
        start, n = time.perf_counter(), 0
        for x, _ in ds:
            n += int(x.shape[0])
        if epoch:  # the first epoch includes tf.data's start-up
            rates.append(n / (time.perf_counter() - start))
    return {"cached_images_per_s": round(statistics.median(rates)), "epoch_rates": [round(r) for r in rates],
            "images": n, "peak_rss_mb": peak_rss_mb()}


def child_in_ram(args) -> dict:
    """The study's way: load everything, then fit and apply a StandardScaler on flat images."""
    limit = args.limit_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        import numpy as np
        import tensorflow  # noqa: F401  (the study's notebook had it loaded too)
        from sklearn.preprocessing import StandardScaler

        from preprocessing import PreprocessConfig, load_dataset
        from preprocessing.images import load_image

        data = load_dataset(args.data_dir)
        config = PreprocessConfig(size=args.size)
        x = np.array([load_image(data.train.path(i), config) for i in range(len(data.train))])
        scaled = StandardScaler().fit_transform(x.reshape(len(x), -1))
        return {"peak_rss_mb": peak_rss_mb(), "shape": list(x.shape), "scaled_dtype": str(scaled.dtype)}
    except MemoryError:
        return {"limit_hit_mb": args.limit_mb, "peak_rss_mb_before_limit": peak_rss_mb()}


CHILDREN = {"baseline": child_baseline, "stream": child_stream, "in_ram": child_in_ram}


def run_child(mode: str, *extra: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, *extra], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{mode} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_size(args, size: str, cache_dir: str) -> dict:
    from preprocessing import PreprocessConfig, build_cache, load_dataset

    data = load_dataset(args.data_dir)
    start = time.perf_counter()
    cache = build_cache(data.train, PreprocessConfig(size=size), cache_dir)
    cold = len(data.train) / (time.perf_counter() - start)
    common = ["--data-dir", args.data_dir, "--size", size, "--cache-dir", cache_dir]
    stream = run_child("stream", *common, "--batch-size", str(args.batch_size))
    in_ram = run_child("in_ram", *common, "--limit-mb", str(args.limit_mb)) if not args.skip_in_ram else {}
    row = {
        "images": len(data.train), "unreadable": len(cache.unreadable),
        "cold_images_per_s": round(cold),
        "cached_images_per_s": stream["cached_images_per_s"],
        "cached_epoch_rates": stream["epoch_rates"],
        "streaming_peak_rss_mb": round(stream["peak_rss_mb"]),
    }
    if "limit_hit_mb" in in_ram:
        row["in_ram_limit_hit_mb"] = in_ram["limit_hit_mb"]
    elif in_ram:
        row["in_ram_peak_rss_mb"] = round(in_ram["peak_rss_mb"])
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--sizes", default="120x160,240x320")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit-mb", type=int, default=16384, help="address-space limit of the in-RAM process")
    p.add_argument("--skip-in-ram", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    p.add_argument("--child", choices=CHILDREN, help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return
    if not args.data_dir:
        p.error("--data-dir is required")
    result = {"baseline_rss_mb": round(run_child("baseline")["peak_rss_mb"])}
    with tempfile.TemporaryDirectory(prefix="bloodsearch-bench-") as cache_dir:
        for size in args.sizes.split(","):
            result[size] = measure_size(args, size, cache_dir)
            if not args.json:
                print(size, json.dumps(result[size]), file=sys.stderr)
    print(json.dumps(result, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
