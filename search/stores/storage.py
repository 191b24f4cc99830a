"""Optuna storages: SQLite embedded by default, PostgreSQL (or any RDB URL) for many machines."""
from __future__ import annotations

import logging
import os
import re
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy import bindparam, create_engine, text
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from search.stores.engine import connect_args as _connect_args, is_sqlite, schema_race as _schema_race
from search.urls import redact, scrub
from search.errors import SearchError

DEFAULT_STORAGE = "sqlite:///optuna.db"
# What a database outage looks like through Optuna's RDB storage.
STORAGE_ERRORS = (SQLAlchemyError, optuna.exceptions.StorageInternalError)
# Heartbeat and stale-trial retry are marked experimental in Optuna; we rely on them knowingly.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
log = logging.getLogger("bloodsearch.storage")
# PostgreSQL's refusal past max_connections (the last slots are kept for superusers).
_NO_SLOT = re.compile(r"too many clients already|remaining connection slots are reserved", re.IGNORECASE)


def is_proxy(url: str) -> bool:
    return url.startswith("grpc://")


def error_line(exc: BaseException, url: str | None = None) -> str:
    """A storage error in one line; past PostgreSQL's connection ceiling, the way out of it."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if any(_NO_SLOT.search(str(getattr(e, "orig", None) or e)) for e in _chain(exc)):
        return no_slot_line(url)
    return scrub(first, url) if url else first


def _chain(exc: BaseException | None):
    """exc and its causes: Optuna reports a refused connection during a commit as "invalid
    data in the commit" (StorageInternalError), with PostgreSQL's words only in its cause."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def no_slot_line(url: str | None = None) -> str:
    return (f"PostgreSQL has no connection left (too many clients already; each worker holds about 2): put the "
            f"storage proxy in front of it, `search proxy --storage {redact(url) if url else 'postgresql+psycopg://...'}`"
            f", and give every command --storage grpc://PROXY_HOST:13000")


def check_storage(url: str, must_exist: bool = False) -> None:
    """Fail in one line, before anything is created, if the storage cannot be reached.
    must_exist: for commands that only read studies, a SQLite file that is not there is an
    error (a typo, or the wrong folder), never an empty database to create."""
    if is_sqlite(url):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            file = Path(path).expanduser().resolve()
            if must_exist and not file.is_file():
                raise SearchError(f"--storage {redact(url)}: no such database ({file}); run the command where the "
                                  f"study was launched, or give its --storage")
            if not file.parent.is_dir() or not os.access(file.parent, os.W_OK):
                raise SearchError(f"--storage {redact(url)}: folder {file.parent} does not exist or is not writable")
        return
    if is_proxy(url):
        from search.stores.proxy import check_proxy

        check_proxy(url)
        return
    check_database(url, "--storage")


def check_database(url: str, option: str) -> None:
    """One line naming option, the URL masked, if the database server cannot be reached."""
    try:
        engine = create_engine(url, connect_args=_connect_args(url))
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise SearchError(f"{option} {redact(url)}: {type(exc).__name__}: {scrub(str(exc).splitlines()[0], url)}") from None
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        if _NO_SLOT.search(str(getattr(exc, "orig", exc))):
            raise SearchError(f"{option} {redact(url)}: {no_slot_line(url)}") from None
        raise SearchError(f"{option} {redact(url)}: cannot connect ({scrub(first, url)})") from None
    finally:
        engine.dispose()


def _pool(url: str) -> dict:
    """A process needs two connections at once (its trial and the trial's heartbeat thread);
    keeping SQLAlchemy's default five idle per process would cost a shared server dearly."""
    return {} if is_sqlite(url) else {"pool_size": 2, "max_overflow": 3}


class OutageProofStorage(RDBStorage):
    """Optuna's RDBStorage with two holes of its heartbeat closed (both found by the chaos
    soak, benchmarks/chaos.py):

    - Optuna's heartbeat thread ends at its first failed beat, so after a database restart a
      trial still training beats no more and is failed as stale while it runs: here a failed
      beat is logged and the next one tries again.
    - A RUNNING trial that never recorded a heartbeat (its process died between ask() and its
      first beat) is skipped by Optuna's stale check for ever, and the study waits for it:
      here it is stale once this process has seen it without a heartbeat for the grace period
      (timed by this process's own clock, so other machines' clocks do not matter).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._beatless_since: dict[int, float] = {}

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except STORAGE_ERRORS as exc:
            first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            log.warning("heartbeat of trial id %d not recorded, next try in %s s: %s", trial_id,
                        self.heartbeat_interval, first[0][:200] if first else type(exc).__name__)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        grace = self.grace_period if self.grace_period is not None else 2 * (self.heartbeat_interval or 0)
        running = {t._trial_id for t in self.get_all_trials(study_id, deepcopy=False,
                                                            states=(optuna.trial.TrialState.RUNNING,))}
        if not running:
            self._beatless_since.clear()
            return stale
        with self.engine.connect() as conn:
            beating = {row[0] for row in conn.execute(
                text("SELECT trial_id FROM trial_heartbeats WHERE trial_id IN :ids").bindparams(
                    bindparam("ids", expanding=True)), {"ids": sorted(running)})}
        now = time.monotonic()
        for trial_id in list(self._beatless_since):
            if trial_id not in running or trial_id in beating:
                del self._beatless_since[trial_id]
        for trial_id in sorted(running - beating):
            first_seen = self._beatless_since.setdefault(trial_id, now)
            if now - first_seen > grace and trial_id not in stale:
                stale.append(trial_id)
        return stale


def open_storage(url: str, heartbeat_interval: int = 10, grace_period: int | None = None,
                 stale_callback=None) -> BaseStorage:
    """An RDBStorage (or, for grpc://, the storage proxy's client) with heartbeat: trials of a
    killed worker become FAIL and are retried once."""
    if is_proxy(url):
        from search.stores.proxy import open_proxy

        return open_proxy(url, heartbeat_interval, grace_period,
                          stale_callback or RetryHeartbeatStaleTrialCallback(max_retry=1))

    def make() -> RDBStorage:
        return OutageProofStorage(
            url,
            engine_kwargs={"connect_args": _connect_args(url), "pool_pre_ping": True, **_pool(url)},
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=stale_callback or RetryHeartbeatStaleTrialCallback(max_retry=1),
        )

    try:
        for attempt in range(5):
            try:
                return make()
            except SQLAlchemyError as exc:
                if attempt == 4 or not _schema_race(exc):
                    raise
                time.sleep(0.5 * (attempt + 1))  # let the winner finish creating the schema
    except (OperationalError, InterfaceError):
        raise  # unreachable right now (a restart): an outage callers ride out, not a usage error
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise SearchError(f"--storage {redact(url)}: {type(exc).__name__}: {scrub(str(exc).splitlines()[0], url)}") from None


def study_names(storage: BaseStorage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
