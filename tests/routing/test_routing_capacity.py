"""Capacity: never exceeded, no drops when it suffices, drops explained when it does not."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from routing_helpers import check_plan_consistency, make_graph, make_tokens

from qflow.routing import capacity_sweep, plan_routing

FAST = {"baselines": False, "exact_max_tokens": 0}


class TestCapacityNeverExceeded:
    @pytest.mark.parametrize("capacity_factor", [0.3, 0.7, 1.0, 1.25, 2.0])
    @pytest.mark.parametrize(("heavy", "locality_weight"), [(0.0, 0.0), (0.0, 0.3), (0.35, 0.0), (0.35, 0.3)])
    def test_loads_within_capacity(self, capacity_factor, heavy, locality_weight):
        for seed, (n, n_nodes, per_node) in itertools.product(range(3), [(37, 2, 2), (90, 3, 2)]):
            tokens = make_tokens(n, n_nodes * per_node, n_nodes, seed=seed, heavy=heavy, padding=0.1)
            graph = make_graph(n_nodes, per_node, links=seed % 2 == 1)
            config = {"capacity_factor": capacity_factor, "locality_weight": locality_weight, "seed": seed, **FAST}
            check_plan_consistency(plan_routing(tokens, graph, config), tokens)

    def test_expert_capacity_formula(self):
        tokens = make_tokens(50, 4, seed=1, heavy=0.3, padding=0.2)
        plan = plan_routing(tokens, make_graph(2, 2), {"capacity_factor": 1.3, **FAST})
        routable = tokens[~tokens["padding"]]
        fair = 1.3 * routable["complexity"].sum() / 4
        assert plan.result["expert_capacity"] == dict.fromkeys(["e0", "e1", "e2", "e3"], float(math.ceil(fair)))

    def test_fractional_complexity_capacity_not_rounded(self):
        tokens = make_tokens(20, 4, seed=2).assign(complexity=lambda f: np.linspace(0.5, 1.5, len(f)))
        plan = plan_routing(tokens, make_graph(2, 2), {"capacity_factor": 0.9, **FAST})
        assert plan.result["expert_capacity"]["e0"] == pytest.approx(0.9 * 20.0 / 4, abs=1e-6)
        check_plan_consistency(plan, tokens)

    def test_per_expert_capacity_limits(self):
        graph = make_graph(2, 2)
        graph["experts"][0]["capacity"] = 3
        graph["experts"][3]["capacity"] = 5
        tokens = make_tokens(40, 4, seed=4, heavy=0.25)
        plan = plan_routing(tokens, graph, {"capacity_factor": 2.0, **FAST})
        assert plan.result["expert_capacity"]["e0"] == 3.0
        assert plan.result["expert_capacity"]["e3"] == 5.0
        check_plan_consistency(plan, tokens)


class TestNoDropsWhenCapacitySuffices:
    @pytest.mark.parametrize("capacity_factor", [1.0, 1.1, 1.5])
    def test_unit_complexity(self, capacity_factor):
        for seed, n in itertools.product(range(4), (24, 64)):  # multiples of the 4 experts
            tokens = make_tokens(n, 4, seed=seed, skew=2.5)
            plan = plan_routing(tokens, make_graph(2, 2), {"capacity_factor": capacity_factor, "seed": seed, **FAST})
            check_plan_consistency(plan, tokens)
            assert plan.metrics["dropped_tokens"] == 0
            assert None not in plan.result["assignments"].values()
            assert plan.result["dropped"]["reason"] is None

    def test_mixed_complexity_at_1_25(self):
        for seed, n in itertools.product(range(6), (30, 61)):
            tokens = make_tokens(n, 4, seed=seed, heavy=0.4, skew=2.5)
            plan = plan_routing(tokens, make_graph(2, 2, links=True), {"capacity_factor": 1.25, "seed": seed, **FAST})
            check_plan_consistency(plan, tokens)
            assert plan.metrics["dropped_tokens"] == 0
            assert plan.metrics["dropped_complexity"] == 0.0

    def test_unit_complexity_factor_one_any_token_count(self):
        tokens = make_tokens(30, 4, seed=0)
        plan = plan_routing(tokens, make_graph(2, 2), {"capacity_factor": 1.0, **FAST})
        assert plan.metrics["dropped_tokens"] == 0


class TestDropsExplained:
    @pytest.mark.parametrize(("n", "capacity_factor"), [(30, 0.5), (41, 0.8), (64, 0.9)])
    def test_min_factor_reported_and_sufficient(self, n, capacity_factor):
        tokens = make_tokens(n, 4, seed=n)
        graph = make_graph(2, 2)
        plan = plan_routing(tokens, graph, {"capacity_factor": capacity_factor, **FAST})
        dropped = plan.result["dropped"]
        total_capacity = sum(plan.result["expert_capacity"].values())
        assert dropped["count"] == n - total_capacity  # unit complexity: exactly the overflow is dropped
        need = dropped["min_capacity_factor_no_drop"]
        # Independent threshold: capacities are ceil(factor * n / E), so every expert holds
        # ceil(n / E) tokens once factor * n / E exceeds ceil(n / E) - 1.
        threshold = (math.ceil(n / 4) - 1) * 4 / n
        assert threshold < need <= threshold + 1e-4 + 1e-12
        assert f"capacity_factor >= {need:g} would drop none" in dropped["reason"]
        assert f"total capacity {total_capacity:g} < total complexity {n}" in dropped["reason"]
        rerun = plan_routing(tokens, graph, {"capacity_factor": need, **FAST})
        assert rerun.metrics["dropped_tokens"] == 0
        below = plan_routing(tokens, graph, {"capacity_factor": need - 2e-4, **FAST})
        assert below.metrics["dropped_tokens"] > 0

    def test_mixed_complexity_drop_reason(self):
        tokens = make_tokens(40, 4, seed=5, heavy=0.5)
        plan = plan_routing(tokens, make_graph(2, 2), {"capacity_factor": 0.6, **FAST})
        check_plan_consistency(plan, tokens)
        dropped = plan.result["dropped"]
        assert dropped["count"] > 0 and dropped["reason"]
        assert dropped["min_capacity_factor_no_drop"] > 0.6

    def test_expert_limits_that_cannot_hold_every_token(self):
        graph = make_graph(1, 2)
        for expert in graph["experts"]:
            expert["capacity"] = 4
        tokens = make_tokens(12, 2, 1, seed=1)
        plan = plan_routing(tokens, graph, {"capacity_factor": 8.0, **FAST})
        dropped = plan.result["dropped"]
        assert dropped["count"] == 4
        assert dropped["min_capacity_factor_no_drop"] is None
        assert "own capacity limits cannot hold every token" in dropped["reason"]

    def test_dropped_token_never_fits_remaining_room(self):
        # 3 tokens (complexity 1, 2, 1), 2 experts, capacity 1 each: t1 cannot fit anywhere, but t2 fits on e0.
        tokens = pd.DataFrame(
            {"token_id": ["t0", "t1", "t2"], "complexity": [1, 2, 1],
             "score_0": [0.182, 0.951, 0.676], "score_1": [0.818, 0.049, 0.324]}
        )
        graph = {"experts": [{"id": "e0", "node": "n0"}, {"id": "e1", "node": "n0"}]}
        instances = [(tokens, graph, 0.75)] + [
            (make_tokens(n, 4, seed=seed, heavy=0.3), make_graph(2, 2), 1.0) for seed in range(4) for n in (32, 48)
        ]
        for tokens, graph, factor in instances:
            plan = plan_routing(tokens, graph, {"capacity_factor": factor, **FAST})
            loads = check_plan_consistency(plan, tokens)
            room = max(plan.result["expert_capacity"][e] - loads[e] for e in loads)
            weight = dict(zip(tokens["token_id"], tokens["complexity"], strict=True))
            assert all(weight[t] > room for t in plan.result["dropped"]["token_ids"])

    def test_drops_no_more_complexity_than_necessary(self):
        tokens = pd.DataFrame(
            {"token_id": ["a", "b", "c", "d"], "complexity": [2, 1, 2, 1],
             "scores": [[0.9, 0.1], [0.8, 0.2], [0.9, 0.1], [0.7, 0.3]]}
        )
        graph = {"experts": [{"id": "e0", "node": "n0"}, {"id": "e1", "node": "n0"}]}
        plan = plan_routing(tokens, graph, {"capacity_factor": 0.66, **FAST})
        capacity = [plan.result["expert_capacity"][e] for e in ("e0", "e1")]
        assert capacity == [2.0, 2.0]
        weights = tokens["complexity"].tolist()
        least = min(  # brute force over (drop, e0, e1) for each token
            sum(w for w, c in zip(weights, choice, strict=True) if c < 0)
            for choice in itertools.product((-1, 0, 1), repeat=4)
            if all(sum(w for w, c in zip(weights, choice, strict=True) if c == e) <= capacity[e] for e in (0, 1))
        )
        assert least == 2
        assert plan.metrics["dropped_complexity"] == least


class TestPadding:
    def test_padding_never_routed_or_counted(self):
        tokens = make_tokens(60, 4, seed=8, heavy=0.3, padding=0.3)
        pad = set(tokens.loc[tokens["padding"], "token_id"])
        assert pad
        plan = plan_routing(tokens, make_graph(2, 2), {"capacity_factor": 0.8, **FAST})
        assert sorted(plan.result["padding_token_ids"]) == sorted(pad)
        assert pad.isdisjoint(plan.result["assignments"])
        assert pad.isdisjoint(plan.result["dropped"]["token_ids"])
        assert all(pad.isdisjoint(q) for q in plan.result["expert_queues"].values())
        loads = check_plan_consistency(plan, tokens)
        assert sum(loads.values()) + plan.metrics["dropped_complexity"] == tokens.loc[~tokens["padding"], "complexity"].sum()

    def test_padding_rows_do_not_change_the_plan(self):
        tokens = make_tokens(48, 4, seed=9, padding=0.25)
        heavy_padding = tokens.assign(complexity=np.where(tokens["padding"], 50, tokens["complexity"]))
        graph = make_graph(2, 2)
        with_padding = plan_routing(heavy_padding, graph, {"capacity_factor": 1.0, **FAST})
        without = plan_routing(tokens[~tokens["padding"]].drop(columns="padding"), graph, {"capacity_factor": 1.0, **FAST})
        assert with_padding.result["assignments"] == without.result["assignments"]
        assert with_padding.result["expert_capacity"] == without.result["expert_capacity"]


class TestCapacitySweep:
    FACTORS = (0.3, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)

    @pytest.mark.parametrize(("seed", "heavy"), [(0, 0.0), (1, 0.0), (2, 0.0), (3, 0.3)])
    def test_plan_drops_no_more_than_top1_and_falls_with_capacity(self, seed, heavy):
        tokens = make_tokens(64, 8, 2, seed=seed, heavy=heavy, skew=2.0)
        rows = capacity_sweep(tokens, make_graph(2, 4), {"seed": seed}, factors=self.FACTORS)
        assert [(r["capacity_factor"], r["method"]) for r in rows] == [
            (f, m) for f in self.FACTORS for m in ("plan", "top1_gating")
        ]
        plan = [r["dropped_tokens"] for r in rows if r["method"] == "plan"]
        top1 = [r["dropped_tokens"] for r in rows if r["method"] == "top1_gating"]
        assert all(p <= t for p, t in zip(plan, top1, strict=True))
        assert all(a >= b for a, b in itertools.pairwise(plan))
        assert all(a >= b for a, b in itertools.pairwise(top1))
        assert plan[-1] == 0 and top1[0] > plan[0]

    def test_sweep_matches_plan_routing(self):
        tokens = make_tokens(40, 4, seed=11)
        graph = make_graph(2, 2)
        rows = capacity_sweep(tokens, graph, None, factors=(0.6, 1.0))
        for row in rows:
            if row["method"] == "plan":
                plan = plan_routing(tokens, graph, {"capacity_factor": row["capacity_factor"], **FAST})
                assert row["dropped_tokens"] == plan.metrics["dropped_tokens"]
                assert row["total_affinity"] == pytest.approx(plan.metrics["total_affinity"])
