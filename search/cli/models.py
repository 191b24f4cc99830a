"""Using models: predict, export, featuremaps."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from search.cli import options as o
from search.errors import SearchError


def _trial_predictor(study_name, storage, trial_number, tracking_uri, cache_dir, tta="none", whole=True):
    """(handle, trial record, tracker, predictor) of a study's trial: a --cv trial's bag of
    fold models unless whole=False; wrapped in test-time augmentation when tta is given."""
    from search.serving.predictor import from_trial
    from search.results.study import open_existing, pick_trial, study_tracker

    handle = open_existing(study_name, storage, tracking_uri)
    trial = pick_trial(handle.study, trial_number)
    tracker = study_tracker(handle)
    return handle, trial, tracker, from_trial(handle, trial, tracker, cache_dir, tta=tta, whole=whole)


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--study-name", help="Predict with a trial of this study ...")
@o.storage
@o.trial
@o.study_tracking_uri
@o.cache_dir
@click.option("--model", "model_dir", type=click.Path(), help="... or with a folder made by `search export`.")
@click.option("--tta", type=click.Choice(("none", "flip", "dihedral")), default="none", show_default=True,
              help="With --study-name: test-time augmentation (an exported folder holds its own).")
@o.as_json
@click.option("--csv", "as_csv", is_flag=True)
def predict(paths, study_name, storage, trial_number, tracking_uri, cache_dir, model_dir, tta, as_json,
            as_csv) -> None:
    """Class and probabilities for image files or folders, with the trial's own preprocessing."""
    from search.serving.folders import load_folder
    from search.serving.predictor import expand

    if bool(study_name) == bool(model_dir):
        raise SearchError("give either --study-name (and optionally --trial) or --model DIR")
    if as_json and as_csv:
        raise SearchError("--json and --csv are two output formats: give one")
    files = expand(paths)
    if not files:
        raise SearchError(f"no image files in {', '.join(paths)}")
    if model_dir:
        if tta != "none":
            raise SearchError("--tta goes with --study-name; an exported model applies the TTA it was exported with")
        predictor = load_folder(model_dir)
    else:
        predictor = _trial_predictor(study_name, storage, trial_number, tracking_uri, cache_dir, tta)[3]
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
    if bad == len(rows):
        raise SearchError(f"none of the {len(rows)} file(s) could be predicted", exit_code=1)
    if bad:
        click.echo(f"{bad} of {len(rows)} file(s) could not be read", err=True)


@click.command()
@o.a_trial
@click.option("--out", type=click.Path(file_okay=False), help="Folder to write.")
@click.option("--log-model", is_flag=True,
              help="Log it to the trial's run as an MLflow model (a pyfunc that takes raw images).")
@o.register
@o.alias
@click.option("--force", is_flag=True, help="Replace an earlier export in --out (only what that export wrote).")
@o.tta
def export(study_name, storage, trial_number, tracking_uri, cache_dir, out, log_model, register_name, alias, force,
           tta) -> None:
    """A trial's model (a --cv trial's bag of fold models) with its preprocessing: a folder
    that `search predict --model DIR` accepts (--out), and/or an MLflow model logged to the
    trial's run (--log-model) and registered (--register NAME [--alias champion]); with --tta
    the model applies it itself."""
    from search.serving.destination import Destination, protected

    if not (out or log_model or register_name):
        raise SearchError("say where to: --out DIR, --log-model or --register NAME")
    if alias and not register_name:
        raise SearchError("--alias goes with --register")
    if out:
        Destination(Path(out), force, "--out", protected(storage, tracking_uri, cache_dir=cache_dir)).check()
    handle, trial, tracker, predictor = _trial_predictor(study_name, storage, trial_number, tracking_uri, cache_dir,
                                                         tta)
    if out:
        s = handle.settings
        keep = protected(storage, s.tracking_uri, s.data_dir, cache_dir)
        folder = predictor.save(Destination(Path(out), force, "--out", keep))
        click.echo(f"exported trial {trial.number} of {study_name} ({predictor.info['model']}) to {folder}")
    if log_model or register_name:
        from search.serving.mlflow_model import log_and_register

        log_and_register(tracker, trial.run_id, predictor, f"{study_name}-{trial.number}", handle.settings.data_dir,
                         register_name, alias, {"optuna.study": study_name, "optuna.trial": trial.number,
                                                "bloodsearch.tta": tta}, say=click.echo)


@click.command()
@o.a_trial
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the PNGs.")
def featuremaps(study_name, storage, trial_number, tracking_uri, cache_dir, image, out) -> None:
    """One PNG grid per conv/pool layer of a trial's model for IMAGE; logged to the trial's run."""
    from preprocessing.images import UnreadableImage

    from search.results.featuremaps import write_featuremaps

    _, trial, tracker, predictor = _trial_predictor(study_name, storage, trial_number, tracking_uri, cache_dir,
                                                    whole=False)  # a --cv trial's fold 0: one network to look into
    try:
        array = predictor.model_input(Path(image))
    except UnreadableImage as exc:
        raise SearchError(f"{image}: unreadable ({str(exc).split(': ', 1)[-1]})") from None
    written = write_featuremaps(predictor.model, array, Path(out), f"{study_name} trial {trial.number}")
    tracker.log_artifacts(trial.run_id, out, f"featuremaps/{Path(image).stem}")
    for path in written:
        click.echo(str(path))
    click.echo(f"{len(written)} layer(s); logged to trial {trial.number}'s run under featuremaps/{Path(image).stem}")


COMMANDS = [predict, export, featuremaps]
