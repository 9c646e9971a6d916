"""Top-k routing (``top_k > 1``): feasibility, optimality against a MILP built here, bound, weights, baselines.

Utilities are recomputed from the token table alone (probability scores, no
hints, no links): ``u[t, e] = p[t, e] - locality_weight * [node(t) != node(e)]``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from routing_helpers import make_graph, make_tokens
from scipy.optimize import Bounds, LinearConstraint, milp

from qflow.core.errors import InputError
from qflow.routing import plan_routing
from qflow.routing._topk import topk_dual_bound

LOCALITY = 0.1


def utility(tokens: pd.DataFrame, n_experts: int, experts_per_node: int) -> np.ndarray:
    p = tokens[[f"score_{e}" for e in range(n_experts)]].to_numpy(dtype=float)
    token_node = tokens["source"].str.removeprefix("n").astype(int).to_numpy()
    expert_node = np.arange(n_experts) // experts_per_node
    return p - LOCALITY * (token_node[:, None] != expert_node[None, :])


def milp_topk(u: np.ndarray, k: int, capacity: np.ndarray) -> float:
    """Max sum u x with k distinct experts per token (as many slots as capacity allows), unit weights."""
    n, E = u.shape
    slots = min(n * k, int(capacity.sum()))
    constraints = [
        LinearConstraint(np.kron(np.eye(n), np.ones(E)), 0, k),
        LinearConstraint(np.kron(np.ones(n), np.eye(E)), 0, capacity),
        LinearConstraint(np.ones((1, n * E)), slots, slots),
    ]
    res = milp(-u.ravel(), constraints=constraints, integrality=np.ones(n * E), bounds=Bounds(0, 1))
    assert res.status == 0
    return float(-res.fun)


def plan_matrix(plan, tokens: pd.DataFrame, n_experts: int) -> np.ndarray:
    """0/1 matrix (tokens x experts) from ``result.assignments``."""
    x = np.zeros((len(tokens), n_experts))
    row = {t: i for i, t in enumerate(tokens["token_id"])}
    for token, experts in plan.result["assignments"].items():
        assert len(set(experts)) == len(experts), "a token's experts must be distinct"
        for e in experts:
            x[row[token], int(e.removeprefix("e"))] = 1
    return x


SETTINGS = {"locality_weight": LOCALITY, "hint_bonus": 0.0, "baselines": True}


@pytest.mark.parametrize(("seed", "n", "E", "k", "factor"), [(0, 60, 6, 2, 1.0), (1, 80, 8, 3, 1.25), (2, 50, 4, 2, 0.8)])
def test_plan_matches_the_milp_optimum(seed, n, E, k, factor):
    tokens, graph = make_tokens(n, E, seed=seed, skew=1.5), make_graph(2, E // 2)
    plan = plan_routing(tokens, graph, {**SETTINGS, "top_k": k, "capacity_factor": factor})
    capacity = np.array([plan.result["expert_capacity"][f"e{e}"] for e in range(E)])
    assert np.array_equal(capacity, np.ceil(factor * k * n / E - 1e-9) * np.ones(E))
    x = plan_matrix(plan, tokens, E)
    assert (x.sum(axis=0) <= capacity).all()
    assert x.sum() == min(n * k, capacity.sum())  # drops only what capacity forces
    u = utility(tokens, E, E // 2)
    optimum = milp_topk(u, k, capacity)
    assert float((u * x).sum()) == pytest.approx(optimum, abs=1e-4)
    assert plan.metrics["objective"] == pytest.approx((u * x).sum(), abs=1e-4)
    assert plan.metrics["optimum_kind"] == "integral" and plan.metrics["affinity_gap_to_optimum"] < 1e-6
    if x.sum() == n * k:  # with drops the engine's optimum also carries the drop penalty
        assert plan.metrics["objective_optimum"] == pytest.approx(optimum, abs=1e-4)
    assert plan.solver.ran == "classical-topk"


def test_dual_bound_is_an_upper_bound_for_any_prices():
    tokens = make_tokens(40, 6, seed=3)
    u = utility(tokens, 6, 3)
    w, k = np.ones(40), 2
    capacity = np.full(6, 15.0)
    optimum = milp_topk(u, k, capacity)
    penalty = 2 * (u.max() - u.min()) + 1
    for prices in np.random.default_rng(0).uniform(0, 0.5, size=(20, 6)):
        assert topk_dual_bound(u, w, capacity, prices, penalty, k) >= optimum - 1e-4


def test_combine_weights_are_renormalised_router_probabilities():
    tokens, graph = make_tokens(50, 8, seed=4, logits=True), make_graph(2, 4)
    plan = plan_routing(tokens, graph, {**SETTINGS, "top_k": 3, "capacity_factor": 1.5})
    logits = tokens[[f"score_{e}" for e in range(8)]].to_numpy(dtype=float)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    for i, token in enumerate(tokens["token_id"]):
        experts = [int(e.removeprefix("e")) for e in plan.result["assignments"][token]]
        weights = plan.result["combine_weights"][token]
        assert len(experts) == 3
        assert weights == pytest.approx(p[i, experts] / p[i, experts].sum(), abs=1e-5)


def test_baselines_gating_drops_overflow_in_arrival_order_and_uncapped_overloads():
    n, E, k = 120, 4, 2
    tokens, graph = make_tokens(n, E, seed=5, skew=2.0), make_graph(2, 2)
    plan = plan_routing(tokens, graph, {**SETTINGS, "top_k": k, "capacity_factor": 1.0})
    p = tokens[[f"score_{e}" for e in range(E)]].to_numpy(dtype=float)
    wanted = np.argsort(-p, axis=1, kind="stable")[:, :k]
    room = np.full(E, np.ceil(k * n / E))
    kept = 0
    for row in wanted:  # arrival order, each token's slots best first
        for e in row:
            if room[e] >= 1:
                room[e] -= 1
                kept += 1
    gating = plan.baselines["topk_gating"]
    assert gating["dropped_slots"] == n * k - kept > 0
    uncapped = plan.baselines["topk_no_capacity"]
    assert uncapped["dropped_slots"] == 0
    assert uncapped["expert_load"] == [float(c) for c in np.bincount(wanted.ravel(), minlength=E)]
    assert uncapped["capacity_violations"] > 0 and plan.metrics["capacity_violations"] == 0
    assert plan.metrics["dropped_slots"] == 0 and plan.metrics["total_affinity"] > gating["total_affinity"]


def test_top_k_larger_than_the_experts_is_an_input_error():
    with pytest.raises(InputError) as info:
        plan_routing(make_tokens(10, 4), make_graph(2, 2), {"top_k": 5})
    assert (info.value.source, info.value.field) == ("config", "top_k")
    assert "at most 4" in str(info.value)


@pytest.mark.parametrize(("toggle", "requested"), [("qaoa", "qaoa"), ("deterministic_fallback", "hash")])
def test_top1_only_paths_say_they_did_not_run(toggle, requested):
    plan = plan_routing(make_tokens(30, 4, seed=6), make_graph(2, 2), {"top_k": 2, toggle: True, "baselines": False})
    (fallback,) = plan.solver.fallbacks
    assert (plan.solver.requested, plan.solver.ran, fallback.to) == (requested, "classical-topk", "classical-topk")
    assert "top_k=2" in fallback.reason and plan.solver.quantum is None


def test_weighted_tokens_respect_capacity_and_bound():
    tokens, graph = make_tokens(300, 8, seed=7, heavy=0.3), make_graph(2, 4)
    plan = plan_routing(tokens, graph, {**SETTINGS, "top_k": 2, "capacity_factor": 0.9, "exact_max_tokens": 0})
    weight = dict(zip(tokens["token_id"], tokens["complexity"].astype(float), strict=True))
    load = dict.fromkeys(plan.result["expert_capacity"], 0.0)
    for token, experts in plan.result["assignments"].items():
        for e in experts:
            load[e] += weight[token]
    assert all(load[e] <= plan.result["expert_capacity"][e] + 1e-9 for e in load)
    assert plan.result["dropped"]["slots"] == plan.metrics["dropped_slots"] > 0
    assert "top_k x total complexity" in plan.result["dropped"]["reason"]
    u = utility(tokens, 8, 4)
    penalty = 2 * (u.max() - u.min()) + 1  # per unit complexity of a dropped slot
    value = plan.metrics["objective"] - penalty * plan.metrics["dropped_complexity"]
    assert plan.metrics["objective_upper_bound"] >= value - 1e-3
    assert plan.metrics["gap_to_upper_bound"] == pytest.approx((plan.metrics["objective_upper_bound"] - value) / abs(plan.metrics["objective_upper_bound"]), abs=1e-5)
    assert plan.metrics["gap_to_upper_bound"] < 0.01


def rule_nodes(u: np.ndarray, experts_per_node: int, k: int, limit: int) -> np.ndarray:
    """DeepSeek-V3's node choice, written here: the ``limit`` nodes with the largest sum of their best ceil(k/limit) utilities."""
    n, E = u.shape
    per_node = np.sort(u.reshape(n, E // experts_per_node, experts_per_node), axis=2)[:, :, ::-1]
    score = per_node[:, :, : int(np.ceil(k / limit))].sum(axis=2)
    return np.argsort(-score, axis=1, kind="stable")[:, :limit]


class TestNodeLimit:
    E, PER_NODE, K, LIMIT = 8, 2, 3, 2  # 4 nodes of 2 experts; 3 experts per token on at most 2 nodes

    def plan(self, seed=0, n=60, **extra):
        tokens = make_tokens(n, self.E, n_nodes=4, seed=seed, skew=1.0)
        graph = make_graph(4, self.PER_NODE)
        settings = {**SETTINGS, "top_k": self.K, "node_limit": self.LIMIT, "capacity_factor": 1.25, **extra}
        return tokens, plan_routing(tokens, graph, settings)

    def test_experts_lie_on_the_rule_nodes_and_the_plan_is_optimal_there(self):
        tokens, plan = self.plan()
        u = utility(tokens, self.E, self.PER_NODE)
        nodes = rule_nodes(u, self.PER_NODE, self.K, self.LIMIT)
        x = plan_matrix(plan, tokens, self.E)
        allowed = np.zeros_like(x, dtype=bool)
        for t, chosen in enumerate(nodes):
            for node in chosen:
                allowed[t, node * self.PER_NODE:(node + 1) * self.PER_NODE] = True
        assert not (x.astype(bool) & ~allowed).any()
        assert (x.sum(axis=1) == self.K).all() and plan.metrics["nodes_per_token_max"] <= self.LIMIT
        capacity = np.array([plan.result["expert_capacity"][f"e{e}"] for e in range(self.E)])
        optimum = milp_topk(np.where(allowed, u, -10.0), self.K, capacity)
        assert float((u * x).sum()) == pytest.approx(optimum, abs=1e-4)

    def test_reports_what_the_limit_costs_and_saves(self):
        _, plan = self.plan(seed=1, n=200)
        free = plan.baselines["router_no_node_limit"]
        assert free["nodes_per_token_max"] > self.LIMIT  # the limit binds on this instance
        assert plan.metrics["node_limit_affinity_cost"] == pytest.approx(free["total_affinity"] - plan.metrics["total_affinity"])
        assert plan.metrics["cross_node_fraction_saved"] == pytest.approx(free["cross_node_fraction"] - plan.metrics["cross_node_fraction"])
        assert plan.baselines["node_limited_gating"]["nodes_per_token_max"] <= self.LIMIT

    def test_top_k_beyond_what_the_limit_allows(self):
        with pytest.raises(InputError) as info:
            self.plan(top_k=5)
        assert (info.value.source, info.value.field) == ("config", "top_k")
        assert "node_limit allows" in str(info.value) and "at most 4" in str(info.value)

    @pytest.mark.parametrize(("extra", "note"), [({"top_k": 1}, "no effect with top_k=1"), ({"node_limit": 4}, "no effect")])
    def test_limit_without_effect_is_flagged(self, extra, note):
        _, plan = self.plan(**extra)
        assert any("node_limit" in d and note in d for d in plan.diagnostics)


class TestAuxLossFreeBaseline:
    def test_bias_balances_what_plain_top_k_does_not(self):
        tokens, graph = make_tokens(2000, 8, seed=8, skew=2.0), make_graph(2, 4)
        plan = plan_routing(tokens, graph, {**SETTINGS, "top_k": 2, "aux_free_steps": 200, "aux_free_step_size": 0.01,
                                            "exact_max_tokens": 0})
        online, plain = plan.baselines["aux_loss_free"], plan.baselines["topk_no_capacity"]
        assert online["load_imbalance"] < plain["load_imbalance"]
        assert online["total_affinity"] < plain["total_affinity"]  # the bias trades affinity for balance
        assert sum(online["expert_load"]) == pytest.approx(2 * 2000)  # nothing dropped online

    def test_first_step_and_a_vanishing_step_size_are_plain_top_k(self):
        from qflow.routing._topk import aux_loss_free_routing, topk_uncapped

        p = make_tokens(300, 6, seed=9)[[f"score_{e}" for e in range(6)]].to_numpy(np.float32)
        assert np.array_equal(aux_loss_free_routing(p, 2, 1, 0.5), topk_uncapped(p, 2))
        assert np.array_equal(aux_loss_free_routing(p, 2, 30, 1e-12), topk_uncapped(p, 2))
        moved = aux_loss_free_routing(p, 2, 30, 0.05)
        assert np.array_equal(moved[:10], topk_uncapped(p[:10], 2)) and not np.array_equal(moved, topk_uncapped(p, 2))

    def test_top1_plan_gets_it_only_when_asked(self):
        tokens, graph = make_tokens(200, 4, seed=10), make_graph(2, 2)
        assert "aux_loss_free" not in plan_routing(tokens, graph, {"exact_max_tokens": 0}).baselines
        plan = plan_routing(tokens, graph, {"exact_max_tokens": 0, "aux_free_steps": 20})
        assert plan.baselines["aux_loss_free"]["dropped_tokens"] == 0


def test_capacity_sweep_for_top_k():
    from qflow.routing import capacity_sweep

    tokens, graph = make_tokens(200, 8, seed=11, skew=1.5), make_graph(2, 4)
    rows = capacity_sweep(tokens, graph, {**SETTINGS, "top_k": 2}, factors=(0.5, 1.0, 1.5))
    plan_rows = [r for r in rows if r["method"] == "plan"]
    gating_rows = [r for r in rows if r["method"] == "topk_gating"]
    assert [r["capacity_factor"] for r in plan_rows] == [0.5, 1.0, 1.5] and len(gating_rows) == 3
    # capacity = factor x 2 x 200 / 8 slots per expert: the router drops only what capacity forces
    assert [r["dropped_slots"] for r in plan_rows] == [200, 0, 0]
    assert all(g["dropped_slots"] >= p["dropped_slots"] for g, p in zip(gating_rows, plan_rows, strict=True))
    assert gating_rows[1]["dropped_slots"] > 0



def test_experts_outside_every_shortlist_are_found_when_the_popular_ones_fill():
    """More popular experts than a token's shortlist holds: the slots they cannot take must go to the right others.

    Every token ranks the same 40 of 64 experts first (the auction shortlists
    16 per token for k = 4), and those 40 hold only 5000 of the 8000 slots;
    the other 24 appear in no first shortlist. A router that never looks past
    its first shortlists prices the popular experts up against each other and
    then places the leftovers greedily; the plan must equal the exact LP
    optimum, and the certified bound computed without it must lie above it.
    """
    rng = np.random.default_rng(5)
    n, E, k = 2000, 64, 4
    popular = rng.permutation(E)[:40]
    scores = rng.uniform(0.0, 0.002, size=(n, E))
    scores[:, popular] += rng.uniform(0.02, 0.06, size=(n, popular.size))
    scores /= scores.sum(axis=1, keepdims=True)
    tokens = pd.DataFrame(scores, columns=[f"score_{e}" for e in range(E)])
    tokens.insert(0, "token_id", [f"t{i}" for i in range(n)])
    tokens.insert(1, "source", [f"n{i % 2}" for i in range(n)])
    graph = make_graph(2, E // 2)
    settings = {**SETTINGS, "baselines": False, "top_k": k, "capacity_factor": 1.25}
    exact = plan_routing(tokens, graph, {**settings, "exact_max_tokens": n})
    x = plan_matrix(exact, tokens, E)
    assert x.sum() == n * k and (x.sum(axis=0) <= 157).all()
    assert exact.metrics["optimum_kind"] == "integral" and exact.metrics["affinity_gap_to_optimum"] < 1e-6
    certified = plan_routing(tokens, graph, {**settings, "exact_max_tokens": 0})
    assert certified.metrics["objective_upper_bound"] >= exact.metrics["objective_optimum"] - 1e-6
    assert certified.metrics["gap_to_upper_bound"] < 1e-3
