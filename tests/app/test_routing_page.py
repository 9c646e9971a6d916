"""The Routing page under Streamlit's AppTest: widgets, Run, results, fallbacks and input errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from page_helpers import chart_specs, click_run, open_page, upload
from streamlit.testing.v1 import AppTest

from qflow.routing import RoutingConfig
from ui.widgets import field_bounds

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_data" / "routing"
PLAN_METHODS = ["hash", "top1_gating", "greedy_balanced"]


@pytest.fixture
def at() -> AppTest:
    """The routing page, run once (before any Run click)."""
    return open_page("routing")


def set_settings(at: AppTest, **settings: Any) -> None:
    """Set config widgets by field name (their keys are ``routing_<field>``)."""
    for name, value in settings.items():
        widget = at.toggle(key=f"routing_{name}") if isinstance(value, bool) else at.number_input(key=f"routing_{name}")
        widget.set_value(value)


def trace_names(spec: dict[str, Any]) -> list[str]:
    return [trace.get("name") for trace in spec["data"]]


def path_line(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("**Path requested:**"))


def table_rows(at: AppTest) -> list[dict[str, Any]]:
    return at.dataframe[0].value.to_dict("records")


class TestWidgets:
    def test_widgets_are_the_config_fields_with_their_bounds(self, at: AppTest) -> None:
        assert [t.label for t in at.toggle] == RoutingConfig.toggles()
        numbers = {n.label: n for n in at.number_input}
        assert set(numbers) == set(RoutingConfig.model_fields) - set(RoutingConfig.toggles()) - {"dask_scheduler"}
        assert at.text_input(key="routing_dask_scheduler").value == ""
        for name, widget in numbers.items():
            info = RoutingConfig.model_fields[name]
            bounds = field_bounds(info)
            assert widget.value == info.default, name
            assert widget.max == bounds["le"], name
            assert widget.help == info.description, name
            if "ge" in bounds:
                assert widget.min == bounds["ge"], name
            else:  # exclusive bound: the first step above it
                assert bounds["gt"] < widget.min <= bounds["gt"] + 1, name

    def test_before_run_the_page_says_it_uses_the_samples_and_shows_no_plan(self, at: AppTest) -> None:
        captions = " ".join(c.value for c in at.caption)
        assert "using the sample `sample_data/routing/tokens.csv`" in captions
        assert "using the sample `sample_data/routing/model_graph.json`" in captions
        assert "Press **Run**" in at.info[0].value
        assert not at.get("plotly_chart")
        assert not at.get("download_button")


class TestRunOnSampleData:
    def test_run_shows_summary_charts_and_download(self, at: AppTest) -> None:
        click_run(at, "routing")
        assert not at.exception
        assert not at.error
        assert path_line(at) == "**Path requested:** `classical` &nbsp;&nbsp; **Path ran:** `classical`"

        run = at.session_state["routing_run"]
        plan = run.plan
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["tokens routed"] == str(plan["metrics"]["tokens_routed"])
        assert metrics["dropped tokens"] == "0"

        rows = table_rows(at)
        assert [r["method"] for r in rows] == ["plan (classical)", *PLAN_METHODS]
        assert rows[0]["capacity_violations"] == 0 and rows[0]["dropped_tokens"] == 0
        top1 = next(r for r in rows if r["method"] == "top1_gating")
        # The sample's router scores are skewed: top-1 gating drops tokens the plan routes.
        assert top1["dropped_tokens"] > 0 and rows[0]["total_affinity"] > top1["total_affinity"]

        specs = chart_specs(at)
        assert len(specs) == 3  # no QAOA chart on the classical path
        assert trace_names(specs[0]) == ["plan (classical)", *PLAN_METHODS, "capacity"]
        assert specs[1]["data"][0]["type"] == "heatmap"
        assert {t["name"] for t in specs[2]["data"]} == {"qflow router (classical)", "top1_gating"}
        assert "QAOA" not in [s.value for s in at.subheader]

        downloads = at.get("download_button")
        assert [d.label for d in downloads] == ["Download plan JSON"]
        full = json.loads(run.plan_json)  # what the button serves: every token, not the shortened display
        assert full["schema"] == "qflow.plan/v1" and full["solver"]["ran"] == "classical"
        assert len(full["result"]["assignments"]) == plan["metrics"]["tokens_routed"] + plan["metrics"]["dropped_tokens"]
        shown = at.json[0].value
        assert "... " in shown and "more entries (in the download)" in shown

    def test_last_plan_survives_a_rerun_and_flags_changed_settings(self, at: AppTest) -> None:
        click_run(at, "routing")
        created = at.session_state["routing_run"].plan["created_at"]
        set_settings(at, capacity_factor=1.5)
        at.run()  # a widget change reruns the script without pressing Run
        assert len(chart_specs(at)) == 3
        assert at.session_state["routing_run"].plan["created_at"] == created
        assert any("Settings changed since this plan was made" in c.value for c in at.caption)


class TestToggles:
    def test_qaoa_hqc_runs_circuits_and_shows_convergence(self, at: AppTest, small_qaoa: dict[str, Any]) -> None:
        set_settings(at, **small_qaoa)
        click_run(at, "routing")
        assert not at.exception and not at.error
        solver = at.session_state["routing_run"].plan["solver"]
        # The circuits ran; the path names QAOA only when one of its answers was applied.
        adopted = any(block.get("applied_from") == "qaoa" for block in solver["quantum"]["blocks"])
        assert path_line(at).endswith("**Path ran:** `qaoa+hqc`" if adopted else "**Path ran:** `classical`")
        assert adopted or any(f["from"].startswith("qaoa") for f in solver["fallbacks"])
        assert [s.value for s in at.subheader if s.value == "QAOA"] == ["QAOA"]

        quantum = solver["quantum"]
        assert quantum["device"] in {"lightning.qubit", "default.qubit"}
        assert quantum["qubits_per_circuit"] == [6]
        specs = chart_specs(at)
        assert len(specs) == 4
        convergence = specs[3]
        lines = [t for t in convergence["data"] if t["type"] == "scatter"]
        bars = [t for t in convergence["data"] if t["type"] == "bar"]
        assert len(lines) == 1 and len(lines[0]["y"]) == quantum["optimizer_steps"][0] <= 5
        assert bars[0]["y"] == quantum["block_ratios"] and 0 < bars[0]["y"][0] <= 1

    def test_deterministic_fallback_runs_the_hash_router(self, at: AppTest) -> None:
        set_settings(at, deterministic_fallback=True)
        click_run(at, "routing")
        assert path_line(at) == "**Path requested:** `hash` &nbsp;&nbsp; **Path ran:** `hash`"
        assert table_rows(at)[0]["method"] == "plan (hash)"
        assert trace_names(chart_specs(at)[0])[0] == "plan (hash)"

    def test_simulator_toggle_is_shown_as_a_fallback_warning(self, at: AppTest, small_qaoa: dict[str, Any]) -> None:
        set_settings(at, simulator=True, **small_qaoa)
        click_run(at, "routing")
        warnings = [w.value for w in at.warning]
        assert any("fell back to `classical-drop-in`" in w and "simulator toggle on" in w for w in warnings), warnings
        assert path_line(at).endswith("**Path ran:** `classical-drop-in`")

    def test_baselines_off_leaves_only_the_plan(self, at: AppTest) -> None:
        set_settings(at, baselines=False)
        click_run(at, "routing")
        assert [r["method"] for r in table_rows(at)] == ["plan (classical)"]
        assert trace_names(chart_specs(at)[0]) == ["plan (classical)", "capacity"]

    def test_capacity_too_small_reports_dropped_tokens_and_the_factor_that_drops_none(self, at: AppTest) -> None:
        set_settings(at, capacity_factor=0.5)
        click_run(at, "routing")
        dropped = at.session_state["routing_run"].plan["result"]["dropped"]
        assert dropped["count"] > 0
        warning = next(w.value for w in at.warning if "tokens dropped" in w.value)
        assert warning.startswith(f"{dropped['count']} tokens dropped: total capacity")
        assert "capacity_factor >=" in warning


class TestInputs:
    def test_malformed_tokens_show_the_loader_message(self, at: AppTest) -> None:
        click_run(at, "routing")  # a good plan first: the error must replace it, not sit above stale charts
        upload(at, "routing", "tokens", "tokens.csv", b"token_id,source,complexity\nt0,node0,abc\n")
        upload(at, "routing", "model_graph", "model_graph.json", (SAMPLES / "model_graph.json").read_bytes())
        click_run(at, "routing")
        assert [e.value for e in at.error] == [
            "tokens.csv: complexity[row 0]: not a finite number; expected a finite number, got abc"
        ]
        assert not at.get("plotly_chart") and not at.get("download_button")

    def test_one_upload_never_mixes_with_the_other_sample(self, at: AppTest) -> None:
        upload(at, "routing", "model_graph", "cluster.json", json.dumps({"experts": [{"id": "e0"}]}).encode())
        assert at.button(key="routing_run_button").disabled
        assert "Upload tokens too" in at.warning[0].value
        assert not any("using the sample" in c.value for c in at.caption)
        upload(at, "routing", "tokens", "tokens.csv", (SAMPLES / "tokens.csv").read_bytes())
        click_run(at, "routing")
        assert at.error[0].value.startswith("cluster.json: experts[0].node: missing")

    def test_uploaded_bad_yaml_graph_is_an_error_not_a_traceback(self, at: AppTest) -> None:
        upload(at, "routing", "tokens", "tokens.csv", (SAMPLES / "tokens.csv").read_bytes())
        upload(at, "routing", "model_graph", "graph.yaml", b"experts: [\n")
        click_run(at, "routing")
        assert at.error[0].value.startswith("graph.yaml: (line")
        assert "invalid YAML" in at.error[0].value

    def test_uploaded_yaml_graph_is_read_as_yaml(self, at: AppTest) -> None:
        graph = json.loads((SAMPLES / "model_graph.json").read_text())
        upload(at, "routing", "tokens", "tokens.csv", (SAMPLES / "tokens.csv").read_bytes())
        upload(at, "routing", "model_graph", "model_graph.yaml", yaml.safe_dump(graph).encode())
        assert not any("model_graph.json" in c.value for c in at.caption)  # the sample is no longer used
        click_run(at, "routing")
        assert not at.exception and not at.error
        inputs = {d["name"]: d for d in at.session_state["routing_run"].plan["inputs"]}
        assert inputs["model_graph"]["source"] == "model_graph.yaml"


@pytest.mark.parametrize("node_limit", [1, 2])
def test_top_k_with_node_limit_draws_charts_sweep_and_downloads(at: AppTest, node_limit: int) -> None:
    set_settings(at, top_k=2, node_limit=node_limit)
    click_run(at, "routing")
    assert not at.error
    plan = at.session_state["routing_run"].plan
    assert plan["config"]["top_k"] == 2
    spans = plan["metrics"]["nodes_per_token_max"]
    assert any(f"{spans} at most (node_limit={node_limit})" in c.value for c in at.caption)
    assert (spans > node_limit) == any(f"node_limit={node_limit} not met" in w.value for w in at.warning)
    load, _, sweep, *_ = chart_specs(at)
    assert load["data"][0]["y"] == plan["metrics"]["expert_load"]
    assert set(trace_names(load)[1:-1]) == set(plan["baselines"])
    rows = at.session_state["routing_run"].extras["sweep"]
    assert {r["method"] for r in rows} == {"plan", "topk_gating"}
    sweep_names = trace_names(sweep)
    assert "qflow router (classical)" in sweep_names and "topk_gating" in sweep_names
    dropped = [t["y"] for t in sweep["data"] if t["name"] == "qflow router (classical)"][0]
    assert dropped[0] > dropped[-1] == 0  # the sweep really varies with capacity_factor
    assert any(d.label == "Download plan JSON" for d in at.get("download_button"))
    assert json.loads(at.session_state["routing_run"].plan_json)["result"]["combine_weights"]


def test_recommend_settings_runs_the_advisor_as_a_job_and_shows_its_ranking(at: AppTest) -> None:
    """The page's "Recommend settings": a job on the board, then the advisor's verdict, ranking chart and tables."""
    at.segmented_control(key="routing_advise_goal").set_value("quality")
    at.segmented_control(key="routing_advise_budget").set_value(15)
    at.button(key="routing_advise_button").click().run()
    assert not at.exception
    job = at.session_state["routing_advise_job"]
    assert job.wait(300) and job.state == "done", job.error
    at.run()
    assert not at.exception
    plan = job.result
    assert plan["result"]["goal"] == "quality" and plan["config"]["budget_s"] == 15
    assert any(s.value.startswith(f"Goal quality: {plan['result']['recommended_candidate']}") for s in at.success)
    assert [chart.key for chart in at.get("plotly_chart")] == ["routing_advise_tradeoff"]
    ranking = next(frame.value for frame in at.dataframe if "rank" in frame.value.columns)
    assert list(ranking["rank"]) == list(range(1, len(plan["result"]["candidates"]) + 1))
    assert ranking.iloc[0]["candidate"] == plan["result"]["recommended_candidate"]
