"""What every SQLAlchemy engine on an Optuna RDB gets, shared by the storage
(search.stores.storage) and the gRPC storage proxy's backend (search.stores.proxy): its
connect arguments, and recognising the lost race to create a new schema. A module of its own
so that neither of the two imports the other for it."""
from __future__ import annotations

from sqlalchemy.exc import IntegrityError, SQLAlchemyError


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def connect_args(url: str) -> dict:
    if is_sqlite(url):
        # Several local workers share the file; wait for its lock instead of failing at once.
        return {"timeout": 60}
    if url.startswith("postgresql"):
        return {"connect_timeout": 10}
    return {}


def schema_race(exc: SQLAlchemyError) -> bool:
    """Processes that open a new, empty storage at the same moment all create its tables;
    the losers see "already exists" or a duplicate schema version. The tables exist now."""
    return isinstance(exc, IntegrityError) or "already exists" in str(exc)
