"""A multi-layer router trace planned one layer per task on a real Dask cluster: the local run's per-layer results."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from routing_helpers import make_graph

from qflow.core.commands import load_command
from qflow.routing import RoutingConfig
from qflow.routing._plan import plan_routing_layers

E, N, LAYERS = 4, 60, 5


def frames(seed: int = 3) -> list[pd.DataFrame]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(LAYERS, N, E)) + np.array([1.5, 0.0, -0.5, 0.2])
    return [pd.DataFrame({"token_id": [f"t{i}" for i in range(N)], "source": [f"n{i % 2}" for i in range(N)],
                          **{f"score_{e}": layer[:, e] for e in range(E)}}) for layer in logits]


def _workers(address: str) -> set[str]:
    from distributed import Client

    with Client(address, timeout="10s", set_as_default=False) as client:
        return set(client.scheduler_info(n_workers=-1)["workers"])


def _without_worker(layers: list[dict]) -> list[dict]:
    return [{k: v for k, v in layer.items() if k != "worker"} for layer in layers]


@pytest.mark.parametrize("settings", [{}, {"top_k": 2}, {"qaoa": True, "simulator": True, "qaoa_blocks": 1}])
def test_layers_planned_on_the_cluster_equal_the_local_run(dask_cluster, settings):
    local = plan_routing_layers(frames(), make_graph(2, 2), settings)
    remote = plan_routing_layers(frames(), make_graph(2, 2), {**settings, "dask_scheduler": dask_cluster.address})
    assert _without_worker(remote.result["layers"]) == local.result["layers"]
    assert remote.metrics == local.metrics
    assert remote.baselines == local.baselines
    assert remote.solver.ran == local.solver.ran
    workers = _workers(dask_cluster.address)
    assert all(layer["worker"] in workers for layer in remote.result["layers"])
    cluster = remote.result["cluster"]
    assert cluster["layer_workers"] == [layer["worker"] for layer in remote.result["layers"]]
    assert set(cluster["workers_used"]) <= workers and cluster["scheduler"] == dask_cluster.address
    assert "cluster" not in local.result


def test_a_logits_tensor_from_the_cli_runs_its_layers_on_the_cluster(tmp_path, dask_cluster, monkeypatch):
    np.save(tmp_path / "logits.npy", np.random.default_rng(0).normal(size=(3, N, E)).astype(np.float32))
    (tmp_path / "graph.json").write_text(json.dumps(make_graph(2, 2)))
    files = {"tokens": tmp_path / "logits.npy", "model_graph": tmp_path / "graph.json", "token_metadata": None}
    monkeypatch.setenv("QFLOW_DASK_SCHEDULER", dask_cluster.address)  # the environment names the scheduler
    plan = load_command("routing").run(files, RoutingConfig(baselines=False), None)
    assert len(plan.result["layers"]) == 3
    assert {layer["worker"] for layer in plan.result["layers"]} <= _workers(dask_cluster.address)
    monkeypatch.delenv("QFLOW_DASK_SCHEDULER")
    local = load_command("routing").run(files, RoutingConfig(baselines=False), None)
    assert _without_worker(plan.result["layers"]) == local.result["layers"]


def test_one_layer_stays_in_process():
    plan = plan_routing_layers(frames()[:1], make_graph(2, 2), {"dask_scheduler": "tcp://127.0.0.1:1"})
    assert "cluster" not in plan.result and "assignments" in plan.result


def test_killing_a_worker_mid_trace_loses_no_layer(tmp_path):
    import os

    from distributed import Client

    from tests.dask_cluster import start_cluster

    settings = {"qaoa": True, "simulator": True, "qaoa_blocks": 2}
    local = plan_routing_layers(frames(), make_graph(2, 2), settings)
    cluster = start_cluster(tmp_path, n_workers=2)
    killed: list[str] = []
    try:
        with Client(cluster.address, timeout="10s", set_as_default=False) as client:
            pids = client.run(os.getpid)

            def kill_a_busy_worker(fraction: float, message: str) -> None:
                """After the first layer: SIGKILL a worker that is planning a layer now."""
                busy = [w for w, keys in client.processing().items() if keys]
                if busy and not killed:
                    killed.append(busy[0])
                    cluster.kill_worker([p.pid for p in cluster.workers].index(pids[busy[0]]))

            remote = plan_routing_layers(frames(), make_graph(2, 2), {**settings, "dask_scheduler": cluster.address},
                                         progress=kill_a_busy_worker)
    finally:
        cluster.close()
    assert killed, "no worker was planning a layer after the first one finished"
    assert _without_worker(remote.result["layers"]) == local.result["layers"]
    assert set(pids) - set(killed) <= set(remote.result["cluster"]["workers_used"])  # the survivor took over
