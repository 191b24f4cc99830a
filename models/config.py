from __future__ import annotations

from dataclasses import asdict, dataclass

POOLINGS = ("avg", "max")
AUGMENTS = ("none", "flip", "dihedral", "rotate")
FAST_ONLY = ("batch_norm", "separable", "pooling", "augment")
TTA_MODES = ("none", "flip", "dihedral")  # test-time augmentation: see models.combine


@dataclass(frozen=True)
class ModelConfig:
    """Architecture choices; input shape and class count come from the data.

    kernels: kernel size of each conv section (their count is the depth); width multiplies
    the filters (the study's 64*2**i; the fast net's 32*2**i, capped at 256); dense_units is
    used by the CNN head only. batch_norm, separable, pooling (its head: "avg" or "max") and
    augment are the fast net's: augment ("none", "flip", "dihedral" for square inputs,
    "rotate": flips, any angle, shifts) applies in training only, so inference sees raw images.
    """

    arch: str = "fcn"
    kernels: tuple[int, ...] = (2, 2, 2, 2, 2)
    dropout: float = 0.1
    width: float = 1.0
    dense_units: int = 128
    batch_norm: bool = False
    separable: bool = False
    pooling: str = "avg"
    augment: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernels", tuple(int(k) for k in self.kernels))
        if not self.kernels or any(k < 1 for k in self.kernels):
            raise ValueError(f"kernels {self.kernels} must be positive integers")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout {self.dropout} must be in [0, 1)")
        if self.width <= 0:
            raise ValueError(f"width {self.width} must be positive")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling {self.pooling!r} is not one of {', '.join(POOLINGS)}")
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment {self.augment!r} is not one of {', '.join(AUGMENTS)}")
        if self.dense_units < 1:
            raise ValueError(f"dense_units {self.dense_units} must be at least 1")

    def check_input(self, height: int, width: int) -> None:
        """What only the input size can rule out, found before a model is built."""
        if self.augment == "dihedral" and height != width:
            raise ValueError(f"augment dihedral turns images by 90 degrees, so it needs a square size, not "
                             f"{height}x{width} (use flip or rotate)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kernels"] = list(self.kernels)
        return d

    def used(self) -> dict:
        """to_dict() less the fields this architecture ignores (the CNN's head, the fast net's options)."""
        ignored = {"fcn": FAST_ONLY + ("dense_units",), "cnn": FAST_ONLY, "fast": ("dense_units",)}.get(self.arch, ())
        return {k: v for k, v in self.to_dict().items() if k not in ignored}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        fields = ("arch", "kernels", "dropout", "width", "dense_units", "batch_norm", "separable", "pooling", "augment")
        return cls(**{k: d[k] for k in fields if k in d})
