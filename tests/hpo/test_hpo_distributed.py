"""HPO trials on a real Dask cluster: a scheduler and worker processes on 127.0.0.1 (tests/dask_cluster.py)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from qflow.cli import main
from qflow.core.errors import InputError
from qflow.hpo import HpoConfig, _distributed, plan_hpo
from tests.dask_cluster import start_cluster
from tests.hpo.slow_objective import slow_evaluate

BRANIN = {"objective": "branin", "n_trials": 8, "n_initial": 4, "suggest": 2}
#: Random proposals only (no GP fits): for the tests about where trials run, not what is proposed.
QUICK = {"objective": "branin", "n_trials": 6, "gp_surrogate": False, "baselines": False, "suggest": 1}


def _trial_numbers(plan):
    return sorted(t["trial"] for t in plan.result["trials"] if t["trial"] is not None)


def test_trials_run_on_the_cluster_workers(dask_cluster):
    plan = plan_hpo(None, None, {**BRANIN, "dask_scheduler": dask_cluster.address})
    cluster = plan.result["distributed"]
    assert cluster["scheduler"] == dask_cluster.address
    assert len(cluster["workers_at_start"]) == 2 and cluster["in_flight"] == 2
    trials = plan.result["trials"]
    assert _trial_numbers(plan) == list(range(1, 9))
    assert {t["worker"] for t in trials} <= set(cluster["workers_at_start"])
    assert set(cluster["workers_used"]) == {t["worker"] for t in trials}
    assert sum(cluster["trials_per_worker"].values()) == 8
    assert not any(t["retried"] for t in trials) and cluster["retried_trials"] == [] and cluster["workers_lost"] == []
    assert plan.metrics["all_proposals_distinct"] and plan.metrics["trials_by_method"] == {"initial": 4, "gp-ei": 4}
    # The random-search baseline ran on the cluster too: same budget, values of the same function.
    assert plan.baselines["random_search"]["n_evaluations"] == 8


def test_scheduler_from_the_environment(dask_cluster, monkeypatch):
    monkeypatch.setenv("QFLOW_DASK_SCHEDULER", dask_cluster.address)
    plan = plan_hpo(None, None, QUICK)
    assert plan.result["distributed"]["scheduler"] == dask_cluster.address
    monkeypatch.delenv("QFLOW_DASK_SCHEDULER")
    assert "distributed" not in plan_hpo(None, None, QUICK).result


def test_cli_flag(dask_cluster, tmp_path, capsys):
    out = tmp_path / "plan.json"
    code = main(["hpo", "--objective", "branin", "--n-trials", "6", "--no-baselines", "--no-gp-surrogate",
                 "--dask-scheduler", dask_cluster.address, "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert dask_cluster.address in out.read_text()


@pytest.mark.parametrize("bad", ["localhost:8786", "tcp://h", "http://h:1"])
def test_malformed_scheduler_is_refused(bad):
    with pytest.raises(InputError, match="dask_scheduler"):
        HpoConfig.from_mapping({"dask_scheduler": bad})


def test_local_cluster_on_request():
    plan = plan_hpo(None, None, {**QUICK, "dask_scheduler": "local", "n_jobs": 1})
    cluster = plan.result["distributed"]
    assert cluster["scheduler"] == "local" and len(cluster["workers_at_start"]) == 1
    assert all(t["worker"] == cluster["workers_at_start"][0] for t in plan.result["trials"])


def _wait_for_start_on(address: str, scheduler: str, timeout_s: float = 30.0) -> None:
    """Block until a trial task logged its start on the worker at ``address``."""
    from distributed import Client

    with Client(scheduler, timeout="10s", set_as_default=False) as client:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(msg.get("worker") == address for _, msg in client.get_events(_distributed.TRIAL_TOPIC)):
                return
            time.sleep(0.05)
    raise AssertionError(f"no trial started on {address}")


def test_killed_worker_loses_no_trial(tmp_path, monkeypatch):
    monkeypatch.setattr(_distributed, "evaluate_one", slow_evaluate)
    cluster = start_cluster(tmp_path, 2)
    try:
        victim = cluster.worker_address(0)
        config = {**QUICK, "n_trials": 5, "dask_scheduler": cluster.address}
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(plan_hpo, None, None, config)
            _wait_for_start_on(victim, cluster.address)
            cluster.kill_worker(0)  # mid-trial: its trial started and sleeps half a second
            plan = running.result(timeout=120)
    finally:
        cluster.close()
    trials = plan.result["trials"]
    assert _trial_numbers(plan) == [1, 2, 3, 4, 5]  # every trial once: none lost, none doubled
    assert all(t["worker"] != victim for t in trials)  # the victim finished nothing
    retried = [t for t in trials if t["retried"]]
    assert len(retried) == 1 and victim in retried[0]["note"]
    report = plan.result["distributed"]
    assert report["workers_lost"] == [victim] and report["retried_trials"] == [retried[0]["trial"]]
    assert victim not in report["workers_at_end"]
    assert any("left the cluster" in d and "no trial was lost" in d for d in plan.diagnostics)


def test_trial_cancelled_by_dask_is_submitted_again(dask_cluster, monkeypatch):
    """When a worker leaves, the scheduler may forget a trial's task and cancel its future instead of rerunning it
    (seen under load: FutureCancelledError "already forgotten"); the plan submits that trial again."""
    from distributed import Client, Future

    monkeypatch.setattr(_distributed, "evaluate_one", slow_evaluate)
    config = {**QUICK, "n_trials": 4, "dask_scheduler": dask_cluster.address}
    with ThreadPoolExecutor(1) as pool, Client(dask_cluster.address, timeout="10s", set_as_default=False) as other:
        earlier = {msg["key"] for _, msg in other.get_events(_distributed.TRIAL_TOPIC)}  # other tests' runs
        running = pool.submit(plan_hpo, None, None, config)
        deadline, started = time.monotonic() + 30, []
        while not started and time.monotonic() < deadline:
            started = [msg["key"] for _, msg in other.get_events(_distributed.TRIAL_TOPIC)
                       if msg["key"].endswith("-trial-1") and msg["key"] not in earlier]
            time.sleep(0.05)
        assert started, "trial 1 never started"
        other.cancel([Future(started[0], other)], force=True)  # the scheduler forgets the task: the plan's future is cancelled
        plan = running.result(timeout=120)
    assert _trial_numbers(plan) == [1, 2, 3, 4]  # none lost, none doubled
    assert plan.result["distributed"]["retried_trials"] == [1]
