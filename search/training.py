"""Train one TrialConfig on streamed data. Plain Keras: callbacks come from the caller."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import keras
import numpy as np

from models import build_model, count_trainable
from preprocessing import make_batches
from studies import TrialConfig

from .data import TrialData

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


def compile_model(model: keras.Model, config: TrialConfig, num_classes: int, steps: int,
                  jit_compile: bool | str = "auto") -> None:
    """steps: the most optimizer steps training can take (the cosine schedule's length)."""
    from models.layers import SparseSmoothedCrossentropy

    lr = config.learning_rate
    if config.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(1, steps))
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
    val_pred: np.ndarray = field(repr=False)

    def metrics(self, model_size_mb: float) -> dict[str, float]:
        """What a trial's (or a seed's) run records about its training."""
        return {"best_val_accuracy": self.best_val_accuracy, "epochs_run": self.epochs_run,
                "best_epoch": self.best_epoch, "params_count": self.params_count,
                "model_size_mb": model_size_mb, "train_seconds": self.train_seconds,
                "converged": float(self.converged)}


def train(config: TrialConfig, data: TrialData, epochs: int, patience: int, seed: int,
          callbacks: list[keras.callbacks.Callback] = ()) -> TrainResult:
    keras.utils.set_random_seed(seed)
    pre = config.preprocess
    model = build_model(config.model, (*pre.size, pre.channels), data.num_classes,
                        scaling=(data.stats.kind, data.stats.mean, data.stats.std))
    compile_model(model, config, data.num_classes, epochs * math.ceil(len(data.split.train) / config.batch_size))
    train_ds = make_batches(data.cache, data.split.train, config.batch_size, shuffle=True, seed=seed)
    val_ds = make_batches(data.cache, data.split.val, config.batch_size)
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=patience,
                                         restore_best_weights=True)
    started = time.perf_counter()
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=0, shuffle=False,
                        callbacks=[keras.callbacks.TerminateOnNaN(), stop, *callbacks]).history
    seconds = time.perf_counter() - started

    val_acc = [v for v in history.get("val_accuracy", []) if not math.isnan(v)]
    diverged = any(math.isnan(v) or math.isinf(v) for v in history.get("loss", []))
    best = max(val_acc) if val_acc else 0.0
    probs = model.predict(val_ds, verbose=0)
    val_pred = np.argmax(np.nan_to_num(probs), axis=1)
    chance = 1.0 / data.num_classes
    return TrainResult(
        model=model, history=history, best_val_accuracy=float(best),
        best_epoch=int(np.nanargmax(history["val_accuracy"])) + 1 if val_acc else 0,
        epochs_run=len(history.get("loss", [])), train_seconds=seconds,
        params_count=count_trainable(model), diverged=diverged,
        converged=not diverged and best >= chance + CONVERGENCE_MARGIN,
        val_true=data.cache.labels[data.split.val], val_pred=val_pred,
    )
