"""Which pruner finds the better model per CPU-hour with --cv? Two studies, one pruner each.

    python benchmarks/pruner_check.py --storage sqlite:///RUNS/optuna.db \
        --study-name camp-median --study-name camp-wilcoxon

Made for two studies launched alike (same space, --seed, sampler seed, one worker of one
thread each, side by side): then trial n has the same parameters and the same training seed in
both, so each decision of one study's pruner can be checked against the other study's outcome
for the very same configuration. Prints, per study, what it spent (folds and epochs trained,
train seconds) and the best value it had after each quarter of the common wall time, and, per
paired trial, the state and value in each study.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timeline(study) -> dict:
    from search.record import S, read_trials

    records = [r for r in read_trials(study) if r.state in (S.COMPLETE, S.PRUNED) and r.completed and r.started]
    if not records:
        return {"trials": [], "start": None}
    start = min(r.started for r in read_trials(study) if r.started)
    rows = []
    for r in sorted(records, key=lambda r: r.completed):
        rows.append({"trial": r.number, "state": r.state.name, "value": r.value,
                     "folds": len(r.fits), "epochs": sum(f.epochs_run for f in r.fits),
                     "train_s": round(sum(f.train_seconds for f in r.fits)),
                     "done_at_s": round((r.completed - start).total_seconds()),
                     "params": r.params})
    return {"trials": rows, "start": start}


def best_at(rows: list[dict], t: float) -> float | None:
    values = [r["value"] for r in rows if r["state"] == "COMPLETE" and r["done_at_s"] <= t and r["value"] is not None]
    return max(values) if values else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", required=True)
    p.add_argument("--study-name", action="append", required=True)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = {name: timeline(optuna.load_study(study_name=name, storage=args.storage)) for name in args.study_name}
    horizon = min(max((r["done_at_s"] for r in s["trials"]), default=0) for s in studies.values())
    summary = {}
    for name, s in studies.items():
        rows = [r for r in s["trials"] if r["done_at_s"] <= horizon]
        summary[name] = {
            "finished": len(rows), "complete": sum(r["state"] == "COMPLETE" for r in rows),
            "pruned": sum(r["state"] == "PRUNED" for r in rows), "folds": sum(r["folds"] for r in rows),
            "epochs": sum(r["epochs"] for r in rows), "train_s": sum(r["train_s"] for r in rows),
            "best_at": {f"{q}/4": best_at(rows, horizon * q / 4) for q in (1, 2, 3, 4)}}
    pairs = []
    by_name = {name: {r["trial"]: r for r in s["trials"]} for name, s in studies.items()}
    common = sorted(set.intersection(*(set(t) for t in by_name.values())))
    for n in common:
        rows = [by_name[name][n] for name in args.study_name]
        same = all(r["params"] == rows[0]["params"] for r in rows)
        pairs.append({"trial": n, "same_params": same, "family": rows[0]["params"].get("family"),
                      **{name: {"state": r["state"], "value": r["value"], "folds": r["folds"]}
                         for name, r in zip(args.study_name, rows)}})
    report = {"horizon_s": horizon, "summary": summary, "pairs": pairs}
    if args.json:
        print(json.dumps(report, indent=1, default=str))
        return
    print(f"common horizon: {horizon} s (the earlier of the two studies' last finished trial)")
    for name, s in summary.items():
        best = ", ".join(f"{q}: {v:.4f}" if v is not None else f"{q}: -" for q, v in s["best_at"].items())
        print(f"{name}: {s['finished']} finished ({s['complete']} complete, {s['pruned']} pruned), {s['folds']} folds, "
              f"{s['epochs']} epochs, {s['train_s']} train s; best by quarter of the horizon: {best}")
    for pair in pairs:
        cells = "  ".join(f"{name}: {pair[name]['state']} {pair[name]['value'] if pair[name]['value'] is None else round(pair[name]['value'], 4)} "
                          f"({pair[name]['folds']} folds)" for name in args.study_name)
        print(f"trial {pair['trial']:>2} {pair['family'] or '':<5}{'' if pair['same_params'] else ' (params differ)'}  {cells}")


if __name__ == "__main__":
    main()
