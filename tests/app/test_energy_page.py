"""The energy page under Streamlit's AppTest: widgets, Run on the samples, four charts, toggles, input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from page_helpers import chart_specs, click_run, open_page, upload
from streamlit.testing.v1 import AppTest

from qflow.energy import EnergyConfig

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_data" / "energy"


@pytest.fixture
def at(tmp_path, monkeypatch) -> AppTest:
    monkeypatch.setenv("QFLOW_HOME", str(tmp_path))  # the run history goes to a temporary store
    return open_page("energy")


def test_widgets_are_the_config_fields(at: AppTest) -> None:
    assert [t.label for t in at.toggle] == EnergyConfig.toggles()
    choices = {"objective", "telemetry_format", "power_levels"}  # Literal fields: select boxes
    assert {s.label for s in at.selectbox} >= choices and at.selectbox(key="energy_objective").value == "min_makespan"
    assert {n.label for n in at.number_input} == set(EnergyConfig.model_fields) - set(EnergyConfig.toggles()) - choices
    assert at.toggle(key="energy_gnn_prediction").value is True and at.toggle(key="energy_qaoa_scheduling").value is False
    captions = " ".join(c.value for c in at.caption)
    for name in ("telemetry.csv", "topology.json", "jobs.json"):
        assert f"using the sample `sample_data/energy/{name}`" in captions
    assert "Press **Run**" in at.info[0].value and not at.get("plotly_chart")


def test_run_on_the_samples_draws_the_four_charts(at: AppTest) -> None:
    click_run(at, "energy")
    assert not at.exception and not at.error
    plan = at.session_state["energy_run"].plan
    assert plan["solver"]["ran"] == "gnn+list" and plan["metrics"]["budget_respected"]
    specs = chart_specs(at)
    assert len(specs) == 5
    timeline, gantt, prediction, caps, tradeoff = specs
    names = [t["name"] for t in timeline["data"]]
    assert names == ["ASAP (before)", "per-node scheduler", "plan (gnn+list)", "plan with clock caps"]
    budget_lines = [s for s in timeline["layout"]["shapes"] if s["y0"] == plan["result"]["power_budget_w"]]
    assert budget_lines, "the budget line is drawn"
    assert len(gantt["data"][0]["base"]) == len(plan["result"]["schedule"])
    assert [t["name"].split(" ")[0] for t in prediction["data"]] == ["measured", "persistence", "ridge", "gnn"]
    assert "Clock caps per node" in caps["layout"]["title"]["text"]
    sweep = sorted(plan["result"]["objective"]["budget_sweep"], key=lambda r: r["peak_w"])
    curve, bound, star = tradeoff["data"]
    assert curve["y"] == [r["makespan_slots"] for r in sweep] and bound["y"] == [r["makespan_lower_bound_slots"] for r in sweep]
    assert curve["y"] == sorted(curve["y"], reverse=True)  # a higher peak never costs slots on the sample
    assert star["y"] == [plan["metrics"]["makespan_slots"]] and star["x"] == [plan["metrics"]["peak_power_w"] / 1000]
    gap = next(m for m in at.metric if m.label == "makespan gap to lower bound")
    assert gap.value == f"{plan['metrics']['makespan_gap_to_lower_bound']:.1%} (bound {plan['metrics']['makespan_lower_bound_slots']} slots)"
    rows = next(d.value for d in at.dataframe if "peak_power_w" in d.value.columns).to_dict("records")
    assert [r["method"] for r in rows] == ["plan (gnn+list)", "asap", "per_node"]
    assert [d.label for d in at.get("download_button")] == [
        "Download energy.apply.sh", "Download energy.restore.sh", "Download energy.schedule.csv", "Download plan JSON"]


def test_all_toggles_off_runs_the_per_node_scheduler(at: AppTest) -> None:
    at.toggle(key="energy_gnn_prediction").set_value(False)
    click_run(at, "energy")
    assert not at.exception and not at.error
    plan = at.session_state["energy_run"].plan
    assert plan["solver"]["ran"] == "per-node"
    assert plan["metrics"]["peak_power_w"] == plan["baselines"]["per_node"]["peak_power_w"]
    assert "gnn" not in plan["metrics"]["prediction_mae_w"]


def test_qaoa_windows_add_their_chart_and_table(at: AppTest) -> None:
    at.toggle(key="energy_qaoa_scheduling").set_value(True)
    at.number_input(key="energy_max_qubits").set_value(4)
    at.number_input(key="energy_qaoa_steps").set_value(5)
    at.number_input(key="energy_gnn_steps").set_value(20)
    click_run(at, "energy")
    assert not at.exception and not at.error
    plan = at.session_state["energy_run"].plan
    assert plan["solver"]["ran"] == "gnn+list+qaoa"
    specs = chart_specs(at)
    assert len(specs) == 6 and "ratio to the exact optimum" in specs[4]["layout"]["title"]["text"]
    windows = next(d.value for d in at.dataframe if "qaoa_ratio" in d.value.columns)
    assert len(windows) == len(plan["result"]["windows"]) and (windows["qubits"] <= 4).all()


def test_cyclic_jobs_show_the_loader_message(at: AppTest) -> None:
    for name in ("telemetry.csv", "topology.json"):
        upload(at, "energy", name.split(".")[0], name, (SAMPLES / name).read_bytes())
    upload(at, "energy", "jobs", "bad_jobs.json", json.dumps(
        {"jobs": [{"id": "a", "duration": 1, "deps": ["b"]}, {"id": "b", "duration": 1, "deps": ["a"]}]}).encode())
    click_run(at, "energy")
    assert not at.exception
    assert at.error[0].value == ("bad_jobs.json: jobs.deps: cyclic dependencies (a -> b -> a, 2 jobs); expected a DAG "
                                 "(no job may depend on itself through others)")
    assert not at.get("plotly_chart")
