"""Running a study: launch, resume, worker, studies."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from search.cli import options as o
from studies import SHIPPED
from models.config import TTA_MODES
from search.metrics import REGISTRY
from search.settings import LOG_MODELS, METRICS, PRUNERS, SAMPLERS, SearchSettings, check_study_name


@click.command()
@click.option("--study", "study", default="fcn", show_default=True,
              help=f"Search space: {', '.join(SHIPPED)}, or a path to your own .py study.")
@click.option("--trials", type=int, default=20, show_default=True,
              help="Finished trials (complete + pruned) the study should reach, across all launches.")
@o.data_dir(required=True)
@o.groups
@o.cache_dir
@o.storage
@o.tracking_uri
@click.option("--study-name", help="Name in the storage and MLflow experiment. [default: the --study name]")
@click.option("--sampler", type=click.Choice(SAMPLERS), default="tpe", show_default=True)
@click.option("--pruner", type=click.Choice(PRUNERS),
              help="[default: median; wilcoxon with --repeats]  Epoch pruners stop a trial's training early; "
                   "wilcoxon stops a trial's seeds when it is worse than the best trial, seed by seed.")
@click.option("--repeats", type=click.IntRange(1), default=1, show_default=True,
              help="Seeds per trial: the trial's value is their mean --metric; each seed is a nested MLflow run.")
@click.option("--cv", type=int, default=0, show_default=True, metavar="K",
              help="Cross-validate each trial on K folds of TRAIN, grouped (--groups): the value is the mean "
                   "over folds, the trial's model the bag of its fold models. [default: one validation split]")
@click.option("--metric", type=click.Choice(METRICS),
              help="What a trial's value measures on validation (every metric is recorded). [default: log-loss with "
                   "--cv, which ranked trials as TEST does where accuracy ranked them against it (README, "
                   "\"The campaign\"); else accuracy]")
@click.option("--tta", type=click.Choice(TTA_MODES), default="none", show_default=True,
              help="Test-time augmentation of validation and out-of-fold predictions: the mean over flips "
                   "(dihedral: also 90-degree turns, square sizes).")
@click.option("--epochs", type=click.IntRange(1), default=20, show_default=True, help="Maximum epochs per trial.")
@click.option("--patience", type=click.IntRange(1), default=5, show_default=True,
              help="Early-stopping patience, on what --metric watches per epoch ("
                   + ", ".join(f"{m.monitor} for {name}" for name, m in REGISTRY.items()) + ").")
@click.option("--warmup-epochs", type=click.IntRange(0), default=0, show_default=True,
              help="The learning rate rises linearly to the trial's over these first epochs, and early stopping "
                   "starts watching after them (a high rate can leave a fold at chance from its first steps).")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True,
              help="Seeds the split and, with the trial number, each trial.")
@click.option("--sampler-seed", type=click.IntRange(0),
              help="Seeds the sampler apart from the split, so two studies on one split draw different trials. "
                   "[default: --seed]")
@click.option("--timeout", type=click.FloatRange(0, min_open=True),
              help="Stop starting new trials after this many seconds (> 0); running trials finish. [default: none]")
@click.option("--workers", type=click.IntRange(1),
              help="Local worker processes. [default: one per GPU (x --workers-per-gpu), else 1]")
@o.threads
@o.gpus
@o.workers_per_gpu
@o.params
@click.option("--trials-per-worker", type=click.IntRange(1), default=5, show_default=True,
              help="A worker process is replaced after this many trials (frees TensorFlow memory).")
@click.option("--log-models", type=click.Choice(LOG_MODELS), default="all", show_default=True)
@click.option("--val-fraction", type=click.FloatRange(0.05, 0.5), default=0.2, show_default=True)
@click.option("--heartbeat-interval", type=click.IntRange(1), default=10, show_default=True,
              help="Seconds between a running trial's heartbeats.")
@click.option("--grace-period", type=click.IntRange(2), default=30, show_default=True,
              help="Seconds without heartbeat after which a trial is failed and retried once.")
@click.option("--enqueue", "enqueue", multiple=True, metavar="NAME=VALUE,...",
              help="Run this configuration first, as the baseline (repeatable; parameters not given are sampled), "
                   "e.g. --enqueue size=60x80,learning_rate=0.001.")
@click.option("--enqueue-study", "enqueue_studies", multiple=True, metavar="STUDY",
              help="Run a fixed study's configuration first, as the baseline, e.g. seed-fcn (repeatable).")
@click.option("--warm-start-from", metavar="STUDY",
              help="Add the finished trials of this earlier study (same data, split, folds, metric, epochs, "
                   "patience and space): the sampler learns from them, best/evaluate/ensemble use them.")
@click.option("--warm-start-storage", metavar="URL", help="Where --warm-start-from lives. [default: --storage]")
@o.quiet
def launch(study, trials, data_dir, groups_file, group_pattern, cache_dir, storage, tracking_uri, study_name, sampler,
           pruner, repeats, cv, metric, tta, epochs, patience, warmup_epochs, seed, sampler_seed, timeout, workers, threads, gpus, workers_per_gpu, params, trials_per_worker, log_models,
           val_fraction, heartbeat_interval, grace_period, enqueue, enqueue_studies, warm_start_from,
           warm_start_storage, quiet) -> None:
    """Start a study, or continue it until it has --trials finished trials."""
    from search.running.launcher import Launcher
    from search.running.seeding import Seeds

    from studies import study_digest
    from search.urls import absolute_sqlite

    # Stored as absolute paths, so every later command means the same files from any folder.
    if study.endswith(".py"):
        study = str(Path(study).expanduser().resolve())
    grouping = o.grouping(data_dir, groups_file, group_pattern)
    settings = SearchSettings(
        study=study, study_name=check_study_name(study_name if study_name is not None else
                                                 (Path(study).stem if study.endswith(".py") else study)),
        study_digest=study_digest(study), storage=absolute_sqlite(storage), tracking_uri=absolute_sqlite(tracking_uri),
        data_dir=str(Path(data_dir).expanduser().resolve()), trials=trials,
        cache_dir=str(Path(cache_dir).expanduser().resolve()) if cache_dir else None,
        sampler=sampler, pruner=pruner or ("median" if repeats == 1 else "wilcoxon"), repeats=repeats, cv=cv,
        metric=metric or ("log-loss" if cv >= 2 else "accuracy"), tta=tta,
        epochs=epochs, patience=patience, warmup_epochs=warmup_epochs, seed=seed, sampler_seed=sampler_seed, timeout=timeout, workers=workers or 0,
        threads=threads, gpus=gpus, workers_per_gpu=workers_per_gpu or 1, params=o.parse_params(params),
        trials_per_worker=trials_per_worker, log_models=log_models,
        val_fraction=val_fraction, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
        groups=grouping.file, group_pattern=grouping.pattern)
    o.check_cache_dir(cache_dir)  # as typed, so the error names what the user wrote
    seeds = Seeds(tuple(enqueue), tuple(enqueue_studies), warm_start_from,
                  absolute_sqlite(warm_start_storage) if warm_start_storage else None)
    sys.exit(Launcher(settings, quiet=quiet, seeds=seeds).run())


def _stored_settings(study_name: str, storage: str, tracking_uri: str | None) -> SearchSettings:
    from search.results.study import open_existing

    return open_existing(study_name, storage, tracking_uri).settings


@click.command()
@o.study_name
@o.storage
@o.study_tracking_uri
@click.option("--trials", type=int, help="A new target count. [default: the launch's]")
@click.option("--workers", type=click.IntRange(1), help="[default: the launch's]")
@o.threads
@o.gpus
@o.workers_per_gpu
@click.option("--timeout", type=click.FloatRange(0, min_open=True),
              help="Stop starting new trials after this many seconds (> 0). [default: none]")
@o.quiet
def resume(study_name, storage, tracking_uri, trials, workers, threads, gpus, workers_per_gpu, timeout, quiet) -> None:
    """Continue a study with the settings it was launched with."""
    from search.running.launcher import Launcher

    settings = _stored_settings(study_name, storage, tracking_uri)
    for key, value in (("trials", trials), ("workers", workers), ("threads", threads), ("timeout", timeout),
                       ("gpus", gpus), ("workers_per_gpu", workers_per_gpu)):
        if value is not None:
            setattr(settings, key, value)
    o.check_cache_dir(settings.cache_dir)
    sys.exit(Launcher(settings, quiet=quiet, create=False).run())


@click.command()
@o.study_name
@o.storage
@o.study_tracking_uri
@o.data_dir(help="This machine's copy of the data. [default: the launch's]")
@click.option("--groups", "groups_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="This machine's copy of the study's groups CSV; it must group TRAIN as the launch's did. "
                   "[default: the launch's]")
@o.cache_dir
@click.option("--heartbeat-interval", type=click.IntRange(1))
@click.option("--grace-period", type=click.IntRange(2))
@click.option("--timeout", type=click.FloatRange(0, min_open=True),
              help="Stop starting trials after this many seconds (> 0). [default: none; the "
                                            "launch's --timeout is the launch's own]")
@o.threads
@o.gpus
@o.workers_per_gpu
@o.quiet
def worker(study_name, storage, tracking_uri, data_dir, groups_file, cache_dir, heartbeat_interval, grace_period,
           timeout, threads, gpus, workers_per_gpu, quiet) -> None:
    """Join an existing study (from any machine) and work until it has its trial count."""
    from search.running.launcher import Launcher

    settings = _stored_settings(study_name, storage, tracking_uri)
    settings.timeout = timeout
    if groups_file:
        settings.groups = str(Path(groups_file).expanduser().resolve())
    for key, value in (("data_dir", data_dir), ("cache_dir", cache_dir),
                       ("heartbeat_interval", heartbeat_interval), ("grace_period", grace_period),
                       ("threads", threads), ("workers_per_gpu", workers_per_gpu)):
        if value is not None:
            setattr(settings, key, value)
    settings.gpus = gpus  # this machine's, not the launching one's
    settings.workers = 0  # one per GPU here, or one
    o.check_cache_dir(settings.cache_dir)
    sys.exit(Launcher(settings, quiet=quiet, create=False, store_settings=False).run())


@click.command()
@o.storage
@o.as_json
def studies(storage, as_json) -> None:
    """List the studies in a storage with their trial counts and best values."""
    from search.results.study import study_rows
    from search.urls import redact

    def line(r) -> str:
        s = r.snapshot
        best = f"{s.best_value:.4f} (trial {s.best_trial})" if s.best_value is not None else "-"
        finished = f"{s.finished}/{r.target}" if r.target else str(s.finished)
        return (f"{r.study:<20} {finished:>9} {s.complete:>9} {s.pruned:>7} {s.failed:>7} "
                f"{s.running:>8}  {best}")

    o.print_rows(study_rows(storage), as_json, f"no studies in {redact(storage)}",
                 f"{'study':<20} {'finished':>9} {'complete':>9} {'pruned':>7} {'failed':>7} {'running':>8}  best",
                 line, to_dict=lambda r: r.to_dict())


COMMANDS = [launch, resume, worker, studies]
