"""The Compare page under AppTest: stored runs side by side, config differences, charts, a batch of
configurations run at once (as a background job), Cancel, and every module offered.

Each test points QFLOW_HOME at its own folder, so the history it sees is the one it made.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from qflow.core.commands import available_commands
from qflow.core.runs import RunStore
from ui import compare

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "views" / "compare.py"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunStore:
    monkeypatch.setenv("QFLOW_HOME", str(tmp_path))
    return RunStore(tmp_path / "runs.db")


def fake_plan(module: str, seed: int, capacity_factor: float, imbalance: float, baselines: bool = True) -> dict[str, Any]:
    return {
        "schema": "qflow.plan/v1", "module": module, "created_at": f"2026-11-25T10:00:{seed:02d}+00:00",
        "inputs": [{"name": "tokens", "sha256": "ab" * 32}],
        "config": {"seed": seed, "qaoa": False, "baselines": baselines, "capacity_factor": capacity_factor},
        "solver": {"requested": "classical", "ran": "classical", "fallbacks": []},
        "result": {}, "metrics": {"load_imbalance": imbalance, "dropped_tokens": 3 * seed, "optimum_kind": "exact",
                                  "feasible": True},
        "baselines": {"hash": {"load_imbalance": 2.0}}, "timings_s": {"route": 0.5, "exact": 0.1},
    }


def open_page() -> AppTest:
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def chart_specs(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def test_every_module_is_offered_and_an_empty_history_says_so(store: RunStore) -> None:
    at = open_page()
    assert at.title[0].value == "Compare runs"
    assert at.selectbox(key="compare_module").options == [c.name for c in available_commands()]
    assert any("No stored runs of **routing** yet" in info.value for info in at.info)
    assert at.button(key="compare_run_all").label == "Run all configurations"
    # One toggle per boolean config field, per configuration (two by default).
    routing = next(c for c in available_commands() if c.name == "routing")
    assert [t.label for t in at.toggle] == routing.config_cls.toggles() * 2
    assert not at.get("plotly_chart")


def test_stored_runs_side_by_side_with_differences_highlighted(store: RunStore) -> None:
    first = store.save(fake_plan("routing", 1, 1.25, 1.10))
    second = store.save(fake_plan("routing", 2, 2.0, 1.02, baselines=False))
    store.save(fake_plan("hpo", 3, 1.0, 9.0))  # another module: never offered here
    at = open_page()
    picker = at.multiselect(key="compare_runs")
    assert picker.value == [second, first]  # the newest two by default
    assert set(picker.options) == {compare.run_label(r.to_dict()) for r in store.list(module="routing")}

    metrics = at.dataframe[0].value
    assert list(metrics.index) == ["load_imbalance", "dropped_tokens"]  # numeric scalars only (no text, no bools)
    assert metrics.loc["load_imbalance"].tolist() == [1.02, 1.10] and metrics.loc["dropped_tokens"].tolist() == [6, 3]
    config_md = " ".join(m.value for m in at.markdown)
    assert "differs in: `seed`, `baselines`, `capacity_factor`" in config_md

    bars, timings = chart_specs(at)
    titles = [a["text"] for a in bars["layout"]["annotations"]]
    assert {"load_imbalance", "dropped_tokens"} <= set(titles) and "hash" in titles  # baseline drawn per panel
    heights = {(t["x"][0], t["xaxis"]): t["y"][0] for t in bars["data"]}
    assert heights[(f"#{second}", "x")] == 1.02 and heights[(f"#{first}", "x")] == 1.10
    assert {t["name"] for t in timings["data"]} == {"route", "exact"}
    assert all(axis["type"] == "category" for key, axis in bars["layout"].items() if key.startswith("xaxis"))

    picker.unselect(second).run()
    assert not at.exception and at.dataframe[0].value.columns.tolist() == [f"#{first}"]
    assert "(identical)" in " ".join(m.value for m in at.markdown)


def test_switching_module_lists_that_modules_runs(store: RunStore) -> None:
    store.save(fake_plan("routing", 1, 1.25, 1.1))
    hpo = store.save(fake_plan("hpo", 3, 1.0, 9.0))
    at = open_page()
    at.selectbox(key="compare_module").set_value("hpo").run()
    assert not at.exception
    assert at.multiselect(key="compare_runs").value == [hpo]
    hpo_cmd = next(c for c in available_commands() if c.name == "hpo")
    assert [t.label for t in at.toggle] == hpo_cmd.config_cls.toggles() * 2


def wait_for_batch(at: AppTest, timeout_s: float = 120) -> AppTest:
    """Rerun the page until the batch job has finished and its outcome is shown."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        at.run()
        assert not at.exception, at.exception
        if at.success or at.warning or (at.error and not at.get("progress")):
            return at
    pytest.fail("the batch did not finish")


def test_run_two_configurations_at_once_stores_and_compares_them(store: RunStore) -> None:
    at = open_page()
    at.selectbox(key="compare_module").set_value("hpo").run()
    at.toggle(key="compare_hpo_c1_baselines").set_value(False)
    at.text_input(key="compare_hpo_c1_set").input("suggest=2, seed=5")
    at.button(key="compare_run_all").click().run()
    assert not at.exception
    wait_for_batch(at)
    assert "Ran 2 configuration(s)" in at.success[0].value
    runs = store.list(module="hpo")
    assert len(runs) == 2 and {r.origin for r in runs} == {"app"}
    by_seed = {r.config["seed"]: r for r in runs}
    assert by_seed[5].config["baselines"] is False and by_seed[5].config["suggest"] == 2
    assert by_seed[0].config["baselines"] is True and by_seed[0].config["suggest"] == 4
    assert len(store.get(by_seed[5].id).plan["result"]["suggestions"]) == 2
    # The new runs are the ones compared, their differences named.
    assert sorted(at.multiselect(key="compare_runs").value) == sorted(r.id for r in runs)
    config_md = next(m.value for m in at.markdown if m.value.startswith("**Config**"))
    assert sorted(config_md.split("differs in: ")[1].rstrip(")").replace("`", "").split(", ")) == [
        "baselines", "seed", "suggest"]
    # The batch ranked by the advisor's ranking: its trade-off chart, then the two charts of the runs compared.
    assert [chart.key for chart in at.get("plotly_chart")] == [
        "compare_ranking_tradeoff", "compare_metrics_chart", "compare_timings_chart"]
    ranking = next(frame.value for frame in at.dataframe if "best_value" in frame.value.columns)
    assert sorted(ranking["rank"]) == [1, 2]

    # Same configurations again: cached, and stored once (same plans).
    at.button(key="compare_run_all").click().run()
    wait_for_batch(at)
    assert store.count("hpo") == 2


def test_malformed_settings_are_refused_before_running(store: RunStore) -> None:
    at = open_page()
    at.text_input(key="compare_routing_c0_set").input("capacity_factor=-1").run()
    assert any("configuration 1: config.capacity_factor" in e.value for e in at.error)
    assert at.button(key="compare_run_all").disabled
    at.text_input(key="compare_routing_c0_set").input("no equals sign").run()
    assert any("not NAME=VALUE" in e.value for e in at.error)


def test_bad_uploaded_input_is_reported_per_configuration(store: RunStore) -> None:
    at = open_page()
    at.file_uploader(key="compare_routing_tokens_upload").upload("tokens.csv", b"token_id,source,complexity\nt0,s0,oops\n")
    at.file_uploader(key="compare_routing_model_graph_upload").upload(
        "model_graph.json", (ROOT / "sample_data" / "routing" / "model_graph.json").read_bytes())
    at.run()
    at.button(key="compare_run_all").click().run()
    wait_for_batch(at)
    errors = [e.value for e in at.error]
    assert sum(e.startswith("Configuration ") and "tokens.csv" in e for e in errors) == 2
    assert store.count() == 0


def ranking_table(at: AppTest) -> list[dict[str, Any]]:
    return next(frame.value for frame in at.dataframe if "total_affinity" in frame.value.columns).to_dict("records")


def test_batch_is_ranked_by_the_advisors_ranking_and_shares_the_module_pages_jobs(store: RunStore) -> None:
    """Hash routing (the deterministic fallback) first, the optimiser second: the optimiser's total affinity is
    higher by construction and hash routing is nowhere near 1 % of it, so it ranks first for every goal."""
    from page_helpers import click_run
    from page_helpers import open_page as open_module_page

    at = open_page()
    at.toggle(key="compare_routing_c0_deterministic_fallback").set_value(True)
    at.button(key="compare_run_all").click().run()
    wait_for_batch(at)
    runs = {r.config["deterministic_fallback"]: r for r in store.list(module="routing")}
    hashed, optimised = runs[True], runs[False]
    assert optimised.metrics["total_affinity"] > 1.01 * hashed.metrics["total_affinity"]
    for goal in ("balanced", "quality", "speed"):
        at.segmented_control(key="compare_goal").set_value(goal).run()
        assert not at.exception
        rows = sorted(ranking_table(at), key=lambda row: row["rank"])
        assert [row["candidate"] for row in rows] == [f"configuration 2 (#{optimised.id})", f"configuration 1 (#{hashed.id})"]
        assert [row["total_affinity"] for row in rows] == [optimised.metrics["total_affinity"], hashed.metrics["total_affinity"]]
        assert rows[0]["seconds"] == pytest.approx(sum(optimised.timings_s.values()))
        assert any(m.value.startswith(f"**Ranked for {goal}** on `total_affinity` (higher is better)") for m in at.markdown)

    # No second runner: the module page's Run on the same input and settings is the batch's own job, so it hands
    # back the very plan the batch made (same creation time) instead of planning again.
    page = click_run(open_module_page("routing"), "routing")
    assert page.session_state["routing_run"].plan["created_at"] == store.get(optimised.id).plan["created_at"]
    assert store.count("routing") == 2
