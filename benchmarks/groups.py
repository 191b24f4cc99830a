"""`search data groups` on the public set: how long it takes and how right it is.

    python benchmarks/groups.py --data-dir ../shared/data/blood-cells/dataset2-master/images \
        --sources ../shared/data/blood-cells/dataset-master/Original_Images --workers 2

runs the command twice (with --sources, then without) into --out-dir and prints the wall
time and images/s of each, then checks the with-sources groups (no ground-truth file exists;
these stand in for one) and how far the groups found without sources agree with them.
--reuse skips a run whose CSV is already in --out-dir. Not a timed test: it prints numbers.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # servicetools: local PostgreSQL and MLflow servers

# Fields the issue names as showing the same white cell in TEST and TRAIN (TEST, TRAIN).
TEST_TRAIN_PAIRS = [("BloodImage_00257", "BloodImage_00230"), ("BloodImage_00204", "BloodImage_00277"),
                    ("BloodImage_00264", "BloodImage_00224"), ("BloodImage_00365", "BloodImage_00408")]
# Two TEST_SIMPLE files with the same pixels.
DUPLICATES = ("TEST_SIMPLE/EOSINOPHIL/_0_5239.jpeg", "TEST_SIMPLE/EOSINOPHIL/_4_8814.jpeg")
EXPECTED_FIELDS = {"TRAIN": 277, "TEST": 71, "TEST_SIMPLE": 69}


def run_groups(data_dir: str, sources: str | None, out: Path, workers: int) -> dict:
    from servicetools import search_cmd

    args = ["data", "groups", "--data-dir", data_dir, "--out", str(out), "--report", str(out.with_suffix("")) + "-report",
            "--workers", str(workers)] + (["--sources", sources] if sources else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # The machine is shared: CPU seconds (the command's and its workers') and the load
    # average say how much of the wall time was this command's own.
    before, load_before, start = resource.getrusage(resource.RUSAGE_CHILDREN), os.getloadavg()[0], time.monotonic()
    done = subprocess.run(search_cmd(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seconds, after = time.monotonic() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"search data groups failed ({done.returncode}):\n{done.stdout}")
    run = {"wall_s": round(seconds, 1),
           "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
           "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
           "output": done.stdout.strip().splitlines()}
    out.with_suffix(".run.json").write_text(json.dumps(run))
    return run


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_labels(path: Path) -> dict[str, set[str]]:
    """labels.csv: row `,N,"CAT[, CAT]"` -> {BloodImage_0000N: {CAT, ...}}."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    return {f"BloodImage_{int(r[1]):05d}": {c.strip() for c in r[2].split(",") if c.strip()} for r in rows if len(r) >= 3}


def split_of(path: str) -> str:
    return path.split("/")[0]


def source_checks(rows: list[dict], report: dict, labels: dict[str, set[str]]) -> dict:
    """What stands in for a ground truth: labels.csv agrees with the class folders, the
    duplicates share a group, each split covers the fields it should, the named TEST/TRAIN
    pairs are merged."""
    matched = [r for r in rows if r["source"]]
    agree = sum(r["path"].split("/")[-2] in labels.get(r["source"], set()) for r in matched)
    unlabelled = sum(not labels.get(r["source"]) for r in matched)
    groups = {r["path"]: r["group"] for r in rows}
    per_split_sources, per_split_groups = defaultdict(set), defaultdict(set)
    for r in matched:
        per_split_sources[split_of(r["path"])].add(r["source"])
        per_split_groups[split_of(r["path"])].add(r["group"])
    source_group = {r["source"]: r["group"] for r in matched}
    # A field with a handful of copies in TRAIN or TEST (~35 each) is a copy matched to an
    # overlapping neighbour; TEST_SIMPLE holds one copy per field anyway.
    minor = {split: sorted(s for s, n in Counter(r["source"] for r in matched if split_of(r["path"]) == split).items()
                           if n <= 3) for split in ("TRAIN", "TEST")}
    return {
        "images": len(rows),
        "unmatched": len(report["unmatched"]),
        "label_agrees": agree, "label_disagrees": len(matched) - agree - unlabelled, "unlabelled": unlabelled,
        "duplicates_share_group": groups.get(DUPLICATES[0]) == groups.get(DUPLICATES[1]),
        "fields_per_split": {s: len(v) for s, v in sorted(per_split_sources.items())},
        "expected_fields": EXPECTED_FIELDS,
        "fields_with_3_or_fewer_images": minor,
        "groups_per_split": {s: len(v) for s, v in sorted(per_split_groups.items())},
        "groups": len(set(groups.values())),
        "overlap_pairs": len(report["overlaps"]),
        "merged_clusters": len(report["merged"]), "merged_fields": sum(map(len, report["merged"])),
        "test_train_pairs_merged": {f"{a}/{b}": _same_group(a, b, source_group, report) for a, b in TEST_TRAIN_PAIRS},
        "groups_in_train_and_test": sorted(g["group"] for g in report["groups_across_splits"]
                                           if "TRAIN" in g["images"] and "TEST" in g["images"]),
        "groups_in_two_classes": len(report["groups_across_classes"]),
    }


def _same_group(a: str, b: str, source_group: dict[str, str], report: dict) -> bool:
    if a in source_group and b in source_group:
        return source_group[a] == source_group[b]
    return any(a in cluster and b in cluster for cluster in report["merged"])


def agreement(found: list[str], truth: list[str]) -> dict:
    """How far one partition of the images (found) agrees with another (truth)."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score
    from sklearn.metrics.cluster import contingency_matrix

    table = contingency_matrix(truth, found, sparse=True).tocsr()
    pairs = lambda counts: float((counts * (counts - 1) / 2).sum())  # noqa: E731
    together = pairs(table.data)
    found_pairs = pairs(np.asarray(table.sum(axis=0)).ravel())
    true_pairs = pairs(np.asarray(table.sum(axis=1)).ravel())
    dense = table.toarray()
    rows, cols = linear_sum_assignment(-dense)  # each true group to one found group at most
    majority = dense.max(axis=0)  # images of each found group in its most common true group
    return {
        "adjusted_rand_index": round(float(adjusted_rand_score(truth, found)), 4),
        "pair_precision": round(together / found_pairs, 4) if found_pairs else 1.0,
        "pair_recall": round(together / true_pairs, 4) if true_pairs else 1.0,
        # An image agrees when its found group is the one its true group is paired with
        # (one-to-one, most images): a split or a merge costs the smaller part.
        "images_agreeing_one_to_one": round(float(dense[rows, cols].sum()) / len(truth), 4),
        # The weaker measure: the found group's most common true group is the image's own.
        "images_in_majority_group": round(float(majority.sum()) / len(truth), 4),
        "found_groups": int(dense.shape[1]), "true_groups": int(dense.shape[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--sources", required=True)
    parser.add_argument("--labels", help="labels.csv [default: beside --sources' folder]")
    parser.add_argument("--out-dir", default="groups-benchmark")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reuse", action="store_true", help="Skip a run whose CSV is already in --out-dir.")
    parser.add_argument("--skip-images", action="store_true", help="Only the run with --sources.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = read_labels(Path(args.labels) if args.labels else Path(args.sources).parent / "labels.csv")
    result: dict = {"machine": f"{os.cpu_count()} CPUs", "workers": args.workers}
    runs = [("sources", args.sources)] + ([] if args.skip_images else [("images", None)])
    for name, sources in runs:
        csv_path = out / f"groups-{name}.csv"
        if args.reuse and csv_path.exists():
            saved = csv_path.with_suffix(".run.json")
            run = {**(json.loads(saved.read_text()) if saved.exists() else {}), "reused": True}
        else:
            run = run_groups(args.data_dir, sources, csv_path, args.workers)
        rows = read_rows(csv_path)
        report = json.loads((out / f"groups-{name}-report" / "groups.json").read_text())
        run["images_per_s"] = round(len(rows) / run["wall_s"], 1) if run.get("wall_s") else None
        run["stage_s"] = report["seconds"]
        result[name] = run
        if name == "sources":
            result["checks"] = source_checks(rows, report, labels)
            truth = {r["path"]: r["group"] for r in rows}
        else:
            found = {r["path"]: r["group"] for r in rows}
            paths = sorted(truth)
            result["agreement_with_sources"] = agreement([found[p] for p in paths], [truth[p] for p in paths])
            result["images_unmatched"] = len(report["unmatched"])
            result["images_merged_clusters"] = len(report["merged"])
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for key, value in result.items():
        print(f"{key}: {json.dumps(value)}")


if __name__ == "__main__":
    main()
