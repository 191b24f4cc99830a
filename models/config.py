from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelConfig:
    """Architecture choices; input shape and class count come from the data.

    kernels: kernel size of each of the five conv sections; width multiplies the study's
    64*2**i filters; dense_units is used by the CNN head only.
    """

    arch: str = "fcn"
    kernels: tuple[int, ...] = (2, 2, 2, 2, 2)
    dropout: float = 0.1
    width: float = 1.0
    dense_units: int = 128

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernels", tuple(int(k) for k in self.kernels))
        if not self.kernels or any(k < 1 for k in self.kernels):
            raise ValueError(f"kernels {self.kernels} must be positive integers")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout {self.dropout} must be in [0, 1)")
        if self.width <= 0:
            raise ValueError(f"width {self.width} must be positive")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kernels"] = list(self.kernels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        fields = ("arch", "kernels", "dropout", "width", "dense_units")
        return cls(**{k: d[k] for k in fields if k in d})
