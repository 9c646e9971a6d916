"""The plan's objective against an optimum computed here, independently of the engine.

Instances use probability scores, no hints and a graph without links, so the
utility is ``u[t, e] = p[t, e] - locality_weight * [node(t) != node(e)]``,
recomputed below from the token table alone. The optimum is a MILP (scipy's
HiGHS) on the full assignment problem with unit weights, cross-checked by
brute force on tiny instances.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from routing_helpers import make_graph, make_tokens
from scipy.optimize import Bounds, LinearConstraint, milp

from qflow.routing import plan_routing

LOCALITY = 0.15


def utility(tokens: pd.DataFrame, n_experts: int, experts_per_node: int) -> np.ndarray:
    p = tokens[[f"score_{e}" for e in range(n_experts)]].to_numpy(dtype=float)
    token_node = tokens["source"].str.removeprefix("n").astype(int).to_numpy()
    expert_node = np.arange(n_experts) // experts_per_node
    return p - LOCALITY * (token_node[:, None] != expert_node[None, :])


def milp_optimum(u: np.ndarray, capacity: np.ndarray) -> float:
    """Max of sum u[t, e] x[t, e] routing as many unit tokens as capacity allows."""
    n, E = u.shape
    per_token = np.kron(np.eye(n), np.ones(E))  # row t sums x[t, :]
    per_expert = np.kron(np.ones(n), np.eye(E))  # row e sums x[:, e]
    routed = min(n, int(capacity.sum()))
    constraints = [
        LinearConstraint(per_token, 0, 1),
        LinearConstraint(per_expert, 0, capacity),
        LinearConstraint(np.ones((1, n * E)), routed, routed),
    ]
    res = milp(-u.ravel(), constraints=constraints, integrality=np.ones(n * E), bounds=Bounds(0, 1))
    assert res.success, res.message
    return float(-res.fun)


def brute_force_optimum(u: np.ndarray, capacity: np.ndarray) -> float:
    n, E = u.shape
    best = -np.inf
    for choice in itertools.product(range(E), repeat=n):
        if np.all(np.bincount(choice, minlength=E) <= capacity):
            best = max(best, float(u[np.arange(n), list(choice)].sum()))
    return best


def solve(n: int, per_node: int, capacity_factor: float, seed: int, skew: float = 1.5):
    E = 2 * per_node
    tokens = make_tokens(n, E, 2, seed=seed, skew=skew)
    plan = plan_routing(tokens, make_graph(2, per_node), {"capacity_factor": capacity_factor, "locality_weight": LOCALITY})
    assert plan.result["score_kind"] == "probabilities"
    capacity = np.array([plan.result["expert_capacity"][f"e{e}"] for e in range(E)])
    u = utility(tokens, E, per_node)
    return tokens, plan, u, capacity


def plan_utility(plan, tokens: pd.DataFrame, u: np.ndarray) -> float:
    row = {t: i for i, t in enumerate(tokens["token_id"])}
    return float(sum(u[row[t], int(e[1:])] for t, e in plan.result["assignments"].items() if e is not None))


# (tokens, experts per node, capacity_factor, seed): binding capacity, token counts divisible by the experts.
NO_DROP = [(24, 2, 1.0, 0), (40, 2, 1.0, 1), (40, 2, 1.25, 2), (48, 4, 1.0, 3), (48, 4, 1.25, 4), (32, 2, 1.5, 5)]
WITH_DROPS = [(20, 2, 0.6, 6), (40, 2, 0.9, 7), (48, 4, 0.75, 8)]


class TestIndependentOptimum:
    def test_milp_agrees_with_brute_force(self):
        for seed in range(3):
            u = utility(make_tokens(6, 3, 1, seed=seed), 3, 3)
            capacity = np.array([2, 2, 3])
            assert milp_optimum(u, capacity) == pytest.approx(brute_force_optimum(u, capacity), abs=1e-9)

    @pytest.mark.parametrize("case", NO_DROP + WITH_DROPS, ids=str)
    def test_metrics_objective_is_the_utility_of_the_assignments(self, case):
        tokens, plan, u, _ = solve(*case)
        assert plan.metrics["objective"] == pytest.approx(plan_utility(plan, tokens, u), abs=1e-4)

    @pytest.mark.parametrize("case", NO_DROP, ids=str)
    def test_reported_optimum_equals_milp(self, case):
        _, plan, u, capacity = solve(*case)
        assert plan.metrics["dropped_tokens"] == 0
        assert plan.metrics["optimum_kind"] == "integral"
        assert plan.metrics["objective_optimum"] == pytest.approx(milp_optimum(u, capacity), abs=1e-4)

    @pytest.mark.parametrize("seed", range(3))
    def test_tiny_instances_against_brute_force(self, seed):
        tokens, plan, u, capacity = solve(6, 1, 1.0, seed)  # 6 tokens, 2 experts of capacity 3
        optimum = brute_force_optimum(u, capacity)
        assert plan.metrics["objective_optimum"] == pytest.approx(optimum, abs=1e-4)
        assert plan.metrics["objective_upper_bound"] >= optimum - 1e-4
        assert plan_utility(plan, tokens, u) <= optimum + 1e-9


class TestPlanAgainstOptimum:
    @pytest.mark.parametrize("case", NO_DROP, ids=str)
    def test_upper_bound_is_certified(self, case):
        tokens, plan, u, capacity = solve(*case)
        optimum = milp_optimum(u, capacity)
        assert plan.metrics["objective_upper_bound"] >= optimum - 1e-4
        assert plan_utility(plan, tokens, u) <= optimum + 1e-6

    @pytest.mark.parametrize("case", NO_DROP, ids=str)
    def test_gap_metrics_consistent(self, case):
        tokens, plan, u, capacity = solve(*case)
        optimum = milp_optimum(u, capacity)
        value = plan_utility(plan, tokens, u)
        bound = plan.metrics["objective_upper_bound"]
        assert plan.metrics["affinity_gap_to_optimum"] == pytest.approx(max(0.0, optimum - value) / abs(optimum), abs=1e-5)
        assert plan.metrics["gap_to_upper_bound"] == pytest.approx(max(0.0, bound - value) / abs(bound), abs=1e-5)
        assert plan.metrics["gap_to_upper_bound"] >= plan.metrics["affinity_gap_to_optimum"] - 1e-5

    @pytest.mark.parametrize("case", WITH_DROPS, ids=str)
    def test_unit_tokens_drop_only_the_overflow(self, case):
        tokens, plan, u, capacity = solve(*case)
        n = len(tokens)
        assert plan.metrics["dropped_tokens"] == n - capacity.sum() > 0
        assert plan_utility(plan, tokens, u) <= milp_optimum(u, capacity) + 1e-6

    def test_loose_capacity_reaches_optimum(self):
        binding = 0
        for seed in range(4):
            tokens, plan, u, capacity = solve(40, 2, 2.0, seed, skew=2.5)
            binding += bool((np.bincount(u.argmax(axis=1), minlength=4) > capacity).any())
            optimum = milp_optimum(u, capacity)
            assert (optimum - plan_utility(plan, tokens, u)) / abs(optimum) <= 1e-3
        assert binding >= 2  # the favourite experts overflow: capacity shapes the optimum

    def test_router_gap_small_when_capacity_binds(self):
        gaps = []
        for case in NO_DROP + WITH_DROPS:
            tokens, plan, u, capacity = solve(*case)
            optimum = milp_optimum(u, capacity)
            gaps.append((optimum - plan_utility(plan, tokens, u)) / abs(optimum))
        assert max(gaps) <= 1e-3, [round(g, 4) for g in gaps]
