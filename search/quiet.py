"""What a user sees is our lines: library chatter is kept to warnings and errors, and
TensorFlow's C++ start-up lines (printed to the process's stderr before any log level
applies) are swallowed. `search --verbose ...` keeps all of it."""
from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager

LIBRARIES = ("mlflow", "alembic", "optuna", "absl", "tensorflow", "keras", "urllib3", "matplotlib", "PIL", "numexpr")


def quiet_libraries() -> None:
    """Library loggers at WARNING (MLflow's "Creating initial MLflow database tables",
    Optuna's "A new study created", ...), TensorFlow's C++ at errors only."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # MLflow sets its own loggers' level when it is imported, from this variable; workers
    # inherit it too.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    quiet_psycopg()
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:
        pass


def quiet_psycopg() -> None:
    """psycopg warns "error ignored terminating <Pipeline ...>" when a pooled connection is
    closed at exit after its server went away or a statement failed: the error itself, if it
    mattered, reached our storage code and was said in one line there."""
    logging.getLogger("psycopg").setLevel(logging.ERROR)


@contextmanager
def _stderr_to_devnull():
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 pointed at /dev/null, so absl's and CUDA's
    start-up lines ("Could not find cuda drivers", oneDNN notes) never reach the terminal.
    For commands that will use it anyway; an import error is re-raised after stderr is back."""
    if "tensorflow" in sys.modules:
        return
    with _stderr_to_devnull():
        import tensorflow  # noqa: F401  (imported for its side effect: loaded once, quietly)
