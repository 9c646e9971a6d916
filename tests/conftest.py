"""Session-wide test settings: runs go to a temporary QFLOW_HOME, never to ~/.qflow.

Set at configure time, before any test imports the engine, so the app pages'
run-history hook (:func:`ui.page.save_run`), the CLI's ``--save``, the API and
the Streamlit servers the browser tests start (they inherit the environment)
all write into one throwaway folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_HOME_KEY = "_qflow_test_home"


def pytest_configure(config: pytest.Config) -> None:
    home = tempfile.mkdtemp(prefix="qflow-test-home-")
    setattr(config, _HOME_KEY, (home, os.environ.get("QFLOW_HOME")))
    os.environ["QFLOW_HOME"] = home


def pytest_unconfigure(config: pytest.Config) -> None:
    home, previous = getattr(config, _HOME_KEY, (None, None))
    if home is None:
        return
    if previous is None:
        os.environ.pop("QFLOW_HOME", None)
    else:
        os.environ["QFLOW_HOME"] = previous
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A real Dask scheduler and two worker processes on 127.0.0.1, for one test module.

    Tests that kill a worker should start their own (:func:`tests.dask_cluster.start_cluster`).
    """
    from tests.dask_cluster import start_cluster

    cluster = start_cluster(tmp_path_factory.mktemp("dask"))
    try:
        yield cluster
    finally:
        cluster.close()
