"""A trial's whole configuration: plain, serialisable, enough to re-run the trial."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models import FcnConfig, ModelConfig
from preprocessing import PreprocessConfig

OPTIMIZERS = ("adam", "adamax", "adadelta", "adamw")
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrialConfig:
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=FcnConfig)
    batch_size: int = 128
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    # Regularisation and schedule the study did not vary; the defaults are its training.
    label_smoothing: float = 0.0
    weight_decay: float = 0.0
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size {self.batch_size} must be positive")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate {self.learning_rate} must be positive")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing {self.label_smoothing} must be in [0, 1)")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay {self.weight_decay} must not be negative")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule {self.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
        self.model.check_input(*self.preprocess.size)

    def to_dict(self) -> dict:
        return {"preprocess": self.preprocess.to_dict(), "model": self.model.to_dict(),
                "batch_size": self.batch_size, "optimizer": self.optimizer,
                "learning_rate": self.learning_rate, "label_smoothing": self.label_smoothing,
                "weight_decay": self.weight_decay, "lr_schedule": self.lr_schedule}

    @classmethod
    def from_dict(cls, d: dict) -> "TrialConfig":
        return cls(PreprocessConfig.from_dict(d["preprocess"]), ModelConfig.from_dict(d["model"]),
                   int(d["batch_size"]), d["optimizer"], float(d["learning_rate"]),
                   float(d.get("label_smoothing", 0.0)), float(d.get("weight_decay", 0.0)),
                   d.get("lr_schedule", "constant"))

    def flat(self, sections: bool = True) -> dict[str, Any]:
        """Every setting at one level of names: the only flattening of a configuration.

        sections=True: MLflow's params, "pre.size", "model.kernels", "batch_size". False: the
        names studies give their parameters, "size", "kernels" (`best --json` lists what a trial
        did not sample by them); a name two sections share keeps its section there."""
        d = self.to_dict()
        out: dict[str, Any] = {}
        for section, prefix in (("preprocess", "pre."), ("model", "model.")):
            for k, v in d.pop(section).items():
                out[f"{prefix}{k}" if sections or k in out or k in d else k] = v
        return {**out, **d}
