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

    @property
    def members(self) -> list[tuple[int, float]]:
        total = sum(self.weights.values())
        return [(n, c / total) for n, c in sorted(self.weights.items(), key=lambda kv: (-kv[1], kv[0]))]

    def to_dict(self) -> dict:
        return {"metric": self.metric, "members": [{"trial": n, "weight": w} for n, w in self.members],
                "ensemble_oof": self.ensemble_scores, "best_single_trial": self.best_single,
                "best_single_oof": self.best_single_scores, "curve": self.curve}


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


def load_oof(trials: list[TrialRecord], tracker):
    """{trial number: OutOfFoldPredictions}, from each trial's run."""
    from search.running.oof import ARTIFACT, OutOfFoldPredictions

    out = {}
    with tempfile.TemporaryDirectory(prefix="bloodsearch-oof-") as tmp:
        for t in trials:
            try:
                out[t.number] = OutOfFoldPredictions.load(tracker.download(t.run_id, ARTIFACT, Path(tmp) / str(t.number)))
            except Exception as exc:
                raise SearchError(f"trial {t.number}: no out-of-fold predictions in MLflow run {t.run_id} "
                                  f"({type(exc).__name__})") from None
    return out


def select(study, tracker, size: int, metric: str) -> Selection:
    oof = load_oof(cv_trials(study), tracker)
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
    return Selection(metric, weights, scores(labels, mixed, groups), best_single, singles[best_single], curve)


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
    from preprocessing import build_cache, load_dataset

    from search.results.evaluation import predict_split, probs_report, score_metrics
    from search.running.unet import masker_for
    from search.settings import PARENT_RUN_ATTR
    from search.stores.tracking import TrialRun

    data = load_dataset(handle.settings.data_dir, record_dir=cache_dir, grouping=handle.settings.grouping())
    splits = {}
    for name in ("TEST", "TEST_SIMPLE"):
        if name not in data.splits:
            continue
        split, parts = data.splits[name], []
        for member, chosen in zip(ensemble.members, ensemble.info["selection"]["members"]):
            n, w = chosen["trial"], chosen["weight"]
            pre = member.config.preprocess
            cache = build_cache(split, pre, cache_dir, masker=masker_for(pre.image, data.train, cache_dir,
                                                                         digest=trials[n].unet, tracker=tracker))
            idx, p = predict_split(member.model, cache, batch_size)
            parts.append((idx, w, p))
        common = sorted(set.intersection(*(set(idx.tolist()) for idx, _, _ in parts)))
        probs = sum(w * p[np.isin(idx, common)] for idx, w, p in parts)
        splits[name] = probs_report(split, np.asarray(common), probs, ensemble.classes, frozenset(data.train.groups))
    if not splits:
        raise SearchError(f"data dir {handle.settings.data_dir} has no TEST split to evaluate on")
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
