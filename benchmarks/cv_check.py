"""Does grouped K-fold cross-validation rank two fixed configurations the way TEST does, and
do a bag of the fold models and flip test-time augmentation (TTA) pay?

    python benchmarks/cv_check.py --data-dir ../shared/data/blood-cells/dataset2-master/images \
        --cache-dir ~/bloodsearch-runs/cache --out ~/bloodsearch-runs/cv-check \
        [--configs t15,t4] [--folds 5] [--epochs 20] [--patience 5] [--seed 0]

The README's single validation split holds about 55 of TRAIN's 277 cells, and on it
`fast-hb` trial 15 (val 0.9881) beat trial 4 (val 0.9285) while TEST said the opposite
(0.845 against 0.857). This benchmark trains both configurations on the same K grouped
folds (StratifiedGroupKFold over the original cells, so every cell is validated exactly
once and none is on both sides of a fold), then reports

- the CV value: mean ± std over folds of best validation accuracy, log-loss and per-group
  accuracy, and the pooled out-of-fold accuracy and log-loss;
- TEST and TEST_SIMPLE for the fold-0 model alone and for the bag (mean of the K fold
  models' probabilities), each without and with flip TTA (mean over the image, its
  horizontal flip, vertical flip and both);
- a markdown table beside the README's single-split numbers, and which configuration each
  criterion prefers.

Configurations: `t15` is `fast-hb` trial 15 as the README gives it (rounded values);
`t4` is `fast-hb` trial 4, which the README only describes, reconstructed by replaying the
first worker's TPE sampler (seed 0; TPE's first 10 trials are random start-up draws) in
memory and checked against what the README says of trials 2 and 4.

Resumable: a fold whose model (`<out>/<config>/fold<k>.keras`) and out-of-fold
probabilities (`fold<k>.npz`) exist is not trained again; `results.json` is rebuilt from
those files after every fold and evaluation. Folds run interleaved (t15 fold 0, t4 fold
0, t15 fold 1, ...), so a partial run still compares both.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402  (after the log level, which TensorFlow reads on import)

from preprocessing import ImageCache, ImageSet, Split, build_cache, fit_scaling, load_dataset  # noqa: E402
from studies import Params, TrialConfig, check_params, load_study  # noqa: E402

# The README's single-split numbers ("The real searches"), printed for reference only.
README_NUMBERS = {
    "t15": {"val_accuracy": 0.9881, "test_accuracy": 0.845, "test_simple": 0.803,
            "note": "fast-hb trial 15; TEST 0.845 is the mean of 3 seeds (single evaluate also 0.845)"},
    "t4": {"val_accuracy": 0.9285, "test_accuracy": 0.857, "test_simple": 0.761,
           "note": "fast-hb trial 4; single evaluate"},
}

# fast-hb trial 15 as the README states it (values rounded there: dropout 0.43, lr 3.1e-3, ...).
TRIAL15_PARAMS: dict[str, Any] = {
    "size": "60x80", "depth": 4, "kernel": 3, "width": 0.5, "batch_norm": True, "separable": False,
    "pooling": "avg", "dropout": 0.43, "augment": "none", "mask": "none", "scaling": "pixel",
    "batch_size": 64, "learning_rate": 3.1e-3, "label_smoothing": 0.06, "weight_decay": 3.1e-4,
    "lr_schedule": "cosine",
}

# The flips averaged by TTA, as axes of an (N, H, W, C) batch: none, horizontal, vertical, both.
FLIPS: dict[str, tuple[int, ...]] = {"none": (), "h": (2,), "v": (1,), "hv": (1, 2)}
HELD_OUT = ("TEST", "TEST_SIMPLE")
PREDICT_CHUNK = 256


# ----------------------------------------------------------------------------- configurations

def trial15_config() -> tuple[TrialConfig, dict]:
    """Every parameter fixed, through the study's own dry run, so a misspelt name fails."""
    config = check_params(load_study("fast"), TRIAL15_PARAMS, "fast")
    return config, {"source": "README: fast-hb trial 15, every parameter fixed (rounded values)",
                    "params": dict(TRIAL15_PARAMS)}


def replay_fast_hb(trials: int = 5, seed: int = 0) -> list[dict[str, Any]]:
    """The parameters of fast-hb's first `trials` trials, replayed in memory.

    `search launch --study fast --study-name fast-hb --sampler tpe --pruner hyperband --seed 0`
    ran trials 0..4 in its first worker, whose sampler was TPESampler(seed=
    worker_sampler_seed(0, 0)). TPE draws its first 10 trials at random, independent of the
    values reported, so asking the same sampler, without results, replays them."""
    import optuna

    from search.running.algorithms import make_pruner
    from search.settings import SearchSettings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = SearchSettings(study="fast", study_name="fast-hb", storage="", tracking_uri="", data_dir="",
                              trials=1000, sampler="tpe", pruner="hyperband", seed=seed)
    sampler_seed = settings.worker_sampler_seed(0, 0)
    # The sampler as fast-hb's worker built it then (Optuna's TPE defaults), not today's.
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=sampler_seed),
                                pruner=make_pruner("hyperband", 20))
    suggest = load_study("fast")
    replayed = []
    for _ in range(trials):
        p = Params(study.ask(), {})
        suggest(p)
        replayed.append(dict(p.values))
    return replayed


def trial4_config(study_seed: int = 0) -> tuple[TrialConfig, dict]:
    """fast-hb trial 4 from the replay, checked against what the README records. study_seed
    is the original study's --seed (0), not this benchmark's."""
    replayed = replay_fast_hb(5, study_seed)
    t2, t4 = replayed[2], replayed[4]
    checks = {
        "trial 4 augment == flip": t4["augment"] == "flip",
        "trial 4 scaling == channel": t4["scaling"] == "channel",
        "trial 4 batch_norm == False": t4["batch_norm"] is False,
        "trial 2 mask == otsu": t2["mask"] == "otsu",
    }
    if not all(checks.values()):
        failed = [k for k, ok in checks.items() if not ok]
        raise SystemExit(f"the replay of fast-hb does not match the README ({', '.join(failed)}); "
                         f"trial 4 cannot be reconstructed this way")
    # Built through the same dry run as t15, so the config is exactly what suggest() makes.
    config = check_params(load_study("fast"), t4, "fast")
    return config, {"source": "replay of fast-hb's first worker (TPESampler(seed=0), random start-up draws)",
                    "params": t4, "readme_checks": checks,
                    "replayed_trials_0_4": replayed}


CONFIGS = {"t15": trial15_config, "t4": trial4_config}


# ----------------------------------------------------------------------------- folds

def grouped_folds(image_set: ImageSet, valid: np.ndarray, k: int, seed: int) -> list[Split]:
    """K grouped, stratified folds over TRAIN's readable images; every cell validated once."""
    from sklearn.model_selection import StratifiedGroupKFold

    candidates = np.flatnonzero(valid)
    groups = np.asarray([image_set.groups[i] for i in candidates])
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = []
    with warnings.catch_warnings():
        # sklearn warns when a class has fewer cells than folds; the fold reports show it.
        warnings.simplefilter("ignore", UserWarning)
        for keep, held in splitter.split(np.zeros(len(candidates)), image_set.labels[candidates], groups):
            train, val = np.sort(candidates[keep]), np.sort(candidates[held])
            leaked = set(groups[keep]) & set(groups[held])
            assert not leaked, f"fold leaked cells {sorted(leaked)[:3]}"
            folds.append(Split(train, val, {"train_images": len(train), "val_images": len(val),
                                            "val_cells": len(set(groups[held]))}))
    validated = np.sort(np.concatenate([f.val for f in folds]))
    assert np.array_equal(validated, candidates), "a readable image is validated zero or several times"
    return folds


# ----------------------------------------------------------------------------- metrics

def safe_log_loss(y_true: np.ndarray, probs: np.ndarray, num_classes: int) -> float:
    """sklearn's log_loss on float64 probabilities renormalised to sum to one (float32
    softmax outputs miss it by ~1e-7, which newer sklearn rejects)."""
    from sklearn.metrics import log_loss

    p = np.clip(np.asarray(probs, np.float64), 1e-15, 1.0)
    return float(log_loss(y_true, p / p.sum(axis=1, keepdims=True), labels=list(range(num_classes))))


def scores(image_set: ImageSet, idx: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Image accuracy, per-group accuracy (majority vote of a cell's copies) and log-loss."""
    from search.metrics import group_votes, classification_metrics

    y = image_set.labels[idx]
    report = classification_metrics(y, probs, image_set.classes)
    cells = group_votes([image_set.groups[i] for i in idx], y, probs)
    return {"accuracy": report["accuracy"], "group_accuracy": cells["group_accuracy"], "cells": cells["cells"],
            "log_loss": safe_log_loss(y, probs, len(image_set.classes)), "images": int(len(idx)),
            "macro_f1": report["macro_f1"], "confusion_matrix": report["confusion_matrix"]}


def mean_std(values: list[float]) -> dict[str, float]:
    """Sample standard deviation (ddof 1), as the README reports."""
    a = np.asarray(values, np.float64)
    return {"mean": float(a.mean()) if len(a) else math.nan,
            "std": float(a.std(ddof=1)) if len(a) > 1 else math.nan, "n": int(len(a))}


# ----------------------------------------------------------------------------- files

def write_atomically(path: Path, write) -> None:
    """Write to a temporary name, then rename: a killed run never leaves a half file that
    the resume logic would take for a finished fold."""
    tmp = path.with_name(f".partial-{path.name}")
    write(tmp)
    os.replace(tmp, path)


def save_npz(path: Path, **arrays) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    write_atomically(path, write)


def save_json(path: Path, data: Any) -> None:
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1, default=_jsonable)))


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def check_or_record(path: Path, expected: dict, what: str) -> None:
    """A resumed run must continue the same experiment, not mix folds of two."""
    expected = json.loads(json.dumps(expected, default=_jsonable))
    if path.exists():
        found = json.loads(path.read_text())
        if found != expected:
            raise SystemExit(f"{path} records different {what} ({found} vs {expected}); use another --out")
    else:
        save_json(path, expected)


# ----------------------------------------------------------------------------- per configuration

class EpochLog(keras.callbacks.Callback):
    """One log line per epoch, so a background run shows its pace."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label, self.started = label, time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        print(f"  {self.label} epoch {epoch + 1}: loss {logs.get('loss', math.nan):.4f} "
              f"acc {logs.get('accuracy', math.nan):.4f} val_acc {logs.get('val_accuracy', math.nan):.4f} "
              f"({time.perf_counter() - self.started:.1f} s)", flush=True)


class ConfigRun:
    """One configuration: its caches, folds, fold models and held-out predictions."""

    def __init__(self, name: str, config: TrialConfig, info: dict, data_dir: str, cache_dir: str | None,
                 out: Path, args: argparse.Namespace) -> None:
        self.name, self.config, self.info, self.args = name, config, info, args
        self.dir = out / name
        self.dir.mkdir(parents=True, exist_ok=True)
        check_or_record(self.dir / "config.json", config.to_dict(), "configuration")
        self.dataset = load_dataset(data_dir, record_dir=cache_dir)
        self.train_set = self.dataset.train
        self.cache = build_cache(self.train_set, config.preprocess, cache_dir)
        self.folds = grouped_folds(self.train_set, self.cache.valid, args.folds, args.seed)
        # TEST is read only to score finished fold models, as search/evaluation.py does.
        self.held_out: dict[str, tuple[ImageSet, ImageCache]] = {}
        for split in HELD_OUT:
            if split in self.dataset.splits:
                image_set = self.dataset.splits[split]
                self.held_out[split] = (image_set, build_cache(image_set, config.preprocess, cache_dir,
                                                              unet_from=self.train_set))

    def paths(self, k: int) -> dict[str, Path]:
        return {"model": self.dir / f"fold{k}.keras", "oof": self.dir / f"fold{k}.npz",
                "held_out": self.dir / f"fold{k}.heldout.npz"}

    def fold_done(self, k: int) -> bool:
        p = self.paths(k)
        return p["model"].exists() and p["oof"].exists()

    def fold_seed(self, k: int) -> int:
        # The same seed for fold k of every configuration: a paired comparison.
        return self.args.seed * 1000 + k

    def run_fold(self, k: int) -> None:
        """Train fold k (unless done) and predict TEST/TEST_SIMPLE with it (unless done)."""
        from models import load_model

        paths = self.paths(k)
        model = None
        if not self.fold_done(k):
            model = self._train_fold(k)
        else:
            print(f"{self.name} fold {k}: reusing {paths['model']}", flush=True)
        if not paths["held_out"].exists() and self.held_out:
            started_cpu, started = time.process_time(), time.perf_counter()
            model = model or load_model(paths["model"])
            arrays = {split: self._predict_flips(model, cache) for split, (_, cache) in self.held_out.items()}
            save_npz(paths["held_out"], cpu_seconds=np.float64(time.process_time() - started_cpu),
                     seconds=np.float64(time.perf_counter() - started), **arrays)
        if model is not None:
            del model
            keras.backend.clear_session()  # a fresh graph per fold keeps memory flat

    def _train_fold(self, k: int):
        from preprocessing import make_batches
        from search.running.data import TrialData
        from search.running.training import train

        split = self.folds[k]
        print(f"{self.name} fold {k}: training on {len(split.train)} images, validating on {len(split.val)} "
              f"({split.report['val_cells']} cells), seed {self.fold_seed(k)}", flush=True)
        started_cpu = time.process_time()
        # Statistics from this fold's training images only: the validation cells stay unseen.
        stats = fit_scaling(self.cache, split.train, self.config.preprocess.scaling)
        data = TrialData(self.cache, split, stats)
        result = train(self.config, data, self.args.epochs, self.args.patience, self.fold_seed(k),
                       callbacks=[EpochLog(f"{self.name} fold {k}")])
        # train() keeps only the argmax; the log-loss needs the probabilities of the
        # restored best weights, so predict the fold's validation images once more.
        probs = np.asarray(result.model.predict(make_batches(self.cache, split.val, self.config.batch_size),
                                                verbose=0), np.float32)
        paths = self.paths(k)
        write_atomically(paths["model"], result.model.save)  # the temporary name keeps the .keras suffix
        metrics = {"best_val_accuracy": result.best_val_accuracy, "best_epoch": result.best_epoch,
                   "epochs_run": result.epochs_run, "train_seconds": result.train_seconds,
                   "cpu_seconds": time.process_time() - started_cpu, "converged": result.converged,
                   "diverged": result.diverged, "params_count": result.params_count,
                   "model_size_mb": paths["model"].stat().st_size / 1e6, "seed": self.fold_seed(k),
                   "history": result.history, **split.report}
        # The .npz is written last: with the model beside it, it marks the fold as done.
        save_npz(paths["oof"], indices=split.val, probs=probs, metrics=np.asarray(json.dumps(metrics, default=_jsonable)))
        print(f"{self.name} fold {k}: best val_acc {result.best_val_accuracy:.4f} at epoch {result.best_epoch}/"
              f"{result.epochs_run}, {result.train_seconds:.0f} s", flush=True)
        return result.model

    def _predict_flips(self, model, cache: ImageCache) -> np.ndarray:
        """(4, N, C) probabilities: the raw images and their three flips. The flip is applied
        to the uint8 images before the model; its first layer then scales, so per-pixel
        statistics meet the flipped image as they would any other input."""
        idx = np.flatnonzero(cache.valid)
        out = []
        for axes in FLIPS.values():
            parts = [np.asarray(model.predict_on_batch(np.flip(chunk, axis=axes) if axes else chunk))
                     for chunk in cache.chunks(idx, PREDICT_CHUNK)]
            out.append(np.concatenate(parts).astype(np.float32))
        return np.stack(out)

    # -------------------------------------------------------------- summaries from the files

    def fold_records(self) -> dict[int, dict]:
        """What the finished folds' files say: val metrics, out-of-fold probabilities, TEST."""
        records = {}
        for k in range(self.args.folds):
            paths = self.paths(k)
            if not self.fold_done(k):
                continue
            with np.load(paths["oof"]) as z:
                idx, probs, metrics = z["indices"], z["probs"], json.loads(str(z["metrics"]))
            val = scores(self.train_set, idx, probs)
            rec = {"metrics": metrics, "val": val, "indices": idx, "probs": probs}
            if paths["held_out"].exists():
                with np.load(paths["held_out"]) as z:
                    rec["held_out"] = {s: z[s] for s in self.held_out if s in z.files}
                    rec["held_out_cpu_seconds"] = float(z["cpu_seconds"])
            records[k] = rec
        return records

    def summary(self) -> dict:
        """results.json's entry: per-fold rows, the CV value and, once every fold is in,
        the held-out evaluation of the fold-0 model and of the bag, with and without TTA."""
        records = self.fold_records()
        folds = {}
        for k, rec in records.items():
            m, v = rec["metrics"], rec["val"]
            row = {key: m[key] for key in ("best_val_accuracy", "best_epoch", "epochs_run", "train_seconds",
                                           "cpu_seconds", "converged", "model_size_mb", "seed", "train_images",
                                           "val_images", "val_cells")}
            row.update(val_accuracy_restored=v["accuracy"], val_log_loss=v["log_loss"],
                       val_group_accuracy=v["group_accuracy"])
            for split, probs in rec.get("held_out", {}).items():
                image_set, cache = self.held_out[split]
                row[f"{split.lower()}_accuracy"] = scores(image_set, np.flatnonzero(cache.valid), probs[0])["accuracy"]
            folds[str(k)] = row
        out: dict[str, Any] = {"config": self.config.to_dict(), **self.info,
                               "readme_single_split": README_NUMBERS.get(self.name),
                               "folds_done": len(records), "folds": folds}
        if records:
            out["cv"] = self._cv(records)
        if len(records) == self.args.folds and all("held_out" in r for r in records.values()):
            out["held_out"] = self._held_out(records)
        out["cpu_seconds"] = sum(r["metrics"]["cpu_seconds"] + r.get("held_out_cpu_seconds", 0.0)
                                 for r in records.values())
        return out

    def _cv(self, records: dict[int, dict]) -> dict:
        vals = list(records.values())
        idx = np.concatenate([r["indices"] for r in vals])
        probs = np.concatenate([r["probs"] for r in vals])
        pooled = scores(self.train_set, idx, probs)
        return {"folds": len(vals),
                "best_val_accuracy": mean_std([r["metrics"]["best_val_accuracy"] for r in vals]),
                "val_log_loss": mean_std([r["val"]["log_loss"] for r in vals]),
                "val_group_accuracy": mean_std([r["val"]["group_accuracy"] for r in vals]),
                "pooled_oof": {k: pooled[k] for k in ("accuracy", "log_loss", "group_accuracy", "cells", "images",
                                                      "macro_f1", "confusion_matrix")}}

    def _held_out(self, records: dict[int, dict]) -> dict:
        out = {}
        for split, (image_set, cache) in self.held_out.items():
            idx = np.flatnonzero(cache.valid)
            stacked = np.stack([records[k]["held_out"][split] for k in sorted(records)])  # (K, 4, N, C)
            variants = {"single": stacked[0, 0], "single_tta": stacked[0].mean(axis=0),
                        "bag": stacked[:, 0].mean(axis=0), "bag_tta": stacked.mean(axis=(0, 1))}
            out[split] = {name: scores(image_set, idx, p) for name, p in variants.items()}
        return out


# ----------------------------------------------------------------------------- report

def fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def fmt_ms(d: dict | None, digits: int = 3) -> str:
    if not d:
        return "–"
    return fmt(d["mean"], digits) + ("" if math.isnan(d["std"]) else f" ± {fmt(d['std'], digits)}")


def markdown_table(results: dict) -> str:
    head = ("| config | fold-0 val acc | CV acc mean±std | CV log-loss | CV cell acc | TEST single | single+TTA "
            "| bag | bag+TTA | TEST_SIMPLE bag+TTA | per-group bag+TTA | CPU seconds |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in results["configs"].items():
        cv = r.get("cv", {})
        test = r.get("held_out", {}).get("TEST", {})
        simple = r.get("held_out", {}).get("TEST_SIMPLE", {})
        acc = lambda d, key: fmt(d.get(key, {}).get("accuracy"))  # noqa: E731
        f0 = r["folds"].get("0", {}).get("best_val_accuracy")
        lines.append(f"| {name} ({r.get('folds_done', 0)}/{results['settings']['folds']} folds) | {fmt(f0, 4)} "
                     f"| {fmt_ms(cv.get('best_val_accuracy'), 4)} | {fmt_ms(cv.get('val_log_loss'))} "
                     f"| {fmt_ms(cv.get('val_group_accuracy'))} | {acc(test, 'single')} | {acc(test, 'single_tta')} "
                     f"| {acc(test, 'bag')} | {acc(test, 'bag_tta')} | {acc(simple, 'bag_tta')} "
                     f"| {fmt(test.get('bag_tta', {}).get('group_accuracy'))} | {r.get('cpu_seconds', 0):.0f} |")
    lines += ["", "From the README (one grouped validation split of ~55 cells, not this benchmark):", "",
              "| config | val acc | TEST | TEST_SIMPLE | note |", "|---|---|---|---|---|"]
    for name in results["configs"]:
        ref = README_NUMBERS.get(name)
        if ref:
            lines.append(f"| {name} | {ref['val_accuracy']:.4f} | {ref['test_accuracy']:.3f} "
                         f"| {ref['test_simple']:.3f} | {ref['note']} |")
    return "\n".join(lines)


def ranking(results: dict) -> list[str]:
    """Which configuration each criterion prefers (two configurations only)."""
    configs = results["configs"]
    if len(configs) != 2:
        return []
    a, b = configs
    ra, rb = configs[a], configs[b]

    def get(r: dict, path: tuple) -> float | None:
        for key in path:
            if not isinstance(r, dict) or key not in r:
                return None
            r = r[key]
        return r if isinstance(r, (int, float)) else None

    criteria = [  # (label, path, higher is better)
        ("README single split val acc", ("readme_single_split", "val_accuracy"), True),
        ("README TEST", ("readme_single_split", "test_accuracy"), True),
        ("fold-0 val acc", ("folds", "0", "best_val_accuracy"), True),
        ("CV val acc (mean)", ("cv", "best_val_accuracy", "mean"), True),
        ("CV val log-loss (mean)", ("cv", "val_log_loss", "mean"), False),
        ("CV cell acc (mean)", ("cv", "val_group_accuracy", "mean"), True),
        ("pooled OOF acc", ("cv", "pooled_oof", "accuracy"), True),
        ("pooled OOF log-loss", ("cv", "pooled_oof", "log_loss"), False),
        ("TEST single", ("held_out", "TEST", "single", "accuracy"), True),
        ("TEST single+TTA", ("held_out", "TEST", "single_tta", "accuracy"), True),
        ("TEST bag", ("held_out", "TEST", "bag", "accuracy"), True),
        ("TEST bag+TTA", ("held_out", "TEST", "bag_tta", "accuracy"), True),
        ("TEST bag+TTA log-loss", ("held_out", "TEST", "bag_tta", "log_loss"), False),
    ]
    lines = [f"Which configuration each criterion prefers ({a} vs {b}):"]
    for label, path, higher in criteria:
        va, vb = get(ra, path), get(rb, path)
        if va is None or vb is None:
            lines.append(f"- {label}: –")
            continue
        best = a if (va > vb) == higher else b
        lines.append(f"- {label}: {best} ({a} {va:.4f}, {b} {vb:.4f})" if va != vb else f"- {label}: tie ({va:.4f})")
    # Same folds and seeds for both: per-fold differences are paired.
    common = sorted(set(ra["folds"]) & set(rb["folds"]), key=int)
    if common:
        diffs = [ra["folds"][k]["best_val_accuracy"] - rb["folds"][k]["best_val_accuracy"] for k in common]
        lines.append(f"- paired per-fold val acc {a} − {b}: " + ", ".join(f"{d:+.4f}" for d in diffs)
                     + f" (mean {np.mean(diffs):+.4f}, {sum(d > 0 for d in diffs)}/{len(diffs)} folds favour {a})")
    return lines


def describe_config(name: str, config: TrialConfig, info: dict) -> str:
    lines = [f"{name}: {info['source']}", "  " + json.dumps(config.to_dict())]
    if "readme_checks" in info:
        lines.append("  README checks: " + ", ".join(f"{k}: {'ok' if ok else 'FAILED'}"
                                                    for k, ok in info["readme_checks"].items()))
        for n, params in enumerate(info["replayed_trials_0_4"]):
            lines.append(f"  replayed trial {n}: " + ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
                if k not in ("size", "color", "fit", "optimizer")))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--cache-dir")
    p.add_argument("--out", required=True)
    p.add_argument("--configs", default="t15,t4", help=f"comma-separated, from {', '.join(CONFIGS)}")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="seeds the folds and (seed*1000 + fold) each fold's training")
    args = p.parse_args()
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or not names:
        sys.exit(f"--configs: unknown {unknown}; known: {', '.join(CONFIGS)}")
    if args.folds < 2:
        sys.exit("--folds must be at least 2")
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = str(Path(args.cache_dir).expanduser()) if args.cache_dir else None
    settings = {"folds": args.folds, "epochs": args.epochs, "patience": args.patience, "seed": args.seed,
                "data_dir": str(Path(args.data_dir).expanduser().resolve())}
    check_or_record(out / "settings.json", settings, "settings")

    runs: dict[str, ConfigRun] = {}
    for name in names:
        config, info = CONFIGS[name]()
        print(describe_config(name, config, info), flush=True)
        runs[name] = ConfigRun(name, config, info, args.data_dir, cache_dir, out, args)
    first = runs[names[0]]
    print(f"TRAIN: {len(first.train_set)} images, {len(set(first.train_set.groups))} cells; folds: "
          + ", ".join(f"{f.report['val_cells']} cells/{len(f.val)} images" for f in first.folds), flush=True)

    started = time.perf_counter()

    def write_results() -> dict:
        results = {"settings": settings, "elapsed_seconds_this_run": time.perf_counter() - started,
                   "configs": {name: run.summary() for name, run in runs.items()}}
        save_json(out / "results.json", results)
        return results

    # Interleaved, so a partial run has folds of both configurations to compare.
    for k in range(args.folds):
        for name in names:
            runs[name].run_fold(k)
            write_results()
    results = write_results()
    print("\n" + markdown_table(results), flush=True)
    lines = ranking(results)
    if lines:
        print("\n" + "\n".join(lines), flush=True)
    print(f"\nresults: {out / 'results.json'}", flush=True)


if __name__ == "__main__":
    main()
