"""Held-out evaluation of one trial's model on TEST (and TEST_SIMPLE): the first and only
use of those splits. Image-level accuracy overstates how many independent things are told
apart (the public TEST has 71 fields behind 2,487 images), so every result also reports
per-group accuracy (vote and mean probability), a 95% interval from resampling groups, and
the same on *clean* TEST: without the images whose group is also in TRAIN."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from search.metrics import REGISTRY, classification_metrics, group_bootstrap, group_votes, mean_log_loss, scores
from search.record import TrialRecord


def study_row(accuracy: float, size_mb: float | None, epochs: float | None, converged: bool | None,
              group_accuracy: float | None = None) -> str:
    """The study's table row: accuracy, model size (MB), epochs, converged."""
    parts = [f"accuracy {accuracy:.3f}"]
    if group_accuracy is not None:
        parts.append(f"per-group {group_accuracy:.3f}")
    parts += [f"model size {size_mb:.1f} MB" if size_mb is not None else "model size ?",
              f"epochs {epochs:g}" if epochs is not None else "epochs ?",
              "converged" if converged else "not converged"]
    return " | ".join(parts)


def predict_split(model, cache, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the readable images, the model's class probabilities for them)."""
    from preprocessing import make_batches

    idx = np.flatnonzero(cache.valid)
    return idx, np.asarray(model.predict(make_batches(cache, idx, batch_size), verbose=0))


def probs_report(split, idx: np.ndarray, probs: np.ndarray, classes: Sequence[str],
                 train_groups: frozenset[str] = frozenset()) -> dict:
    """Image-level metrics, per-group verdicts and an interval over groups of class
    probabilities on a held-out split; with train_groups, the same on its clean part."""
    y_true = split.labels[idx]
    groups = [split.groups[i] for i in idx]
    report = _scored(y_true, probs, groups, classes)
    shared = np.asarray([g in train_groups for g in groups], dtype=bool)
    report["clean"] = None if shared.all() else {
        **_scored(y_true[~shared], probs[~shared], [g for g, s in zip(groups, shared) if not s], classes),
        "excluded_images": int(shared.sum()),
        "excluded_groups": sorted({g for g, s in zip(groups, shared) if s})}
    return report


def _scored(y_true: np.ndarray, probs: np.ndarray, groups: list[str], classes: Sequence[str]) -> dict:
    report = classification_metrics(y_true, probs, classes)
    report["log_loss"] = mean_log_loss(y_true, probs)
    report["scores"] = scores(y_true, probs, groups)  # every registered metric, by name
    report["groups"] = group_votes(groups, y_true, probs)
    report["accuracy_ci95"] = list(group_bootstrap(y_true, probs.argmax(axis=1), groups))
    return report


def held_out_lines(name: str, r: dict) -> list[str]:
    """A held-out split's result for people: whole, then clean (what a new field would see)."""
    lines = [f"{name}: {_summary(r)}"]
    clean = r.get("clean")
    if clean is None:
        lines.append(f"  clean {name}: none (every image's group is also in TRAIN)")
    elif clean["excluded_images"]:
        lines.append(f"  clean {name} (without {clean['excluded_images']} images of {len(clean['excluded_groups'])} "
                     f"group(s) also in TRAIN: {', '.join(clean['excluded_groups'][:6])}"
                     f"{' ...' if len(clean['excluded_groups']) > 6 else ''}): {_summary(clean)}")
    else:
        lines.append(f"  clean {name}: the whole split (no group of it is in TRAIN)")
    return lines


# Shown with more than their score (an interval, the mean-probability verdict) first.
DETAILED = ("accuracy", "group-accuracy")


def _summary(r: dict) -> str:
    g, (lo, hi) = r["groups"], r["accuracy_ci95"]
    others = "".join(f"; {m.label} {r['scores'][name]:.4f}" for name, m in REGISTRY.items()
                     if name not in DETAILED and name in r.get("scores", {}))
    return (f"accuracy {r['accuracy']:.4f} [95% over groups {lo:.3f}, {hi:.3f}] on {r['images']} images; "
            f"per-group {g['group_accuracy']:.4f} by vote, {g['group_accuracy_mean_prob']:.4f} by mean probability "
            f"({g['groups']} groups){others}; macro F1 {r['macro_f1']:.4f}")


def score_metrics(prefix: str, r: dict) -> dict[str, float]:
    """A held-out report's registered metrics as MLflow keys: <prefix>_<metric>, and
    <prefix>_clean_<metric> on its clean part (test_accuracy, test_clean_log_loss)."""
    out = {f"{prefix}_{REGISTRY[name].key}": value for name, value in r["scores"].items()}
    if r.get("clean") is not None:
        out.update({f"{prefix}_clean_{REGISTRY[name].key}": value for name, value in r["clean"]["scores"].items()})
    return out


HELD_OUT = ("TEST", "TEST_SIMPLE")  # the splits a model is evaluated on, those the data has


@dataclass(frozen=True)
class Member:
    """One model of what is evaluated: a trial's model, one of its fold or seed models, or an
    ensemble's member (a trial's bag); it reads its own preprocessing and U-Net mask."""

    model: Any
    preprocess: Any  # preprocessing.PreprocessConfig
    unet: str | None = None  # the digest of the U-Net that masks its images (mask=unet)
    weight: float = 1.0


@dataclass
class HeldOut:
    """One held-out split as the members saw it: the report of their weighted mean
    probabilities, and each member's probabilities on the same images."""

    report: dict
    each: list[np.ndarray]
    idx: np.ndarray  # the images every member could read
    split: Any


def evaluate_members(data, members: Sequence[Member], classes: Sequence[str], tracker, cache_dir: str | None,
                     batch_size: int = 128) -> dict[str, HeldOut]:
    """TEST and TEST_SIMPLE predicted by every member through its own image cache, averaged
    with the members' weights over the images all of them read: what `evaluate` does for a
    trial (its bag of fold or seed models) and `ensemble --evaluate` for several trials."""
    from preprocessing import build_cache

    from search.errors import SearchError
    from search.running.unet import masker_for

    train_groups = frozenset(data.train.groups)
    out = {}
    for name in (n for n in HELD_OUT if n in data.splits):
        split, caches, parts = data.splits[name], {}, []
        for m in members:
            if (m.preprocess, m.unet) not in caches:
                masker = masker_for(m.preprocess.image, data.train, cache_dir, digest=m.unet, tracker=tracker)
                caches[m.preprocess, m.unet] = build_cache(split, m.preprocess, cache_dir, masker=masker)
            parts.append(predict_split(m.model, caches[m.preprocess, m.unet], batch_size))
        idx = np.asarray(sorted(set.intersection(*(set(i.tolist()) for i, _ in parts))), dtype=np.int64)
        each = [p[np.isin(i, idx)] for i, p in parts]
        probs = sum(m.weight * p for m, p in zip(members, each)) / sum(m.weight for m in members)
        report = probs_report(split, idx, probs, classes, train_groups)
        report["unreadable"] = len(split.labels) - len(idx)
        out[name] = HeldOut(report, each, idx, split)
    if not out:
        raise SearchError(f"data dir {data.root} has no TEST split to evaluate on")
    return out


@dataclass(frozen=True)
class Evaluation:
    trial: int
    value: float | None  # the trial's value: the study's metric on validation
    metric: str
    model: str  # what was evaluated: "the trial's model", or "the bag of its K seed models"
    splits: dict[str, dict]  # split name -> split_report() of that model (with "per_seed" for a bag)
    row: str  # the study's table row, for TEST

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_trial(handle, trial: TrialRecord, tracker, cache_dir: str | None, batch_size: int = 128,
                   tta: str = "none") -> Evaluation:
    """Evaluate the trial on TEST (and TEST_SIMPLE) and log it all to the trial's run. A --cv
    or --repeats trial is its K fold or seed models: their bag (mean probabilities) is
    evaluated, and each model alone too (mean ± std). tta: each model's test-time augmentation."""
    import json
    import tempfile

    from preprocessing import load_dataset

    from search.plots import confusion_png
    from search.repeats import Spread, left_out
    from search.serving.predictor import check_trial_tta, from_trial, member_models

    from models.combine import with_tta

    check_trial_tta(tta, handle, trial)
    predictor = from_trial(handle, trial, tracker, cache_dir, whole=False)
    members, kind = member_models(trial, tracker)
    models = [with_tta(m, tta) for m in (members or [predictor.model])]
    what = (f"the bag of its {len(models)} {kind} models (mean probabilities){left_out(trial.fits, kind)}" if members
            else "the trial's model") + (
        f", TTA {tta}" if tta != "none" else "")
    data = load_dataset(handle.settings.data_dir, record_dir=cache_dir, grouping=handle.settings.grouping())
    held_out = evaluate_members(data, [Member(m, predictor.config.preprocess, trial.unet) for m in models],
                                predictor.classes, tracker, cache_dir, batch_size)
    splits: dict[str, dict] = {}
    metrics: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bloodsearch-eval-") as tmp:
        for name, held in held_out.items():
            report, prefix = held.report, name.lower()
            if len(models) > 1:
                alone = [probs_report(held.split, held.idx, p, predictor.classes) for p in held.each]
                report["per_model"] = {"kind": kind, "accuracy": asdict(Spread.of([r["accuracy"] for r in alone])),
                                       "group_accuracy": asdict(Spread.of([r["groups"]["group_accuracy"] for r in alone]))}
                metrics[f"{prefix}_{kind}_accuracy_mean"] = report["per_model"]["accuracy"]["mean"]
                metrics[f"{prefix}_{kind}_accuracy_std"] = report["per_model"]["accuracy"]["std"]
            splits[name] = report
            metrics.update(score_metrics(prefix, report))
            metrics[f"{prefix}_macro_f1"] = report["macro_f1"]
            for cls, m in report["per_class"].items():
                for key in ("precision", "recall", "f1"):
                    if m[key] is not None:  # an absent class has no metric, not a zero
                        metrics[f"{prefix}_{key}_{cls}"] = m[key]
            matrix = np.asarray(report["confusion_matrix"])
            (Path(tmp) / f"confusion_matrix_{prefix}.json").write_text(
                json.dumps({"classes": predictor.classes, "matrix": matrix.tolist(), "split": name}))
            confusion_png(matrix, predictor.classes, Path(tmp) / f"confusion_matrix_{prefix}.png",
                          f"{handle.study.study_name} trial {trial.number}: {name}")
        (Path(tmp) / "evaluation.json").write_text(json.dumps(
            {"trial": trial.number, "value": trial.value, "metric": handle.settings.metric, "model": what, "tta": tta,
             "splits": splits}, indent=1))
        if tta != "none":  # each TTA mode its own metrics and folder, beside the plain evaluation
            metrics = {f"{k}_tta_{tta}": v for k, v in metrics.items()}
        tracker.log_evaluation(trial.run_id, metrics, tmp, "evaluation" if tta == "none" else f"evaluation-tta-{tta}")
    test = splits.get("TEST") or next(iter(splits.values()))
    row = study_row(test["accuracy"], trial.model_size_mb, trial.epochs_run, trial.converged,
                    test["groups"]["group_accuracy"])
    if "per_model" in test:
        a, k = test["per_model"]["accuracy"], test["per_model"]["kind"]
        row = (f"bag of {a['n']} {k}s: {row} | each {k} alone {a['mean']:.3f} ± {a['std']:.3f} "
               f"[{a['min']:.3f}, {a['max']:.3f}]")
    return Evaluation(trial.number, trial.value, handle.settings.metric, what, splits, row)
