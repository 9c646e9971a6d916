"""The advisor: one ranking by goal, measured candidates, rules checked against measurements, budget, front ends."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from qflow.advisor import PROTECTED_FIELDS, RULES, check_rules, plan_advice, rank_candidates
from qflow.api import create_app
from qflow.cli import main
from qflow.core.commands import load_command
from qflow.core.errors import InputError
from qflow.core.runs import RunStore


def _routing_files(folder: Path, n_tokens: int = 120) -> dict[str, Path | None]:
    """A small routing instance: 2 nodes x 2 experts, ``n_tokens`` tokens with random scores."""
    rng = np.random.default_rng(3)
    scores = rng.dirichlet(np.ones(4), size=n_tokens)
    frame = pd.DataFrame(scores, columns=[f"score_{e}" for e in range(4)])
    frame.insert(0, "token_id", [f"t{i}" for i in range(n_tokens)])
    frame.insert(1, "source", [f"n{s}" for s in rng.integers(0, 2, n_tokens)])
    frame.insert(2, "complexity", 1)
    tokens = folder / "tokens.csv"
    frame.to_csv(tokens, index=False)
    graph = {"nodes": [{"id": f"n{i}", "gpus": [f"n{i}-g0"]} for i in range(2)],
             "experts": [{"id": f"e{k}", "node": f"n{k // 2}"} for k in range(4)]}
    model_graph = folder / "model_graph.json"
    model_graph.write_text(json.dumps(graph))
    return {"tokens": tokens, "model_graph": model_graph, "token_metadata": None}


ROUTING = load_command("routing")
AMPLE = {"capacity_factor": 4.0, "locality_weight": 0.3}


# ---------------------------------------------------------------- ranking (pure)

def test_rank_quality_speed_balanced_higher_is_better() -> None:
    rows = [{"quality": 100.0, "seconds": 10.0}, {"quality": 99.5, "seconds": 1.0},
            {"quality": 60.0, "seconds": 0.1}, {"quality": None, "seconds": 0.01}]
    assert rank_candidates(rows, "higher", "quality")[0] == 0
    assert rank_candidates(rows, "higher", "speed")[0] == 1  # within 1 % of 100, ten times faster
    assert rank_candidates(rows, "higher", "balanced")[0] == 1  # the knee: near-best quality, near-best time
    for goal in ("quality", "speed", "balanced"):
        assert rank_candidates(rows, "higher", goal)[-1] == 3  # unmeasured last, however fast


def test_rank_lower_is_better_and_speed_tolerance_is_one_percent() -> None:
    rows = [{"quality": 10.0, "seconds": 5.0}, {"quality": 10.2, "seconds": 1.0}, {"quality": 10.05, "seconds": 2.0}]
    assert rank_candidates(rows, "lower", "quality") == [0, 2, 1]
    assert rank_candidates(rows, "lower", "speed")[0] == 2  # 10.2 is 2 % worse: not eligible; 10.05 is
    with pytest.raises(ValueError):
        rank_candidates(rows, "lower", "fastest")


def test_balanced_tie_between_two_extremes_goes_to_quality() -> None:
    # measured on the energy sample: the given config is best on makespan, the GNN-off one on time
    rows = [{"quality": 43.0, "seconds": 9.3}, {"quality": 51.0, "seconds": 0.2}]
    assert rank_candidates(rows, "lower", "balanced") == [0, 1]
    assert rank_candidates(rows, "lower", "speed") == [0, 1]  # 51 is not within 1 % of 43


# ---------------------------------------------------------------- rules

def test_no_rule_touches_a_protected_field() -> None:
    for module, rules in RULES.items():
        check_rules(module, rules)
        assert module in PROTECTED_FIELDS
    bad = [{"row": "loosen capacity", "when": lambda d: True, "settings": {"capacity_factor": 9.0},
            "expects": {"metric": "seconds", "better": "lower"}}]
    with pytest.raises(ValueError, match="capacity_factor"):
        check_rules("routing", bad)


def test_rule_setting_a_protected_field_is_refused_before_running(tmp_path: Path) -> None:
    bad = [{"row": "hint bonus up", "when": lambda d: True, "settings": {"hint_bonus": 2.0},
            "expects": {"metric": "total_affinity", "better": "higher"}}]
    with pytest.raises(ValueError, match="hint_bonus"):
        plan_advice("routing", _routing_files(tmp_path), ROUTING.config_cls(), rules=bad)


# ---------------------------------------------------------------- engine on a routing instance

def test_baselines_off_measured_same_quality_and_objective_kept(tmp_path: Path) -> None:
    config = ROUTING.config_cls.from_mapping(AMPLE, "test")
    contradicted = {"row": "baselines off raises affinity", "when": lambda d: True, "settings": {"baselines": False},
                    "expects": {"metric": "total_affinity", "better": "higher"}}
    never = {"row": "never matches", "when": lambda d: False, "settings": {"qaoa": True},
             "expects": {"metric": "total_affinity", "better": "higher"}}
    plan = plan_advice("routing", _routing_files(tmp_path), config, goal="speed", rules=[contradicted, never])
    result = plan.result
    assert plan.schema_ == "qflow.plan/v1" and plan.module == "routing"
    given, candidate = result["candidates"]
    assert candidate["config"]["baselines"] is False and given["config"]["baselines"] is True
    # baselines only report: the routing, hence the primary metric, is identical
    assert candidate["quality"] == given["quality"] and given["quality"] is not None
    # the rule predicted a higher affinity; the measurement says equal
    assert result["rules"][0] == {**result["rules"][0], "matched": True, "agreed": False}
    assert result["rules"][1]["matched"] is False and result["rules"][1]["agreed"] is None
    # speed: both are within 1 % of the best, so the faster one (by its own measured seconds) wins
    faster = min(result["candidates"], key=lambda row: row["seconds"])
    assert result["recommended"] == faster["config"]
    for row in result["candidates"]:
        for name in PROTECTED_FIELDS["routing"]:
            assert row["config"][name] == config.model_dump()[name]
    assert result["skipped"] == [] and plan.metrics["candidates_run"] == 2


def test_budget_spent_candidates_are_skipped_and_listed(tmp_path: Path) -> None:
    rules = [{"row": f"rule {i}", "when": lambda d: True, "settings": {"baselines": False},
              "expects": {"metric": "seconds", "better": "lower"}} for i in range(2)]
    plan = plan_advice("routing", _routing_files(tmp_path), ROUTING.config_cls(), budget_s=1e-6, rules=rules)
    assert plan.result["skipped"] == ["rule 0", "rule 1"]
    assert [row["name"] for row in plan.result["candidates"]] == ["given"]
    assert all(rule["agreed"] is None for rule in plan.result["rules"])
    assert plan.result["recommended"] == ROUTING.config_cls().model_dump()
    assert plan.metrics["candidates_skipped"] == 2


def test_bad_goal_and_module_are_input_errors(tmp_path: Path) -> None:
    files = _routing_files(tmp_path)
    with pytest.raises(InputError, match="goal"):
        plan_advice("routing", files, ROUTING.config_cls(), goal="fastest")
    with pytest.raises(InputError, match="advisor"):
        plan_advice("placement", files, ROUTING.config_cls())


# ---------------------------------------------------------------- front ends

def test_cli_advise_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = _routing_files(tmp_path)
    out = tmp_path / "advice.json"
    args = ["advise", "routing", "--tokens", str(files["tokens"]), "--model-graph", str(files["model_graph"])]
    assert main([*args, "--goal", "quality", "--budget-s", "30", "--out", str(out)]) == 0
    plan = json.loads(out.read_text())
    assert plan["module"] == "routing" and plan["config"]["goal"] == "quality"
    assert "recommended" in capsys.readouterr().out
    missing = ["advise", "routing", "--tokens", str(tmp_path / "nope.csv"), "--model-graph", str(files["model_graph"])]
    assert main(missing) == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--goal", "fastest"])
    assert exit_info.value.code == 2


def test_api_advise_200_and_422(tmp_path: Path) -> None:
    files = _routing_files(tmp_path)
    uploads = {"tokens": ("tokens.csv", files["tokens"].read_bytes()),
               "model_graph": ("model_graph.json", files["model_graph"].read_bytes())}
    with TestClient(create_app(store=RunStore(tmp_path / "runs.db")), raise_server_exceptions=False,
                    base_url="http://localhost") as client:
        ok = client.post("/v1/routing/advise", files=uploads, data={"goal": "speed", "budget_s": "20"})
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["module"] == "routing" and body["result"]["goal"] == "speed"
        assert body["result"]["candidates"][0]["name"] == "given"
        bad_goal = client.post("/v1/routing/advise", files=uploads, data={"goal": "fastest"})
        assert bad_goal.status_code == 422 and "goal" in bad_goal.json()["detail"]
        bad_file = client.post("/v1/routing/advise", files={**uploads, "tokens": ("tokens.csv", b"x,y\n1,2\n")})
        assert bad_file.status_code == 422


def test_console_advice_tables_from_a_real_advice(tmp_path: Path) -> None:
    from ui.advise import advise_job, candidates_frame, rules_frame, tradeoff_figure

    files = _routing_files(tmp_path)
    uploads = {"tokens": ("tokens.csv", files["tokens"].read_bytes()),
               "model_graph": ("model_graph.json", files["model_graph"].read_bytes()), "token_metadata": None}
    config_json = ROUTING.config_cls().model_dump_json()
    plan = advise_job("routing", uploads, config_json, "quality", 30.0, _progress=lambda f, m: None)
    candidates = candidates_frame(plan["result"])
    assert list(candidates["rank"]) == sorted(candidates["rank"]) and candidates.iloc[0]["rank"] == 1
    assert "total_affinity" in candidates.columns
    assert len(rules_frame(plan)) == len(RULES["routing"])
    points = tradeoff_figure(plan["result"]).data[0]
    measured = [row for row in plan["result"]["candidates"] if row["quality"] is not None]
    assert list(points.y) == [row["quality"] for row in measured] and list(points.x) == [row["seconds"] for row in measured]
    starred = [name for name, symbol in zip(points.text, points.marker.symbol, strict=True) if symbol == "star"]
    assert starred == [plan["result"]["recommended_candidate"]]
    bad = advise_job("routing", {**uploads, "tokens": ("tokens.csv", b"x\n1\n")}, config_json, "quality", 30.0,
                     _progress=lambda f, m: None)
    assert set(bad) == {"error"} and "tokens.csv" in bad["error"]


def test_every_rule_sets_real_fields_with_valid_values() -> None:
    for module, rules in RULES.items():
        config_cls = load_command(module).config_cls
        for rule in rules:
            assert set(rule["settings"]) <= set(config_cls.model_fields), rule["row"]
            config_cls.from_mapping(rule["settings"], rule["row"])  # raises on a value out of bounds
            assert rule["expects"]["better"] in ("higher", "lower")


def test_use_these_settings_copies_the_changes_into_the_page_widgets() -> None:
    from streamlit.testing.v1 import AppTest

    def page() -> None:
        import streamlit as st

        from ui.advise import apply_recommendation

        st.button("use", on_click=apply_recommendation, args=("routing", {"baselines": False, "qaoa_layers": 3}))
        st.toggle("baselines", value=True, key="routing_baselines")
        st.number_input("qaoa_layers", value=2, key="routing_qaoa_layers")

    at = AppTest.from_function(page).run()
    assert at.toggle[0].value is True and at.number_input[0].value == 2
    at.button[0].click().run()
    assert not at.exception
    assert at.toggle[0].value is False and at.number_input[0].value == 3


# ---------------------------------------------------------------- one ranking: the advisor's and Compare's batch runs

def test_advisor_and_compare_batch_rank_the_best_by_construction_first(tmp_path: Path) -> None:
    """Given hash routing (the deterministic fallback); the optimiser's total affinity is higher by construction
    and hash routing's is far outside 1 % of it, so the optimiser ranks first for every goal, in both front ends."""
    from qflow.advisor import rank_plans
    from ui.compare import run_batch
    from ui.jobs import JobBoard

    files = _routing_files(tmp_path)
    uploads = {name: None if path is None else (path.name, path.read_bytes()) for name, path in files.items()}
    hashed = {**AMPLE, "deterministic_fallback": True}
    optimise = [{"row": "optimise instead of hashing", "when": lambda d: True, "settings": {"deterministic_fallback": False},
                 "expects": {"metric": "total_affinity", "better": "higher"}}]
    items: list[dict] = []
    run_batch(JobBoard(1), items, "routing", uploads, [hashed, {**AMPLE}], str(tmp_path / "runs.db"), lambda f, m: None)
    plans = [item["plan"] for item in items]
    assert [item["error"] for item in items] == [None, None] and plans[0]["solver"]["ran"] == "hash"
    assert plans[1]["metrics"]["total_affinity"] > 1.01 * plans[0]["metrics"]["total_affinity"]
    for goal in ("quality", "speed", "balanced"):
        advice = plan_advice("routing", files, ROUTING.config_cls.from_mapping(hashed, "test"), goal=goal, rules=optimise)
        assert advice.result["recommended_candidate"] == "rule 1"
        assert advice.result["recommended"]["deterministic_fallback"] is False
        ranking = rank_plans("routing", plans, goal, names=["hashed", "optimised"])
        assert ranking["recommended_candidate"] == "optimised" and ranking["protected_differ"] == []
        assert [row["rank"] for row in ranking["candidates"]] == [row["rank"] for row in advice.result["candidates"]]
        assert ranking["primary_metric"] == advice.result["primary_metric"] == {"metric": "total_affinity", "better": "higher"}
    assert RunStore(tmp_path / "runs.db").count("routing") == 2


def test_rank_plans_refuses_runs_on_different_objectives_and_modules_without_a_metric() -> None:
    from qflow.advisor import rank_plans

    minimise = {"config": {"direction": "minimize"}, "metrics": {"best_value": 1.0}, "timings_s": {"fit": 1.0}}
    maximise = {"config": {"direction": "maximize"}, "metrics": {"best_value": 2.0}, "timings_s": {"fit": 1.0}}
    with pytest.raises(InputError, match="different metrics"):
        rank_plans("hpo", [maximise, minimise], "quality")
    with pytest.raises(InputError, match="primary metric"):
        rank_plans("placement", [minimise], "quality")
    ranked = rank_plans("hpo", [minimise, {**minimise, "metrics": {"best_value": 0.5}}, None], "quality")
    assert [row["rank"] for row in ranked["candidates"]] == [2, 1, 3] and ranked["candidates"][2]["error"] == "no plan"
    assert ranked["protected_differ"] == []
    looser = {**minimise, "config": {"direction": "minimize", "n_trials": 60}}
    assert rank_plans("hpo", [minimise, looser], "quality")["protected_differ"] == ["n_trials"]
