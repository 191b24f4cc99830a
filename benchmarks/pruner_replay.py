"""Which pruner finds the better model per CPU-hour with --cv? Replayed on an unpruned study.

    python benchmarks/pruner_replay.py --storage sqlite:///RUNS/optuna.db --tracking-uri sqlite:///RUNS/mlflow.db \
        --study-name cv-wilcoxon [--json]

A study whose trials all ran every fold to the end (`--pruner none`, or `--pruner wilcoxon`
with K < 5 folds, which can never reach p < 0.1) holds each trial's whole learning curve per
fold in its MLflow fold runs. This replays those trials, in trial-number order, through
Optuna's own pruners exactly as a worker feeds them: the median pruner gets each epoch's
-val_loss (or val_accuracy) at step fold x epochs + epoch, the Wilcoxon pruner each fold's
value at step = fold. Where a pruner stops a trial, the replay charges the epochs trained so
far (each fold's measured train seconds, pro rata per epoch) and drops the trial's value.
It reports, per pruner, the CPU spent, the trials pruned, the best value found and how much
CPU it took to find it. The replay assumes the same trials would have been proposed, which
holds exactly for the sampler's random start-up trials (TPE's first 10) and approximately
after.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def curves(tracker, trial, signal: str) -> list[list[float]]:
    """Per fold, the epoch-by-epoch value the median pruner is given (higher is better)."""
    out = []
    for run_id in tracker.child_runs(trial.run_id, "bloodsearch.fold"):
        history = sorted(tracker.client.get_metric_history(run_id, signal), key=lambda m: m.step)
        out.append([-m.value if signal == "val_loss" else m.value for m in history])
    return out


def replay(trials: list[dict], make_pruner, epochs: int, per_epoch: bool) -> dict:
    import optuna

    study = optuna.create_study(direction="maximize", pruner=make_pruner())
    spent, found, outcomes = 0.0, [], []
    for t in trials:
        trial = study.ask()
        pruned = None
        for k, (curve, seconds, value) in enumerate(zip(t["curves"], t["fold_seconds"], t["fold_values"])):
            if per_epoch:
                for e, v in enumerate(curve):
                    trial.report(v, k * epochs + e)
                    if trial.should_prune():
                        pruned = (k, e + 1)
                        spent += seconds * (e + 1) / len(curve)
                        break
            else:
                spent += seconds
                trial.report(value, k)
                if trial.should_prune():
                    pruned = (k, len(curve))
            if pruned:
                break
            if per_epoch:
                spent += seconds
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            outcomes.append({"trial": t["number"], "pruned_at": f"fold {pruned[0]} epoch {pruned[1]}"})
        else:
            study.tell(trial, t["value"])
            found.append((spent, t["value"], t["number"]))
            outcomes.append({"trial": t["number"], "value": t["value"]})
    best = max(found, key=lambda f: f[1]) if found else None
    return {"cpu_h": round(spent / 3600, 3), "pruned": sum("pruned_at" in o for o in outcomes),
            "best_value": best[1] if best else None, "best_trial": best[2] if best else None,
            "cpu_h_to_best": round(next(s for s, v, _ in found if v == best[1]) / 3600, 3) if best else None,
            "trials": outcomes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", required=True)
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--study-name", required=True)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    import optuna

    from search.record import S, read_trials
    from search.results.study import open_existing, study_tracker

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    handle = open_existing(args.study_name, args.storage, args.tracking_uri)
    s, tracker = handle.settings, study_tracker(handle)
    signal = "val_loss" if s.metric == "log-loss" else "val_accuracy"
    trials = []
    for r in sorted(read_trials(handle.study, states=(S.COMPLETE,)), key=lambda r: r.number):
        fits = sorted(r.fits, key=lambda f: f.fold)
        trials.append({"number": r.number, "value": r.value, "curves": curves(tracker, r, signal),
                       "fold_seconds": [f.train_seconds for f in fits],
                       # what the Wilcoxon pruner is given per fold (search.metrics.objective)
                       "fold_values": [-f.scores()["log-loss"] if s.metric == "log-loss" else f.val_accuracy for f in fits]})
    pruners = {
        "none": (lambda: optuna.pruners.NopPruner(), False),
        "wilcoxon (p<0.1, after 2 folds)": (lambda: optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2), False),
        "median, 5 start-up trials (our default)": (lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2), True),
        "median, 3 start-up trials": (lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2), True),
        "median, 2 start-up trials": (lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2), True),
    }
    report = {"study": args.study_name, "folds": s.cv, "epochs": s.epochs, "signal": signal, "trials": len(trials),
              "pruners": {name: replay(trials, make, s.epochs, per_epoch) for name, (make, per_epoch) in pruners.items()}}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"{args.study_name}: {len(trials)} complete trials, {s.cv} folds, up to {s.epochs} epochs, signal {signal}")
    print("| pruner | CPU h | trials pruned | best value (trial) | CPU h until it was found |\n|---|---|---|---|---|")
    for name, r in report["pruners"].items():
        print(f"| {name} | {r['cpu_h']:.2f} | {r['pruned']} of {len(trials)} | {r['best_value']:.4f} ({r['best_trial']}) "
              f"| {r['cpu_h_to_best']:.2f} |")
    for name, r in report["pruners"].items():
        stops = [f"{o['trial']}: {o['pruned_at']}" for o in r["trials"] if "pruned_at" in o]
        print(f"{name}: pruned {', '.join(stops) or 'none'}")


if __name__ == "__main__":
    main()
