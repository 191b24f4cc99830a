"""Running a failed trial's configuration again, once: after a stale heartbeat, a stop request,
or a file the trial needed vanishing under it."""
from __future__ import annotations

import copy
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback

from search.record import INHERITED, read_trial


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a failed trial's parameters again, once (Optuna's retry callback). The retry
    inherits the trial's intent (configuration, seed, original number), never the identity
    of the process that died with it: an inherited pid would make the re-queued trial look
    orphaned until its new worker overwrote it."""
    if read_trial(trial).surplus:
        return
    clean = copy.deepcopy(trial)
    clean.user_attrs = {k: v for k, v in trial.user_attrs.items() if k in INHERITED}
    RetryHeartbeatStaleTrialCallback(max_retry=1)(study, clean)


def vanished_file(exc: BaseException) -> str | None:
    """The file whose disappearance failed a trial (a cache folder deleted by hand, a data copy
    replaced mid-study), from anywhere in the exception's chain; None for any other failure.
    Such a failure says nothing about the configuration, so the trial deserves another go."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, FileNotFoundError) and exc.filename:
            return str(Path(exc.filename))
        exc = exc.__cause__ or exc.__context__
    return None
