"""--tta against the image size it turns: dihedral's 90-degree turns need a square size.

Checked where the size is known before anything is spent: a study's space before the study is
made, a trial's configuration before its model is loaded. Without it, every trial of a launch
failed with a traceback, and evaluate/predict/export failed after loading the model.
"""
from __future__ import annotations

from typing import Any, Callable

from preprocessing import parse_size
from studies import Params, TrialConfig, reachable_configs

from search.errors import SearchError

TURNING = "dihedral"  # the TTA mode whose views transpose the image
FIX = "use --tta flip (no turns)"


def _text(size: Any) -> str:
    h, w = parse_size(size)
    return f"{h}x{w}"


def is_square(size: Any) -> bool:
    h, w = parse_size(size)
    return h == w


def check_size(tta: str, size: Any, what: str, fix: str = "") -> None:
    """One line if tta cannot be applied at size; what names whose size it is, fix says how
    else to get a square one."""
    if tta == TURNING and not is_square(size):
        raise SearchError(f"--tta {TURNING} needs a square size; {what} is {_text(size)} (a 90-degree turn "
                          f"would change its shape): {fix + ', or ' if fix else ''}{FIX}")


def space_sizes(suggest: Callable[[Params], TrialConfig], fixed: dict[str, Any]) -> tuple[str, ...]:
    """The sizes a space can yield (studies.reachable_configs), each once, in its order."""
    configs = reachable_configs(suggest, fixed)
    searched = configs[1:] or configs  # the dry run's own is one of the choices when there are any
    return tuple(dict.fromkeys(c.preprocess.size_text for c in searched))


def check_space(tta: str, suggest: Callable[[Params], TrialConfig], fixed: dict[str, Any], study: str) -> None:
    """Refuse a launch whose space may yield a size tta cannot turn, naming it: each such trial
    would fail, and the sampler would keep proposing the size."""
    if tta != TURNING:
        return
    sizes = space_sizes(suggest, fixed)
    odd = [s for s in sizes if not is_square(s)]
    if not odd:
        return
    square = [s for s in sizes if is_square(s)] or [_square_like(odd[0])]
    fix = "give " + " or ".join(f"--param size={s}" for s in square)
    if len(sizes) == 1:
        check_size(tta, sizes[0], f"the size of study {study}", fix)
    which = "none of them square" if len(odd) == len(sizes) else f"{', '.join(odd)} not square"
    raise SearchError(f"--tta {TURNING} needs a square size; study {study} searches size {', '.join(sizes)}, "
                      f"{which}: {fix}, or {FIX}")


def _square_like(size: str) -> str:
    side = min(parse_size(size))
    return f"{side}x{side}"
