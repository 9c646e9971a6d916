"""ui.summary, ui.widgets, ui.inputs and ui.run, called directly."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from qflow.routing import RoutingConfig
from ui.inputs import InputFile, choose_input
from ui.run import call_with_progress, run_routing
from ui.summary import fallback_messages, metrics_table, plan_for_display
from ui.widgets import field_bounds, field_table, ordered_fields

SAMPLES = Path(__file__).resolve().parents[2] / "sample_data" / "routing"


class TestSummary:
    def test_metrics_table_has_the_plan_then_each_baseline(self, classical_plan: dict[str, Any]) -> None:
        rows = metrics_table(classical_plan)
        assert [r["method"] for r in rows] == ["plan (classical)", "hash", "top1_gating", "greedy_balanced"]
        assert rows[0]["tokens_routed"] == classical_plan["metrics"]["tokens_routed"]
        assert rows[0]["load_imbalance"] == round(classical_plan["metrics"]["load_imbalance"], 4)
        assert rows[2]["dropped_tokens"] == classical_plan["baselines"]["top1_gating"]["dropped_tokens"]

    def test_plan_for_display_shortens_a_copy(self, classical_plan: dict[str, Any]) -> None:
        before = copy.deepcopy(classical_plan)
        shown = plan_for_display(classical_plan)
        assignments = shown["result"]["assignments"]
        assert len(assignments) == 25  # 24 entries and the "..." note
        assert assignments["..."] == f"{len(classical_plan['result']['assignments']) - 24} more entries (in the download)"
        assert shown["metrics"]["expert_load"][-1] == "... 52 more (in the download)"
        # Small mappings stay whole: every metric and config field is shown.
        assert set(shown["metrics"]) == set(classical_plan["metrics"])
        assert shown["config"] == classical_plan["config"]
        assert classical_plan == before
        assert len(json.dumps(shown)) < 20_000 < len(json.dumps(classical_plan))

    def test_fallback_messages_name_both_paths_and_the_reason(self) -> None:
        plan = {"solver": {"fallbacks": [{"from": "qaoa", "to": "classical", "reason": "max_qubits exceeded"}]}}
        assert fallback_messages(plan) == ["Requested path `qaoa` fell back to `classical`: max_qubits exceeded"]
        assert fallback_messages({"solver": {"fallbacks": []}}) == []


class TestWidgetsFromConfig:
    def test_bounds_come_from_the_field_metadata(self) -> None:
        fields = RoutingConfig.model_fields
        assert field_bounds(fields["capacity_factor"]) == {"gt": 0, "le": 64}
        assert field_bounds(fields["qaoa_layers"]) == {"ge": 1, "le": 8}
        assert field_bounds(fields["qaoa"]) == {}

    def test_module_fields_first_inherited_seed_last(self) -> None:
        names = [name for name, _ in ordered_fields(RoutingConfig)]
        assert sorted(names) == sorted(RoutingConfig.model_fields)
        assert names[0] == "qaoa" and names[-1] == "seed"

    def test_field_table_documents_every_field(self) -> None:
        rows = {r["field"]: r for r in field_table(RoutingConfig)}
        assert set(rows) == set(RoutingConfig.model_fields)
        assert rows["capacity_factor"]["allowed"] == "> 0, <= 64"
        assert rows["qaoa"]["allowed"] == "true / false"
        assert rows["max_qubits"]["description"] == RoutingConfig.model_fields["max_qubits"].description


class TestChooseInput:
    class Upload:
        name = "mine.csv"

        def getvalue(self) -> bytes:
            return b"token_id\nt0\n"

    def test_upload_wins_over_injected_bytes_and_sample(self) -> None:
        chosen = choose_input(self.Upload(), {"routing_tokens_bytes": b"x"}, "routing_tokens", SAMPLES / "tokens.csv")
        assert chosen == InputFile("mine.csv", b"token_id\nt0\n", "upload")

    def test_injected_bytes_win_over_the_sample_with_a_telling_name(self) -> None:
        chosen = choose_input(None, {"routing_tokens_bytes": "a,b\n"}, "routing_tokens", SAMPLES / "tokens.csv")
        assert chosen == InputFile("injected_tokens.csv", b"a,b\n", "injected")
        named = choose_input(None, {"routing_model_graph_bytes": b"{}", "routing_model_graph_name": "g.yaml"},
                             "routing_model_graph", SAMPLES / "model_graph.json")
        assert (named.name, named.origin) == ("g.yaml", "injected")

    def test_sample_when_nothing_else(self) -> None:
        chosen = choose_input(None, {}, "routing_tokens", SAMPLES / "tokens.csv")
        assert chosen.origin == "sample" and chosen.name == "tokens.csv"
        assert chosen.data == (SAMPLES / "tokens.csv").read_bytes()


class TestRunner:
    def test_progress_reaches_the_caller_in_order_and_results_return(self) -> None:
        def work(x: int, _progress: Any) -> int:
            for step in range(3):
                _progress(step / 2, f"step {step}")
            return x * 2

        seen: list[tuple[float, str]] = []
        assert call_with_progress(work, 21, on_progress=lambda f, m: seen.append((f, m))) == 42
        assert seen == [(0.0, "step 0"), (0.5, "step 1"), (1.0, "step 2")]

    def test_worker_exceptions_are_raised_here(self) -> None:
        def broken(_progress: Any) -> None:
            raise RuntimeError("bug")

        with pytest.raises(RuntimeError, match="bug"):
            call_with_progress(broken, on_progress=lambda f, m: None)

    def test_invalid_settings_come_back_as_the_config_message(self) -> None:
        tokens = choose_input(None, {}, "routing_tokens", SAMPLES / "tokens.csv")
        graph = choose_input(None, {}, "routing_model_graph", SAMPLES / "model_graph.json")
        run = run_routing(tokens, graph, {"capacity_factor": 0}, on_progress=lambda f, m: None)
        assert run.plan is None
        assert run.error == "settings: config.capacity_factor: invalid value; expected a number > 0.0, got 0"

    def test_a_run_reports_progress_to_done_and_returns_plan_and_sweep(self) -> None:
        tokens = choose_input(None, {}, "routing_tokens", SAMPLES / "tokens.csv")
        graph = choose_input(None, {}, "routing_model_graph", SAMPLES / "model_graph.json")
        seen: list[float] = []
        # A seed no other test uses, so this call computes instead of hitting the cache.
        run = run_routing(tokens, graph, {"seed": 7}, on_progress=lambda f, m: seen.append(f))
        assert run.error is None and run.plan["config"]["seed"] == 7
        assert json.loads(run.plan_json)["solver"] == run.plan["solver"]
        assert {r["method"] for r in run.sweep} == {"plan", "top1_gating"}
        assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 3
