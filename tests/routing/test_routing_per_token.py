"""A large top-k plan keeps its per-token experts and weights as arrays, written beside ``--out`` as ``.npz``.

The size limit is lowered for these tests (a real one needs a million slots): the arrays must say exactly
what the inline JSON says for the same plan, the command must write them with the digest the plan names,
and the file must load without pickle.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from routing_helpers import make_graph, make_tokens

import qflow.routing._plan_topk as plan_topk
from qflow.core.commands import load_command
from qflow.core.config import QflowConfig
from qflow.routing import RoutingConfig, plan_routing

SETTINGS = {"top_k": 3, "locality_weight": 0.1, "hint_bonus": 0.0, "capacity_factor": 0.9, "baselines": False}


@pytest.fixture
def tokens_and_graph():
    return make_tokens(120, 8, seed=4, skew=1.5), make_graph(2, 4)


def test_arrays_say_what_the_inline_dicts_say(tokens_and_graph, monkeypatch):
    tokens, graph = tokens_and_graph
    inline = plan_routing(tokens, graph, SETTINGS)
    assert inline.arrays == {} and "per_token" not in inline.result
    monkeypatch.setattr(plan_topk, "INLINE_MAX_SLOTS", 10)
    large = plan_routing(tokens, graph, SETTINGS)
    assert large.result["assignments"] is None and large.result["combine_weights"] is None
    assert large.result["per_token"]["shape"] == [120, 3]
    arrays = large.arrays
    assert set(arrays) == set(plan_topk.PER_TOKEN_ARRAYS) == set(large.result["per_token"]["arrays"])
    assert inline.result["dropped"]["slots"] > 0  # capacity 0.9: some slots dropped, so -1 entries are exercised
    names = arrays["expert_ids"]
    for i, token in enumerate(arrays["token_ids"]):
        placed = arrays["experts"][i] >= 0
        assert names[arrays["experts"][i][placed]].tolist() == inline.result["assignments"][token]
        assert np.allclose(arrays["combine_weights"][i][placed], inline.result["combine_weights"][token], atol=1e-6)
        assert (arrays["combine_weights"][i][~placed] == 0).all()
    assert large.metrics["objective"] == inline.metrics["objective"]


def test_command_writes_the_npz_the_plan_names(tokens_and_graph, tmp_path, monkeypatch):
    tokens, graph = tokens_and_graph
    monkeypatch.setattr(plan_topk, "INLINE_MAX_SLOTS", 10)
    tokens_path, graph_path = tmp_path / "tokens.csv", tmp_path / "graph.json"
    tokens.to_csv(tokens_path, index=False)
    graph_path.write_text(json.dumps(graph))
    command = load_command("routing")
    config: QflowConfig = RoutingConfig(**SETTINGS)
    files = {"tokens": tokens_path, "model_graph": graph_path, "token_metadata": None}
    plan = command.run(files, config, tmp_path / "plan.json")
    info = plan.result["per_token"]
    written = tmp_path / "plan.tokens.npz"
    assert info["file"] == written.name and info["written_to"] == str(written)
    assert info["sha256"] == hashlib.sha256(written.read_bytes()).hexdigest()
    with np.load(written, allow_pickle=False) as data:
        assert np.array_equal(data["experts"], plan.arrays["experts"])
        assert data["token_ids"].tolist() == tokens["token_id"].astype(str).tolist()
    unwritten = command.run(files, config, None)
    assert unwritten.result["per_token"]["written_to"] is None
    assert any("pass --out" in d for d in unwritten.diagnostics)
    assert json.loads(plan.to_json())["result"]["per_token"]["sha256"] == info["sha256"]  # arrays stay out of the JSON
