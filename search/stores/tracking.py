"""All MLflow talk: one experiment per study, one parent run per study, one child run per trial.

Uses MlflowClient with explicit run ids (never the fluent API's global active run), so a
worker can open, log to and close runs of trials that are not its own, such as a crashed
worker's run that must be closed FAILED.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from search.urls import is_redacted, redact, sqlite_path
from search.errors import SearchError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
PARENT_TAG = "bloodsearch.parent"
UNET_TAG = "bloodsearch.unet_digest"
# MLflow 3's UI opens an experiment without this tag on its GenAI overview (traces): ours
# are model training, so they open on their runs.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
STATUS_OF_STATE = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
log = logging.getLogger("bloodsearch.tracking")

# MLflow's HTTP client retries 7 times with doubling back-off by default, minutes before a
# lost server is noticed; a trial (and the launcher) should learn within seconds. Set by
# the user, these variables win; worker processes inherit them.
for _name, _value in {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                      "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
                      # a progress bar per downloaded file would bury command output
                      "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
    os.environ.setdefault(_name, _value)


# What this MLflow accepts as a tracking URI; its file store (./mlruns, file:///...) is in
# maintenance mode and fails deep inside MLflow.
WORKING_FORMS = "sqlite:///path/to/mlflow.db or http://host:5000"
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def check_tracking(uri: str, timeout: float = 5.0, must_exist: bool = False) -> None:
    """One-line error, before any trial, if the tracking store cannot be used. must_exist:
    for commands that read a study's runs, a local store that is not there is an error, not
    an empty store to create."""
    if is_redacted(uri):
        raise SearchError(f"--tracking-uri {uri}: the study keeps this URI without its password; "
                          f"give --tracking-uri (or SEARCH_TRACKING_URI) with it")
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0]
    if scheme in ("http", "https"):
        import requests

        try:
            response = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
        except requests.RequestException as exc:
            raise SearchError(f"--tracking-uri {redact(uri)}: tracking server unreachable ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise SearchError(f"--tracking-uri {redact(uri)}: tracking server answered HTTP {response.status_code} on /health")
        return
    if scheme in ("file", "") or (scheme not in DATABASE_SCHEMES and scheme != "databricks"):
        why = ("MLflow's file store (a folder) is no longer supported" if scheme in ("file", "")
               else f"{parsed.scheme!r} is not a tracking-store scheme")
        raise SearchError(f"--tracking-uri {redact(uri)}: {why}; use {WORKING_FORMS}")
    if scheme == "databricks":
        return  # checked by the first call
    if scheme != "sqlite":
        from search.stores.storage import check_database

        # Left to MLflow, an unreachable server cost minutes of retries and a traceback.
        check_database(uri, "--tracking-uri")
        return
    path = Path(uri.split(":///", 1)[-1]).expanduser().resolve()
    if must_exist and not path.is_file():
        raise SearchError(f"--tracking-uri {redact(uri)}: no such store ({path}); run the command where the study "
                          f"was launched, or give its --tracking-uri")
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        raise SearchError(f"--tracking-uri {redact(uri)}: folder {path.parent} does not exist or is not writable")


@contextlib.contextmanager
def _first_open_lock(uri: str):
    """MLflow creates and migrates a SQLite store when a client first opens it; two launches
    started together on a new store both migrated it and one died ("duplicate column name:
    step", seen on this machine). Opening is serialised on a lock file beside the store."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri.split(":///", 1)[-1]).expanduser()
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def artifact_location(uri: str, study_name: str) -> str | None:
    """Beside a sqlite:/// tracking store, its models and files: MLflow's default for a
    database store is ./mlruns of whichever folder the first process started in, so a store
    moved or backed up as its folder lost its models. None (the server's root) for a server."""
    db = sqlite_path(uri)
    return (db.resolve().parent / "mlruns" / study_name).as_uri() if db else None


class Tracker:
    def __init__(self, uri: str) -> None:
        from mlflow import MlflowClient

        self.uri = uri
        with _first_open_lock(uri):
            self.client = MlflowClient(tracking_uri=uri)

    # --- study level -------------------------------------------------------------------
    def experiment_id(self, study_name: str) -> str:
        exp = self.client.get_experiment_by_name(study_name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            if EXPERIMENT_KIND[0] not in exp.tags:  # made before experiments were marked
                self.client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
            return exp.experiment_id
        try:
            return self.client.create_experiment(study_name, artifact_location=artifact_location(self.uri, study_name),
                                                 tags={"bloodsearch.study": study_name,
                                                       EXPERIMENT_KIND[0]: EXPERIMENT_KIND[1]})
        except Exception:  # another process created it between our two calls
            exp = self.client.get_experiment_by_name(study_name)
            if exp is None:
                raise
            return exp.experiment_id

    def parent_run(self, study_name: str, params: dict[str, Any]) -> str:
        """The study's parent run, created on first launch and reused on resume."""
        exp_id = self.experiment_id(study_name)
        found = self.client.search_runs([exp_id], filter_string=f"tags.`{PARENT_TAG}` = 'true'", max_results=1)
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(exp_id, run_name=study_name, tags={PARENT_TAG: "true", "bloodsearch.study": study_name})
        self.client.log_batch(run.info.run_id, params=_params(params))
        return run.info.run_id

    def end_parent(self, run_id: str, finished: bool, metrics: dict[str, float]) -> None:
        self.log_metrics(run_id, metrics)
        self.client.set_terminated(run_id, status="FINISHED" if finished else "KILLED")

    def unet_run(self, digest: str) -> str | None:
        """The run that logged the U-Net with this digest, if one did."""
        exp = self.client.get_experiment_by_name("unet")
        if exp is None:
            return None
        found = self.client.search_runs([exp.experiment_id], filter_string=f"tags.`{UNET_TAG}` = '{digest}'",
                                        max_results=1)
        return found[0].info.run_id if found else None

    def log_unet(self, report, data_dir: str) -> str:
        """One run in experiment `unet` for a trained U-Net (search.running.unet.UnetReport),
        with the model as artifact `unet/`, from where workers on other machines fetch it."""
        meta = report.meta
        h, w = meta["size"]
        run = self.client.create_run(self.experiment_id("unet"), run_name=f"unet-{h}x{w}-{meta['digest'][:8]}",
                                     tags={UNET_TAG: meta["digest"]})
        run_id = run.info.run_id
        self.client.log_batch(run_id, params=_params({
            "size": f"{h}x{w}", "fit": meta.get("fit", "stretch"), "data_dir": data_dir,
            "fingerprint": meta["fingerprint"], "digest": meta["digest"],
            **{k: meta[k] for k in ("epochs", "patience", "batch_size", "seed", "val_fraction")},
            "padding": f"bottom {meta['padding']['bottom']}, right {meta['padding']['right']}"}))
        for key, values in meta["history"].items():
            for epoch, value in enumerate(values):
                self.log_metrics(run_id, {key: value}, step=epoch)
        self.log_metrics(run_id, {"val_dice": meta["val_dice"], "val_iou": meta["val_iou"],
                                  "epochs_run": meta["epochs_run"], "train_seconds": meta["train_seconds"]})
        self.log_artifacts(run_id, report.model_dir, "unet")
        self.client.set_terminated(run_id, status="FINISHED")
        return run_id

    # --- trial level -------------------------------------------------------------------
    def start_trial(self, study_name: str, parent_id: str | None, run_name: str, params: dict[str, Any],
                    tags: dict[str, Any]) -> str:
        """A trial's run under the study's parent run, or a seed's run under its trial's."""
        exp_id = self.experiment_id(study_name)
        nesting = {"mlflow.parentRunId": parent_id} if parent_id else {}
        run = self.client.create_run(exp_id, run_name=run_name, tags={**nesting, **{k: str(v) for k, v in tags.items()}})
        self.client.log_batch(run.info.run_id, params=_params(params))
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifacts(self, run_id: str, folder: str | Path, path: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(folder), artifact_path=path)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def has_run(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
        except MlflowException:
            return False
        return True

    def download(self, run_id: str, path: str, dst: str | Path) -> Path:
        from mlflow.artifacts import download_artifacts

        return Path(download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst), tracking_uri=self.uri))

    def log_table(self, run_id: str, columns: dict[str, list], artifact_file: str) -> None:
        self.client.log_table(run_id, data=columns, artifact_file=artifact_file)

    def log_evaluation(self, run_id: str, metrics: dict[str, float], folder: str | Path,
                       path: str = "evaluation") -> None:
        self.log_metrics(run_id, metrics)
        self.log_artifacts(run_id, folder, path)

    def log_split(self, run_id: str, image_set, report: dict) -> None:
        """The run's data, MLflow's way: its training and validation sides (of one fold with
        --cv) as run inputs with context training / validation (search.stores.lineage)."""
        from search.stores.lineage import split_inputs

        self.client.log_inputs(run_id, datasets=split_inputs(image_set, report))

    def register(self, model_id: str, name: str, run_id: str | None = None, alias: str | None = None) -> str:
        """Register a logged MLflow model (models:/<model_id>) as a new version of model
        `name`, created if it does not exist; `alias` then points at that version
        (models:/NAME@alias). Any other failure is a one-line error."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise SearchError(f"--register {name}: {one_line(exc)}") from None
        except Exception as exc:
            raise SearchError(f"--register {name}: {one_line(exc)}") from None
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        try:
            # MLflow's database registry looks a models:/<id> source up with a client on the
            # global tracking URI, not ours: run anywhere but the store's folder, the
            # registration found no such model in ./mlflow.db (and created that file).
            with _use_tracking_uri(self.uri):
                version = self.client.create_model_version(name, f"models:/{model_id}", run_id=run_id,
                                                           model_id=model_id).version
        except Exception as exc:
            raise SearchError(f"--register {name}: cannot add a version: {one_line(exc)}") from None
        if alias:
            try:
                self.client.set_registered_model_alias(name, alias, version)
            except Exception as exc:
                raise SearchError(f"--alias {alias}: version {version} of {name} is registered, but the alias "
                                  f"could not be set: {one_line(exc)}") from None
        return str(version)

    def end_trial(self, run_id: str, state: str) -> None:
        self.set_tags(run_id, {"optuna.state": state})
        self.client.set_terminated(run_id, status=STATUS_OF_STATE.get(state, "FAILED"))

    def close_if_running(self, run_id: str, state: str = "FAIL") -> bool:
        """Close a run left RUNNING by a process that died; True if it was still open."""
        try:
            if self.client.get_run(run_id).info.status != "RUNNING":
                return False
        except Exception as exc:  # a run id from another tracking store, or a deleted run
            log.warning("cannot look up MLflow run %s: %s", run_id, exc)
            return False
        self.end_trial(run_id, state)
        return True

    def child_runs(self, parent_id: str, tag: str) -> list[str]:
        """Run ids of the runs nested under parent_id that carry `tag` (an index), in its order."""
        parent = self.client.get_run(parent_id)
        runs = self.client.search_runs([parent.info.experiment_id],
                                       filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=10000)
        return [r.info.run_id for r in sorted((r for r in runs if tag in r.data.tags), key=lambda r: int(r.data.tags[tag]))]

    def trial_runs(self, study_name: str) -> dict[int, list]:
        """The study's trial runs (not seeds', folds' or the parent's) by trial number."""
        exp = self.client.get_experiment_by_name(study_name)
        out: dict[int, list] = {}
        if exp is None:
            return out
        token = None
        while True:
            page = self.client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
            for r in page:
                tags = r.data.tags
                if (tags.get(PARENT_TAG) != "true" and "optuna.trial" in tags and "bloodsearch.repeat" not in tags
                        and "bloodsearch.fold" not in tags and "bloodsearch.ensemble" not in tags):
                    out.setdefault(int(tags["optuna.trial"]), []).append(r)
            token = page.token
            if not token:
                return out

    def open_trial_runs(self, study_name: str) -> list[tuple[str, int]]:
        """(run id, trial number) of this study's trial runs that are still RUNNING."""
        exp = self.client.get_experiment_by_name(study_name)
        if exp is None:
            return []
        runs = self.client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'",
                                       max_results=10000)
        return [(r.info.run_id, int(r.data.tags["optuna.trial"])) for r in runs
                if r.data.tags.get(PARENT_TAG) != "true" and "optuna.trial" in r.data.tags]


class TrialRun:
    """Best-effort logging to one trial's run.

    The first failure (an unreachable tracking server, say) is kept and later calls are
    skipped, so a tracking outage costs a trial its record, never its result; the caller
    reports `error`.
    """

    def __init__(self, tracker: Tracker, study_name: str, parent_id: str, run_name: str,
                 params: dict[str, Any], tags: dict[str, Any]) -> None:
        self.tracker, self.run_id, self.error = tracker, None, None
        self.run_id = self._call(tracker.start_trial, study_name, parent_id, run_name, params, tags)

    def _call(self, fn, *args, **kwargs):
        if self.error is not None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # any client or server error: keep the trial going
            self.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:500]
            log.warning("MLflow logging failed, the trial continues unrecorded: %s", self.error)
            return None

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        if self.run_id:
            self._call(self.tracker.log_metrics, self.run_id, metrics, step)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.run_id:
            self._call(self.tracker.set_tags, self.run_id, tags)

    def log_artifacts(self, folder: str | Path) -> None:
        if self.run_id:
            self._call(self.tracker.log_artifacts, self.run_id, folder)

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.run_id:
            self._call(self.tracker.log_text, self.run_id, text, artifact_file)

    def log_table(self, columns: dict[str, list], artifact_file: str) -> None:
        if self.run_id:
            self._call(self.tracker.log_table, self.run_id, columns, artifact_file)

    def log_split(self, image_set, report: dict) -> None:
        if self.run_id:
            self._call(self.tracker.log_split, self.run_id, image_set, report)

    def log_model(self, log) -> str | None:
        """The trial's MLflow model, logged by log(tracker, run_id) (a LoggedModel back:
        search.serving.mlflow_model.log_model, which sits above this module); its model id, or
        None when tracking failed."""
        if not self.run_id:
            return None
        logged = self._call(lambda: log(self.tracker, self.run_id))
        return logged.model_id if logged else None

    def end(self, state: str) -> None:
        if self.run_id:
            # Try to close the run even after an earlier failure: the server may be back.
            error, self.error = self.error, None
            self._call(self.tracker.end_trial, self.run_id, state)
            self.error = error or self.error


def one_line(exc: Exception) -> str:
    from mlflow.exceptions import MlflowException

    text = exc.message if isinstance(exc, MlflowException) else str(exc)
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def _params(params: dict[str, Any]):
    from mlflow.entities import Param

    return [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
