"""The HPO page under Streamlit's AppTest: widgets, Run on the samples, charts, optimisation mode, input errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from page_helpers import chart_specs, click_run, open_page, upload
from streamlit.testing.v1 import AppTest

from qflow.hpo import HpoConfig

ROOT = Path(__file__).resolve().parents[2]
SPACE = yaml.safe_load((ROOT / "sample_data" / "hpo" / "space.yaml").read_text())["parameters"]


@pytest.fixture
def at() -> AppTest:
    return open_page("hpo")


def test_widgets_are_the_config_fields(at: AppTest) -> None:
    assert [t.label for t in at.toggle] == HpoConfig.toggles()
    selects = {s.label for s in at.selectbox}
    numbers = {n.label for n in at.number_input}
    texts = {t.label for t in at.text_input}
    assert texts == {"dask_scheduler", "optuna_storage", "optuna_study"}
    assert selects | numbers | texts == set(HpoConfig.model_fields) - set(HpoConfig.toggles())
    assert at.text_input(key="hpo_dask_scheduler").value == ""
    assert at.selectbox(key="hpo_objective").value == "none"
    captions = " ".join(c.value for c in at.caption)
    assert "using the sample `sample_data/hpo/space.yaml`" in captions
    assert "using the sample `sample_data/hpo/history.csv`" in captions
    assert "Press **Run**" in at.info[0].value and not at.get("plotly_chart")


def test_run_on_the_samples_suggests_and_draws_three_charts(at: AppTest) -> None:
    click_run(at, "hpo")
    assert not at.exception and not at.error
    plan = at.session_state["hpo_run"].plan
    suggestions = plan["result"]["suggestions"]
    assert len(suggestions) == 4
    for s in suggestions:
        for name, spec in SPACE.items():
            if spec["kind"] == "categorical":
                assert s[name] in spec["choices"]
            else:
                assert spec["low"] <= s[name] <= spec["high"]
    table = at.dataframe[0].value
    assert len(table) == 4 and list(table.columns) == list(SPACE)
    assert any("max_depth=24 is outside [2, 16]" in w.value for w in at.warning)  # the rejected history row
    specs = chart_specs(at)
    assert len(specs) == 3
    assert specs[0]["data"][0]["name"] == "history (best so far)"
    assert specs[1]["data"][0]["type"] == "parcoords"
    labels = [("log10 " if spec.get("log") else "") + name for name, spec in SPACE.items()]
    assert [d["label"] for d in specs[1]["data"][0]["dimensions"]] == [*labels, "objective"]
    assert "GP posterior along n_estimators" in specs[2]["layout"]["title"]["text"]
    assert [d.label for d in at.get("download_button")] == ["Download plan JSON"]

    at.selectbox(key="hpo_slice_parameter").set_value("ccp_alpha").run()
    gp = chart_specs(at)[2]
    assert "along ccp_alpha" in gp["layout"]["title"]["text"] and gp["layout"]["xaxis"]["type"] == "log"


def test_optimize_mode_plots_each_method_against_the_baselines(at: AppTest) -> None:
    at.selectbox(key="hpo_objective").set_value("branin")
    at.number_input(key="hpo_n_trials").set_value(8)
    at.number_input(key="hpo_ei_candidates").set_value(128)
    click_run(at, "hpo")
    assert not at.exception and not at.error
    best = chart_specs(at)[0]
    assert [t["name"] for t in best["data"]] == ["plan (gp-ei)", "random_search", "optuna_tpe"]
    assert all(len(t["y"]) == 8 for t in best["data"])
    rows = at.dataframe[1].value.to_dict("records")
    assert [r["method"] for r in rows] == ["plan (gp-ei)", "random_search", "optuna_tpe"]


def test_a_malformed_space_shows_the_loader_message(at: AppTest) -> None:
    upload(at, "hpo", "space", "bad.yaml", b"parameters:\n  lr: {kind: float, low: 1, high: 0.1}\n")
    click_run(at, "hpo")
    assert not at.exception
    assert at.error[0].value.startswith("bad.yaml: parameters.lr.bounds: lower bound not below upper bound")
    assert not at.get("plotly_chart")


def test_an_own_space_runs_without_the_sample_history(at: AppTest) -> None:
    """Uploading only a search space leaves the optional history out (never the sample made for another space)."""
    upload(at, "hpo", "space", "mine.yaml", b"parameters:\n  lr: {kind: float, low: 0.001, high: 0.1, log: true}\n")
    assert not any("using the sample" in c.value for c in at.caption)
    click_run(at, "hpo")
    assert not at.error
    plan = at.session_state["hpo_run"].plan
    assert [d["name"] for d in plan["inputs"]] == ["space"] and plan["metrics"]["n_history_used"] == 0
    assert all(set(s) == {"lr"} for s in plan["result"]["suggestions"])


def test_the_sample_history_can_be_left_out(at: AppTest) -> None:
    at.checkbox(key="hpo_history_use_sample").uncheck().run()
    click_run(at, "hpo")
    assert not at.error and at.session_state["hpo_run"].plan["metrics"]["n_history_used"] == 0
