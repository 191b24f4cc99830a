"""A trial's whole configuration: plain, serialisable, enough to re-run the trial."""
from __future__ import annotations

from dataclasses import dataclass, field

from models import ModelConfig
from preprocessing import PreprocessConfig

OPTIMIZERS = ("adam", "adamax", "adadelta", "adamw")


@dataclass(frozen=True)
class TrialConfig:
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    batch_size: int = 128
    optimizer: str = "adam"
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size {self.batch_size} must be positive")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate {self.learning_rate} must be positive")

    def to_dict(self) -> dict:
        return {"preprocess": self.preprocess.to_dict(), "model": self.model.to_dict(),
                "batch_size": self.batch_size, "optimizer": self.optimizer,
                "learning_rate": self.learning_rate}

    @classmethod
    def from_dict(cls, d: dict) -> "TrialConfig":
        return cls(PreprocessConfig.from_dict(d["preprocess"]), ModelConfig.from_dict(d["model"]),
                   int(d["batch_size"]), d["optimizer"], float(d["learning_rate"]))

    def flat(self) -> dict:
        """One level of names, for MLflow params and tables."""
        out = {f"pre.{k}": v for k, v in self.preprocess.to_dict().items()}
        out.update({f"model.{k}": v for k, v in self.model.to_dict().items()})
        out.update(batch_size=self.batch_size, optimizer=self.optimizer, learning_rate=self.learning_rate)
        return out
