"""Options that several commands share, declared once (as MLflow's cli_args does)."""
from __future__ import annotations

import click

from search.errors import SearchError
from search.stores.storage import DEFAULT_STORAGE
from search.stores.tracking import DEFAULT_TRACKING_URI

TRACKING_ENV = ["SEARCH_TRACKING_URI", "MLFLOW_TRACKING_URI"]


def normalised(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A password holding @ (user:p@ss@host) encoded, so SQLAlchemy reads the password the
    user wrote instead of taking its tail for the host (and printing it in its error)."""
    from search.urls import normalise

    return normalise(value)


storage = click.option(
    "--storage", envvar="SEARCH_STORAGE", show_envvar=True, default=DEFAULT_STORAGE, show_default=True,
    callback=normalised,
    help="Optuna storage URL: sqlite:///file.db, postgresql+psycopg://user@host/db, or grpc://host:13000 "
         "(a `search proxy` in front of the database, for many workers).")
tracking_uri = click.option(
    "--tracking-uri", envvar=TRACKING_ENV, show_envvar=True, default=DEFAULT_TRACKING_URI, show_default=True,
    callback=normalised,
    help="MLflow tracking URI: a local store or http://server:5000.")
study_tracking_uri = click.option(
    "--tracking-uri", envvar=TRACKING_ENV, show_envvar=True, callback=normalised,
    help="MLflow tracking URI. [default: the one the study was launched with]")
cache_dir = click.option(
    "--cache-dir", envvar="BLOODSEARCH_CACHE_DIR", show_envvar=True,
    help="Where decoded images are cached. [default: ~/.cache/bloodsearch]")


def check_cache_dir(cache_dir: str | None) -> None:
    """Refuse a cache dir no entry can be built in before any study exists: each trial
    used to fail on it in turn (a read-only folder: three failed trials, 64 lines)."""
    from pathlib import Path

    from preprocessing.paths import default_cache_dir, unwritable_reason

    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    reason = unwritable_reason(folder)
    if reason:
        raise SearchError(f"--cache-dir {cache_dir or folder}: {reason}; a search builds its decoded images there")


study_name = click.option("--study-name", required=True, help="The study, as listed by `search studies`.")
trial = click.option("--trial", "trial_number", type=int, help="Trial number. [default: the best]")
as_json = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
quiet = click.option("--quiet", is_flag=True, help="No progress line.")
threads = click.option("--threads", type=click.IntRange(1),
                       help="TensorFlow threads per worker (with --workers 2 on two cores: --threads 1). "
                            "[default: TensorFlow's, all cores; resume/worker: the launch's]")
gpus = click.option("--gpus", metavar="all|none|0,2",
                    help="GPUs for the local workers, one each, round-robin (nvidia-smi's indices; a "
                         "CUDA_VISIBLE_DEVICES given to this command is honoured). [default: every GPU found]")
workers_per_gpu = click.option("--workers-per-gpu", type=click.IntRange(1), metavar="K",
                               help="Workers sharing each GPU; above 1 each grows its GPU memory as needed "
                                    "instead of mapping it all. [default: 1]")
tta = click.option("--tta", type=click.Choice(("none", "flip", "dihedral")), default="none", show_default=True,
                   help="Test-time augmentation: the mean of the probabilities over the image's flips "
                        "(dihedral: and 90-degree turns; square sizes).")
register = click.option("--register", "register_name", metavar="NAME",
                        help="Log it as an MLflow model and register that as a new version of model NAME.")
alias = click.option("--alias", metavar="ALIAS",
                     help="With --register: point this alias at the new version (models:/NAME@ALIAS), e.g. champion.")
groups_file = click.option(
    "--groups", "groups_file", type=click.Path(dir_okay=False), metavar="FILE",
    help="CSV of path,group (path relative to --data-dir; a group: a patient, slide or field) whose images must "
         "stay on one side of every split; `search data groups` finds them. [default: <data-dir>/groups.csv if "
         "it exists, else one group per file]")
group_pattern = click.option(
    "--group-pattern", metavar="REGEX",
    help="Read each file's group from its name: the first capture group, e.g. '^(P\\d+)_'.")


def groups(command):
    """--groups and --group-pattern: what must stay on one side of a split."""
    return groups_file(group_pattern(command))


def grouping(data_dir: str, groups_file: str | None, group_pattern: str | None):
    """The preprocessing.Grouping the options name, or a one-line error."""
    from preprocessing import DataError
    from preprocessing.groups import resolve_grouping

    try:
        return resolve_grouping(data_dir, groups_file, group_pattern)
    except DataError as exc:
        raise SearchError(str(exc)) from None


params = click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
                      help="Fix a search-space parameter, e.g. --param size=60x80 (repeatable).")


def a_trial(command):
    """The options that pick one trial of a study and where to find its runs and images."""
    for option in reversed((study_name, storage, trial, study_tracking_uri, cache_dir)):
        command = option(command)
    return command


def data_dir(required: bool = False, help: str = "[default: the study's]"):
    return click.option("--data-dir", envvar="SEARCH_DATA_DIR", show_envvar=True, required=required,
                        help=help if not required else "TRAIN/<CLASS>/... (+ TEST/) or <CLASS>/... folders of images.")


def output_file(path: str):
    """The one rule for files a command writes: missing parent folders are created."""
    from pathlib import Path

    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SearchError(f"{path}: cannot create its folder ({exc.strerror})") from None
    return out


def parse_params(values: tuple[str, ...]) -> dict[str, str]:
    fixed = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise SearchError(f"--param {item!r} is not NAME=VALUE")
        fixed[name.strip()] = value.strip()
    return fixed


def print_rows(rows: list, as_json: bool, empty: str, header: str, line, to_dict=lambda r: r) -> None:
    """A command's rows as JSON, or a table with a header, or a line saying there are none."""
    import json

    if as_json:
        click.echo(json.dumps([to_dict(r) for r in rows], indent=1, default=str))
    elif not rows:
        click.echo(empty)
    else:
        click.echo(header)
        for r in rows:
            click.echo(line(r))
