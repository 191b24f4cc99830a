"""Optuna storages: SQLite embedded by default, PostgreSQL (or any RDB URL) for many machines."""
from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from search.urls import redact, scrub
from search.errors import SearchError

DEFAULT_STORAGE = "sqlite:///optuna.db"
# What a database outage looks like through Optuna's RDB storage.
STORAGE_ERRORS = (SQLAlchemyError, optuna.exceptions.StorageInternalError)
# Heartbeat and stale-trial retry are marked experimental in Optuna; we rely on them knowingly.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
log = logging.getLogger("bloodsearch.storage")


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


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
    try:
        engine = create_engine(url, connect_args=_connect_args(url))
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise SearchError(f"--storage {redact(url)}: {type(exc).__name__}: {scrub(str(exc).splitlines()[0], url)}") from None
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise SearchError(f"--storage {redact(url)}: cannot connect ({scrub(first, url)})") from None
    finally:
        engine.dispose()


def _connect_args(url: str) -> dict:
    if is_sqlite(url):
        # Several local workers share the file; wait for its lock instead of failing at once.
        return {"timeout": 60}
    if url.startswith("postgresql"):
        return {"connect_timeout": 10}
    return {}


def _pool(url: str) -> dict:
    """A process needs two connections at once (its trial and the trial's heartbeat thread);
    keeping SQLAlchemy's default five idle per process would cost a shared server dearly."""
    return {} if is_sqlite(url) else {"pool_size": 2, "max_overflow": 3}


def open_storage(url: str, heartbeat_interval: int = 10, grace_period: int | None = None,
                 stale_callback=None) -> RDBStorage:
    """An RDBStorage with heartbeat: trials of a killed worker become FAIL and are retried once."""
    def make() -> RDBStorage:
        return RDBStorage(
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
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise SearchError(f"--storage {redact(url)}: {type(exc).__name__}: {scrub(str(exc).splitlines()[0], url)}") from None


def _schema_race(exc: SQLAlchemyError) -> bool:
    """Processes that open a new, empty storage at the same moment all create its tables;
    the losers see "already exists" or a duplicate schema version. The tables exist now."""
    return isinstance(exc, IntegrityError) or "already exists" in str(exc)


def study_names(storage: RDBStorage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
