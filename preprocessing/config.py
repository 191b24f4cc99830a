"""The preprocessing part of a trial config: plain, hashable, serialisable."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from .errors import DataError

COLORS = ("rgb", "gray")
FITS = ("stretch", "pad")


def parse_size(text: str | tuple[int, int] | list[int]) -> tuple[int, int]:
    """'120x160' (height x width) -> (120, 160)."""
    if isinstance(text, (tuple, list)):
        if len(text) != 2:
            raise DataError(f"size {text!r} must have two numbers, height and width")
        h, w = int(text[0]), int(text[1])
    else:
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
        if not m:
            raise DataError(f"size {text!r} is not HEIGHTxWIDTH, e.g. 120x160")
        h, w = int(m.group(1)), int(m.group(2))
    if h < 1 or w < 1:
        raise DataError(f"size {text!r} must be positive")
    return h, w


@dataclass(frozen=True)
class ImageSpec:
    """Everything that decides an image's pixels before the model: size (height, width),
    fit, color and mask. It alone keys the on-disk cache and the per-process memo, and it is
    what `search predict` decodes files with, so training and serving cannot drift apart.
    (Scaling is not here: it is the model's first layer.)"""

    size: tuple[int, int] = (120, 160)
    color: str = "rgb"
    mask: str = "none"
    fit: str = "stretch"

    def __post_init__(self) -> None:
        from .masks import check_mask

        object.__setattr__(self, "size", parse_size(self.size))
        if self.fit not in FITS:
            raise DataError(f"fit {self.fit!r} is not one of {', '.join(FITS)}")
        if self.color not in COLORS:
            raise DataError(f"color {self.color!r} is not one of {', '.join(COLORS)}")
        check_mask(self.mask)

    @property
    def channels(self) -> int:
        return 3 if self.color == "rgb" else 1

    @property
    def size_text(self) -> str:
        return f"{self.size[0]}x{self.size[1]}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = self.size_text
        return d


def image_spec(spec: "ImageSpec | PreprocessConfig") -> ImageSpec:
    """The pixel-deciding part of either."""
    return spec.image if isinstance(spec, PreprocessConfig) else spec


@dataclass(frozen=True)
class PreprocessConfig:
    """How images are turned into model input.

    size is (height, width); the public set's 240x320 images become 120x160 by default,
    as in the study. fit is how an image meets that size: `stretch` resizes it (the study's
    way), `pad` keeps its aspect ratio and pads with black (the study's wished-for square
    inputs). scaling is applied inside the model (see models.scaling); everything else is
    the `image` spec that keys the cache.
    """

    size: tuple[int, int] = (120, 160)
    color: str = "rgb"
    mask: str = "none"
    scaling: str = "channel"
    fit: str = "stretch"

    def __post_init__(self) -> None:
        from .scaling import SCALINGS

        object.__setattr__(self, "size", self.image.size)  # validates size, fit, color and mask
        if self.scaling not in SCALINGS:
            raise DataError(f"scaling {self.scaling!r} is not one of {', '.join(SCALINGS)}")

    @property
    def image(self) -> ImageSpec:
        return ImageSpec(size=self.size, color=self.color, mask=self.mask, fit=self.fit)

    @property
    def channels(self) -> int:
        return self.image.channels

    @property
    def size_text(self) -> str:
        return self.image.size_text

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = self.size_text
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        return cls(**{k: d[k] for k in ("size", "color", "mask", "scaling", "fit") if k in d})
