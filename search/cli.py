"""`search`: the command line. Every user error is one line on stderr and a non-zero exit."""
from __future__ import annotations

import faulthandler
import json
import signal
import sys
from functools import wraps
from pathlib import Path

import click

from .errors import SearchError
from .settings import LOG_MODELS, PRUNERS, SAMPLERS, SETTINGS_ATTR, SearchSettings
from .storage import DEFAULT_STORAGE
from .tracking import DEFAULT_TRACKING_URI


def one_line_errors(fn):
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SearchError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
    return wrapper


def parse_params(values: tuple[str, ...]) -> dict[str, str]:
    fixed = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise SearchError(f"--param {item!r} is not NAME=VALUE")
        fixed[name.strip()] = value.strip()
    return fixed


storage_option = click.option("--storage", envvar="SEARCH_STORAGE", default=DEFAULT_STORAGE, show_default=True,
                              help="Optuna storage URL: sqlite:///file.db or postgresql+psycopg://user@host/db.")
tracking_option = click.option("--tracking-uri", envvar=["SEARCH_TRACKING_URI", "MLFLOW_TRACKING_URI"],
                               default=DEFAULT_TRACKING_URI, show_default=True,
                               help="MLflow tracking URI: a local store or http://server:5000.")
quiet_option = click.option("--quiet", is_flag=True, help="No progress line.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """Hyperparameter search with experiment tracking for blood-cell image classifiers."""
    # `kill -USR1 <pid>` prints every thread's stack: the way to see where a stuck launch waits.
    faulthandler.register(signal.SIGUSR1, all_threads=True)


@main.command()
@click.option("--study", "study", default="fcn", show_default=True,
              help="Search space: cnn, fcn, seed-cnn, seed-fcn, fast, or a path to your own .py study.")
@click.option("--trials", type=int, default=20, show_default=True,
              help="Finished trials (complete + pruned) the study should reach, across all launches.")
@click.option("--data-dir", envvar="SEARCH_DATA_DIR", required=True,
              help="TRAIN/<CLASS>/... (+ TEST/) or <CLASS>/... folders of images. [env SEARCH_DATA_DIR]")
@click.option("--cache-dir", envvar="BLOODSEARCH_CACHE_DIR",
              help="Where decoded images are cached. [env BLOODSEARCH_CACHE_DIR; default ~/.cache/bloodsearch]")
@storage_option
@tracking_option
@click.option("--study-name", help="Name in the storage and MLflow experiment. [default: the --study name]")
@click.option("--sampler", type=click.Choice(SAMPLERS), default="tpe", show_default=True)
@click.option("--pruner", type=click.Choice(PRUNERS),
              help="[default: median; wilcoxon with --repeats]  Epoch pruners stop a trial's training early; "
                   "wilcoxon stops a trial's seeds when it is worse than the best trial, seed by seed.")
@click.option("--repeats", type=click.IntRange(1), default=1, show_default=True,
              help="Seeds per trial: the trial's value is their mean val_accuracy; each seed is a nested MLflow run.")
@click.option("--epochs", type=click.IntRange(1), default=20, show_default=True, help="Maximum epochs per trial.")
@click.option("--patience", type=click.IntRange(1), default=5, show_default=True,
              help="Early-stopping patience on validation accuracy.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the split and, with the trial number, each trial.")
@click.option("--sampler-seed", type=int,
              help="Seeds the sampler apart from the split, so two studies on one split draw different trials. "
                   "[default: --seed]")
@click.option("--timeout", type=float, help="Stop starting trials after this many seconds.")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Local worker processes.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Fix a search-space parameter, e.g. --param size=60x80 (repeatable).")
@click.option("--trials-per-worker", type=click.IntRange(1), default=5, show_default=True,
              help="A worker process is replaced after this many trials (frees TensorFlow memory).")
@click.option("--log-models", type=click.Choice(LOG_MODELS), default="all", show_default=True)
@click.option("--val-fraction", type=click.FloatRange(0.05, 0.5), default=0.2, show_default=True)
@click.option("--heartbeat-interval", type=click.IntRange(1), default=10, show_default=True,
              help="Seconds between a running trial's heartbeats.")
@click.option("--grace-period", type=click.IntRange(2), default=30, show_default=True,
              help="Seconds without heartbeat after which a trial is failed and retried once.")
@quiet_option
@one_line_errors
def launch(study, trials, data_dir, cache_dir, storage, tracking_uri, study_name, sampler, pruner, repeats, epochs,
           patience, seed, sampler_seed, timeout, workers, params, trials_per_worker, log_models, val_fraction, heartbeat_interval,
           grace_period, quiet) -> None:
    """Start a study, or continue it until it has --trials finished trials."""
    from .launcher import Launcher

    settings = SearchSettings(
        study=study, study_name=study_name or (Path(study).stem if study.endswith(".py") else study),
        storage=storage, tracking_uri=tracking_uri, data_dir=data_dir, trials=trials, cache_dir=cache_dir,
        sampler=sampler, pruner=pruner or ("median" if repeats == 1 else "wilcoxon"), repeats=repeats,
        epochs=epochs, patience=patience, seed=seed, sampler_seed=sampler_seed, timeout=timeout, workers=workers, params=parse_params(params), trials_per_worker=trials_per_worker, log_models=log_models,
        val_fraction=val_fraction, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    sys.exit(Launcher(settings, quiet=quiet).run())


def _stored_settings(study_name: str, storage: str) -> SearchSettings:
    from .results import open_existing

    return open_existing(study_name, storage).settings


@main.command()
@click.option("--study-name", required=True)
@storage_option
@click.option("--trials", type=int, help="A new target count. [default: the launch's]")
@click.option("--workers", type=click.IntRange(1), help="[default: the launch's]")
@click.option("--timeout", type=float)
@quiet_option
@one_line_errors
def resume(study_name, storage, trials, workers, timeout, quiet) -> None:
    """Continue a study with the settings it was launched with."""
    from .launcher import Launcher

    settings = _stored_settings(study_name, storage)
    for key, value in (("trials", trials), ("workers", workers), ("timeout", timeout)):
        if value is not None:
            setattr(settings, key, value)
    sys.exit(Launcher(settings, quiet=quiet, create=False).run())


@main.command()
@click.option("--study-name", required=True)
@storage_option
@click.option("--tracking-uri", envvar=["SEARCH_TRACKING_URI", "MLFLOW_TRACKING_URI"],
              help="[default: the launch's]")
@click.option("--data-dir", envvar="SEARCH_DATA_DIR", help="This machine's copy of the data. [default: the launch's]")
@click.option("--cache-dir", envvar="BLOODSEARCH_CACHE_DIR")
@click.option("--heartbeat-interval", type=click.IntRange(1))
@click.option("--grace-period", type=click.IntRange(2))
@quiet_option
@one_line_errors
def worker(study_name, storage, tracking_uri, data_dir, cache_dir, heartbeat_interval, grace_period, quiet) -> None:
    """Join an existing study (from any machine) and work until it has its trial count."""
    from .launcher import Launcher

    settings = _stored_settings(study_name, storage)
    for key, value in (("tracking_uri", tracking_uri), ("data_dir", data_dir), ("cache_dir", cache_dir),
                       ("heartbeat_interval", heartbeat_interval), ("grace_period", grace_period)):
        if value is not None:
            setattr(settings, key, value)
    settings.workers = 1
    sys.exit(Launcher(settings, quiet=quiet, create=False, store_settings=False).run())


# --- results: status, best, evaluate, report, predict, export, ui ----------------------------

study_name_option = click.option("--study-name", required=True, help="The study, as listed by `search studies`.")
results_tracking_option = click.option("--tracking-uri", envvar=["SEARCH_TRACKING_URI", "MLFLOW_TRACKING_URI"],
                                       help="[default: the one the study was launched with]")
cache_option = click.option("--cache-dir", envvar="BLOODSEARCH_CACHE_DIR", help="[env BLOODSEARCH_CACHE_DIR]")
trial_option = click.option("--trial", "trial_number", type=int, help="Trial number. [default: the best]")


def _handle(study_name, storage, tracking_uri=None, data_dir=None):
    from .results import open_existing

    return open_existing(study_name, storage, tracking_uri, data_dir)


def _tracker(handle):
    from .tracking import Tracker, check_tracking

    check_tracking(handle.settings.tracking_uri)
    return Tracker(handle.settings.tracking_uri)


@main.command()
@study_name_option
@storage_option
@click.option("--json", "as_json", is_flag=True)
@one_line_errors
def status(study_name, storage, as_json) -> None:
    """Trials by state, best so far, trials running now, finished per hour, ETA."""
    from .progress import _duration
    from .results import as_json as dumps
    from .results import status as study_status

    st = study_status(_handle(study_name, storage))
    if as_json:
        click.echo(dumps(st))
        return
    s = st["states"]
    click.echo(f"study {st['study']}: {st['finished']}/{st['target']} finished "
               f"(complete {s['complete']}, pruned {s['pruned']}; failed {s['failed']}, "
               f"running {s['running']}, queued {s['waiting']})")
    best = f"{st['best_value']:.4f} (trial {st['best_trial']})" if st["best_value"] is not None else "-"
    rate = f"{st['finished_per_hour']}/h" if st["finished_per_hour"] else "-"
    eta = _duration(st["eta_s"]) if st["eta_s"] is not None else "?"
    click.echo(f"best val_accuracy {best} | finished per hour {rate} (last hour: {st['finished_last_hour']}) | eta {eta}")
    for r in st["running"]:
        click.echo(f"  running: trial {r['trial']} on {r['host']} pid {r['pid']}, epoch {r['epoch']}, "
                   f"{_duration(r['elapsed_s'])} elapsed")


@main.command()
@study_name_option
@storage_option
@click.option("--top", type=click.IntRange(1), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@one_line_errors
def best(study_name, storage, top, as_json) -> None:
    """The best trials' parameters and metrics."""
    from .results import best_rows

    def line(r: dict) -> str:
        params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(r["params"].items()))
        size = f"{r['model_size_mb']:.1f}" if r["model_size_mb"] is not None else "-"
        return (f"{r['trial']:>5} {r['val_accuracy']:>8.4f} {r['epochs_run'] or '-':>6} {size:>8} "
                f"{'yes' if r['converged'] else 'no':>5}  {params}")

    _print_rows(best_rows(_handle(study_name, storage).study, top), as_json,
                f"study {study_name} has no complete trial yet",
                f"{'trial':>5} {'val_acc':>8} {'epochs':>6} {'size MB':>8} {'conv':>5}  parameters", line)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@main.command()
@study_name_option
@storage_option
@trial_option
@results_tracking_option
@click.option("--data-dir", envvar="SEARCH_DATA_DIR", help="[default: the study's]")
@cache_option
@click.option("--json", "as_json", is_flag=True)
@one_line_errors
def evaluate(study_name, storage, trial_number, tracking_uri, data_dir, cache_dir, as_json) -> None:
    """Evaluate a trial's model on TEST (and TEST_SIMPLE) and log it to the trial's run.

    TEST is for the end of a search: choosing among trials by TEST accuracy would leak it."""
    from .evaluation import evaluate_trial
    from .results import as_json as dumps
    from .results import pick_trial

    handle = _handle(study_name, storage, tracking_uri, data_dir)
    trial = pick_trial(handle.study, trial_number)
    tracker = _tracker(handle)
    result = evaluate_trial(handle, trial, tracker, cache_dir)
    if as_json:
        click.echo(dumps(result))
        return
    click.echo(f"study {study_name}, trial {trial.number} (val_accuracy {trial.value:.4f})")
    for name, r in result["splits"].items():
        cells = r["cells"]
        click.echo(f"{name}: accuracy {r['accuracy']:.4f} on {r['images']} images; per-cell accuracy "
                   f"{cells['cell_accuracy']:.4f} ({sum(c['true'] == c['voted'] for c in cells['per_cell'])}"
                   f"/{cells['cells']} cells); macro F1 {r['macro_f1']:.4f}")
        for cls, m in r["per_class"].items():
            click.echo(f"  {cls:<12} precision {m['precision']:.3f}  recall {m['recall']:.3f}  f1 {m['f1']:.3f}"
                       f"  ({m['support']} images)")
    click.echo(result["row"])


@main.command()
@click.option("--study-name", help="Replicate a trial of this study (with --trial; default its best) ...")
@storage_option
@trial_option
@click.option("--study", "study", help="... or a shipped or .py study's fixed configuration, e.g. seed-fcn.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="With --study: fix a parameter.")
@click.option("--repeats", type=click.IntRange(1), default=10, show_default=True, help="Seeds, each trained from scratch.")
@click.option("--data-dir", envvar="SEARCH_DATA_DIR", help="[default: the study's; required with --study]")
@cache_option
@click.option("--epochs", type=click.IntRange(1), help="[default: the study's, or 20]")
@click.option("--patience", type=click.IntRange(1), help="[default: the study's, or 5]")
@click.option("--seed", type=int, help="Seeds the validation split and the repeats. [default: the study's, or 0]")
@click.option("--tracking-uri", envvar=["SEARCH_TRACKING_URI", "MLFLOW_TRACKING_URI"],
              help=f"[default: the study's, or {DEFAULT_TRACKING_URI}]")
@click.option("--json", "as_json", is_flag=True)
@one_line_errors
def replicate(study_name, storage, trial_number, study, params, repeats, data_dir, cache_dir, epochs, patience, seed,
              tracking_uri, as_json) -> None:
    """Re-train one configuration --repeats times from scratch, evaluate each seed on TEST,
    and print the study's row: accuracy mean ± std [min, max] | size | epochs | convergence."""
    from preprocessing import DataError
    from studies import ParamError, StudyError, TrialConfig, check_params, load_study

    from .replicate import Replication
    from .replicate import replicate as run_replication
    from .results import as_json as dumps
    from .results import pick_trial
    from .tracking import Tracker, check_tracking

    if bool(study_name) == bool(study):
        raise SearchError("give either --study-name (and optionally --trial) or --study")
    if study_name:
        if params:
            raise SearchError("--param goes with --study; a trial's configuration is fixed")
        handle = _handle(study_name, storage, tracking_uri, data_dir)
        trial = pick_trial(handle.study, trial_number)
        s = handle.settings
        rep = Replication(f"{study_name}-trial{trial.number}", TrialConfig.from_dict(trial.user_attrs["config"]),
                          s.data_dir, epochs or s.epochs, patience or s.patience, s.seed if seed is None else seed,
                          s.val_fraction, {"study_name": study_name, "trial": trial.number})
        tracking_uri = s.tracking_uri
    else:
        if not data_dir:
            raise SearchError("--data-dir is required with --study")
        try:
            config = check_params(load_study(study), parse_params(params), study)
        except (StudyError, ParamError) as exc:
            raise SearchError(str(exc)) from None
        name = Path(study).stem if study.endswith(".py") else study
        rep = Replication(name, config, data_dir, epochs or 20, patience or 5, seed or 0, 0.2,
                          {"study": study, **parse_params(params)})
        tracking_uri = tracking_uri or DEFAULT_TRACKING_URI
    check_tracking(tracking_uri)
    try:
        result = run_replication(rep, repeats, Tracker(tracking_uri), cache_dir)
    except DataError as exc:
        raise SearchError(str(exc)) from None
    if as_json:
        click.echo(dumps(result.to_dict()))
    else:
        click.echo(f"{rep.name}, {repeats} seeds, {rep.config.preprocess.size[0]}x{rep.config.preprocess.size[1]}:")
        click.echo(result.summary.row())
    if result.tracking_error:
        click.echo(f"warning: not all of it reached MLflow at {tracking_uri} ({result.tracking_error})", err=True)
    elif not as_json:
        click.echo(f"MLflow: experiment replicate, run {result.run_id}")


@main.command()
@click.option("--study-name", "study_names", multiple=True, required=True,
              help="A study to compare (repeat: --study-name hyperband --study-name random).")
@storage_option
@click.option("--out", type=click.Path(dir_okay=False), default="compare.png", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@one_line_errors
def compare(study_names, storage, out, as_json) -> None:
    """Studies against wall time: best val_accuracy so far (PNG), trials finished, epochs spent."""
    from .compare import curve, plot
    from .results import as_json as dumps

    curves = [curve(_handle(name, storage).study) for name in study_names]
    plot(curves, Path(out))
    if as_json:
        click.echo(dumps([{k: v for k, v in c.items() if k not in ("hours", "best")} | {"plot": out} for c in curves]))
        return
    click.echo(f"{'study':<20} {'finished':>8} {'pruned':>6} {'epochs':>7} {'hours':>6} {'best val':>9}  trial")
    for c in curves:
        best = f"{c['best_value']:.4f}" if c["best_value"] is not None else "-"
        click.echo(f"{c['study']:<20} {c['finished']:>8} {c['pruned']:>6} {c['epochs_spent']:>7.0f} "
                   f"{c['wall_hours']:>6.2f} {best:>9}  {c['best_trial'] if c['best_trial'] is not None else '-'}")
    click.echo(f"plot: {out}")


@main.command()
@study_name_option
@storage_option
@results_tracking_option
@click.option("--out", type=click.Path(file_okay=False), help="[default: report-<study>/]")
@one_line_errors
def report(study_name, storage, tracking_uri, out) -> None:
    """Optimization history, parameter importances, parallel coordinates, intermediate values:
    PNGs and an HTML page, also logged to the study's parent run."""
    from .report import write_html, write_report
    from .settings import PARENT_RUN_ATTR

    handle = _handle(study_name, storage, tracking_uri)
    folder = Path(out or f"report-{study_name}")
    written = write_report(handle.study, folder)
    write_html(handle.study, folder, written)
    tracker = _tracker(handle)
    tracker.log_artifacts(handle.study.user_attrs[PARENT_RUN_ATTR], folder, "report")
    for name, path in written.items():
        click.echo(f"{name}: {path}")
    click.echo(f"logged to the parent run of experiment {study_name}; open {folder / 'report.html'}")


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--study-name", help="Predict with a trial of this study ...")
@storage_option
@trial_option
@results_tracking_option
@cache_option
@click.option("--model", "model_dir", type=click.Path(), help="... or with a folder made by `search export`.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "as_csv", is_flag=True)
@one_line_errors
def predict(paths, study_name, storage, trial_number, tracking_uri, cache_dir, model_dir, as_json, as_csv) -> None:
    """Class and probabilities for image files or folders, with the trial's own preprocessing."""
    from .inference import Predictor, expand, from_trial
    from .results import pick_trial

    if bool(study_name) == bool(model_dir):
        raise SearchError("give either --study-name (and optionally --trial) or --model DIR")
    files = expand(paths)
    if model_dir:
        predictor = Predictor.from_folder(model_dir)
    else:
        handle = _handle(study_name, storage, tracking_uri)
        predictor = from_trial(handle, pick_trial(handle.study, trial_number), _tracker(handle), cache_dir)
    rows = predictor.predict(files)
    classes = predictor.classes
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    elif as_csv:
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(["file", "class", *classes, "error"])
        for r in rows:
            probs = r.get("probabilities", {})
            writer.writerow([r["file"], r.get("class", ""), *[f"{probs[c]:.6f}" if c in probs else "" for c in classes],
                             r.get("error", "")])
    else:
        width = max([len(r["file"]) for r in rows] + [4])
        click.echo(f"{'file':<{width}}  {'class':<12} " + " ".join(f"{c[:10]:>10}" for c in classes))
        for r in rows:
            if "error" in r:
                click.echo(f"{r['file']:<{width}}  unreadable: {r['error']}")
            else:
                click.echo(f"{r['file']:<{width}}  {r['class']:<12} "
                           + " ".join(f"{r['probabilities'][c]:>10.4f}" for c in classes))
    bad = sum("error" in r for r in rows)
    if bad:
        click.echo(f"{bad} of {len(rows)} file(s) could not be read", err=True)


@main.command()
@study_name_option
@storage_option
@trial_option
@results_tracking_option
@cache_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option("--register", "register_name", help="Also register it in the MLflow model registry under this name.")
@one_line_errors
def export(study_name, storage, trial_number, tracking_uri, cache_dir, out, register_name) -> None:
    """A trial's model and preprocessing as a folder that `search predict --model DIR` accepts."""
    from .inference import from_trial
    from .results import pick_trial

    handle = _handle(study_name, storage, tracking_uri)
    trial = pick_trial(handle.study, trial_number)
    tracker = _tracker(handle)
    folder = from_trial(handle, trial, tracker, cache_dir).save(out)
    click.echo(f"exported trial {trial.number} of {study_name} to {folder}")
    if register_name:
        version = tracker.register(trial.user_attrs["run_id"], folder, register_name)
        click.echo(f"registered as model {register_name!r} version {version}")


@main.command()
@storage_option
@tracking_option
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--dashboard-port", type=int, default=8080, show_default=True)
@one_line_errors
def ui(storage, tracking_uri, port, dashboard_port) -> None:
    """The MLflow UI on the tracking store (and optuna-dashboard when installed), on 127.0.0.1."""
    from .tracking import check_tracking
    from .ui import run_ui

    check_tracking(tracking_uri)
    sys.exit(run_ui(tracking_uri, storage, port, dashboard_port))


@main.command()
@study_name_option
@storage_option
@trial_option
@results_tracking_option
@cache_option
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the PNGs.")
@one_line_errors
def featuremaps(study_name, storage, trial_number, tracking_uri, cache_dir, image, out) -> None:
    """One PNG grid per conv/pool layer of a trial's model for IMAGE; logged to the trial's run."""
    from preprocessing.images import UnreadableImage

    from .featuremaps import write_featuremaps
    from .inference import from_trial
    from .results import pick_trial

    handle = _handle(study_name, storage, tracking_uri)
    trial = pick_trial(handle.study, trial_number)
    tracker = _tracker(handle)
    predictor = from_trial(handle, trial, tracker, cache_dir)
    try:
        array = predictor.model_input(Path(image))
    except UnreadableImage as exc:
        raise SearchError(f"{image}: unreadable ({str(exc).split(': ', 1)[-1]})") from None
    written = write_featuremaps(predictor.model, array, Path(out), f"{study_name} trial {trial.number}")
    tracker.log_artifacts(trial.user_attrs["run_id"], out, f"featuremaps/{Path(image).stem}")
    for path in written:
        click.echo(str(path))
    click.echo(f"{len(written)} layer(s); logged to trial {trial.number}'s run under featuremaps/{Path(image).stem}")


@main.group()
def data() -> None:
    """Look at a data set before searching it."""


@data.command("inspect")
@click.option("--data-dir", envvar="SEARCH_DATA_DIR", required=True, help="[env SEARCH_DATA_DIR]")
@click.option("--sheet", type=click.Path(dir_okay=False), default="contact-sheet.png", show_default=True,
              help="PNG with a few TRAIN images per class next to their Otsu masks.")
@click.option("--per-class", type=click.IntRange(1, 12), default=4, show_default=True)
@click.option("--size", default="120x160", show_default=True, help="Size the sheet shows images at.")
@click.option("--json", "as_json", is_flag=True)
@one_line_errors
def data_inspect(data_dir, sheet, per_class, size, as_json) -> None:
    """Class counts per split, original cells per class, image sizes, unreadable files."""
    from preprocessing import DataError, PreprocessConfig, load_dataset
    from preprocessing.images import UnreadableImage, load_image
    from preprocessing.inspection import inspect_dataset

    from .plots import contact_sheet_png

    try:
        dataset = load_dataset(data_dir)
        plain = PreprocessConfig(size=size, mask="none")
    except DataError as exc:
        raise SearchError(str(exc)) from None
    report = inspect_dataset(dataset)
    bad = {u["file"] for u in report["splits"]["TRAIN"]["unreadable"]}
    rows = []
    train = dataset.train
    for label, name in enumerate(dataset.classes):
        pairs, seen = [], set()
        for i in (i for i in range(len(train)) if train.labels[i] == label and train.files[i] not in bad):
            if train.groups[i] in seen:  # one image per original cell: show different cells
                continue
            try:
                pairs.append((load_image(train.path(i), plain), load_image(train.path(i), PreprocessConfig(size=size, mask="otsu"))))
            except UnreadableImage:
                continue
            seen.add(train.groups[i])
            if len(pairs) == per_class:
                break
        rows.append((name, pairs))
    contact_sheet_png(rows, Path(sheet), f"{dataset.root.name}: TRAIN, one image per cell, and its Otsu mask")
    report["contact_sheet"] = str(sheet)
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    click.echo(f"{report['data_dir']} ({report['layout']} layout), classes: {', '.join(report['classes'])}")
    for name, split in report["splits"].items():
        click.echo(f"{name}: {sum(split['images'].values())} images, {sum(split['cells'].values())} original cells")
        for cls in report["classes"]:
            click.echo(f"  {cls:<12} {split['images'].get(cls, 0):>6} images {split['cells'].get(cls, 0):>5} cells")
        sizes = ", ".join(f"{k} ({v})" for k, v in list(split["sizes_wxh"].items())[:5])
        click.echo(f"  sizes (WxH): {sizes}")
        for u in split["unreadable"]:
            click.echo(f"  unreadable: {u['file']} ({u['error']})")
    click.echo(f"contact sheet: {sheet}")


@main.group()
def unet() -> None:
    """U-Net masks (mask=unet): train ahead of time, see its quality."""


@unet.command("train")
@click.option("--data-dir", envvar="SEARCH_DATA_DIR", required=True, help="[env SEARCH_DATA_DIR]")
@click.option("--size", default="120x160", show_default=True, help="HEIGHTxWIDTH the masks are made at.")
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--patience", type=click.IntRange(1), default=3, show_default=True, help="Early stopping on val_loss.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--val-fraction", type=click.FloatRange(0.05, 0.5), default=0.2, show_default=True)
@click.option("--cache-dir", envvar="BLOODSEARCH_CACHE_DIR", help="[env BLOODSEARCH_CACHE_DIR]")
@tracking_option
@click.option("--retrain", is_flag=True, help="Replace a U-Net already stored for this data set and size.")
@one_line_errors
def unet_train(data_dir, size, epochs, patience, batch_size, seed, val_fraction, cache_dir, tracking_uri,
               retrain) -> None:
    """Train the U-Net on TRAIN's grayscale images against their Otsu masks; report Dice and IoU
    on the grouped validation split; store it for mask=unet and log it to MLflow (experiment unet)."""
    from preprocessing import DataError, default_cache_dir, load_dataset, parse_size
    from preprocessing.unet import ensure_unet

    from .tracking import Tracker, check_tracking

    try:
        hw = parse_size(size)
        data = load_dataset(data_dir, record_dir=cache_dir)
    except DataError as exc:
        raise SearchError(str(exc)) from None
    check_tracking(tracking_uri)
    runs = []
    report = ensure_unet(data.train, hw, cache_dir or default_cache_dir(), retrain=retrain,
                         on_trained=lambda r: runs.append(Tracker(tracking_uri).log_unet(r, data_dir)),
                         epochs=epochs, patience=patience, batch_size=batch_size, seed=seed, val_fraction=val_fraction)
    m = report.meta
    pad = m["padding"]
    padding = f"; sides padded by {pad['bottom']} rows, {pad['right']} columns" if pad["bottom"] or pad["right"] else ""
    click.echo(f"U-Net at {hw[0]}x{hw[1]}: validation Dice {m['val_dice']:.4f}, IoU {m['val_iou']:.4f} "
               f"against Otsu masks ({m['epochs_run']} epochs, {m['train_seconds']:.0f} s{padding})")
    click.echo(f"stored in {report.model_dir}" + (f"; MLflow run {runs[0]} (experiment unet)" if runs else
                                                  " (trained earlier; --retrain to replace it)"))


@main.command()
@storage_option
@click.option("--json", "as_json", is_flag=True)
@one_line_errors
def studies(storage, as_json) -> None:
    """List the studies in a storage with their trial counts and best values."""
    import optuna

    from .storage import check_storage, open_storage

    check_storage(storage)
    rows = []
    for summary in optuna.get_all_study_summaries(open_storage(storage), include_best_trial=True):
        study = optuna.load_study(study_name=summary.study_name, storage=open_storage(storage))
        from .progress import snapshot

        snap = snapshot(study)
        target = json.loads(summary.user_attrs.get(SETTINGS_ATTR, "{}")).get("trials")
        rows.append({"study": summary.study_name, "finished": snap.finished, "target": target,
                     "complete": snap.complete, "pruned": snap.pruned, "failed": snap.failed,
                     "running": snap.running, "best_value": snap.best_value, "best_trial": snap.best_trial})
    def line(r: dict) -> str:
        best = f"{r['best_value']:.4f} (trial {r['best_trial']})" if r["best_value"] is not None else "-"
        finished = f"{r['finished']}/{r['target']}" if r["target"] else str(r["finished"])
        return (f"{r['study']:<20} {finished:>9} {r['complete']:>9} {r['pruned']:>7} {r['failed']:>7} "
                f"{r['running']:>8}  {best}")

    _print_rows(rows, as_json, f"no studies in {storage}",
                f"{'study':<20} {'finished':>9} {'complete':>9} {'pruned':>7} {'failed':>7} {'running':>8}  best",
                line)


def _print_rows(rows: list[dict], as_json: bool, empty: str, header: str, line) -> None:
    """A command's rows as JSON, or a table with a header, or a line saying there are none."""
    if as_json:
        click.echo(json.dumps(rows, indent=1, default=str))
    elif not rows:
        click.echo(empty)
    else:
        click.echo(header)
        for r in rows:
            click.echo(line(r))


if __name__ == "__main__":
    main()
