"""What keying the image cache on content costs: the split's stat fingerprint against its
content digest (preprocessing.digests), with and without the digest's memo.

    python benchmarks/cache_key.py --data-dir ../shared/data/blood-cells/dataset2-master/images [--json]

prints, in seconds, the median of --runs runs of each: scan (load_dataset: listing, stat
of every file, the fingerprint that keyed the cache before), digest_no_memo (reading and
hashing every TRAIN file, what the first build on a machine pays), digest_memo (a stat of
every file against the memo, what every later build pays), plus the files and bytes hashed
and the machine's load average. Files are read through the page cache after a warm-up pass;
the first pass after a reboot reads from disk and is slower.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from preprocessing import load_dataset  # noqa: E402
from preprocessing.digests import content_digest  # noqa: E402


def median_seconds(run, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 3)


def measure(data_dir: str, runs: int) -> dict:
    train = load_dataset(data_dir).train
    content_digest(train)  # warm-up: the page cache holds the files for every timed pass
    with tempfile.TemporaryDirectory() as memo:
        content_digest(train, memo)  # fills the memo (files older than the racy window)
        return {
            "files": len(train),
            "megabytes": round(sum(train.path(i).stat().st_size for i in range(len(train))) / 1e6, 1),
            "scan": median_seconds(lambda: load_dataset(data_dir), runs),
            "digest_no_memo": median_seconds(lambda: content_digest(train), runs),
            "digest_memo": median_seconds(lambda: content_digest(train, memo), runs),
            "runs": runs, "cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.data_dir, args.runs)
    if args.json:
        print(json.dumps(result))
        return
    print(f"TRAIN: {result['files']} files, {result['megabytes']} MB; median of {args.runs} runs, "
          f"{result['cpus']} CPUs, load average {result['load_average']}")
    print(f"  scan + stat fingerprint (the key before)   {result['scan']:.3f} s")
    print(f"  content digest, no memo (first build)      {result['digest_no_memo']:.3f} s")
    print(f"  content digest, memo (every later build)   {result['digest_memo']:.3f} s")


if __name__ == "__main__":
    main()
