"""The routing figures (ui.hooks.routing) on real plans from the sample data, without Streamlit."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ui.hooks import routing as charts
from ui.hooks.routing import SWEEP_FACTORS


class TestExpertLoad:
    def test_plan_bars_baseline_markers_and_capacity_line(self, classical_plan: dict[str, Any]) -> None:
        fig = charts.expert_load_figure(classical_plan)
        experts = list(classical_plan["result"]["expert_capacity"])
        assert len(experts) == 64
        by_name = {trace.name: trace for trace in fig.data}
        assert list(by_name) == ["plan (classical)", "hash", "top1_gating", "greedy_balanced", "capacity"]
        assert by_name["plan (classical)"].type == "bar"
        assert list(by_name["plan (classical)"].x) == experts
        assert list(by_name["plan (classical)"].y) == classical_plan["metrics"]["expert_load"]
        for name in ("hash", "top1_gating", "greedy_balanced"):
            assert by_name[name].mode == "markers"
            assert list(by_name[name].y) == classical_plan["baselines"][name]["expert_load"]
        assert list(by_name["capacity"].y) == classical_plan["metrics"]["expert_capacity"]
        # The plan respects capacity on every expert.
        assert all(load <= cap + 1e-9 for load, cap in zip(by_name["plan (classical)"].y, by_name["capacity"].y, strict=True))

    def test_without_baselines_only_plan_and_capacity(self, classical_plan: dict[str, Any]) -> None:
        plan = {**classical_plan, "baselines": {}}
        assert [t.name for t in charts.expert_load_figure(plan).data] == ["plan (classical)", "capacity"]


def test_node_traffic_heatmap_is_the_plan_matrix(classical_plan: dict[str, Any]) -> None:
    fig = charts.node_traffic_figure(classical_plan)
    (heatmap,) = fig.data
    result = classical_plan["result"]
    assert heatmap.type == "heatmap"
    assert [list(row) for row in heatmap.z] == result["node_traffic_tokens"]
    assert list(heatmap.x) == list(heatmap.y) == result["node_ids"] == [f"node{i}" for i in range(8)]
    assert sum(map(sum, heatmap.z)) <= classical_plan["metrics"]["tokens_routed"]
    assert f"{classical_plan['metrics']['cross_node_fraction']:.1%} cross-node" in fig.layout.title.text


def test_capacity_sweep_has_both_methods_on_both_panels(sweep_rows: list[dict[str, Any]]) -> None:
    fig = charts.capacity_sweep_figure(sweep_rows, current_factor=1.25)
    assert len(fig.data) == 4
    router = [t for t in fig.data if t.legendgroup == "plan"]
    gating = [t for t in fig.data if t.legendgroup == "top1_gating"]
    assert len(router) == len(gating) == 2
    assert list(router[0].x) == list(SWEEP_FACTORS)
    expected = {r["capacity_factor"]: r for r in sweep_rows if r["method"] == "plan"}
    assert list(router[0].y) == [expected[f]["dropped_tokens"] for f in SWEEP_FACTORS]
    assert list(router[1].y) == [expected[f]["total_affinity"] for f in SWEEP_FACTORS]
    assert router[0].name == "qflow router (classical)"
    # One dotted marker per panel at the plan's capacity_factor.
    assert {shape.x0 for shape in fig.layout.shapes} == {1.25}


class TestQaoaConvergence:
    def test_absent_without_a_quantum_report(self, classical_plan: dict[str, Any]) -> None:
        assert classical_plan["solver"]["quantum"] is None
        assert charts.qaoa_convergence_figure(classical_plan) is None

    def test_one_line_per_block_and_the_block_ratios(self, qaoa_plan: dict[str, Any]) -> None:
        quantum = qaoa_plan["solver"]["quantum"]
        fig = charts.qaoa_convergence_figure(qaoa_plan)
        lines = [t for t in fig.data if t.type == "scatter"]
        (bars,) = [t for t in fig.data if t.type == "bar"]
        assert len(lines) == len(quantum["convergence"]) == 1
        assert list(lines[0].y) == quantum["convergence"][0]
        assert list(lines[0].x) == list(range(1, len(quantum["convergence"][0]) + 1))
        assert list(bars.y) == quantum["block_ratios"]
        pair = quantum["blocks"][0]["experts"]
        assert pair[0] in qaoa_plan["result"]["expert_ids"]
        assert lines[0].name == f"block 0: {pair[0]}/{pair[1]} (6q)"
        assert quantum["device"] in fig.layout.title.text

    @pytest.mark.parametrize("ratio", [None, 0.5])
    def test_missing_ratio_is_drawn_without_a_label(self, qaoa_plan: dict[str, Any], ratio: float | None) -> None:
        plan = copy.deepcopy(qaoa_plan)
        plan["solver"]["quantum"]["block_ratios"] = [ratio]
        (bars,) = [t for t in charts.qaoa_convergence_figure(plan).data if t.type == "bar"]
        assert list(bars.text) == [None if ratio is None else "0.500"]
