"""Expert placement with replicas: the three arrays agree, loads recompute, EPLB is matched or beaten, bad input is one line."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qflow.core.commands import load_command
from qflow.core.errors import InputError
from qflow.routing._placement_plan import plan_placement

ROOT = Path(__file__).resolve().parents[2]


def graph(nodes: int, gpus: int) -> dict:
    return {"nodes": [{"id": f"n{i}", "gpus": [f"n{i}g{j}" for j in range(gpus)]} for i in range(nodes)],
            "experts": [{"id": "e0", "node": "n0"}]}


def loads(kind: str, experts: int, layers: int = 2, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for layer in range(layers):
        if kind == "zipf":
            load = 1.0 / np.arange(1, experts + 1) ** 1.2
            rng.shuffle(load)
        elif kind == "gamma":
            load = rng.gamma(0.5, 2.0, experts)
        else:
            load = rng.dirichlet(np.full(experts, 0.3))
        rows += [{"layer": layer, "expert": f"x{e}", "load": float(1000 * load[e])} for e in range(experts)]
    return pd.DataFrame(rows)


def check_layer(layer: dict, load: np.ndarray, gpus: int, per_node: int) -> np.ndarray:
    p2l = np.array(layer["physical_to_logical"])
    count = np.array(layer["logical_replica_count"])
    slots = p2l.size // gpus
    assert np.array_equal(np.bincount(p2l, minlength=load.size), count)
    l2p = np.array(layer["logical_to_physical"])
    for e in range(load.size):
        listed = l2p[e][l2p[e] >= 0]
        assert listed.size == count[e] and (l2p[e][count[e]:] == -1).all()
        assert (p2l[listed] == e).all()
        assert np.unique(listed // slots).size == listed.size, "replicas of one expert share a GPU"
    gpu_load = (load[p2l] / count[p2l]).reshape(gpus, slots).sum(axis=1)
    assert layer["gpu_load"] == pytest.approx(gpu_load.tolist(), rel=1e-6)
    assert layer["node_load"] == pytest.approx(gpu_load.reshape(-1, per_node).sum(axis=1).tolist(), rel=1e-6)
    return gpu_load


@pytest.mark.parametrize("kind", ["zipf", "gamma", "dirichlet"])
@pytest.mark.parametrize("redundant", [0, 16])
def test_arrays_agree_and_beat_or_match_eplb(kind, redundant):
    table = loads(kind, 32)
    plan = plan_placement(table, graph(4, 2), {"redundant_experts": redundant})
    for i, layer in enumerate(plan.result["layers"]):
        load = table[table["layer"] == i]["load"].to_numpy()
        gpu_load = check_layer(layer, load, 8, 2)
        metrics = plan.metrics["layers"][i]
        assert metrics["max_gpu_load"] == pytest.approx(gpu_load.max())
        assert metrics["lower_bound_max_gpu_load"] <= gpu_load.max() + 1e-9
        assert metrics["lower_bound_max_gpu_load"] >= load.sum() / 8 - 1e-9
    assert plan.metrics["max_gpu_imbalance"] <= plan.baselines["eplb"]["max_gpu_imbalance"] + 1e-9
    assert plan.metrics["max_gpu_imbalance"] <= plan.baselines["contiguous"]["max_gpu_imbalance"] + 1e-9


def test_tiny_instance_against_enumeration():
    """4 experts, 2 GPUs x 3 slots (2 replicas to give): every replica count and placement enumerated."""
    load = np.array([9.0, 4.0, 3.0, 1.0])
    table = pd.DataFrame({"expert": [f"x{e}" for e in range(4)], "load": load})
    plan = plan_placement(table, graph(1, 2), {"redundant_experts": 2})
    best = np.inf
    for extra in itertools.combinations_with_replacement(range(4), 2):
        count = np.ones(4, int) + np.bincount(extra, minlength=4)
        if count.max() > 2:
            continue
        items = np.repeat(np.arange(4), count)
        for first in itertools.combinations(range(6), 3):
            a, b = items[list(first)], np.delete(items, list(first))
            if np.unique(a).size < 3 or np.unique(b).size < 3:
                continue
            best = min(best, max((load[a] / count[a]).sum(), (load[b] / count[b]).sum()))
    assert plan.metrics["layers"][0]["max_gpu_load"] == pytest.approx(best)
    assert plan.metrics["layers"][0]["lower_bound_max_gpu_load"] <= best + 1e-9


@pytest.mark.parametrize(
    ("config", "field", "words"),
    [({"redundant_experts": 40, "slots_per_gpu": 5}, "redundant_experts", "more redundant slots than the GPUs can hold"),
     ({"redundant_experts": 3}, "redundant_experts", "do not divide")],
)
def test_slot_errors(config, field, words):
    with pytest.raises(InputError) as info:
        plan_placement(loads("gamma", 32), graph(4, 2), config)
    assert (info.value.source, info.value.field) == ("config", field) and words in str(info.value)


def test_input_errors_name_the_field():
    bad = loads("gamma", 8)
    bad.loc[3, "load"] = -1.0
    with pytest.raises(InputError, match=r"^loads: load\[row 3\]: out of range"):
        plan_placement(bad, graph(2, 2))
    with pytest.raises(InputError, match=r"^loads: expert: missing column"):
        plan_placement(bad.drop(columns="expert"), graph(2, 2))
    uneven = graph(2, 2)
    uneven["nodes"][1]["gpus"] = ["only"]
    with pytest.raises(InputError, match=r"^model_graph: nodes\[\]\.gpus: uneven GPU counts"):
        plan_placement(loads("gamma", 8), uneven)


def test_command_runs_on_its_samples():
    command = load_command("placement")
    files = {name: ROOT / path for name, path in command.sample_inputs.items()}
    assert all(path.is_file() for path in files.values())
    plan = command.run(files, command.config_cls(redundant_experts=32), None)
    sample = pd.read_csv(files["loads"])
    graph_data = json.loads(files["model_graph"].read_text())
    per_node = len(graph_data["nodes"][0]["gpus"])
    for i, layer in enumerate(plan.result["layers"]):
        check_layer(layer, sample[sample["layer"] == i]["load"].to_numpy(), 32, per_node)
    assert plan.metrics["max_gpu_imbalance"] <= plan.baselines["eplb"]["max_gpu_imbalance"]
