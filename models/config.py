"""A network family's configuration: the base every family's dataclass extends, and reading
one back from a stored dict. No TensorFlow here, so processes that only plan trials stay small.

A family is one module holding its configuration (a frozen dataclass extending ModelConfig,
with its name as the class attribute `arch`) and its builder, registered in models.registry.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, ClassVar

TTA_MODES = ("none", "flip", "dihedral")  # test-time augmentation: see models.combine
DEFAULT_ARCH = "fcn"  # what a record without an "arch" (and ModelConfig()) always meant

# The one flat configuration every family shared before each had its own, in its positional
# order: records and study files written then name these, and each family keeps only its own.
LEGACY_FIELDS = ("arch", "kernels", "dropout", "width", "dense_units", "batch_norm", "separable", "pooling",
                 "augment")


class _ByArch(type):
    """Calling the base itself, ModelConfig("fcn", kernels=...), builds that family's
    configuration: .py studies written before the families had their own classes still run
    unchanged (their content digest is fixed for their study)."""

    def __call__(cls, *args: Any, **kwargs: Any):
        if cls is not ModelConfig:
            return super().__call__(*args, **kwargs)
        if len(args) > len(LEGACY_FIELDS):
            raise TypeError(f"ModelConfig takes at most {len(LEGACY_FIELDS)} positional arguments")
        given = {**dict(zip(LEGACY_FIELDS, args)), **kwargs}
        family = family_config(given.get("arch", DEFAULT_ARCH))
        own = {f.name for f in fields(family)}
        unknown = sorted(set(given) - own - set(LEGACY_FIELDS))
        if unknown:
            raise TypeError(f"{family.__name__} has no field {unknown[0]!r}")
        return family(**{k: v for k, v in given.items() if k in own})


@dataclass(frozen=True)
class ModelConfig(metaclass=_ByArch):
    """What every family has; input shape and class count come from the data.

    kernels: kernel size of each conv section (their count is the depth); dropout; width
    multiplies each family's filters. A family adds its own fields in its subclass.
    """

    arch: ClassVar[str] = ""
    kernels: tuple[int, ...] = (2, 2, 2, 2, 2)
    dropout: float = 0.1
    width: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernels", tuple(int(k) for k in self.kernels))
        if not self.kernels or any(k < 1 for k in self.kernels):
            raise ValueError(f"kernels {self.kernels} must be positive integers")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout {self.dropout} must be in [0, 1)")
        if self.width <= 0:
            raise ValueError(f"width {self.width} must be positive")

    def check_input(self, height: int, width: int) -> None:
        """What only the input size can rule out, found before a model is built (a family
        overrides it)."""

    def to_dict(self) -> dict[str, Any]:
        """Its family's name and fields: what records, exports and MLflow params hold."""
        return {"arch": self.arch, **asdict(self), "kernels": list(self.kernels)}

    def used(self) -> dict[str, Any]:
        """to_dict(): a family's configuration holds only fields its builder uses."""
        return self.to_dict()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """The configuration a stored dict describes. A dict of the flat days holds every
        family's fields; those the family does not use are dropped."""
        arch = d.get("arch", DEFAULT_ARCH if cls is ModelConfig else cls.arch)
        if cls is not ModelConfig and arch != cls.arch:
            raise ValueError(f"a {arch} configuration is not a {cls.__name__}")
        family = family_config(arch)
        own = {f.name for f in fields(family)}
        return family(**{k: v for k, v in d.items() if k in own})


# The families by name. The table lives here, below the family modules and models.registry
# (which registers the shipped ones), so reading a stored configuration back needs no import
# of the modules that import this one.
Builder = Callable[[Any, ModelConfig, int], Any]


@dataclass(frozen=True)
class Family:
    config: type[ModelConfig]
    build: Builder


FAMILIES: dict[str, Family] = {}


def register_family(config: type[ModelConfig], build: Builder) -> None:
    """Make a family known by its configuration's `arch`. Registering the same class again
    (a module imported anew, e.g. a .py study loaded twice) replaces it; another family's name
    is refused, so two families never read each other's records."""
    if not (isinstance(config, type) and issubclass(config, ModelConfig)) or config is ModelConfig:
        raise TypeError(f"{config!r} is not a subclass of models.ModelConfig")
    if not config.arch:
        raise ValueError(f"{config.__name__} names no family: set its class attribute arch")
    known = FAMILIES.get(config.arch)
    if known and (known.config.__module__, known.config.__qualname__) != (config.__module__, config.__qualname__):
        raise ValueError(f"family {config.arch!r} is already {known.config.__module__}.{known.config.__qualname__}")
    FAMILIES[config.arch] = Family(config, build)


def family(arch: str) -> Family:
    if arch not in FAMILIES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[arch]


def family_config(arch: str) -> type[ModelConfig]:
    """The configuration class registered for a family name (models.registry registers the
    shipped families when the package is imported)."""
    return family(arch).config
