"""Train one TrialConfig on streamed data. Plain Keras: callbacks come from the caller."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from models import build_model, count_trainable, training_bytes
from preprocessing import make_batches
from studies import TrialConfig

from search.record import FitResult
from search.running.capacity import check_memory
from search.running.data import TrialData

# A model whose best validation accuracy is not this far above chance has not learned.
CONVERGENCE_MARGIN = 0.1


def make_optimizer(name: str, learning_rate, weight_decay: float = 0.0) -> keras.optimizers.Optimizer:
    """learning_rate: a number or a schedule. weight_decay > 0 is decoupled weight decay
    (Keras applies it in every optimizer; AdamW has its own default)."""
    extra = {"weight_decay": weight_decay} if weight_decay > 0 else {}
    return {
        "adam": keras.optimizers.Adam,
        "adamax": keras.optimizers.Adamax,
        "adadelta": keras.optimizers.Adadelta,
        "adamw": keras.optimizers.AdamW,
    }[name](learning_rate=learning_rate, **extra)


def learning_rate(config: TrialConfig, steps: int, warmup_steps: int = 0):
    """The optimizer's learning rate: a number, or a schedule of `steps` optimizer steps whose
    first warmup_steps rise linearly from near zero to config.learning_rate. Without the rise,
    a high rate (2.6e-3 for the FCN at batch 32) left a whole fold at chance from its first
    step (docs/journal/2026-12-05-campaign-3.md)."""
    cosine = config.lr_schedule == "cosine"
    if warmup_steps <= 0:
        return (keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(1, steps))
                if cosine else config.learning_rate)
    # alpha=1 holds the rate at the target after the rise: a constant schedule with a warm-up.
    return keras.optimizers.schedules.CosineDecay(
        config.learning_rate / warmup_steps, decay_steps=max(1, steps - warmup_steps), alpha=0.0 if cosine else 1.0,
        warmup_target=config.learning_rate, warmup_steps=warmup_steps)


def compile_model(model: keras.Model, config: TrialConfig, num_classes: int, steps: int,
                  jit_compile: bool | str = "auto", warmup_steps: int = 0) -> None:
    """steps: the most optimizer steps training can take (the cosine schedule's length)."""
    from models.layers import SparseSmoothedCrossentropy

    lr = learning_rate(config, steps, warmup_steps)
    loss = (SparseSmoothedCrossentropy(config.label_smoothing, num_classes) if config.label_smoothing > 0
            else "sparse_categorical_crossentropy")
    model.compile(optimizer=make_optimizer(config.optimizer, lr, config.weight_decay), loss=loss,
                  metrics=["accuracy"], jit_compile=jit_compile)


@dataclass
class TrainResult:
    model: keras.Model
    history: dict[str, list[float]]
    best_val_accuracy: float
    best_epoch: int
    epochs_run: int
    train_seconds: float
    params_count: int
    diverged: bool
    converged: bool
    val_true: np.ndarray = field(repr=False)
    val_probs: np.ndarray = field(repr=False)  # class probabilities of data.split.val, in order
    val_scores: dict = field(repr=False)  # search.metrics.scores() of them

    @property
    def val_pred(self) -> np.ndarray:
        return self.val_probs.argmax(axis=1)

    def fit_result(self, seed: int, model_size_mb: float | None, fold: int | None = None) -> FitResult:
        """What the trial's record keeps of this training. val_accuracy is the accuracy of the
        predictions recorded here (the restored best weights, with the study's TTA)."""
        s = {name: round(value, 6) for name, value in self.val_scores.items()}
        return FitResult(seed=seed, val_accuracy=s["accuracy"], epochs_run=self.epochs_run,
                         best_epoch=self.best_epoch, converged=self.converged, diverged=self.diverged,
                         train_seconds=round(self.train_seconds, 3), params_count=self.params_count,
                         model_size_mb=model_size_mb, fold=fold, val_scores=s)


def _best_epoch(history: dict, monitor: str, warmup: int = 0) -> int:
    """The epoch early stopping restored: the best of what it watched (val_loss for a log-loss
    study, where the best accuracy can come epochs later than the weights kept), after the
    warm-up epochs, which early stopping does not watch."""
    from search.metrics import monitor_mode

    curve = np.asarray(history.get(monitor, []), dtype=float)
    start = warmup if curve.size > warmup else 0
    curve = curve[start:]
    if not curve.size or np.isnan(curve).all():
        return 0
    return start + int(np.nanargmin(curve) if monitor_mode(monitor) == "min" else np.nanargmax(curve)) + 1


def train(config: TrialConfig, data: TrialData, epochs: int, patience: int, seed: int,
          callbacks: list[keras.callbacks.Callback] = (), metric: str = "accuracy",
          tta: str = "none", warmup: int = 0) -> TrainResult:
    """metric: what the study optimises (search.metrics.REGISTRY); early stopping watches its
    Keras monitor and restores the best of it. tta: how validation predictions are made.
    warmup: epochs over which the learning rate rises to config's; early stopping starts
    watching after them."""
    from search.metrics import metric as metric_of, monitor_mode

    monitor = metric_of(metric).monitor
    warmup = min(warmup, epochs - 1)  # early stopping watches at least the last epoch
    keras.utils.set_random_seed(seed)
    pre = config.preprocess
    model = build_model(config.model, (*pre.size, pre.channels), data.num_classes,
                        scaling=(data.stats.kind, data.stats.mean, data.stats.std))
    # Refused before training, not killed by the kernel mid-epoch: a huge size or depth.
    check_memory(*training_bytes(model, min(config.batch_size, len(data.split.train))))
    per_epoch = math.ceil(len(data.split.train) / config.batch_size)
    compile_model(model, config, data.num_classes, epochs * per_epoch, warmup_steps=warmup * per_epoch)
    train_ds = make_batches(data.cache, data.split.train, config.batch_size, shuffle=True, seed=seed)
    val_ds = make_batches(data.cache, data.split.val, config.batch_size)
    stop = keras.callbacks.EarlyStopping(monitor=monitor, mode=monitor_mode(monitor),
                                         patience=patience, restore_best_weights=True,
                                         start_from_epoch=warmup)
    started = time.perf_counter()
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=0, shuffle=False,
                        callbacks=[keras.callbacks.TerminateOnNaN(), stop, *callbacks]).history
    seconds = time.perf_counter() - started

    val_acc = [v for v in history.get("val_accuracy", []) if not math.isnan(v)]
    diverged = any(math.isnan(v) or math.isinf(v) for v in history.get("loss", []))
    # Keras reports float32: 0.3 arrives as 0.30000001192092896. Six decimals hold any
    # accuracy of up to a million images exactly enough, and print as people expect.
    best = round(float(max(val_acc)), 6) if val_acc else 0.0
    from models.combine import with_tta
    from search.metrics import scores

    probs = np.nan_to_num(np.asarray(with_tta(model, tta).predict(val_ds, verbose=0)))
    val_true = data.cache.labels[data.split.val]
    val_scores = scores(val_true, probs, [data.cache.image_set.groups[i] for i in data.split.val])
    chance = 1.0 / data.num_classes
    return TrainResult(
        model=model, history=history, best_val_accuracy=float(best),
        best_epoch=_best_epoch(history, monitor, warmup),
        epochs_run=len(history.get("loss", [])), train_seconds=seconds,
        params_count=count_trainable(model), diverged=diverged,
        converged=not diverged and best >= chance + CONVERGENCE_MARGIN,
        val_true=val_true, val_probs=probs, val_scores=val_scores,
    )


@dataclass
class Trained:
    """One model as the objective and `search replicate` keep it: the training, the record of
    it, and where the model was saved."""

    result: TrainResult
    fit: FitResult
    path: Path  # model_dir/model/model.keras


def train_saved(config: TrialConfig, data: TrialData, epochs: int, patience: int, seed: int, model_dir: Path,
                fold: int | None = None, callbacks: list[keras.callbacks.Callback] = (), metric: str = "accuracy",
                tta: str = "none", warmup: int = 0) -> Trained:
    """train(), then the model saved under model_dir and its fit recorded with the saved size
    (optimizer state included, as the study measured model size)."""
    result = train(config, data, epochs, patience, seed, callbacks=callbacks, metric=metric, tta=tta, warmup=warmup)
    path = model_dir / "model" / "model.keras"
    path.parent.mkdir(parents=True)
    result.model.save(path)
    return Trained(result, result.fit_result(seed, path.stat().st_size / 2**20, fold), path)
