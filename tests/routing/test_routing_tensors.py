"""Router logits as tensor files: same plan as the equivalent table, one result per layer, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from routing_helpers import make_graph

from qflow.core.commands import load_command
from qflow.core.errors import InputError
from qflow.core.tensors import safetensors_bytes
from qflow.routing import RoutingConfig, load_logit_layers, plan_routing

E, N = 4, 40
SETTINGS = {"baselines": False, "exact_max_tokens": 0}


def logits(layers: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(layers, N, E)) + np.array([1.5, 0.0, -0.5, 0.2])).astype(np.float32)


def metadata() -> pd.DataFrame:
    return pd.DataFrame({"token_id": [f"t{i}" for i in range(N)], "source": [f"n{i % 2}" for i in range(N)],
                         "complexity": [1 + (i % 3 == 0) for i in range(N)]})


def write(tmp_path, name: str, array: np.ndarray):
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, array)
    elif name.endswith(".pt"):
        torch.save(torch.from_numpy(array), path)
    else:
        path.write_bytes(safetensors_bytes({"router_logits": array}))
    return path


def run(tmp_path, tokens_path, meta=True, **config):
    graph_path = tmp_path / "graph.json"
    graph_path.write_text(json.dumps(make_graph(2, 2)))
    files = {"tokens": tokens_path, "model_graph": graph_path, "token_metadata": None}
    if meta:
        files["token_metadata"] = tmp_path / "meta.csv"
        metadata().to_csv(files["token_metadata"], index=False)
    return load_command("routing").run(files, RoutingConfig(**{**SETTINGS, **config}), None)


@pytest.mark.parametrize("name", ["logits.npy", "logits.pt", "logits.safetensors"])
def test_one_layer_tensor_plans_like_the_table(tmp_path, name):
    array = logits(1)
    plan = run(tmp_path, write(tmp_path, name, array[0] if name != "logits.pt" else array))
    table = metadata().join(pd.DataFrame(array[0].astype(float), columns=[f"score_{e}" for e in range(E)]))
    expected = plan_routing(table, make_graph(2, 2), SETTINGS)
    assert plan.result["assignments"] == expected.result["assignments"]
    assert plan.result["score_kind"] == "logits" and plan.inputs[0].source == name


def test_layers_give_one_result_each(tmp_path):
    array = logits(3, seed=1)
    plan = run(tmp_path, write(tmp_path, "logits.npy", array), top_k=2)
    layers = plan.result["layers"]
    assert [layer["layer"] for layer in layers] == [0, 1, 2]
    for i, layer in enumerate(layers):
        table = metadata().join(pd.DataFrame(array[i].astype(float), columns=[f"score_{e}" for e in range(E)]))
        alone = plan_routing(table, make_graph(2, 2), {**SETTINGS, "top_k": 2})
        assert layer["assignments"] == alone.result["assignments"]
        assert plan.metrics["layers"][i]["total_affinity"] == pytest.approx(alone.metrics["total_affinity"])
    assert plan.metrics["total_affinity"] == pytest.approx(sum(m["total_affinity"] for m in plan.metrics["layers"]))


def test_without_metadata_tokens_are_numbered(tmp_path):
    plan = run(tmp_path, write(tmp_path, "logits.npy", logits(1)[0]), meta=False)
    assert sorted(plan.result["assignments"], key=int) == [str(i) for i in range(N)]


def test_nan_logit_names_file_and_position(tmp_path):
    array = logits(2)
    array[1, 7, 2] = np.nan
    with pytest.raises(InputError) as info:
        load_logit_layers(write(tmp_path, "logits.safetensors", array))
    assert (info.value.source, info.value.field) == ("logits.safetensors", "router_logits[1, 7, 2]")
    assert "not a finite number" in str(info.value)


def test_metadata_rows_must_match_the_tokens(tmp_path):
    (tmp_path / "meta.csv").write_text(metadata().iloc[:-1].to_csv(index=False))
    with pytest.raises(InputError) as info:
        load_logit_layers(write(tmp_path, "logits.npy", logits(2)), tmp_path / "meta.csv")
    assert (info.value.source, info.value.field) == ("meta.csv", "(rows)")
    assert f"{N} rows" in str(info.value)


def test_wrong_rank_and_wrong_expert_count(tmp_path):
    with pytest.raises(InputError, match=r"^logits\.npy: array\.shape: wrong shape"):
        load_logit_layers(write(tmp_path, "logits.npy", np.zeros((2, 2, 2, 2), np.float32)))
    with pytest.raises(InputError, match=r"^logits\.npy: score_\*"):
        run(tmp_path, write(tmp_path, "logits.npy", np.zeros((N, E + 1), np.float32)))
