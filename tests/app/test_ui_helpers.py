"""ui.plan_view, ui.widgets and ui.page.run_module, called directly."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from qflow.compression import DecompressConfig
from qflow.routing import RoutingConfig
from ui.hooks.routing import METRICS
from ui.page import run_module
from ui.plan_view import fallback_messages, metrics_table, not_adopted_messages, path_steps, plan_for_display
from ui.widgets import field_bounds, field_table, ordered_fields

SAMPLES = Path(__file__).resolve().parents[2] / "sample_data" / "routing"


class TestSummary:
    def test_metrics_table_has_the_plan_then_each_baseline(self, classical_plan: dict[str, Any]) -> None:
        rows = metrics_table(classical_plan, METRICS)
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


class TestPathMessages:
    def test_not_adopted_steps_name_the_reason_and_the_measured_effect(self) -> None:
        plan = {"solver": {"requested": "quant8+vqc", "ran": "quant8", "fallbacks": [],
                           "not_adopted": [{"step": "vqc", "reason": "no latent stored", "relative_l2_change": 0.0}]}}
        assert not_adopted_messages(plan) == [
            "`vqc` ran but was not adopted: no latent stored (relative_l2_change 0.0)"]
        assert not_adopted_messages({"solver": {"ran": "x"}}) == []

    def test_fallback_messages_carry_a_measured_effect(self) -> None:
        plan = {"solver": {"fallbacks": [{"from": "hhl", "to": "plain", "reason": "worse", "error_before": 0.5}]}}
        assert fallback_messages(plan) == ["Requested path `hhl` fell back to `plain`: worse (error_before 0.5)"]

    def test_path_steps_split_the_ran_path(self) -> None:
        assert path_steps("quant8+prune+zstd") == ["quant8", "prune", "zstd"]


class TestRunModule:
    """:func:`ui.page.run_module`, the work of a page's job, called directly."""

    def uploads(self) -> dict[str, Any]:
        return {name: (f"{name}.{ext}", (SAMPLES / f"{name}.{ext}").read_bytes())
                for name, ext in (("tokens", "csv"), ("model_graph", "json"))}

    def test_a_run_reports_progress_to_done_and_returns_plan_and_sweep(self) -> None:
        seen: list[float] = []
        run = run_module("routing", self.uploads(), RoutingConfig(seed=7).model_dump_json(), {},
                         lambda f, m: seen.append(f))
        assert run.error is None and run.plan["config"]["seed"] == 7
        assert json.loads(run.plan_json)["solver"] == run.plan["solver"]
        assert {r["method"] for r in run.extras["sweep"]} == {"plan", "top1_gating"}
        assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 3

    def test_bad_input_comes_back_as_the_loader_message(self) -> None:
        uploads = {**self.uploads(), "tokens": ("t.csv", b"token_id,source,complexity\nt0,n0,abc\n")}
        run = run_module("routing", uploads, RoutingConfig().model_dump_json(), {}, lambda f, m: None)
        assert run.plan is None and run.error.startswith("t.csv: complexity[row 0]: not a finite number")

    def test_artifacts_come_back_named_by_the_hook(self) -> None:
        container = (SAMPLES.parent / "compression" / "checkpoint.qfz").read_bytes()
        run = run_module("decompress", {"input": ("checkpoint.qfz", container), "reference": None},
                         DecompressConfig().model_dump_json(), {"format": "npz"}, lambda f, m: None)
        assert run.error is None and [name for name, _ in run.artifacts] == ["checkpoint_restored.npz"]
        assert run.artifacts[0][1][:2] == b"PK"  # an npz is a zip
        assert run.plan["result"]["written_to"] is None  # no private temporary path in the plan


def _solver_section() -> None:
    from ui.plan_view import show_solver

    show_solver({"solver": {"requested": "quant8+vqc", "ran": "quant8+zstd", "fallbacks": [],
                            "not_adopted": [{"step": "vqc", "reason": "no latent stored", "seconds": 30.0}]},
                 "diagnostics": ["classifier below its majority-class baseline: not acted on"]})


def test_badges_show_the_steps_that_ran_and_those_not_adopted_with_warnings() -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_solver_section)
    at.run()
    assert not at.exception
    assert at.markdown[0].value == "**Path requested:** `quant8+vqc` &nbsp;&nbsp; **Path ran:** `quant8+zstd`"
    assert at.markdown[1].value == ("Steps adopted: :green-badge[quant8] :green-badge[zstd] &nbsp; "
                                    "not adopted: :orange-badge[vqc]")
    assert [w.value for w in at.warning] == ["`vqc` ran but was not adopted: no latent stored (seconds 30.0)",
                                             "classifier below its majority-class baseline: not acted on"]
