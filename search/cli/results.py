"""Reading results: status, best, evaluate, replicate, report, compare, ui."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from search.cli import options as o
from search.errors import SearchError
from search.settings import METRICS


def _handle(study_name, storage, tracking_uri=None, data_dir=None):
    from search.results.study import open_existing

    return open_existing(study_name, storage, tracking_uri, data_dir)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@click.command()
@o.study_name
@o.storage
@o.as_json
def status(study_name, storage, as_json) -> None:
    """Trials by state, best so far, trials running now, finished per hour, ETA."""
    from search.results.study import as_json as dumps
    from search.results.study import status as study_status
    from search.running.progress import duration

    from search.metrics import value_name

    handle = _handle(study_name, storage)
    st = study_status(handle)
    if as_json:
        click.echo(dumps(st.to_dict()))
        return
    s = st.snapshot
    click.echo(f"study {st.study}: {s.finished}/{st.target} finished "
               f"(complete {s.complete}, pruned {s.pruned}; failed {s.failed}, "
               f"running {s.running}, queued {s.waiting})")
    best = f"{s.best_value:.4f} (trial {s.best_trial})" if s.best_value is not None else "-"
    rate = f"{st.finished_per_hour}/h" if st.finished_per_hour else "-"
    eta = duration(st.eta_s) if st.eta_s is not None else "?"
    click.echo(f"best {value_name(handle.settings.metric, handle.settings.cv)} {best} | finished per hour {rate} (last hour: {st.finished_last_hour}) | eta {eta}")
    if (b := st.baseline) is not None:
        gain = f"; the best is {s.best_value - b.value:+.4f} against it" if s.best_value is not None else ""
        click.echo(f"baseline: trial {b.number} ({b.enqueued}) {b.value:.4f}{gain}")
    if st.devices:
        click.echo("trained on: " + ", ".join(f"{device} {n}" for device, n in st.devices.items()))
    for r in st.running:
        click.echo(f"  running: trial {r.trial} on {r.host}{f' ({r.device})' if r.device else ''} pid {r.pid}, "
                   f"epoch {r.epoch}, "
                   f"{duration(r.elapsed_s)} elapsed")


@click.command()
@o.study_name
@o.storage
@click.option("--top", type=click.IntRange(1), default=5, show_default=True)
@o.as_json
def best(study_name, storage, top, as_json) -> None:
    """The best trials' parameters and metrics; the baseline (an enqueued known configuration)
    is listed too, marked, wherever it ranks."""
    from search.metrics import REGISTRY, value_name
    from search.results.study import best_trials, trial_summary

    handle = _handle(study_name, storage)
    metric = handle.settings.metric
    # The study's value first, then every other metric each trial recorded (mean over its models).
    others = [m for name, m in REGISTRY.items() if name != metric]
    named = value_name(metric)
    width = max(8, len(named))

    def score(r, m) -> str:
        value = r.mean_score(m.name)
        return f"{value:>{max(8, len(m.label))}.4f}" if value is not None else f"{'-':>{max(8, len(m.label))}}"

    def line(r) -> str:
        params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(r.params.items()))
        size = f"{r.model_size_mb:.1f}" if r.model_size_mb is not None else "-"
        epochs = f"{r.epochs_run:g}" if r.epochs_run is not None else "-"
        mark = f"  [{r.provenance()}]" if r.provenance() else ""
        return (f"{r.number:>5} {r.value:>{width}.4f} {' '.join(score(r, m) for m in others)} {epochs:>6} {size:>8} "
                f"{'yes' if r.converged else 'no':>5}  {params}{mark}")

    header = " ".join(f"{m.label:>8}" for m in others)
    o.print_rows(best_trials(handle.study, top, baselines=True), as_json,
                 f"study {study_name} has no complete trial yet",
                 f"{'trial':>5} {named:>{width}} {header} {'epochs':>6} {'size MB':>8} {'conv':>5}  parameters", line,
                 to_dict=lambda r: trial_summary(r, metric))


@click.command()
@o.study_name
@o.storage
@o.trial
@o.study_tracking_uri
@o.data_dir()
@o.cache_dir
@o.tta
@o.as_json
def evaluate(study_name, storage, trial_number, tracking_uri, data_dir, cache_dir, tta, as_json) -> None:
    """Evaluate a trial's model on TEST (and TEST_SIMPLE) and log it to the trial's run.

    TEST is for the end of a search: choosing among trials by TEST accuracy would leak it."""
    from search.results.evaluation import evaluate_trial
    from search.results.study import as_json as dumps
    from search.results.study import pick_trial, study_tracker

    handle = _handle(study_name, storage, tracking_uri, data_dir)
    trial = pick_trial(handle.study, trial_number)
    result = evaluate_trial(handle, trial, study_tracker(handle), cache_dir, tta=tta)
    if as_json:
        click.echo(dumps(result.to_dict()))
        return
    from search.metrics import value_name

    named = value_name(handle.settings.metric, handle.settings.cv)
    click.echo(f"study {study_name}, trial {trial.number} ({named} {trial.value:.4f}): {result.model}")
    from search.results.evaluation import held_out_lines

    for name, r in result.splits.items():
        for line in held_out_lines(name, r):
            click.echo(line)
        if "per_model" in r:
            a, c = r["per_model"]["accuracy"], r["per_model"]["group_accuracy"]
            click.echo(f"  each {r['per_model']['kind']} alone: accuracy {a['mean']:.4f} ± {a['std']:.4f} "
                       f"[{a['min']:.4f}, {a['max']:.4f}], per-group {c['mean']:.4f} ± {c['std']:.4f} (n={a['n']})")
        for cls, m in r["per_class"].items():
            if m.get("absent"):
                click.echo(f"  {cls:<12} absent from {name} (not in the macro average)")
                continue
            click.echo(f"  {cls:<12} precision {m['precision']:.3f}  recall {m['recall']:.3f}  f1 {m['f1']:.3f}"
                       f"  ({m['support']} images)")
    click.echo(result.row)


@click.command()
@click.option("--study-name", help="Replicate a trial of this study (with --trial; default its best) ...")
@o.storage
@o.trial
@click.option("--study", "study", help="... or a shipped or .py study's fixed configuration, e.g. seed-fcn.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="With --study: fix a parameter.")
@click.option("--repeats", type=click.IntRange(1), default=10, show_default=True, help="Seeds, each trained from scratch.")
@o.data_dir(help="[default: the study's; required with --study]")
@o.groups
@o.cache_dir
@click.option("--epochs", type=click.IntRange(1), help="[default: the study's, or 20]")
@click.option("--patience", type=click.IntRange(1), help="[default: the study's, or 5]")
@click.option("--seed", type=click.IntRange(0), help="Seeds the validation split and the repeats. [default: the study's, or 0]")
@click.option("--tracking-uri", envvar=o.TRACKING_ENV, show_envvar=True, callback=o.normalised,
              help="[default: the study's, or sqlite:///mlflow.db]")
@click.option("--cv", type=int, default=0, metavar="K",
              help="With --study: train K folds per seed and judge their bag. [a trial: its study's]")
@o.tta
@o.threads
@o.as_json
def replicate(study_name, storage, trial_number, study, params, repeats, data_dir, groups_file, group_pattern,
              cache_dir, epochs, patience, seed, tracking_uri, cv, tta, threads, as_json) -> None:
    """Re-train one configuration --repeats times from scratch, evaluate each seed on TEST,
    and print the study's row: accuracy mean ± std [min, max] | size | epochs | convergence."""
    from search.results import replicate as rp
    from search.results.study import as_json as dumps
    from search.running.threads import use_threads
    from search.results.study import pick_trial
    from search.stores.tracking import DEFAULT_TRACKING_URI, Tracker, check_tracking
    from search.urls import redact

    if bool(study_name) == bool(study):
        raise SearchError("give either --study-name (and optionally --trial) or --study")
    if study_name:
        if params:
            raise SearchError("--param goes with --study; a trial's configuration is fixed")
        handle = _handle(study_name, storage, tracking_uri, data_dir)
        if cv or groups_file or group_pattern:
            raise SearchError("--cv, --groups and --group-pattern go with --study; a trial is replicated as its "
                              "study ran it")
        rep = rp.of_trial(handle, pick_trial(handle.study, trial_number), epochs, patience, seed, tta)
        tracking_uri = handle.settings.tracking_uri
        check_tracking(tracking_uri, must_exist=True)
    else:
        if not data_dir:
            raise SearchError("--data-dir is required with --study")
        rep = rp.of_study(study, o.parse_params(params), data_dir, epochs, patience, seed, tta, cv,
                          o.grouping(data_dir, groups_file, group_pattern))
        tracking_uri = tracking_uri or DEFAULT_TRACKING_URI
    use_threads(threads)
    check_tracking(tracking_uri)
    result = rp.replicate(rep, repeats, Tracker(tracking_uri), cache_dir)
    if as_json:
        click.echo(dumps(result.to_dict()))
    else:
        judged = f", each the bag of {rep.cv} folds" if rep.cv >= 2 else ""
        click.echo(f"{rep.name}, {repeats} seeds{judged}, {rep.config.preprocess.size_text}"
                   f"{', TTA ' + rep.tta if rep.tta != 'none' else ''}:")
        click.echo(result.summary.row())
    if result.tracking_error:
        click.echo(f"warning: not all of it reached MLflow at {redact(tracking_uri)} ({result.tracking_error})",
                   err=True)
    elif not as_json:
        click.echo(f"MLflow: experiment replicate, run {result.run_id}")


@click.command()
@click.option("--study-name", "study_names", multiple=True, required=True,
              help="A study to compare (repeat: --study-name hyperband --study-name random).")
@o.storage
@click.option("--out", type=click.Path(dir_okay=False), default="compare.png", show_default=True)
@o.as_json
def compare(study_names, storage, out, as_json) -> None:
    """Studies against wall time: best val_accuracy so far (PNG), trials finished, epochs spent."""
    from search.results.compare import curve, plot
    from search.results.study import as_json as dumps

    curves = [curve(_handle(name, storage).study) for name in study_names]
    plot(curves, o.output_file(out))
    if as_json:
        click.echo(dumps([c.to_dict() | {"plot": out} for c in curves]))
        return
    click.echo(f"{'study':<20} {'finished':>8} {'pruned':>6} {'epochs':>7} {'hours':>6} {'best val':>9}  trial")
    for c in curves:
        value = f"{c.best_value:.4f}" if c.best_value is not None else "-"
        click.echo(f"{c.study:<20} {c.finished:>8} {c.pruned:>6} {c.epochs_spent:>7.0f} "
                   f"{c.wall_hours:>6.2f} {value:>9}  {c.best_trial if c.best_trial is not None else '-'}")
    click.echo(f"plot: {out}")


@click.command()
@o.study_name
@o.storage
@o.study_tracking_uri
@click.option("--out", type=click.Path(file_okay=False), help="[default: report-<study>/]")
def report(study_name, storage, tracking_uri, out) -> None:
    """Optimization history, parameter importances, parallel coordinates, intermediate values:
    PNGs and an HTML page, also logged to the study's parent run."""
    from search.results.report import write_html, write_report
    from search.results.study import study_tracker
    from search.settings import PARENT_RUN_ATTR

    handle = _handle(study_name, storage, tracking_uri)
    folder = Path(out or f"report-{study_name}")
    written = write_report(handle.study, folder)
    write_html(handle.study, folder, written)
    study_tracker(handle).log_artifacts(handle.study.user_attrs[PARENT_RUN_ATTR], folder, "report")
    for name, path in written.items():
        click.echo(f"{name}: {path}")
    click.echo(f"logged to the parent run of experiment {study_name}; open {folder / 'report.html'}")


@click.command()
@o.storage
@o.tracking_uri
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--dashboard-port", type=int, default=8080, show_default=True)
def ui(storage, tracking_uri, port, dashboard_port) -> None:
    """The MLflow UI on the tracking store (and optuna-dashboard when installed), on 127.0.0.1."""
    from search.results.ui import run_ui
    from search.stores.storage import check_storage
    from search.stores.tracking import check_tracking

    check_storage(storage, must_exist=True)  # nothing to show in a store that is not there
    check_tracking(tracking_uri, must_exist=True)
    sys.exit(run_ui(tracking_uri, storage, port, dashboard_port))


@click.command()
@o.study_name
@o.storage
@o.study_tracking_uri
@o.cache_dir
@click.option("--size", type=click.IntRange(1), default=10, show_default=True,
              help="Greedy selection steps (a trial chosen k times has weight k/size).")
@click.option("--metric", type=click.Choice(METRICS),
              help="What the selection optimises on the out-of-fold predictions. [default: the study's]")
@o.tta
@click.option("--evaluate", "on_test", is_flag=True, help="Evaluate the ensemble once on TEST; log it to MLflow.")
@click.option("--export", "export_dir", type=click.Path(file_okay=False),
              help="Write it as one model folder for `search predict --model`.")
@click.option("--force", is_flag=True, help="With --export: replace an earlier export (only what that export wrote).")
@o.register
@o.alias
@o.as_json
def ensemble(study_name, storage, tracking_uri, cache_dir, size, metric, tta, on_test, export_dir, force,
             register_name, alias, as_json) -> None:
    """Greedy ensemble selection (Caruana et al. 2004) over the study's --cv trials, chosen on
    out-of-fold predictions only; members are the trials' fold bags."""
    from search.results import ensemble as ens
    from search.results.study import as_json as dumps
    from search.results.study import study_tracker

    if alias and not register_name:
        raise SearchError("--alias goes with --register")
    handle = _handle(study_name, storage, tracking_uri)
    tracker = study_tracker(handle)
    destination = None
    if export_dir:
        from search.serving.destination import Destination, protected

        s = handle.settings
        destination = Destination(Path(export_dir), force, "--export",
                                  protected(storage, s.tracking_uri, s.data_dir, cache_dir))
        destination.check()  # before minutes of choosing and downloading
    metric = metric or handle.settings.metric
    say = (lambda line: None) if as_json else (lambda line: click.echo(line, err=True))
    say(f"choosing among the complete --cv trials of {study_name} on their out-of-fold predictions ...")
    selection = ens.select(handle.study, tracker, size, metric)
    if selection.left_out:
        first = min(selection.left_out)
        say(f"note: trial(s) {', '.join(map(str, sorted(selection.left_out)))} left out: their out-of-fold "
            f"predictions could not be read (trial {first}: {selection.left_out[first]})")
    out = {"selection": selection.to_dict()}
    if not as_json:
        click.echo(f"ensemble of {len(selection.members)} trial(s), chosen on out-of-fold {metric}:")
        for n, w in selection.members:
            click.echo(f"  trial {n:>4}  weight {w:.2f}")
        from search.metrics import REGISTRY

        def named(values: dict) -> str:
            return ", ".join(f"{m.label} {values[name]:.4f}" for name, m in REGISTRY.items())

        click.echo(f"out-of-fold: ensemble {named(selection.ensemble_scores)} | best single trial "
                   f"({selection.best_single}) {named(selection.best_single_scores)}")
    out.update(ens.deliver(handle, selection, tracker, cache_dir, tta, on_test, destination, register_name,
                           alias, say=say, echo=(lambda line: None) if as_json else click.echo))
    if not as_json:
        from search.results.evaluation import held_out_lines

        for name, r in out.get("evaluation", {}).get("splits", {}).items():
            for line in held_out_lines(name, r):
                click.echo(line)
        if "evaluation" in out:
            click.echo(f"MLflow: run {out['evaluation']['run_id']} in experiment {study_name}")
        if "export" in out:
            click.echo(f"exported the ensemble to {out['export']}")
    if as_json:
        click.echo(dumps(out))


COMMANDS = [status, best, evaluate, replicate, report, compare, ensemble, ui]
