"""`search ensemble`: many good trials made into one better model.

Greedy ensemble selection with replacement (Caruana et al. 2004, as auto-sklearn does it):
start from nothing and, `size` times, add the trial (again, if it helps most) whose
out-of-fold predictions most improve the study's metric of the averaged predictions. A
trial's weight is how often it was chosen. Chosen on out-of-fold predictions only (every
TRAIN image predicted by a fold model that never saw it), so TEST stays unseen until
`--evaluate`, which uses it once.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from search.errors import SearchError
from search.metrics import metric as metric_of, objective, scores
from search.record import S, TrialRecord, read_trials
from search.serving.ensemble import EnsemblePredictor


@dataclass
class Selection:
    metric: str
    weights: dict[int, int]  # trial number -> times chosen
    ensemble_scores: dict[str, float]  # out-of-fold, every registered metric
    best_single: int
    best_single_scores: dict[str, float]
    curve: list[float] = field(default_factory=list)  # the objective after each greedy step
    left_out: dict[int, str] = field(default_factory=dict)  # trial number -> why its predictions were unread

    @property
    def members(self) -> list[tuple[int, float]]:
        total = sum(self.weights.values())
        return [(n, c / total) for n, c in sorted(self.weights.items(), key=lambda kv: (-kv[1], kv[0]))]

    def to_dict(self) -> dict:
        return {"metric": self.metric, "members": [{"trial": n, "weight": w} for n, w in self.members],
                "ensemble_oof": self.ensemble_scores, "best_single_trial": self.best_single,
                "best_single_oof": self.best_single_scores, "curve": self.curve,
                "left_out": {str(n): why for n, why in self.left_out.items()}}


def greedy_selection(probs: dict[int, np.ndarray], labels: np.ndarray, groups: np.ndarray, metric: str,
                     size: int) -> tuple[dict[int, int], list[float]]:
    """Caruana's forward selection with replacement; ties go to the lower trial number."""
    m = metric_of(metric)  # only the metric chosen on: each step scores every trial
    chosen: dict[int, int] = {}
    total = np.zeros_like(next(iter(probs.values())), dtype=np.float64)
    curve = []
    for step in range(1, size + 1):
        best_n, best_value = None, None
        for n in sorted(probs):
            value = m.objective(m.value(labels, (total + probs[n]) / step, groups))
            if best_value is None or value > best_value:
                best_n, best_value = n, value
        chosen[best_n] = chosen.get(best_n, 0) + 1
        total += probs[best_n]
        curve.append(best_value)
    return chosen, curve


def cv_trials(study) -> list[TrialRecord]:
    trials = [t for t in read_trials(study, states=(S.COMPLETE,)) if t.cv and t.run_id]
    if not trials:
        raise SearchError(f"study {study.study_name!r} has no complete --cv trial: ensembles are chosen on "
                          f"out-of-fold predictions, which only cross-validated trials have")
    return trials


def load_oof(trials: list[TrialRecord], tracker) -> tuple[dict, dict[int, str]]:
    """{trial number: OutOfFoldPredictions} from each trial's run, and {trial number: why} for
    the trials whose predictions could not be read. A warm-started trial's run lives in the
    earlier study's MLflow store, which may be elsewhere or gone: the others still make an
    ensemble."""
    from search.running.oof import ARTIFACT, OutOfFoldPredictions

    out, missing = {}, {}
    with tempfile.TemporaryDirectory(prefix="bloodsearch-oof-") as tmp:
        for t in trials:
            try:
                out[t.number] = OutOfFoldPredictions.load(tracker.download(t.run_id, ARTIFACT, Path(tmp) / str(t.number)))
            except Exception as exc:
                missing[t.number] = f"no out-of-fold predictions in MLflow run {t.run_id} ({type(exc).__name__})"
    return out, missing


def select(study, tracker, size: int, metric: str) -> Selection:
    oof, missing = load_oof(cv_trials(study), tracker)
    if not oof:
        first = min(missing)
        raise SearchError(f"no complete --cv trial of {study.study_name!r} has readable out-of-fold predictions "
                          f"(trial {first}: {missing[first]})")
    # Images every trial predicted (a masked trial may have skipped a file the others read).
    common = set.intersection(*(set(o.indices.tolist()) for o in oof.values()))
    if not common:
        raise SearchError("the trials' out-of-fold predictions share no image")
    first = next(iter(oof.values()))
    keep = np.isin(first.indices, sorted(common))
    labels, groups = first.labels[keep], first.groups[keep]
    probs = {n: o.probs[np.isin(o.indices, sorted(common))].astype(np.float64) for n, o in oof.items()}
    singles = {n: scores(labels, p, groups) for n, p in probs.items()}
    best_single = max(sorted(singles), key=lambda n: objective(singles[n], metric))
    weights, curve = greedy_selection(probs, labels, groups, metric, size)
    total = sum(weights.values())
    mixed = sum(probs[n] * c for n, c in weights.items()) / total
    return Selection(metric, weights, scores(labels, mixed, groups), best_single, singles[best_single], curve,
                     missing)


def build(handle, selection: Selection, tracker, cache_dir: str | None, tta: str) -> EnsemblePredictor:
    """The chosen trials' bags (with TTA) as one predictor."""
    from search.results.study import pick_trial
    from search.serving.predictor import from_trial

    members = [from_trial(handle, pick_trial(handle.study, n), tracker, cache_dir, tta=tta) for n, _ in selection.members]
    return EnsemblePredictor(members, [w for _, w in selection.members],
                             {"study": handle.study.study_name, "selection": selection.to_dict(), "tta": tta})


def evaluate(handle, ensemble: EnsemblePredictor, tracker, cache_dir: str | None, trials: dict[int, TrialRecord],
             batch_size: int = 128) -> dict:
    """The ensemble on TEST (and TEST_SIMPLE), once; an MLflow run in the study's experiment."""
    from preprocessing import load_dataset

    from search.results.evaluation import Member, evaluate_members, score_metrics
    from search.settings import PARENT_RUN_ATTR
    from search.stores.tracking import TrialRun

    data = load_dataset(handle.settings.data_dir, record_dir=cache_dir, grouping=handle.settings.grouping())
    members = [Member(member.model, member.config.preprocess, trials[chosen["trial"]].unet, chosen["weight"])
               for member, chosen in zip(ensemble.members, ensemble.info["selection"]["members"])]
    held_out = evaluate_members(data, members, ensemble.classes, tracker, cache_dir, batch_size)
    splits = {name: held.report for name, held in held_out.items()}
    run = TrialRun(tracker, handle.study.study_name, handle.study.user_attrs[PARENT_RUN_ATTR],
                   f"{handle.study.study_name}-ensemble",
                   {"members": json.dumps(ensemble.info["selection"]["members"]), "tta": ensemble.info["tta"],
                    "metric": ensemble.info["selection"]["metric"]}, {"bloodsearch.ensemble": "true"})
    metrics = {}
    for name, r in splits.items():
        metrics.update(score_metrics(name.lower(), r))
        metrics[f"{name.lower()}_macro_f1"] = r["macro_f1"]
    for key, value in ensemble.info["selection"]["ensemble_oof"].items():
        metrics[f"oof_{metric_of(key).key}"] = value
    run.log_metrics(metrics)
    with tempfile.TemporaryDirectory(prefix="bloodsearch-ensemble-") as tmp:
        (Path(tmp) / "ensemble.json").write_text(json.dumps({"selection": ensemble.info["selection"], "splits": splits},
                                                            indent=1, default=str))
        run.log_artifacts(tmp)
    run.end("COMPLETE")
    return {"splits": splits, "run_id": run.run_id, "tracking_error": run.error}


def deliver(handle, selection: Selection, tracker, cache_dir: str | None, tta: str, on_test: bool = False,
            destination=None, register_name: str | None = None, alias: str | None = None,
            say: Callable[[str], None] = lambda line: None, echo: Callable[[str], None] = lambda line: None) -> dict:
    """What `search ensemble` does with a selection beyond showing it: the members' bags loaded
    once as one predictor, evaluated on TEST (on_test), written as a model folder
    (destination: a checked serving.destination.Destination) and registered as an MLflow
    model (register_name, with alias). say: progress; echo: what registering did. Returns
    what was done, as `--json` prints it."""
    from search.settings import PARENT_RUN_ATTR

    out: dict = {}
    if not (on_test or destination or register_name):
        return out
    say("loading the members' fold bags ...")
    predictor = build(handle, selection, tracker, cache_dir, tta)
    if on_test:
        say("evaluating on TEST ...")
        out["evaluation"] = evaluate(handle, predictor, tracker, cache_dir, {t.number: t for t in read_trials(handle.study)})
    if destination is not None:
        out["export"] = str(predictor.save(destination))
    if register_name:
        from search.serving.mlflow_model import log_and_register

        name = handle.study.study_name
        # The MLflow model goes to the ensemble's evaluation run, else the study's parent run.
        run_id = out.get("evaluation", {}).get("run_id") or handle.study.user_attrs[PARENT_RUN_ATTR]
        out["mlflow"] = log_and_register(tracker, run_id, predictor, f"{name}-ensemble", handle.settings.data_dir,
                                         register_name, alias, {"optuna.study": name, "bloodsearch.ensemble": "true",
                                                                "bloodsearch.tta": tta}, say=echo)
        out["registered"] = out["mlflow"]["registered"]
    return out
