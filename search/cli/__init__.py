"""`search`: the command line. Thin commands by concern (running a study, reading results,
using models, data), each parsing its options and calling the library; every user error is
one `error:` line on stderr and exit code 2 (search.errors.SearchError)."""
from __future__ import annotations

import faulthandler
import signal

import click

from search.errors import SearchError


class SearchGroup(click.Group):
    """Library errors about the user's input (a bad data dir, study or --param) become
    SearchErrors here, in one place, instead of in every command."""

    def invoke(self, ctx: click.Context):
        from preprocessing import DataError
        from studies import ParamError, StudyError

        try:
            return super().invoke(ctx)
        except (DataError, StudyError, ParamError) as exc:
            raise SearchError(str(exc)) from None


@click.group(cls=SearchGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="bloodsearch", prog_name="search")
@click.option("--verbose", is_flag=True, help="Also show the libraries' own log lines (TensorFlow, MLflow, Optuna).")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Hyperparameter search with experiment tracking for blood-cell image classifiers."""
    # `kill -USR1 <pid>` prints every thread's stack: the way to see where a stuck launch waits.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    if verbose:
        import os

        from search.running.launcher import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"
    else:
        from search.quiet import import_tensorflow_quietly, quiet_libraries

        quiet_libraries()
        if ctx.invoked_subcommand in USES_TENSORFLOW:
            import_tensorflow_quietly()


# Commands that load a Keras model: TensorFlow is imported (quietly) before they start.
USES_TENSORFLOW = {"evaluate", "replicate", "predict", "export", "featuremaps", "unet", "ensemble"}


def _attach() -> None:
    from search.cli import data, models, proxy, results, running

    for module in (running, results, models, proxy):
        for command in module.COMMANDS:
            main.add_command(command)
    main.add_command(data.data)
    main.add_command(data.unet)


_attach()
