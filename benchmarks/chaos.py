"""Chaos soak: the real fleet under a seeded schedule of random faults, and what it lost.

    python benchmarks/chaos.py [--seed 0] [--trials 40] [--workers 3] [--short] [--json] [--keep]

Starts, on this machine only: a private PostgreSQL cluster (initdb into a temporary folder,
its own port; the machine's PostgreSQL is never touched), a real `mlflow server` with its
backend in that cluster, and `search launch --workers 3` on one study of tiny trials
(synthetic 24x32 images, a 5-section FCN at width 0.125, up to 3 epochs, hyperband
pruning). While the study runs, faults are injected, spread over its progress, in an order
drawn from --seed:

  worker_kill     kill -9 of a worker (a child of the launcher whose command line holds
                  search.running.worker): a third while its main thread holds an MLflow answer, a
                  third at a COMMIT to the study (see chaos_hooks/sitecustomize.py), a third
                  at whatever moment it is in
  launcher_kill   kill -9 of the launcher (its workers die with it), then the same command again
  pg_restart      pg_ctl stop (fast or immediate), 4-8 s down, start; checks that the fleet
                  saw storage errors
  mlflow_restart  the tracking server stopped (SIGTERM or SIGKILL), 3-8 s down, restarted on its port
  disk_full       the cache folder (a small tmpfs) emptied of its entries and filled, a
                  worker killed so that its successor must rebuild them; freed once a trial
                  has failed on it (skipped, with the reason, where tmpfs cannot be mounted)

A launch that exits by itself before the study has its count is launched again (and counted
in launcher_exits). At the end, one more launch of the same command must exit 0 and change
nothing. Then it checks the final state through Optuna and MlflowClient and prints one JSON
line (stdout; progress goes to stderr). It exits 1 if anything was lost: the study short of
its count, a trial number twice, a RUNNING trial or run left, a COMPLETE trial without a
FINISHED run holding its metrics, a retried trial whose parameters differ from its
original's, a PostgreSQL restart no process noticed, or a fault it could not inject.

--short is what the suite runs (tests/test_chaos.py): 12 trials, one fault of each of the
first four kinds plus a second worker kill (the tracking-server restart last), shorter
outages: 140-270 s measured on a shared 2-core machine (niced, load 4-8); the full soak
took 560-650 s there.

Needs the PostgreSQL server binaries (initdb, pg_ctl: /usr/lib/postgresql/*/bin or PATH) and,
as root, a `postgres` user to run them as; exits 77 with the reason when they are missing.
Run it niced on a shared machine: nice -n 15 python benchmarks/chaos.py --json
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOOKS = Path(__file__).resolve().parent / "chaos_hooks"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # servicetools: local PostgreSQL and MLflow servers

from preprocessing.synthetic import make_split_dataset  # noqa: E402
from search.running.worker import WORKER_MODULE  # noqa: E402
from servicetools import MLFLOW_SERVER_ENV, descendants, search_cmd, wait_http  # noqa: E402

EXIT_UNAVAILABLE = 77
STUDY = "chaos"
TINY_STUDY = '''"""The chaos soak's study: a tiny FCN on 24x32 images; dropout and learning rate searched."""
from models import ModelConfig
from preprocessing import PreprocessConfig
from studies import TrialConfig


def suggest(p):
    return TrialConfig(
        preprocess=PreprocessConfig(size=p.constant("size", "24x32"), color="rgb", mask="none", scaling="unit",
                                    fit="stretch"),
        model=ModelConfig(arch="fcn", kernels=(2,) * 5, dropout=p.float("dropout", 0.0, 0.5), width=0.125),
        batch_size=16, optimizer="adam", learning_rate=p.float("learning_rate", 1e-3, 3e-2, log=True))
'''
# What a database outage looks like in the fleet's output: the launcher's warning, a worker's
# exit line, Optuna's failed-trial lines, SQLAlchemy / psycopg errors, a dead heartbeat thread.
STORAGE_ERROR = re.compile(r"storage unreachable|OperationalError|StorageInternalError|InterfaceError|"
                           r"server closed the connection|terminating connection|could not connect|"
                           r"Connection refused|database system is (?:shutting down|starting up|in recovery)")
# Optuna's heartbeat thread has no error handling: one failed beat ends it, and the trial in
# flight beats no more (it is failed as stale once the grace period has passed).
HEARTBEAT_DIED = re.compile(r"Exception in thread .*_record_heartbeat")
# A worker's result refused because its trial was failed meanwhile (as stale, say).
RESULT_REFUSED = re.compile(r"has already finished and can not be updated")


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Stuck(Exception):
    """The launch runs but no worker has run for a long while, and the study is short."""


class Unavailable(Exception):
    """Something this machine lacks (PostgreSQL binaries, a postgres user): not a failure."""


def quiet_port(used: set[int]) -> int:
    """A free port below the ephemeral range, so that nothing takes it while its server is down."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(21000, 32000)
        if port in used:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        used.add(port)
        return port
    raise RuntimeError("no free port in 21000-32000")


def pg_bindir() -> Path:
    """The newest PostgreSQL server binaries on this machine."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise Unavailable("no PostgreSQL server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin or on PATH")


# --- the services ----------------------------------------------------------------------------

class PrivatePostgres:
    """A throw-away PostgreSQL cluster of our own: initdb in a temporary folder, its own port."""

    def __init__(self, port: int) -> None:
        self.bindir, self.port = pg_bindir(), port
        self.as_user: list[str] = []
        owner = None
        if os.geteuid() == 0:  # initdb refuses root
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root and there is no `postgres` user to run initdb as") from None
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.dir = Path(tempfile.mkdtemp(prefix="bloodsearch-chaos-pg-"))
        if owner:
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        self.data, self.log = self.dir / "data", self.dir / "postgres.log"

    def _ctl(self, *args: str, timeout: float = 90) -> None:
        out = self.dir.parent / f"{self.dir.name}.ctl.out"
        with out.open("w") as f:  # pg_ctl's children must not hold a pipe of ours
            done = subprocess.run([*self.as_user, *args], stdout=f, stderr=subprocess.STDOUT, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        text = out.read_text()
        out.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): {text[-2000:]}")

    def init(self) -> None:
        self._ctl(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")
        # fsync off: the restarts here stop the server (fast or immediate), never the machine, so
        # what was written reaches the disk all the same. synchronous_commit stays on: off, an
        # immediate stop would drop commits already acknowledged, which no real server does.
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"\n# bloodsearch chaos soak\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.dir}'\nmax_connections = 200\nfsync = off\n"
                       "full_page_writes = off\n")

    def start(self) -> None:
        self._ctl(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_databases(self, *names: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True, connect_timeout=10) as conn:
            for name in names:
                conn.execute(f'CREATE DATABASE "{name}"')

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self.stop("immediate")
            except Exception as exc:
                log(f"could not stop the private PostgreSQL: {exc}")
        shutil.rmtree(self.dir, ignore_errors=True)


class TrackingServer:
    """`mlflow server` on a fixed port, so that a restart brings it back where the fleet looks."""

    def __init__(self, backend: str, work: Path, port: int) -> None:
        self.backend, self.work, self.port = backend, work, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
        (self.work / "mlflow-artifacts").mkdir(exist_ok=True)
        self.starts += 1
        with (self.work / f"mlflow-server-{self.starts}.log").open("w") as out:
            self.proc = subprocess.Popen(
                [mlflow, "server", "--backend-store-uri", self.backend, "--artifacts-destination",
                 str(self.work / "mlflow-artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", "1"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, **MLFLOW_SERVER_ENV})
        wait_http(self.url + "/health", timeout=180)

    def stop(self, hard: bool = False) -> None:
        """SIGKILL, or SIGTERM with 5 s to finish (then SIGKILL), to the server's process group."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ([] if hard else [(signal.SIGTERM, 5)]) + [(signal.SIGKILL, 30)]:
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=wait)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue


class CacheDisk:
    """The fleet's cache folder on a small tmpfs, so that it can be filled without harm."""

    def __init__(self, path: Path, size_mb: int = 16) -> None:
        self.path, self.size_mb = path, size_mb
        self.mounted, self.reason = False, ""
        self.filler = path / "chaos-filler.bin"

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0 or not shutil.which("mount"):
            self.reason = "mounting a tmpfs needs root and mount(8); the full-disk fault is skipped"
            return
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m,mode=0755", "tmpfs",
                               str(self.path)], capture_output=True, text=True)
        if done.returncode != 0:
            self.reason = f"mount -t tmpfs refused ({done.stderr.strip()[:200]}); the full-disk fault is skipped"
            return
        self.mounted = True

    def fill(self) -> int:
        """Evict the cache entries, then fill the tmpfs to the last byte; bytes written.
        (In the other order the eviction frees the room a rebuild needs.)"""
        shutil.rmtree(self.path / "images", ignore_errors=True)
        written, block = 0, b"\0" * (1 << 20)
        with open(self.filler, "wb", buffering=0) as f:
            while True:
                try:
                    written += f.write(block)
                except OSError:
                    break
            while True:  # the last partial megabyte
                try:
                    written += f.write(b"\0" * 4096)
                except OSError:
                    break
        return written

    def free(self) -> None:
        try:
            self.filler.unlink()
        except FileNotFoundError:
            pass

    def unmount(self) -> None:
        if self.mounted:
            if subprocess.run(["umount", str(self.path)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
            self.mounted = False


# --- the fleet -------------------------------------------------------------------------------

class Fleet:
    """The launcher (and through it the workers), started and restarted with one command."""

    def __init__(self, work: Path, cmd: list[str], env: dict) -> None:
        self.work, self.cmd, self.env = work, cmd, env
        self.proc: subprocess.Popen | None = None
        self.launches = 0
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self.launches += 1
        out = (self.work / f"launch-{self.launches}.log").open("w")
        self.proc = subprocess.Popen(self.cmd, cwd=self.work, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                     errors="replace", start_new_session=True)
        threading.Thread(target=self._pump, args=(self.proc.stdout, out), daemon=True).start()

    def _pump(self, stream, out) -> None:
        for line in stream:
            out.write(line)
            out.flush()
            with self._lock:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
        out.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def workers(self) -> list[int]:
        if not self.alive():
            return []
        return [pid for pid in descendants(self.proc.pid)[1:] if _is_worker(pid)]

    def lines_between(self, start: float, end: float) -> list[str]:
        with self._lock:
            return [line for t, line in self.lines if start <= t < end]

    def kill_all(self) -> None:
        """Everything the launches started, whatever state it is in."""
        if self.proc is None:
            return
        for pid in descendants(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()


def _is_worker(pid: int) -> bool:
    try:
        return WORKER_MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _gone(pids: list[int], timeout: float) -> list[int]:
    """The pids still alive (not zombies) after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(pid)
            except (OSError, IndexError):
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


# --- the soak --------------------------------------------------------------------------------

FULL = {"worker_kill": [("mlflow", 4), ("commit", 4), ("any", 4)], "launcher_kill": 3, "pg_restart": 2,
        "mlflow_restart": 2, "disk_full": 1}
SHORT = {"worker_kill": [("mlflow", 1), ("commit", 1)], "launcher_kill": 1, "pg_restart": 1, "mlflow_restart": 1,
         "disk_full": 0}


def schedule(rng: random.Random, plan: dict, short: bool = False) -> list[tuple[str, str]]:
    faults = [("worker_kill", phase) for phase, n in plan["worker_kill"] for _ in range(n)]
    for kind in ("launcher_kill", "pg_restart", "mlflow_restart", "disk_full"):
        faults += [(kind, "")] * plan[kind]
    rng.shuffle(faults)
    if short:
        # With the tracking server down, trials skip their logging and a short study runs out
        # of trials before the faults that follow: the restart goes last.
        faults.sort(key=lambda f: f[0] == "mlflow_restart")
    return faults


class Soak:
    def __init__(self, args) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.plan = SHORT if args.short else FULL
        # Seconds: between faults; PostgreSQL down; tracking server down; after PostgreSQL is back.
        # Stuck: how long a launch may run without any worker while the study is short.
        self.timing = ({"gap": (0.5, 2.0), "pg_down": (3.0, 5.0), "mlflow_down": (2.0, 4.0), "settle": 2.0,
                        "stuck": 60.0}
                       if args.short else
                       {"gap": (1.0, 5.0), "pg_down": (4.0, 8.0), "mlflow_down": (3.0, 8.0), "settle": 3.0,
                        "stuck": 120.0})
        self.idle_since: float | None = None
        self.work = Path(tempfile.mkdtemp(prefix="bloodsearch-chaos-"))
        self.traps = self.work / "traps"
        self.traps.mkdir()
        self.counts: collections.Counter = collections.Counter()
        self.records: list[dict] = []
        self.problems: list[str] = []
        self.launcher_exits: collections.Counter = collections.Counter()
        self.pg_windows: list[float] = []
        self.pg: PrivatePostgres | None = None
        self.tracking: TrackingServer | None = None
        self.fleet: Fleet | None = None
        self.disk = CacheDisk(self.work / "cache")
        self._storage = None

    # -- set-up ---------------------------------------------------------------------------
    def setup(self) -> None:
        ports: set[int] = set()
        self.pg = PrivatePostgres(quiet_port(ports))
        self.pg.init()
        self.pg.start()
        self.pg.create_databases("optuna", "mlflow")
        log(f"private PostgreSQL on 127.0.0.1:{self.pg.port} ({self.pg.dir})")
        self.tracking = TrackingServer(self.pg.url("mlflow"), self.work, quiet_port(ports))
        self.tracking.start()
        log(f"mlflow server on {self.tracking.url}")
        make_split_dataset(self.work / "data", cells_per_class=8, copies=4)
        (self.work / "tiny_study.py").write_text(TINY_STUDY)
        if self.plan["disk_full"]:
            self.disk.mount()
            if not self.disk.mounted:
                log(self.disk.reason)
        else:
            self.disk.path.mkdir()
            self.disk.reason = "not planned (--short)"
        self.storage_url = self.pg.url("optuna")
        self.storage()  # creates the schema before any launch, so nobody races for it
        a = self.args
        # Grace period 20 s: longer than any outage here, as 30 s is in production.
        cmd = search_cmd("launch", "--study", str(self.work / "tiny_study.py"), "--study-name", STUDY,
                         "--trials", str(a.trials), "--workers", str(a.workers), "--data-dir", str(self.work / "data"),
                         "--storage", self.storage_url, "--tracking-uri", self.tracking.url,
                         "--epochs", "3", "--patience", "3", "--pruner", "hyperband",
                         "--trials-per-worker", str(a.trials_per_worker), "--heartbeat-interval", "2",
                         "--grace-period", "20", "--log-models", "best", "--seed", str(a.seed))
        env = {**os.environ, "BLOODSEARCH_CACHE_DIR": str(self.work / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3",
               "PYTHONPATH": os.pathsep.join([str(HOOKS), str(ROOT)]), "PYTHONUNBUFFERED": "1",
               "CHAOS_TRAP_DIR": str(self.traps)}
        self.fleet = Fleet(self.work, cmd, env)

    def storage(self):
        if self._storage is None:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self._storage = optuna.storages.RDBStorage(
                self.storage_url, engine_kwargs={"pool_size": 1, "max_overflow": 1, "pool_pre_ping": True,
                                                 "connect_args": {"connect_timeout": 3}})
        return self._storage

    def study(self):
        import optuna

        return optuna.load_study(study_name=STUDY, storage=self.storage())

    def snapshot(self) -> dict | None:
        """Counts by state, or None while the study is unreadable (not created yet, database down)."""
        try:
            trials = self.study().get_trials(deepcopy=False)
        except Exception:
            return None
        states = collections.Counter(t.state.name for t in trials)
        running_pids = {t.user_attrs.get("pid") for t in trials if t.state.name == "RUNNING"}
        return {"finished": states["COMPLETE"] + states["PRUNED"], "running_pids": running_pids, **states}

    # -- the run --------------------------------------------------------------------------
    def run(self) -> dict:
        self.t0 = time.monotonic()
        self.budget = self.args.budget or (480 if self.args.short else 3600)
        self.deadline = self.t0 + self.budget
        try:
            self.setup()
            faults = schedule(self.rng, self.plan, self.args.short)
            if not self.disk.mounted:
                faults = [f for f in faults if f[0] != "disk_full"]
            log(f"{len(faults)} faults planned: {', '.join(k + (':' + p if p else '') for k, p in faults)}")
            self.fleet.start()
            try:
                self._inject_all(faults)
                self._run_to_completion()
            except Stuck as exc:
                self.problems.append(str(exc))
                self._dump_and_kill()
            final = self._final_launch()
            result = self.check()
            result["final_launch_exit"] = final
        except BaseException:
            self.problems.append("the soak itself failed")
            raise
        finally:
            self.teardown()
        result["wall_s"] = round(time.monotonic() - self.t0, 1)
        if self.work.exists():  # kept: the result beside the logs
            (self.work / "result.json").write_text(json.dumps(result, indent=1))
        return result

    def _inject_all(self, faults: list[tuple[str, str]]) -> None:
        # Fault i waits for a share of the study to be finished, and for the gap after the
        # previous one; never so long that the study could reach its count first.
        fraction, n, i = (0.3 if self.args.short else 0.6), self.args.trials, 0
        done_at = time.monotonic()
        while i < len(faults):
            kind, phase = faults[i]
            threshold = min(int(fraction * n * i / len(faults)), n - 2 * (len(faults) - i) - 1)
            gap = self.rng.uniform(*self.timing["gap"])
            if not self._wait_ready(kind, threshold, done_at + gap):
                self.problems.append(f"faults {i + 1}-{len(faults)} not injected: the study reached its count "
                                     f"or the budget ran out first")
                break
            if self._inject(i, kind, phase):
                i += 1
                done_at = time.monotonic()

    def _keep_fleet_up(self) -> None:
        """A launch that ended by itself before the study had its count is launched again; one
        that runs without any worker for long (while the study is short) is stuck."""
        if self.fleet.alive():
            if self.fleet.workers():
                self.idle_since = None
                return
            self.idle_since = self.idle_since or time.monotonic()
            if time.monotonic() - self.idle_since > self.timing["stuck"]:
                snap = self.snapshot()
                if snap is not None and snap["finished"] < self.args.trials:
                    raise Stuck(f"stuck: the launch ran {self.timing['stuck']:.0f} s without a worker, "
                                f"the study at {snap['finished']}/{self.args.trials}")
            return
        code = self.fleet.proc.returncode
        snap = self.snapshot()
        if code == 0 and snap is not None and snap["finished"] >= self.args.trials:
            return
        self.launcher_exits[str(code)] += 1
        tail = " | ".join(line for _, line in self.fleet.lines[-3:])
        log(f"launch {self.fleet.launches} exited by itself with code {code}: {tail[-300:]}; launching again")
        if sum(self.launcher_exits.values()) > 25:
            raise RuntimeError("the launch keeps exiting; giving up")
        time.sleep(1.0)
        self.fleet.start()

    def _wait_ready(self, kind: str, threshold: int, not_before: float) -> bool:
        while time.monotonic() < self.deadline:
            self._keep_fleet_up()
            snap = self.snapshot()
            if snap is not None and snap["finished"] >= self.args.trials:
                return False
            if snap is not None and time.monotonic() >= not_before and snap["finished"] >= threshold \
                    and self.fleet.alive():
                workers = self.fleet.workers()
                # Every fault is meant to hit trials in flight.
                if workers and snap["running_pids"] & set(workers):
                    return True
            time.sleep(0.25)
        return False

    def _inject(self, i: int, kind: str, phase: str) -> bool:
        """False if the moment passed (no worker left to kill): the fault is tried again."""
        snap = self.snapshot() or {"finished": "?"}
        record = {"fault": i + 1, "kind": kind, "t": round(time.monotonic() - self.t0, 1),
                  "finished_before": snap["finished"]}
        if getattr(self, f"_{kind}")(record, phase) is False:
            return False
        self.counts[kind] += 1
        self.records.append(record)
        log(f"fault {i + 1}: {json.dumps(record)}")
        return True

    # -- the faults -----------------------------------------------------------------------
    def _worker_kill(self, record: dict, phase: str) -> bool:
        caught, pid = None, None
        for _ in range(4):  # the chosen worker may end its share of trials before the trap springs
            workers = self.fleet.workers()
            if not workers:
                break
            busy = sorted(set(workers) & ((self.snapshot() or {}).get("running_pids") or set())) or sorted(workers)
            pid = self.rng.choice(busy)
            if phase == "any":
                break
            caught = self._spring_trap(pid, phase)
            if caught:
                break
            pid = None
        if pid is None or not _is_worker(pid):
            workers = self.fleet.workers()
            if not workers:
                return False
            pid = self.rng.choice(sorted(workers))
        os.kill(pid, signal.SIGKILL)
        record.update(pid=pid, phase=phase if caught or phase == "any" else "any (trap not sprung)")
        if caught:
            record["during"] = caught["what"]
            self.counts[f"worker_kill_in_{phase}"] += 1
        for name in (f"{pid}.json", f"{pid}.caught"):
            (self.traps / name).unlink(missing_ok=True)
        return True

    def _spring_trap(self, pid: int, phase: str) -> dict | None:
        after = self.rng.randint(1, 6 if phase == "mlflow" else 8)
        trap, caught = self.traps / f"{pid}.json", self.traps / f"{pid}.caught"
        tmp = self.traps / f"{pid}.tmp"
        tmp.write_text(json.dumps({"phase": phase, "after": after}))
        tmp.replace(trap)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _is_worker(pid):
            if caught.exists():
                try:
                    return json.loads(caught.read_text())
                except ValueError:
                    pass
            time.sleep(0.02)
        trap.unlink(missing_ok=True)
        return None

    def _launcher_kill(self, record: dict, phase: str) -> None:
        workers = self.fleet.workers()
        os.kill(self.fleet.proc.pid, signal.SIGKILL)
        self.fleet.proc.wait()
        survivors = _gone(workers, timeout=15)
        record.update(launcher=self.fleet.proc.pid, workers=len(workers))
        if survivors:
            self.problems.append(f"workers {survivors} outlived their launcher's kill -9")
            for pid in survivors:
                os.kill(pid, signal.SIGKILL)
        pause = self.rng.uniform(0.5, 3.0)
        time.sleep(pause)
        self.fleet.start()
        record["relaunched_after_s"] = round(pause, 1)

    def _pg_restart(self, record: dict, phase: str) -> None:
        mode = self.rng.choice(["fast", "immediate"])
        down = self.rng.uniform(*self.timing["pg_down"])
        start = time.monotonic()
        self.pg.stop(mode)
        time.sleep(down)
        self.pg.start()
        self.pg_windows.append(start)
        record.update(mode=mode, down_s=round(time.monotonic() - start, 1))
        # Let the fleet meet the outage's consequences before the next fault.
        time.sleep(self.timing["settle"])

    def _mlflow_restart(self, record: dict, phase: str) -> None:
        hard = self.rng.random() < 0.5
        down = self.rng.uniform(*self.timing["mlflow_down"])
        start = time.monotonic()
        self.tracking.stop(hard=hard)
        time.sleep(down)
        self.tracking.start()
        record.update(signal="KILL" if hard else "TERM", down_s=round(time.monotonic() - start, 1))

    def _disk_full(self, record: dict, phase: str) -> None:
        record["filled_bytes"] = self.disk.fill()
        workers = self.fleet.workers()
        if workers:
            victim = self.rng.choice(sorted(workers))
            os.kill(victim, signal.SIGKILL)
            record["killed_worker"] = victim
        start, hit = time.monotonic(), False
        while time.monotonic() - start < 60 and self.fleet.alive():
            if self._enospc_failures() > 0:
                hit = True
                break
            time.sleep(0.5)
        self.disk.free()
        record.update(full_s=round(time.monotonic() - start, 1), trial_failed_on_it=hit)

    def _enospc_failures(self) -> int:
        try:
            return sum(1 for t in self.study().get_trials(deepcopy=False)
                       if t.state.name == "FAIL" and "No space left" in t.user_attrs.get("fail_reason", ""))
        except Exception:
            return 0

    # -- the end --------------------------------------------------------------------------
    def _run_to_completion(self) -> None:
        while time.monotonic() < self.deadline:
            self._keep_fleet_up()
            if not self.fleet.alive():
                return  # exited 0 with the study at its count
            time.sleep(0.5)
        self.problems.append(f"timed out after {self.budget:.0f} s with the study unfinished")
        self._dump_and_kill()

    def _dump_and_kill(self) -> None:
        for pid in descendants(self.fleet.proc.pid):
            try:
                os.kill(pid, signal.SIGUSR1)  # every process prints its stacks into the log
            except ProcessLookupError:
                pass
        time.sleep(3)
        self.fleet.kill_all()

    def _final_launch(self) -> int | None:
        if any(p.startswith(("timed out", "stuck")) for p in self.problems):
            return None
        before = len(self.study().get_trials(deepcopy=False))
        self.fleet.start()
        try:
            code = self.fleet.proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            self.fleet.kill_all()
            code = None
        if code != 0:
            self.problems.append(f"the final launch exited {code}")
        after = len(self.study().get_trials(deepcopy=False))
        if after != before:
            self.problems.append(f"the final launch, on a study at its count, added {after - before} trial(s)")
        return code

    def check(self) -> dict:
        from mlflow import MlflowClient

        trials = self.study().get_trials(deepcopy=False)
        by_number = {t.number: t for t in trials}
        states = collections.Counter(t.state.name for t in trials)
        finished = states["COMPLETE"] + states["PRUNED"]
        duplicate_numbers = len(trials) - len(by_number)
        finished_origins = collections.Counter(t.user_attrs.get("origin_trial", t.number) for t in trials
                                               if t.state.name in ("COMPLETE", "PRUNED"))
        twice_finished = sum(n - 1 for n in finished_origins.values() if n > 1)

        client = MlflowClient(tracking_uri=self.tracking.url)
        exp = client.get_experiment_by_name(STUDY)
        runs, token = [], None
        while exp is not None:
            page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                break
        trial_runs = collections.defaultdict(list)
        for r in runs:
            if r.data.tags.get("bloodsearch.parent") != "true" and "optuna.trial" in r.data.tags:
                trial_runs[int(r.data.tags["optuna.trial"])].append(r)
        runs_twice = sum(len(rs) - 1 for rs in trial_runs.values() if len(rs) > 1)
        without_run = []
        for t in trials:
            if t.state.name != "COMPLETE":
                continue
            mine = trial_runs.get(t.number, [])
            ok = any(r.info.status == "FINISHED" and "best_val_accuracy" in r.data.metrics
                     and abs(r.data.metrics["best_val_accuracy"] - t.value) < 1e-6 for r in mine)
            if not ok:
                seen = [f"run {r.info.status} with " + ("metrics " + ",".join(sorted(r.data.metrics))[:60]
                                                        if r.data.metrics else "no metrics") for r in mine]
                without_run.append(f"{t.number} ({', '.join(seen) or 'no run'})")
        retried_same, retried_other = 0, []
        for t in trials:
            origin = t.user_attrs.get("origin_trial", t.number)
            if origin == t.number or t.state.name == "WAITING":
                continue
            if t.params == by_number[origin].params:
                retried_same += 1
            else:
                retried_other.append(t.number)
        storage_errors = [sum(1 for line in self.fleet.lines_between(a, b) if STORAGE_ERROR.search(line))
                          for a, b in self._pg_windows_closed()]
        enospc = self._enospc_failures()
        faults = {k: self.counts[k] for k in ("worker_kill", "worker_kill_in_mlflow", "worker_kill_in_commit",
                                              "launcher_kill", "pg_restart", "mlflow_restart", "disk_full")}
        result = {
            "faults": faults, "trials_target": self.args.trials, "complete": states["COMPLETE"],
            "pruned": states["PRUNED"], "failed": states["FAIL"], "running_left": states["RUNNING"],
            "duplicates": duplicate_numbers + twice_finished + runs_twice,
            "complete_without_finished_run": len(without_run),
            "runs_left_running": sum(1 for r in runs if r.info.status == "RUNNING"),
            "retried_with_same_params": retried_same, "retried_with_other_params": len(retried_other),
            "waiting_left": states["WAITING"], "trials_failed_on_full_disk": enospc,
            "storage_errors_seen_per_pg_restart": storage_errors,
            "launches": self.fleet.launches, "launcher_exits": dict(self.launcher_exits),
            "tracking_errors": sum(1 for t in trials if t.user_attrs.get("tracking_error")),
            "heartbeat_threads_died": self._count(HEARTBEAT_DIED), "results_refused": self._count(RESULT_REFUSED),
            "seed": self.args.seed, "workers": self.args.workers, "short": self.args.short,
        }
        if not self.disk.mounted:
            result["disk_full_skipped"] = self.disk.reason
        lost = []
        if finished < self.args.trials:
            lost.append(f"the study is short of its count: {finished}/{self.args.trials} finished")
        if duplicate_numbers:
            lost.append(f"{duplicate_numbers} trial number(s) twice")
        if twice_finished:
            lost.append(f"{twice_finished} configuration(s) finished twice (a trial and its retry)")
        if runs_twice:
            lost.append(f"{runs_twice} trial(s) with more than one MLflow run: "
                        f"{sorted(n for n, rs in trial_runs.items() if len(rs) > 1)}")
        if states["RUNNING"]:
            lost.append(f"{states['RUNNING']} trial(s) left RUNNING: {self._describe_running(trials)}")
        if result["runs_left_running"]:
            lost.append(f"{result['runs_left_running']} MLflow run(s) left RUNNING")
        if without_run:
            lost.append(f"COMPLETE trial(s) {without_run} without a FINISHED run holding their metrics")
        if retried_other:
            lost.append(f"retried trial(s) {retried_other} with parameters other than their original's")
        for n, seen in enumerate(storage_errors, 1):
            if not seen:
                lost.append(f"PostgreSQL restart {n}: no process of the fleet reported a storage error")
        result["lost"] = bool(lost)
        result["problems"] = lost + self.problems
        (self.work / "faults.json").write_text(json.dumps(self.records, indent=1))
        return result

    def _describe_running(self, trials) -> str:
        """Why nobody recovered them: their worker's pid, whether they ever had a heartbeat."""
        import sqlalchemy

        try:
            with self.storage().engine.connect() as conn:
                beats = {row[0] for row in conn.execute(sqlalchemy.text("SELECT trial_id FROM trial_heartbeats"))}
        except Exception:
            beats = set()
        return "; ".join(f"trial {t.number} (pid {t.user_attrs.get('pid', 'not recorded')}, "
                         f"{'a' if t._trial_id in beats else 'no'} heartbeat row)"
                         for t in trials if t.state.name == "RUNNING")

    def _count(self, pattern: re.Pattern) -> int:
        return sum(1 for line in self.fleet.lines_between(0, float("inf")) if pattern.search(line))

    def _pg_windows_closed(self) -> list[tuple[float, float]]:
        """Each PostgreSQL restart's window: from its stop to the next fault (or the end)."""
        fault_starts = sorted(self.t0 + r["t"] for r in self.records)
        windows = []
        for start in self.pg_windows:
            later = [t for t in fault_starts if t > start + 1]
            windows.append((start, later[0] if later else time.monotonic()))
        return windows

    def teardown(self) -> None:
        if self.fleet is not None:
            self.fleet.kill_all()
        if self._storage is not None:
            self._storage.engine.dispose()
        if self.tracking is not None:
            self.tracking.stop()
        if self.pg is not None:
            self.pg.destroy()
        self.disk.unmount()
        if self.args.keep or self.problems:
            log(f"logs kept in {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--seed", type=int, default=0, help="draws the fault schedule (and seeds the study)")
    p.add_argument("--trials", type=int, help="the study's count [40; --short 12]")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--trials-per-worker", type=int, help="[5; --short 20]")
    p.add_argument("--short", action="store_true", help="a handful of faults, about two minutes: what the suite runs")
    p.add_argument("--budget", type=float, help="give up after this many seconds [3600; --short 480]")
    p.add_argument("--json", action="store_true", help="only the JSON line on stdout")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs) even when nothing was lost")
    args = p.parse_args(argv)
    args.trials = args.trials or (12 if args.short else 40)
    args.trials_per_worker = args.trials_per_worker or (20 if args.short else 5)
    try:
        result = Soak(args).run()
    except Unavailable as exc:
        print(json.dumps({"skipped": str(exc)}))
        return EXIT_UNAVAILABLE
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print(f"faults: {', '.join(f'{k} {v}' for k, v in result['faults'].items())}")
        print(f"study: {result['complete']} complete + {result['pruned']} pruned of {result['trials_target']}, "
              f"{result['failed']} failed, {result['retried_with_same_params']} retried with the same parameters; "
              f"{result['wall_s']} s")
        for problem in result["problems"]:
            print(f"LOST: {problem}")
        if not result["problems"]:
            print("nothing lost")
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
