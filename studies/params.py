"""The only thing a search space sees: a small define-by-run interface over an Optuna trial.

It lets a user fix any parameter from the command line (--param size=60x80) with a
value of any type the space uses, and lets the launcher check those values before a
single trial starts, by running the space against `Params.dry_run`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


class ParamError(ValueError):
    """A --param that names no parameter of the space or has a value of the wrong type."""


@dataclass(frozen=True)
class Domain:
    """What a searched parameter may take, as the space declared it: for checking a value
    given by hand (--enqueue) before Optuna would refuse it inside a trial."""

    kind: str  # categorical, int, float
    choices: tuple = ()
    low: float = 0
    high: float = 0
    log: bool = False
    step: int = 1

    def holds(self, value: Any) -> bool:
        if self.kind == "categorical":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if isinstance(value, bool) or not self.low <= value <= self.high:
            return False
        return self.kind == "float" or (isinstance(value, int) and (value - self.low) % self.step == 0)

    def __str__(self) -> str:
        if self.kind == "categorical":
            return "one of " + ", ".join(str(c) for c in self.choices)
        kind = "an integer" if self.kind == "int" else "a number"
        step = f" in steps of {self.step}" if self.step != 1 else ""
        return f"{kind} from {self.low:g} to {self.high:g}{step}" + (", log scale" if self.log else "")


def _coerce(name: str, text: Any, like: Any, option: str = "--param") -> Any:
    if not isinstance(text, str):
        return text
    try:
        if isinstance(like, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            return float(text)
    except ValueError:
        kind = "true or false" if isinstance(like, bool) else "an integer" if isinstance(like, int) else "a number"
        raise ParamError(f"{option} {name}={text}: expected {kind}") from None
    return text


class Params:
    """Wraps an optuna.Trial (or nothing, for a dry run) plus the user's fixed values."""

    def __init__(self, trial=None, fixed: dict[str, Any] | None = None, option: str = "--param") -> None:
        self.trial = trial
        self.fixed = dict(fixed or {})
        self.option = option  # what the fixed values were given as, for error messages
        self.values: dict[str, Any] = {}
        self.searched: set[str] = set()  # names the space searches (not constants)
        self.domains: dict[str, Domain] = {}

    @classmethod
    def dry_run(cls, fixed: dict[str, Any] | None = None, option: str = "--param") -> "Params":
        return cls(None, fixed, option)

    def _take(self, name: str, like: Any, sample, searched: bool = True) -> Any:
        if searched:
            self.searched.add(name)
        if name in self.fixed:
            value = _coerce(name, self.fixed[name], like, self.option)
        elif self.trial is None:
            value = like
        else:
            value = sample()
        self.values[name] = value
        return value

    def categorical(self, name: str, choices: Sequence[Any]) -> Any:
        self.domains[name] = Domain("categorical", tuple(choices))
        return self._take(name, choices[0], lambda: self.trial.suggest_categorical(name, list(choices)))

    def int(self, name: str, low: int, high: int, log: bool = False, step: int = 1) -> int:
        self.domains[name] = Domain("int", low=low, high=high, log=log, step=step)
        return self._take(name, low, lambda: self.trial.suggest_int(name, low, high, log=log, step=step))

    def float(self, name: str, low: float, high: float, log: bool = False) -> float:
        self.domains[name] = Domain("float", low=float(low), high=float(high), log=log)
        return self._take(name, float(low), lambda: self.trial.suggest_float(name, low, high, log=log))

    def constant(self, name: str, value: Any) -> Any:
        """A value the space does not search but a user may still override."""
        return self._take(name, value, lambda: value, searched=False)

    def unused_fixed(self) -> list[str]:
        return sorted(set(self.fixed) - set(self.values))

    def free(self) -> list[str]:
        """Searched names the user did not fix: what a dry run had to guess."""
        return sorted(self.searched - set(self.fixed))
