import logging
import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402

# A suite started in the background by a script (`make test &`, a runner without job
# control) inherits SIGINT ignored, and so would every process the tests start; the Ctrl-C
# tests need it as a terminal gives it. A handler, unlike SIG_IGN, is not inherited by exec.
signal.signal(signal.SIGINT, signal.default_int_handler)

from preprocessing.synthetic import make_split_dataset  # noqa: E402


@pytest.fixture
def split_dataset(tmp_path: Path) -> Path:
    return make_split_dataset(tmp_path / "data")


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def pytest_configure(config):
    """Tests that share a server, or stop PostgreSQL, rely on --dist loadgroup keeping their
    xdist_group on one worker. pytest 9.2 makes pytest-xdist ignore the mark, silently
    (pytest-dev/pytest-xdist#1386): refuse to run like that."""
    version = tuple(int(x) for x in pytest.__version__.split(".")[:2] if x.isdigit())
    if getattr(config.option, "dist", "no") == "loadgroup" and version >= (9, 2):
        raise pytest.UsageError(f"pytest {pytest.__version__} breaks --dist loadgroup (pytest-dev/pytest-xdist#1386); "
                                f"install pytest<9.2 (make install does)")


@pytest.fixture(autouse=True)
def _quiet_logs(caplog):
    caplog.set_level(logging.WARNING)


@pytest.fixture(autouse=True)
def _tracking_uri_stays_in_its_test():
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI to this process's environment;
    left there, the next test's commands (and the CLI's --tracking-uri default) would use
    the store of the test that set it."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
