"""qflow's Dask plumbing against a real scheduler and two worker processes."""

import pytest

from qflow.core.cluster import dask_client, scheduler_address, tagged_call, worker_addresses
from qflow.core.errors import InputError


def test_address_comes_from_config_then_environment(monkeypatch):
    monkeypatch.setenv("QFLOW_DASK_SCHEDULER", "tcp://10.0.0.5:8786")
    assert scheduler_address(None) == "tcp://10.0.0.5:8786"
    assert scheduler_address("tcp://127.0.0.1:9000") == "tcp://127.0.0.1:9000"
    monkeypatch.delenv("QFLOW_DASK_SCHEDULER")
    assert scheduler_address(None) is None


@pytest.mark.parametrize("bad", ["localhost:8786", "http://h:1", "tcp://h", "tcp://h:1; rm -rf /"])
def test_malformed_address_is_one_line_error(bad):
    with pytest.raises(InputError, match="dask_scheduler.*tcp://HOST:PORT"):
        scheduler_address(bad)


def test_no_address_and_one_worker_means_in_process():
    with dask_client(None, 1) as client:
        assert client is None


def test_unreachable_scheduler_is_an_input_error():
    with pytest.raises(InputError, match="scheduler not reachable"), dask_client("tcp://127.0.0.1:1"):
        pass


def test_tasks_run_on_the_real_workers(dask_cluster):
    with dask_client(dask_cluster.address) as client:
        workers = worker_addresses(client)
        results = client.gather([tagged_call(client, pow, i, 2) for i in range(8)])
    assert len(workers) == 2
    assert [value for value, _ in results] == [i * i for i in range(8)]
    assert {where for _, where in results} <= set(workers)


def test_local_cluster_starts_under_a_script_that_cannot_be_rerun(tmp_path, monkeypatch):
    """The console's __main__ is a Streamlit page; spawned workers must not execute it again."""
    import sys
    import types

    script = tmp_path / "page.py"
    script.write_text("raise NameError('a Streamlit page run outside Streamlit')\n")
    fake_main = types.ModuleType("__main__")
    fake_main.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", fake_main)
    with dask_client("local", 1) as client:
        assert client.gather(tagged_call(client, pow, 3, 2))[0] == 9
    assert fake_main.__file__ == str(script)
