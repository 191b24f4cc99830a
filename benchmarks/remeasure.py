"""Re-measure known configurations on honest folds (issue 25, section 5): each configuration is
a one-trial study cross-validated on 3 folds grouped by the true source fields, then evaluated
once on TEST, whole and clean (without the TEST fields that overlap a TRAIN field). Prints, per
configuration, the validation criteria next to clean TEST, each criterion's gap to clean TEST,
and the Spearman correlation of each criterion with clean TEST. TEST is for diagnosis only.

    python benchmarks/remeasure.py run --data-dir ../shared/data/blood-cells/dataset2-master/images \
        --groups groups/public-blood-cells.csv --runs ~/bloodsearch-runs/remeasure    # 2 at a time, 1 thread each
    python benchmarks/remeasure.py report --runs ~/bloodsearch-runs/remeasure [--json]

`run` is resumable: a configuration whose study has its trial, or whose evaluation is on
disk, is not run again.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

T15 = {"depth": "4", "kernel": "3", "width": "0.5", "batch_norm": "true", "separable": "false", "pooling": "avg",
       "dropout": "0.43", "augment": "none", "mask": "none", "scaling": "pixel", "batch_size": "64",
       "learning_rate": "0.0031", "label_smoothing": "0.06", "weight_decay": "0.00031", "lr_schedule": "cosine"}
WINNER = {"depth": "3", "kernel": "5", "width": "1.0", "batch_norm": "true", "separable": "false", "pooling": "max",
          "dropout": "0.38", "augment": "flip", "mask": "none", "scaling": "channel", "batch_size": "128",
          "learning_rate": "0.00049", "label_smoothing": "0.02", "weight_decay": "0.0000088",
          "lr_schedule": "constant"}
# name -> (study, fixed parameters, what it is). The slowest first, so the two slots end together.
CONFIGS = {
    "study-fcn": ("seed-fcn", {"size": "60x80"}, "the study's FCN (kernel 2, width 1, channel scaling, Adam 1e-3, "
                                                 "batch 128, dropout 0.1) at 60x80"),
    "campaign-winner": ("fast", WINNER, "the 2026-11-30 campaign's winner (fast net, depth 3, kernel 5, flip)"),
    "fast-hb-15": ("fast", T15, "fast-hb trial 15 (fast net, depth 4, kernel 3, width 0.5, pixel scaling)"),
    "otsu": ("fast", {**T15, "mask": "otsu"}, "fast-hb trial 15 with an Otsu mask"),
    "fast-hb-15-flip": ("fast", {**T15, "augment": "flip"}, "fast-hb trial 15 with flip augmentation"),
}
COMMON = ["--cv", "3", "--metric", "log-loss", "--epochs", "20", "--patience", "5", "--threads", "1",
          "--trials", "1", "--seed", "0", "--quiet"]


def search(*args: str) -> list[str]:
    return [sys.executable, "-m", "search.cli", *args]


def stores(runs: Path) -> list[str]:
    return ["--storage", f"sqlite:///{runs / 'optuna.db'}"]


def run_one(name: str, args: argparse.Namespace) -> str:
    runs: Path = args.runs
    out = runs / f"eval-{name}.json"
    if out.exists():
        return f"{name}: done earlier"
    study, fixed, _ = CONFIGS[name]
    log = (runs / f"{name}.log").open("a")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    started = time.time()
    launch = search("launch", "--study", study, "--study-name", f"rm-{name}", "--data-dir", args.data_dir,
                    "--groups", args.groups, "--cache-dir", str(runs / "cache"), *stores(runs),
                    "--tracking-uri", f"sqlite:///{runs / 'mlflow.db'}", *COMMON,
                    *[a for k, v in fixed.items() for a in ("--param", f"{k}={v}")])
    done = subprocess.run(launch, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=runs)
    if done.returncode != 0:
        return f"{name}: launch failed ({done.returncode}), see {runs / (name + '.log')}"
    evaluated = subprocess.run(search("evaluate", "--study-name", f"rm-{name}", *stores(runs), "--cache-dir",
                                      str(runs / "cache"), "--json"), capture_output=True, text=True, env=env, cwd=runs)
    log.write(evaluated.stderr)
    if evaluated.returncode != 0:
        return f"{name}: evaluate failed, see {runs / (name + '.log')}"
    out.write_text(evaluated.stdout)
    return f"{name}: {time.time() - started:.0f} s"


def run(args: argparse.Namespace) -> None:
    args.runs.mkdir(parents=True, exist_ok=True)
    names = args.only or list(CONFIGS)
    with ThreadPoolExecutor(max_workers=args.slots) as pool:
        for line in pool.map(lambda n: run_one(n, args), names):
            print(line, flush=True)


def rows(runs: Path) -> list[dict]:
    import optuna

    from search.record import read_trials

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = []
    for name, (_, _, what) in CONFIGS.items():
        path = runs / f"eval-{name}.json"
        if not path.exists():
            continue
        study = optuna.load_study(study_name=f"rm-{name}", storage=f"sqlite:///{runs / 'optuna.db'}")
        record = next(r for r in read_trials(study) if r.fits)
        test = json.loads(path.read_text())["splits"]["TEST"]
        clean = test["clean"]
        n = len(record.fits)
        out.append({
            "config": name, "what": what,
            "cv_log_loss": sum(f.scores()["log-loss"] for f in record.fits) / n,
            "cv_accuracy": sum(f.val_accuracy for f in record.fits) / n,
            "cv_group_accuracy": sum(f.val_group_accuracy for f in record.fits) / n,
            "fold_accuracies": [round(f.val_accuracy, 4) for f in record.fits],
            "test_accuracy": test["accuracy"], "test_ci95": test["accuracy_ci95"],
            "test_clean_accuracy": clean["accuracy"], "test_clean_ci95": clean["accuracy_ci95"],
            "test_clean_log_loss": clean["log_loss"], "test_clean_group_accuracy": clean["groups"]["group_accuracy"],
            "test_clean_images": clean["images"], "excluded_groups": clean["excluded_groups"],
            "cpu_seconds": record.train_seconds,
        })
    return out


def spearman(rows_: list[dict], key: str, higher_is_better: bool) -> float | None:
    from scipy.stats import spearmanr

    if len(rows_) < 3:
        return None
    sign = 1 if higher_is_better else -1
    rho = spearmanr([sign * r[key] for r in rows_], [r["test_clean_accuracy"] for r in rows_]).statistic
    return round(float(rho), 3)


def report(args: argparse.Namespace) -> None:
    table = rows(args.runs)
    criteria = {"cv_log_loss": False, "cv_accuracy": True, "cv_group_accuracy": True}
    summary = {"rows": table, "spearman_vs_clean_test": {k: spearman(table, k, hi) for k, hi in criteria.items()},
               "gap_cv_accuracy_minus_clean_test": [round(r["cv_accuracy"] - r["test_clean_accuracy"], 4)
                                                     for r in table]}
    if args.json:
        print(json.dumps(summary, indent=1))
        return
    print("| configuration | CV log-loss | CV accuracy (folds) | CV per-group | TEST | clean TEST [95% over groups] "
          "| clean TEST log-loss | gap CV − clean TEST | training CPU s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in table:
        lo, hi = r["test_clean_ci95"]
        print(f"| {r['config']} | {r['cv_log_loss']:.3f} | {r['cv_accuracy']:.3f} ({', '.join(f'{a:.2f}' for a in r['fold_accuracies'])}) "
              f"| {r['cv_group_accuracy']:.3f} | {r['test_accuracy']:.3f} | {r['test_clean_accuracy']:.3f} "
              f"[{lo:.3f}, {hi:.3f}] | {r['test_clean_log_loss']:.3f} | {r['cv_accuracy'] - r['test_clean_accuracy']:+.3f} "
              f"| {r['cpu_seconds']:.0f} |")
    print()
    for key, rho in summary["spearman_vs_clean_test"].items():
        print(f"Spearman of {key} (sign: +1 ranks as clean TEST does) against clean TEST accuracy over "
              f"{len(table)} configurations: {rho}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data-dir", required=True)
    r.add_argument("--groups", required=True)
    r.add_argument("--runs", type=lambda p: Path(p).expanduser().resolve(), required=True)
    r.add_argument("--slots", type=int, default=2, help="Configurations trained at once (one core each).")
    r.add_argument("--only", nargs="*", choices=list(CONFIGS))
    p = sub.add_parser("report")
    p.add_argument("--runs", type=lambda p: Path(p).expanduser().resolve(), required=True)
    p.add_argument("--json", action="store_true")
    args = parser.parse_args()
    (run if args.command == "run" else report)(args)


if __name__ == "__main__":
    main()
