"""grpc://host:port storage: Optuna's gRPC storage proxy (`search proxy`), one process that
fronts one RDB for many workers, so the database serves a bounded pool instead of two
connections per worker.

Optuna's client (GrpcStorageProxy) has no heartbeat, and without one a trial whose worker
died stays RUNNING for ever. Here a worker beats by writing a trial system attribute through
the proxy, and a trial is stale when the looking process has seen its beat unchanged for the
grace period on its own clock (no clock is compared across machines). So heartbeat, the
stale-trial retry and the MLflow run closing of search.running.worker work as on PostgreSQL.
Every process on a study must use the same kind of storage: a worker on PostgreSQL directly
does not see proxy beats (they are not in trial_heartbeats), and would fail proxied trials.

gRPC transport errors (proxy down, its database down) become StorageInternalError, which the
launcher and workers already ride out as an outage.

Each read of a study's trials through Optuna's client is a GetTrials that returns every
unfinished trial, and the proxy's work grows with their number (docs/benchmarks.md). A worker
reads three times back to back between two trials (our stop rule, Optuna's stale-trial check,
`Study.ask` looking for a queued trial), so a read within FRESH_FOR_S of the last one, with no
write by this client between, is answered from that snapshot."""
from __future__ import annotations

import logging
import re
import signal
import socket
import threading
import time
from typing import Any, Callable

import optuna
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.storages import GrpcStorageProxy  # grpc itself is imported when first used
from optuna.storages._heartbeat import BaseHeartbeat

from search.errors import SearchError
from search.urls import redact

SCHEME = "grpc://"
DEFAULT_PORT = 13000
HEARTBEAT_ATTR = "bloodsearch:heartbeat"
CHECK_TIMEOUT_S = 5.0
# Far below a heartbeat's grace period (20 s by default), so the stale check is as good, and
# above the few milliseconds between the reads at a trial boundary on a loaded machine.
FRESH_FOR_S = 1.0
# Codes Optuna's client turns into KeyError, DuplicatedStudyError, UpdateFinishedTrialError
# and ValueError; every other code is the transport or the proxy's database failing.
_SEMANTIC = {"NOT_FOUND", "ALREADY_EXISTS", "FAILED_PRECONDITION", "INVALID_ARGUMENT"}
_URL = re.compile(r"^grpc://(?P<host>\[[^\]]+\]|[^:/?#@]+)(?::(?P<port>\d+))?/?$")
log = logging.getLogger("bloodsearch.storage")
_now = time.monotonic  # the looking process's own clock (a test moves it)


def is_grpc(url: str) -> bool:
    return url.startswith(SCHEME)


def address(url: str) -> tuple[str, int]:
    """(host, port) of grpc://host[:port]; a URL with a path, user or query is refused."""
    match = _URL.match(url)
    if not match:
        raise SearchError(f"--storage {redact(url)}: a storage proxy URL is grpc://host:port (no user, path or query: the "
                          f"proxy holds the database's credentials)")
    port = int(match["port"] or DEFAULT_PORT)
    if not 0 < port < 65536:
        raise SearchError(f"--storage {url}: port {port} is not a TCP port")
    return match["host"].strip("[]"), port


def _grpc():
    try:
        import grpc
        from optuna.storages._grpc.auto_generated import api_pb2, api_pb2_grpc  # noqa: F401
    except ImportError as exc:
        raise SearchError(f"grpc:// storage needs gRPC ({exc.name} is not installed): pip install "
                          f"'bloodsearch[proxy]'") from None
    return grpc


def rpc_line(exc: Exception) -> str:
    """A gRPC error in one line: its code and the first line of its details."""
    code = exc.code().name if hasattr(exc, "code") and exc.code() is not None else type(exc).__name__
    details = (exc.details() if hasattr(exc, "details") else str(exc)) or ""
    details = details.strip().splitlines()[0] if details.strip() else ""
    return f"{code}: {details}"[:300] if details else code


class _OutageStub:
    """The client's stub with transport failures raised as StorageInternalError; every call
    other than a read is reported to on_write first."""

    def __init__(self, stub: Any, where: str, on_write: Callable[[], None] = lambda: None) -> None:
        self._stub, self._where, self._on_write = stub, where, on_write

    def __getattr__(self, name: str) -> Callable:
        method = getattr(self._stub, name)
        grpc = _grpc()
        writes = not name.startswith("Get")

        def call(*args, **kwargs):
            if writes:
                self._on_write()
            try:
                return method(*args, **kwargs)
            except grpc.RpcError as exc:
                if exc.code() is not None and exc.code().name in _SEMANTIC:
                    raise
                raise StorageInternalError(f"storage proxy {self._where}: {rpc_line(exc)}") from exc
        return call


def _fresh_cache(stub: Any):
    """Optuna's client cache, which skips a study's GetTrials made within FRESH_FOR_S of the
    last one unless this client has written since (its own writes are seen at once: a trial it
    created or finished, a beat)."""
    from optuna.storages._grpc.client import GrpcClientCache

    class FreshCache(GrpcClientCache):
        def __init__(self, grpc_client: Any) -> None:
            super().__init__(grpc_client)
            self.writes = 0  # a count, not a flag: a beat from the heartbeat thread may land mid-read
            self.synced: dict[int, tuple[float, int]] = {}  # study id: (read answered, writes before it)

        def written(self) -> None:
            self.writes += 1

        def _read_trials_from_remote_storage(self, study_id: int) -> None:  # called under self.lock
            last = self.synced.get(study_id)
            if last and study_id in self.studies and last[1] == self.writes and _now() - last[0] < FRESH_FOR_S:
                return
            writes = self.writes
            super()._read_trials_from_remote_storage(study_id)
            # From the answer, not the request: on a busy proxy one GetTrials takes seconds.
            self.synced[study_id] = (_now(), writes)

    return FreshCache(stub)


class ProxyStorage(GrpcStorageProxy, BaseHeartbeat):
    """Optuna's gRPC client with a heartbeat and outage errors (see the module's docstring).
    The stale check keeps what it saw between calls; Optuna makes them from one thread."""

    def __init__(self, host: str, port: int, heartbeat_interval: int | None = 10, grace_period: int | None = None,
                 stale_callback: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None) -> None:
        _grpc()
        self.heartbeat_interval, self.grace_period, self._stale_callback = heartbeat_interval, grace_period, stale_callback
        # study id: {trial id: (the last beat seen, when this process first saw it)}
        self._beats: dict[int, dict[int, tuple[Any, float]]] = {}
        super().__init__(host=host, port=port)

    def _setup(self) -> None:
        from optuna.storages._grpc.auto_generated import api_pb2_grpc
        from optuna.storages._grpc.client import create_insecure_channel

        self._channel = create_insecure_channel(self._host, self._port)
        self._stub = _OutageStub(api_pb2_grpc.StorageServiceStub(self._channel), f"{self._host}:{self._port}",
                                 on_write=lambda: self._cache.written())
        self._cache = _fresh_cache(self._stub)

    def record_heartbeat(self, trial_id: int) -> None:
        # A new value each beat: staleness is "unchanged for the grace period", not a time.
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except UpdateFinishedTrialError:
            pass  # failed as stale by another process meanwhile; Optuna's tell says the rest
        except StorageInternalError as exc:
            # As OutageProofStorage: a failed beat is logged, the next one tries again.
            log.warning("heartbeat of trial id %d not recorded, next try in %s s: %s", trial_id,
                        self.heartbeat_interval, str(exc)[:200])

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        grace = self.grace_period if self.grace_period is not None else 2 * (self.heartbeat_interval or 0)
        running = self.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        now, stale, seen = _now(), [], {}
        before = self._beats.get(study_id, {})
        for trial in running:
            beat = trial.system_attrs.get(HEARTBEAT_ATTR)
            last = before.get(trial._trial_id)
            seen[trial._trial_id] = last if last is not None and last[0] == beat else (beat, now)
            if now - seen[trial._trial_id][1] > grace:
                stale.append(trial._trial_id)
        self._beats[study_id] = seen  # trials no longer running are forgotten
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self._stale_callback


def open_proxy(url: str, heartbeat_interval: int = 10, grace_period: int | None = None,
               stale_callback=None) -> ProxyStorage:
    host, port = address(url)
    return ProxyStorage(host, port, heartbeat_interval, grace_period, stale_callback)


def check_proxy(url: str, option: str = "--storage") -> None:
    """One line, within seconds, if no proxy answers at url or its database does not."""
    host, port = address(url)
    grpc = _grpc()
    from optuna.storages._grpc.auto_generated import api_pb2, api_pb2_grpc
    from optuna.storages._grpc.client import create_insecure_channel

    hint = "start one with `search proxy --storage postgresql+psycopg://...`"
    try:
        # gRPC would retry a refused connection until its timeout; a socket says it at once.
        socket.create_connection((host, port), timeout=CHECK_TIMEOUT_S).close()
    except OSError as exc:
        raise SearchError(f"{option} {url}: no storage proxy at {host}:{port} ({exc.strerror or exc}); {hint}") from None
    with create_insecure_channel(host, port) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=CHECK_TIMEOUT_S)
        except grpc.FutureTimeoutError:
            raise SearchError(f"{option} {url}: no storage proxy answers at {host}:{port} within "
                              f"{CHECK_TIMEOUT_S:g} s; {hint}") from None
        try:
            # A name no study has: NOT_FOUND is the proxy and its database answering.
            api_pb2_grpc.StorageServiceStub(channel).GetStudyIdFromName(
                api_pb2.GetStudyIdFromNameRequest(study_name="bloodsearch-reachability-check"),
                timeout=CHECK_TIMEOUT_S)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return
            raise SearchError(f"{option} {url}: the storage proxy at {host}:{port} answers but cannot serve "
                              f"({rpc_line(exc)})") from None


def serve(storage: str, host: str, port: int, threads: int, ready: Callable[[str], None] = print) -> int:
    """Serve Optuna's gRPC proxy in front of the RDB at storage until SIGINT or SIGTERM.
    Database connections are bounded by threads (each RPC runs on one), whatever the number
    of clients."""
    from concurrent.futures import ThreadPoolExecutor

    _grpc()
    from optuna.storages import RDBStorage
    from optuna.storages._cached_storage import _CachedStorage
    from optuna.storages._grpc.server import make_server
    from sqlalchemy.exc import SQLAlchemyError

    from search.stores.engine import connect_args as _connect_args, schema_race as _schema_race

    def backend() -> RDBStorage:
        return RDBStorage(storage, engine_kwargs={"connect_args": _connect_args(storage), "pool_pre_ping": True,
                                                  "pool_size": threads, "max_overflow": 0, "pool_timeout": 60})

    for attempt in range(5):
        try:
            rdb = backend()
            break
        except SQLAlchemyError as exc:
            if attempt == 4 or not _schema_race(exc):
                raise
            time.sleep(0.5 * (attempt + 1))  # a launch creating the same new schema won the race
    # Optuna's advice: the cached storage, so each GetTrials reads only what changed.
    try:
        server = make_server(_CachedStorage(rdb), host, port, ThreadPoolExecutor(max_workers=threads,
                                                                                thread_name_prefix="proxy"))
    except RuntimeError as exc:  # grpc cannot bind
        rdb.engine.dispose()
        raise SearchError(f"--port {port}: cannot listen on {host}:{port} ({exc}); is another proxy there?") from None
    server.start()
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    ready(f"storage proxy: grpc://{host}:{port} in front of {redact(storage)} ({threads} threads, at most "
          f"{threads} database connections)")
    try:
        stop.wait()
    finally:
        server.stop(grace=5).wait()
        rdb.engine.dispose()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
