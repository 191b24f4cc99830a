"""The campaign's report (issues 25 section 5 and 26 part 5): every finished trial of a
cross-validated study evaluated once on TEST, whole and clean (without the TEST fields that
overlap a TRAIN field), beside its validation criteria; the Spearman correlation of each
criterion with clean TEST; the replications of the winner and the baseline; `results.json`.
TEST is for diagnosis only: the winner is the objective's, whatever TEST says.

    python benchmarks/campaign.py evaluate --runs ~/bloodsearch-runs/campaign-2026-12 --study-name campaign-honest
    python benchmarks/campaign.py report --runs ~/bloodsearch-runs/campaign-2026-12 --study-name campaign-honest \
        [--replicates winner=rep-winner.json:60x80 --replicates baseline=rep-baseline.json:60x80] [--results docs/.../results.json]
        [--earlier docs/campaigns/2026-12/results-campaign-honest.json]  # a warm-started study: the copied
        # trials' rows, and the earlier study's replications of a copied winner or baseline
        [--recorded docs/campaigns/2026-12/recorded-warmup-2.json]  # trials whose models were lost with
        # their store: the TEST figures an earlier report printed
    python benchmarks/campaign.py pool docs/campaigns/2026-12/results-*.json docs/campaigns/2026-12/recorded-honest-folds.json
        # the rank check over every complete trial of several studies trained on the same folds

`evaluate` is resumable (a trial whose eval-<n>.json exists is skipped). The runs folder holds
the study's stores: optuna.db, mlflow.db and the image cache.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


STORAGE: str | None = None  # --storage; default the runs folder's optuna.db


def _storage(runs: Path) -> str:
    return STORAGE or f"sqlite:///{runs / 'optuna.db'}"


def _study(runs: Path, name: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=_storage(runs))


def finished(runs: Path, name: str) -> list:
    from search.record import S, read_trials

    return [r for r in read_trials(_study(runs, name)) if r.state == S.COMPLETE and r.fits]


def evaluate(args: argparse.Namespace) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    for record in finished(args.runs, args.study_name):
        out = args.runs / f"eval-{record.number}.json"
        if out.exists():
            continue
        done = subprocess.run([sys.executable, "-m", "search.cli", "evaluate", "--study-name", args.study_name,
                               "--trial", str(record.number), "--storage", _storage(args.runs), "--cache-dir",
                               str(args.runs / "cache"), "--json"], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            print(f"trial {record.number}: evaluate failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        out.write_text(done.stdout)
        print(f"trial {record.number}: evaluated", flush=True)


def _test_figures(path: Path) -> dict:
    test = json.loads(path.read_text())["splits"]["TEST"]
    clean = test["clean"]
    return {"test_accuracy": test["accuracy"], "test_clean_accuracy": clean["accuracy"],
            "test_clean_ci95": clean["accuracy_ci95"], "test_clean_log_loss": clean["log_loss"],
            "test_clean_group_accuracy": clean["groups"]["group_accuracy"]}


def rows(runs: Path, name: str, earlier: dict[int, dict] | None = None,
         recorded: dict[int, dict] | None = None) -> list[dict]:
    """A row per complete trial evaluated on TEST. earlier: the rows of the study a warm start
    copied trials from (its results.json), by trial number there: a copied trial keeps its
    figures, measured once, with no model to evaluate again. recorded: TEST figures of this
    study's own trials, by trial number, that an earlier report printed before the store
    holding their models was lost (--recorded)."""
    out = []
    for r in finished(runs, name):
        path = runs / f"eval-{r.number}.json"
        if path.exists():
            figures = _test_figures(path)
        elif recorded and r.number in recorded:
            figures = {**recorded[r.number], "test_recorded": True}
        else:
            if r.warm_start and earlier and r.warm_start["trial"] in earlier:
                out.append({**earlier[r.warm_start["trial"]], "trial": r.number,
                            "from": f"{r.warm_start['study']} trial {r.warm_start['trial']}"})
            continue
        c = r.config
        out.append({
            "trial": r.number, "baseline": r.enqueued,
            "what": (f"{c.model.arch} {c.preprocess.size_text} depth {len(c.model.kernels)} kernel "
                     f"{c.model.kernels[0]} width {c.model.width} {c.preprocess.scaling} mask {c.preprocess.mask} "
                     f"aug {getattr(c.model, 'augment', 'none')} batch {c.batch_size} lr {c.learning_rate:.2g}"),
            "cv_log_loss": r.mean_score("log-loss"), "cv_accuracy": r.mean_score("accuracy"),
            "cv_group_accuracy": r.mean_score("group-accuracy"),
            "fold_accuracies": [round(f.val_accuracy, 4) for f in r.fits], **figures,
            "cpu_seconds": r.train_seconds,
            **({"from": f"{r.warm_start['study']} trial {r.warm_start['trial']}"} if r.warm_start else {}),
        })
    return out


def spearman(table: list[dict], key: str, higher_is_better: bool) -> float | None:
    from scipy.stats import spearmanr

    if len(table) < 3:
        return None
    sign = 1 if higher_is_better else -1
    return round(float(spearmanr([sign * r[key] for r in table], [r["test_clean_accuracy"] for r in table]).statistic), 3)


def spearman_ci(table: list[dict], key: str, higher_is_better: bool) -> tuple[float, float] | None:
    """A 95% percentile bootstrap interval of spearman(), trials resampled in pairs: how far
    the rank check itself can be trusted with this many trials."""
    from scipy.stats import bootstrap, spearmanr

    if len(table) < 5:
        return None
    sign = 1 if higher_is_better else -1
    x = [sign * r[key] for r in table]
    y = [r["test_clean_accuracy"] for r in table]
    ci = bootstrap((x, y), lambda a, b: spearmanr(a, b).statistic, paired=True, vectorized=False,
                   n_resamples=2000, method="percentile", random_state=0).confidence_interval
    return round(float(ci.low), 2), round(float(ci.high), 2)


def replicate_summary(path: Path, resolution: str, own: float | None = None) -> dict:
    """`search replicate --json`'s per-seed clean TEST accuracies, their mean and spread; own:
    the campaign's own training of the same configuration on the same folds (another seed),
    counted first."""
    data = json.loads(path.read_text())
    seeds = [s for s in data["seeds"] if s.get("test_clean_accuracy") is not None]
    return summary(([own] if own is not None else []) + [s["test_clean_accuracy"] for s in seeds], resolution)


def summary(values: list[float], resolution: str) -> dict:
    import statistics

    return {"test_clean_mean": round(statistics.mean(values), 4),
            "test_clean_std": round(statistics.stdev(values), 4) if len(values) > 1 else None,
            "test_clean": [round(v, 4) for v in values], "seeds": len(values),
            "resolution": resolution}


def carried(role: str, row: dict, earlier_results: dict | None) -> dict | None:
    """The earlier study's replications of the same trial in the same role (winner or
    baseline), if it measured them: a copied trial is not trained again to be replicated."""
    measured = (earlier_results or {}).get(role)
    if not measured or (measured.get("seeds") or 1) < 2 or row.get("from") != f"{earlier_results['study']} trial {measured['trial']}":
        return None
    return {**measured, "trial": row["trial"],
            "source": f"{measured['source']} (measured in {earlier_results['study']}, as its trial {measured['trial']})"}


def report(args: argparse.Namespace) -> None:
    earlier, earlier_results = None, None
    if args.earlier:
        earlier_results = json.loads(args.earlier.read_text())
        earlier = {r["trial"]: r for r in earlier_results["trials"]}
    recorded, data = None, {}
    if args.recorded:
        data = json.loads(args.recorded.read_text())
        if data["study"] != args.study_name:
            raise SystemExit(f"--recorded {args.recorded}: figures of study {data['study']}, not {args.study_name}")
        recorded = {int(n): figures for n, figures in data.get("trials", {}).items()}
    table = rows(args.runs, args.study_name, earlier, recorded)
    criteria = {"cv_log_loss": False, "cv_accuracy": True, "cv_group_accuracy": True}
    rho = {k: spearman(table, k, hi) for k, hi in criteria.items()}
    print("| trial | configuration | CV log-loss (objective) | CV accuracy (folds) | CV per-group | TEST "
          "| clean TEST [95% over groups] | clean per-group | gap CV acc − clean TEST | training CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(table, key=lambda r: r["cv_log_loss"]):
        lo, hi = r["test_clean_ci95"]
        mark = f" (baseline: {r['baseline']})" if r["baseline"] else ""
        mark += f" ({r['from']})" if r.get("from") else ""
        mark += " (TEST as recorded before its models were lost)" if r.get("test_recorded") else ""
        print(f"| {r['trial']}{mark} | {r['what']} | {r['cv_log_loss']:.3f} | {r['cv_accuracy']:.3f} "
              f"({', '.join(f'{a:.2f}' for a in r['fold_accuracies'])}) | {r['cv_group_accuracy']:.3f} "
              f"| {r['test_accuracy']:.3f} | {r['test_clean_accuracy']:.3f} [{lo:.3f}, {hi:.3f}] "
              f"| {r['test_clean_group_accuracy']:.3f} | {r['cv_accuracy'] - r['test_clean_accuracy']:+.3f} "
              f"| {r['cpu_seconds']:.0f} |")
    print()
    for key, value in rho.items():
        print(f"Spearman of {key} (signed so +1 ranks as clean TEST does) against clean TEST accuracy over "
              f"{len(table)} trials: {value} (95% bootstrap interval {spearman_ci(table, key, criteria[key])})")
    training = sum(r.train_seconds or 0 for r in finished(args.runs, args.study_name) if not r.warm_start) / 3600
    # Every trial's wall time, pruned ones too: with --threads 1 each is one core busy.
    from search.record import COUNTED, read_trials

    cpu = sum((t.completed - t.started).total_seconds() for t in read_trials(_study(args.runs, args.study_name))
              if t.state in COUNTED and t.started and t.completed and not t.warm_start) / 3600
    print(f"core-hours of this study's own finished trials (pruned ones too, one core each; not those a warm "
          f"start copied): {cpu:.2f}; of which Keras fit in its complete trials: {training:.2f}")
    results = {"study": args.study_name, "trials": table, "spearman_clean": {"value": rho["cv_log_loss"],
                                                                            "trials": len(table)},
               "spearman_clean_by_criterion": rho, "cpu_hours": round(cpu, 2),
               "fit_hours_complete_trials": round(training, 2)}
    # Without replications, the winner (the objective's best) and the baseline (the fixed
    # study enqueued first) stand on the campaign's own single training each.
    chosen: dict[str, dict] = {}
    if table:
        winner = min(table, key=lambda r: r["cv_log_loss"])
        baseline = next((r for r in table if r["baseline"] and not r["baseline"].startswith("--")), None)
        for role, row in (("winner", winner), ("baseline", baseline)):
            if row is not None:
                chosen[role] = row
                results[role] = carried(role, row, earlier_results) or {
                    "trial": row["trial"], "test_clean_mean": round(row["test_clean_accuracy"], 4),
                    "test_clean_std": None, "seeds": 1, "resolution": row["what"].split()[1],
                    "source": "the campaign's own training (one seed)"}
    # A study whose trials are all --enqueue'd or searched has no baseline of its own: the
    # study's configuration, measured on the same folds by another study, is --recorded.
    if "baseline" not in results and "baseline" in data:
        base = data["baseline"]
        results["baseline"] = {**summary(base["test_clean"], base["resolution"]), "source": base["source"]}
    # A replication measured here supersedes one carried from the earlier study (the shipped
    # model may have changed since): the trial's own training, then this one's seeds.
    for item in args.replicates:
        role, _, rest = item.partition("=")
        file, _, resolution = rest.partition(":")
        row = chosen.get(role)
        results[role] = replicate_summary(args.runs / file, resolution, row["test_clean_accuracy"] if row else None)
        if row:
            trained = f" (trained as {row['from']})" if row.get("from") else ""
            results[role]["trial"] = row["trial"]
            results[role]["source"] = (f"the campaign's own training{trained} and {results[role]['seeds'] - 1} seeds "
                                       f"of `search replicate` of trial {row['trial']} on the same folds")
        print(f"{role}: {results[role]}")
    if args.results:
        args.results.write_text(json.dumps(results, indent=1) + "\n")


def pool(args: argparse.Namespace) -> None:
    """One rank check over the complete trials of several studies on the same folds, objective
    and epochs: a campaign on this machine finishes too few trials for one of its own. Each
    file is a results.json (its study's trials) or a list of trials that name their study."""
    table, seen = [], set()
    for path in args.files:
        data = json.loads(path.read_text())
        for row in data["trials"]:
            if row.get("from"):
                continue  # a warm-started copy: counted in the study it ran in
            key = (row.get("study") or data["study"], row["trial"])
            if key in seen:
                raise SystemExit(f"{path}: {key[0]} trial {key[1]} is in two of the files")
            seen.add(key)
            table.append({**row, "study": key[0]})
    print("| study | trial | configuration | CV log-loss (objective) | clean TEST |")
    print("|---|---|---|---|---|")
    for r in sorted(table, key=lambda r: r["cv_log_loss"]):
        print(f"| {r['study']} | {r['trial']} | {r['what']} | {r['cv_log_loss']:.3f} | {r['test_clean_accuracy']:.3f} |")
    studies = sorted({r["study"] for r in table})
    print(f"\nSpearman of CV log-loss (signed so +1 ranks as clean TEST does) against clean TEST accuracy over "
          f"{len(table)} trials of {len(studies)} studies ({', '.join(studies)}): {spearman(table, 'cv_log_loss', False)} "
          f"(95% bootstrap interval {spearman_ci(table, 'cv_log_loss', False)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("evaluate", "report"):
        p = sub.add_parser(command)
        p.add_argument("--runs", type=lambda v: Path(v).expanduser().resolve(), required=True)
        p.add_argument("--study-name", required=True)
        p.add_argument("--storage", help="The study's storage URL. [default: sqlite:///RUNS/optuna.db]")
        if command == "report":
            p.add_argument("--replicates", action="append", default=[], metavar="ROLE=FILE:SIZE",
                           help="A `search replicate --json` output in --runs and its resolution, as winner= or "
                                "baseline=.")
            p.add_argument("--results", type=Path, help="Write results.json here.")
            p.add_argument("--recorded", type=Path, help="TEST figures of this study's trials whose models were "
                                                          "lost, as an earlier report printed them (JSON).")
            p.add_argument("--earlier", type=Path, help="The results.json of the study a warm start copied trials "
                                                        "from: their rows, measured there.")
    p = sub.add_parser("pool", help="one rank check over several studies' complete trials on the same folds")
    p.add_argument("files", nargs="+", type=Path, help="results.json files, and lists of recorded trials")
    args = parser.parse_args()
    if args.command == "pool":
        return pool(args)
    global STORAGE
    STORAGE = args.storage
    (evaluate if args.command == "evaluate" else report)(args)


if __name__ == "__main__":
    main()
