"""Node-limited top-k routing never places a slot off the nodes DeepSeek-V3's rule chose.

A property test over random instances (top_k 2..4, node_limit 1..2, tight and
ample capacity, tokens of complexity 1 and 2) and the bundled sample: every
token's placed experts lie on at most ``node_limit`` nodes and only on the
nodes the rule picked; where capacity on those nodes runs out the slot is
dropped, never moved elsewhere. The plan's objective stays under its
certified bound (the bound is of the node-limited problem).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from routing_helpers import make_graph, make_tokens
from test_routing_topk import rule_nodes, utility

from qflow.routing import RoutingConfig, load_routing_inputs, plan_routing

LOCALITY = 0.1
SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "routing"


def allowed_matrix(nodes: np.ndarray, n_experts: int, experts_per_node: int) -> np.ndarray:
    """(n, E) bool: expert ``e`` sits on one of the token's chosen nodes (expert e on node e // experts_per_node)."""
    allowed = np.zeros((nodes.shape[0], n_experts), dtype=bool)
    expert_node = np.arange(n_experts) // experts_per_node
    for column in nodes.T:
        allowed |= expert_node[None, :] == column[:, None]
    return allowed


def instances() -> list[tuple[int, int, int, int, float]]:
    """(seed, experts_per_node, top_k, node_limit, capacity_factor): every top_k x node_limit, tight and ample."""
    cases = []
    for seed, (k, limit) in enumerate([(2, 1), (3, 1), (4, 1), (2, 2), (3, 2), (4, 2)]):
        per_node = 4 if limit == 1 else 3  # top_k must fit on node_limit nodes
        for factor in (0.6, 1.0, 2.0):
            cases.append((seed, per_node, k, limit, factor))
    return cases


@pytest.mark.parametrize(("seed", "per_node", "k", "limit", "factor"), instances())
def test_slots_stay_on_the_rule_nodes(seed, per_node, k, limit, factor):
    n_nodes = 4
    E = n_nodes * per_node
    tokens = make_tokens(120, E, n_nodes=n_nodes, seed=seed, skew=1.5, heavy=0.3)
    settings = {"locality_weight": LOCALITY, "hint_bonus": 0.0, "baselines": True, "top_k": k,
                "node_limit": limit, "capacity_factor": factor}
    plan = plan_routing(tokens, make_graph(n_nodes, per_node), settings)
    u = utility(tokens, E, per_node)
    allowed = allowed_matrix(rule_nodes(u, per_node, k, limit), E, per_node)
    row = {t: i for i, t in enumerate(tokens["token_id"])}
    weight = tokens["complexity"].to_numpy(dtype=float)
    load = np.zeros(E)
    value, dropped_complexity = 0.0, 0.0
    for token, experts in plan.result["assignments"].items():
        i, idx = row[token], [int(e.removeprefix("e")) for e in experts]
        assert len(set(idx)) == len(idx) <= k
        assert all(allowed[i, e] for e in idx), f"{token}: {experts} off its rule nodes"
        assert len({e // per_node for e in idx}) <= limit
        load[idx] += weight[i]
        value += float(u[i, idx].sum())
        dropped_complexity += weight[i] * (k - len(idx))
    capacity = np.array([plan.result["expert_capacity"][f"e{e}"] for e in range(E)])
    assert (load <= capacity + 1e-9).all()
    assert plan.metrics["nodes_per_token_max"] <= limit
    assert plan.metrics["dropped_complexity"] == pytest.approx(dropped_complexity)
    # The bound is of the node-limited problem: the plan, which lies inside it, can never beat it.
    penalty = 2 * (u.max() - u.min()) + 1
    assert plan.metrics["objective_upper_bound"] >= value - penalty * dropped_complexity - 1e-3
    free = plan.baselines["router_no_node_limit"]
    assert plan.metrics["node_limit_affinity_cost"] == pytest.approx(free["total_affinity"] - plan.metrics["total_affinity"])


def test_bundled_sample_keeps_the_node_limit():
    frame, graph, _ = load_routing_inputs(SAMPLE / "tokens.csv", SAMPLE / "model_graph.json")
    plan = plan_routing(frame, graph, RoutingConfig(top_k=2, node_limit=1, baselines=False))
    node = plan.result["expert_node"]
    nodes_used = [len({node[e] for e in experts}) for experts in plan.result["assignments"].values()]
    routable = len(frame) - len(plan.result["padding_token_ids"])
    assert len(nodes_used) == routable and max(nodes_used) <= 1
    assert plan.metrics["nodes_per_token_max"] <= 1
    # Slots the chosen node cannot hold are dropped, and the plan says so.
    assert plan.result["dropped"]["slots"] == plan.metrics["dropped_slots"] == 2 * routable - sum(
        len(experts) for experts in plan.result["assignments"].values())
