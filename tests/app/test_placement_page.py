"""The expert placement page under Streamlit's AppTest: key figures against EPLB, per-GPU and per-node load bars."""

from __future__ import annotations

import pytest
from page_helpers import chart_specs, click_run, open_page
from streamlit.testing.v1 import AppTest


@pytest.fixture
def at(tmp_path, monkeypatch) -> AppTest:
    monkeypatch.setenv("QFLOW_HOME", str(tmp_path))
    return open_page("placement")


def _imbalance(values: list[float]) -> float:
    return max(values) / (sum(values) / len(values))


def test_run_on_the_samples_shows_imbalance_against_the_baselines(at: AppTest) -> None:
    click_run(at, "placement")
    assert not at.error
    plan = at.session_state["placement_run"].plan
    figures = {m.label: m for m in at.metric}
    assert figures["max GPU imbalance"].value == f"{plan['metrics']['max_gpu_imbalance']:.3f}"
    assert "vs EPLB" in figures["max node imbalance"].delta
    assert "contiguous" in figures["mean GPU imbalance"].help
    assert figures["gap to lower bound"].value == f"{plan['metrics']['max_gap_to_lower_bound']:.1%}"
    table = next(d.value for d in at.dataframe if "max_gpu_imbalance" in d.value.columns)
    assert table["method"].tolist()[1:] == ["eplb", "contiguous"]


def test_load_bars_per_layer_match_the_plan_and_the_eplb_baseline(at: AppTest) -> None:
    click_run(at, "placement")
    plan = at.session_state["placement_run"].plan
    eplb_imbalance = []
    for index, layer_metrics in enumerate(plan["metrics"]["layers"]):
        at.selectbox(key="placement_layer").set_value(index).run()
        gpu, node = chart_specs(at)
        assert [t["name"] for t in gpu["data"]] == ["plan", "EPLB baseline"]
        assert gpu["data"][0]["x"] == plan["result"]["gpu_ids"] and node["data"][0]["x"] == plan["result"]["node_ids"]
        assert _imbalance(gpu["data"][0]["y"]) == pytest.approx(layer_metrics["gpu_imbalance"])
        assert _imbalance(node["data"][0]["y"]) == pytest.approx(layer_metrics["node_imbalance"])
        assert sum(gpu["data"][1]["y"]) == pytest.approx(sum(gpu["data"][0]["y"]))  # same tokens, placed differently
        eplb_imbalance.append(_imbalance(gpu["data"][1]["y"]))
    assert max(eplb_imbalance) == pytest.approx(plan["baselines"]["eplb"]["max_gpu_imbalance"])
