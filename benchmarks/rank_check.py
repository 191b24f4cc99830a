"""Does the search's objective rank trials as TEST does? Diagnosis only: TEST never chooses.

    python benchmarks/rank_check.py --storage sqlite:///RUNS/optuna.db --tracking-uri sqlite:///RUNS/mlflow.db \
        --study-name camp-median --study-name camp-wilcoxon --cache-dir RUNS/cache --out RUNS/rank-check.json

For every complete cross-validated trial of the studies (all of them, or --max spread evenly over
each study's ranking), it loads the K fold models from MLflow and predicts TEST once per model,
without and with flip TTA, then reports TEST image and per-group accuracy of fold 0's model and
of the bag of K, and the Spearman rank correlation between TEST accuracy and each validation
criterion the trial recorded: the cross-validated mean of log-loss, accuracy and per-group
accuracy (the CV value), and fold 0's own (a single validation split, as a study without --cv
would have had). Correlations are given over all trials and within each model family. Nothing
is logged to MLflow (that is `search evaluate`'s job) and results are kept per trial in --out,
so an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CRITERIA = {  # name -> (how to read it from a trial's fold results, higher is better?)
    "cv_log_loss": (lambda fits: sum(f.scores()["log-loss"] for f in fits) / len(fits), False),
    "cv_accuracy": (lambda fits: sum(f.val_accuracy for f in fits) / len(fits), True),
    "cv_group_accuracy": (lambda fits: sum(f.val_group_accuracy for f in fits) / len(fits), True),
    "fold0_log_loss": (lambda fits: fits[0].scores()["log-loss"], False),
    "fold0_accuracy": (lambda fits: fits[0].val_accuracy, True),
}


def family(params: dict) -> str:
    return str(params.get("family", "all"))


def evaluate(handle, trial, tracker, cache_dir: str | None) -> dict:
    """TEST accuracy of fold 0's model and of the bag, each without and with flip TTA."""
    import numpy as np

    from models.combine import with_tta
    from preprocessing import load_dataset
    from preprocessing.cache import build_cache
    from search.results.evaluation import predict_split, probs_report
    from search.serving.predictor import from_trial, member_models

    predictor = from_trial(handle, trial, tracker, cache_dir, whole=False)
    members, _ = member_models(trial, tracker)
    data = load_dataset(handle.settings.data_dir, record_dir=cache_dir, grouping=handle.settings.grouping())
    out = {}
    for name in ("TEST", "TEST_SIMPLE"):
        split = data.splits[name]
        cache = build_cache(split, predictor.config.preprocess, cache_dir)
        for tta in ("none", "flip"):
            runs = [predict_split(with_tta(m, tta), cache) for m in members]
            idx = runs[0][0]
            fold0 = probs_report(split, idx, runs[0][1], predictor.classes)
            bag = probs_report(split, idx, np.mean([p for _, p in runs], axis=0), predictor.classes)
            suffix = "" if tta == "none" else "_tta"
            key = name.lower()
            out[f"{key}_fold0{suffix}"] = fold0["accuracy"]
            out[f"{key}_bag{suffix}"] = bag["accuracy"]
            out[f"{key}_bag_cells{suffix}"] = bag["groups"]["group_accuracy"]
    return out


def spread_pick(records: list, k: int | None) -> list:
    """k trials spread evenly over the ranking (best and worst included), or all of them."""
    if not k or k >= len(records):
        return records
    step = (len(records) - 1) / (k - 1)
    return [records[round(i * step)] for i in range(k)]


def correlations(rows: list[dict], target: str) -> dict:
    from scipy.stats import spearmanr

    out = {}
    for name, (_, higher) in CRITERIA.items():
        xs = [r[name] if higher else -r[name] for r in rows]
        ys = [r[target] for r in rows]
        rho = spearmanr(xs, ys).statistic if len(rows) > 2 else float("nan")
        out[name] = round(float(rho), 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", required=True)
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--study-name", action="append", required=True)
    p.add_argument("--cache-dir")
    p.add_argument("--max", type=int, help="trials per study, spread over its ranking [default: all complete]")
    p.add_argument("--out", required=True, help="JSON file of per-trial results (resumed if it exists)")
    args = p.parse_args()

    import tensorflow as tf

    from search.record import S, ranked, read_trials
    from search.results.study import open_existing, study_tracker

    tf.get_logger().setLevel("ERROR")  # a retracing notice per fold model

    out = Path(args.out)
    done = json.loads(out.read_text()) if out.exists() else {}
    rows = []
    for study_name in args.study_name:
        handle = open_existing(study_name, args.storage, args.tracking_uri)
        tracker = study_tracker(handle)
        complete = [r for r in ranked(read_trials(handle.study, states=(S.COMPLETE,))) if r.cv]
        for trial in spread_pick(complete, args.max):
            key = f"{study_name}/{trial.number}"
            if key not in done:
                print(f"evaluating {key} ({family(trial.params)})", file=sys.stderr, flush=True)
                done[key] = evaluate(handle, trial, tracker, args.cache_dir)
                out.write_text(json.dumps(done, indent=1))
            fits = sorted(trial.fits, key=lambda f: f.fold)
            rows.append({"trial": key, "family": family(trial.params), "value": trial.value,
                         **{name: round(read(fits), 4) for name, (read, _) in CRITERIA.items()},
                         "cpu_s": round(sum(f.train_seconds for f in fits)), **done[key]})
    report = {"trials": rows, "spearman": {}}
    families = sorted({r["family"] for r in rows})
    for group in ["all", *families] if len(families) > 1 else ["all"]:
        chosen = [r for r in rows if group == "all" or r["family"] == group]
        report["spearman"][group] = {"n": len(chosen),
                                     "vs_test_bag_tta": correlations(chosen, "test_bag_tta"),
                                     "vs_test_bag": correlations(chosen, "test_bag"),
                                     "vs_test_fold0": correlations(chosen, "test_fold0")}
    print(json.dumps(report, indent=1))
    cols = ["trial", "family", "cv_log_loss", "cv_accuracy", "fold0_accuracy", "test_fold0", "test_fold0_tta",
            "test_bag", "test_bag_tta", "test_bag_cells_tta", "test_simple_bag_tta", "cpu_s"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in sorted(rows, key=lambda r: r["cv_log_loss"]):
        print("| " + " | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
