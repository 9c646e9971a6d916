"""The NVLink page under Streamlit's AppTest: widgets, Run on the sample, four charts, another scenario, input errors."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
from page_helpers import chart_specs, click_run, open_page, upload
from streamlit.testing.v1 import AppTest

from qflow.nvlink import NvlinkConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def at() -> AppTest:
    return open_page("nvlink")


def test_widgets_are_the_config_fields(at: AppTest) -> None:
    assert [t.label for t in at.toggle] == NvlinkConfig.toggles()
    numbers = {n.label for n in at.number_input}
    selects = {s.label for s in at.selectbox} - {"bundled samples (used when nothing is uploaded)"}
    assert numbers | selects == set(NvlinkConfig.model_fields) - set(NvlinkConfig.toggles())
    assert at.selectbox(key="nvlink_partitioner").value == "kernighan_lin"
    assert at.selectbox(key="nvlink_sample_set").value == "gb200_nvl72.json"
    captions = " ".join(c.value for c in at.caption)
    assert "using the sample `sample_data/nvlink/gb200_nvl72.json`" in captions
    assert "using the sample `sample_data/nvlink/jobs.json`" in captions
    assert "Press **Run**" in at.info[0].value and not at.get("plotly_chart")


def test_run_on_the_sample_draws_four_charts(at: AppTest) -> None:
    at.number_input(key="nvlink_rl_episodes").set_value(40)
    at.number_input(key="nvlink_classifier_samples").set_value(80)
    click_run(at, "nvlink")
    assert not at.exception and not at.error
    plan = at.session_state["nvlink_run"].plan
    assert plan["metrics"]["rounds"] == 62 and set(plan["result"]["placement"]) == {
        "train_tp4x4", "moe_all_to_all", "pipeline_16", "sparse_exchange_7"}
    specs = chart_specs(at)
    assert len(specs) == 4
    fabric = specs[0]
    assert fabric["layout"]["title"]["text"].startswith("Fabric: links by planned utilisation")
    names = [d["name"] for d in fabric["data"]]
    assert "nvswitch" in names and any(n.startswith("links") for n in names)
    assert [n for n in names if n.startswith("GPUs of")] == [f"GPUs of {job}" for job in plan["result"]["placement"]]
    gpu_traces = [d for d in fabric["data"] if d["name"].startswith("GPUs")]
    assert sum(len(d["x"]) for d in gpu_traces) == 72 and gpu_traces[-1]["name"] == "GPUs (free)"
    timeline = specs[1]
    assert {d["name"] for d in timeline["data"]} == set(plan["result"]["placement"])
    assert "lower bound 62" in timeline["layout"]["title"]["text"]
    assert len(specs[2]["data"][0]["y"]) == 40 and specs[2]["data"][1]["name"] == "shortest path"
    assert specs[3]["data"][0]["type"] == "heatmap"
    table = at.dataframe[0].value
    assert table["method"].tolist() == ["plan", "round_robin placement", "random placement", "greedy colouring",
                                        "shortest-path routing"]
    assert [d.label for d in at.get("download_button")] == ["Download plan JSON"]


def test_another_bundled_scenario(at: AppTest) -> None:
    at.selectbox(key="nvlink_sample_set").set_value("dgx_h100_topo.txt").run()
    at.toggle(key="nvlink_classifier").set_value(False)
    at.toggle(key="nvlink_rl_planner").set_value(False)
    click_run(at, "nvlink")
    assert not at.exception and not at.error
    plan = at.session_state["nvlink_run"].plan
    assert plan["result"]["fabric"]["format"] == "nvidia-smi topo -m"
    assert len(chart_specs(at)) == 2  # fabric and rounds; RL and classifier are off


def test_a_dangling_link_shows_the_loader_message(at: AppTest) -> None:
    data = json.loads((ROOT / "sample_data" / "nvlink" / "dgx_h100.json").read_text())
    data["links"][0]["target"] = "nowhere"
    upload(at, "nvlink", "fabric", "bad.json", json.dumps(data).encode())
    upload(at, "nvlink", "jobs", "jobs_node.json", (ROOT / "sample_data" / "nvlink" / "jobs_node.json").read_bytes())
    click_run(at, "nvlink")
    assert not at.exception
    assert at.error[0].value.startswith("bad.json: links[0].target: dangling link: endpoint is not a node")
    assert not at.get("plotly_chart")


def _with_classifier_trusted(plan: dict, trusted: bool) -> dict:
    """``plan`` as the engine writes it when the classifier does (not) beat the majority class."""
    plan = copy.deepcopy(plan)
    classifier = plan["result"]["classifier"]
    classifier["acted_on"] = trusted
    for prediction in classifier["predictions"].values():
        prediction["congested"] = prediction["model_call"] if trusted else None
    for row in plan["result"]["learned_components"]:
        if row["component"] == "contention_classifier":
            row["beats_baseline"] = row["acted_on"] = trusted
    return plan


def test_a_classifier_that_does_not_beat_the_majority_class_makes_no_call(at: AppTest) -> None:
    at.number_input(key="nvlink_rl_episodes").set_value(10)
    at.number_input(key="nvlink_classifier_samples").set_value(60)
    click_run(at, "nvlink")
    run = at.session_state["nvlink_run"]
    plan = run.plan
    assert plan["result"]["classifier"]["acted_on"] == (
        plan["result"]["classifier"]["held_out_accuracy"] > plan["result"]["classifier"]["majority_class_accuracy"])
    for trusted in (False, True):
        at.session_state["nvlink_run"] = dataclasses.replace(run, plan=_with_classifier_trusted(plan, trusted))
        at.run()
        assert not at.exception
        call = next(c.value for c in at.caption if c.value.startswith("Classifier's call"))
        assert ("no call (classifier does not beat the majority class)" in call) is not trusted
        learned = next(d.value for d in at.dataframe if "beats_baseline" in d.value.columns)
        row = learned[learned["component"] == "contention_classifier"].iloc[0]
        assert bool(row["acted_on"]) is trusted and bool(row["beats_baseline"]) is trusted
        if trusted:
            model_call = plan["result"]["classifier"]["predictions"]["plan"]["model_call"]
            assert f"plan: {'congested' if model_call else 'not congested'}," in call
        else:
            assert "not congested" not in call and "plan: no call" in call
