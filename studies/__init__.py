"""Search spaces. A study is a module with `suggest(p: Params) -> TrialConfig`.

Shipped: cnn, fcn (the study's spaces), seed-cnn, seed-fcn (its best fixed configurations), fast
(a small modern net for a CPU budget), families (the study's FCN and the fast net in one
narrowed space: the 2026-11-30 campaign's), campaign (both, wide enough to hold every known
configuration: the 2026-12 campaign's).
A user's own study is a path to a .py file with the same function.
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from .config import TrialConfig
from .params import ParamError, Params

SHIPPED = {"cnn": "cnn", "fcn": "fcn", "seed-cnn": "seed_cnn", "seed-fcn": "seed_fcn", "fast": "fast",
           "families": "families", "campaign": "campaign"}


class StudyError(ValueError):
    """An unknown study name or a study file that cannot be used."""


def load_study(name_or_path: str) -> Callable[[Params], TrialConfig]:
    """The `suggest` function of a shipped study or of a user's .py file."""
    if name_or_path in SHIPPED:
        module: ModuleType = importlib.import_module(f"studies.{SHIPPED[name_or_path]}")
    elif name_or_path.endswith(".py"):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise StudyError(f"study file {path} does not exist")
        spec = importlib.util.spec_from_file_location(f"user_study_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # a user's file: any error is theirs to see, in one line
            raise StudyError(f"study file {path} failed to import: {type(exc).__name__}: {exc}") from None
    else:
        raise StudyError(f"unknown study {name_or_path!r}; shipped: {', '.join(SHIPPED)}, or a path to a .py file")
    suggest = getattr(module, "suggest", None)
    if not callable(suggest):
        raise StudyError(f"study {name_or_path} has no suggest(p) function")
    return suggest


def study_digest(name_or_path: str) -> str | None:
    """A digest of a .py study's content (None for shipped studies, which are versioned code)."""
    if not name_or_path.endswith(".py"):
        return None
    import hashlib

    try:
        return hashlib.sha256(Path(name_or_path).expanduser().read_bytes()).hexdigest()[:16]
    except OSError:
        return None  # load_study says it is missing


def check_params(suggest: Callable[[Params], TrialConfig], fixed: dict[str, Any], study: str,
                 fixed_only: bool = False) -> TrialConfig:
    """Run the space once without Optuna: unknown names and bad values fail here, not in trial 0.
    fixed_only: the configuration must be fully determined (a search space's free parameters
    would be filled with its first choices and lower bounds, a configuration nobody chose)."""
    p = Params.dry_run(fixed)
    try:
        config = suggest(p)
    except ParamError:
        raise
    except ValueError as exc:
        if fixed:  # a value the options gave, most likely; the message names it
            raise ParamError(f"--param values rejected by study {study}: {exc}") from None
        raise ParamError(f"study {study}: its suggest() raised ValueError: {exc}") from None
    except Exception as exc:  # the study file's own bug, not the options'
        raise ParamError(f"study {study}: its suggest() raised {type(exc).__name__}: {exc}") from None
    if not isinstance(config, TrialConfig):
        raise ParamError(f"study {study}: suggest() returned a {type(config).__name__}, not a TrialConfig "
                         f"(studies/fast.py shows the shape)")
    unused = p.unused_fixed()
    if unused:
        has = ", ".join(sorted(p.values)) or "no parameters: every value is fixed in the file"
        raise ParamError(f"--param {unused[0]}: study {study} has no such parameter (it has {has})")
    if fixed_only and p.free():
        raise ParamError(f"study {study} is a search space, not one configuration: fix its free parameters with "
                         f"--param ({', '.join(f'{name}=...' for name in p.free())}), or replicate a trial with "
                         f"--study-name")
    return config


def reachable_configs(suggest: Callable[[Params], TrialConfig], fixed: dict[str, Any]) -> list[TrialConfig]:
    """What a space can build, size by size, as its dry run sees it: the dry run's own
    configuration, then one per choice of a searched categorical `size` the options leave open.
    What a launch checks sizes against before any trial (the cache's disk, --tta dihedral)."""
    p = Params.dry_run(fixed)
    configs = [suggest(p)]
    domain = p.domains.get("size")
    if domain is not None and domain.kind == "categorical" and "size" not in fixed:
        configs += [suggest(Params.dry_run({**fixed, "size": choice})) for choice in domain.choices]
    return configs


__all__ = ["TrialConfig", "Params", "ParamError", "StudyError", "load_study", "check_params", "study_digest", "SHIPPED",
           "reachable_configs"]
