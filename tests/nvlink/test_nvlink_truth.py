"""What the plan claims is what it did: learned parts against their trivial baselines, QAOA adoption, settings without effect."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from nvlink_helpers import FAST, JOBS, contention_logs, node_fabric

from qflow.nvlink import plan_nvlink
from qflow.nvlink._sample import IRREGULAR_7


def test_a_classifier_that_loses_to_the_majority_class_is_not_acted_on():
    plan = plan_nvlink(node_fabric(), JOBS, {"rl_planner": False}, logs=contention_logs(informative=False))
    c = plan.result["classifier"]
    assert c["held_out_accuracy"] <= c["majority_class_accuracy"]  # noise labels: it cannot beat always answering 0
    assert c["acted_on"] is False
    assert all(p["congested"] is None and isinstance(p["model_call"], bool) for p in c["predictions"].values())
    assert any("does not beat always answering the majority class" in d for d in plan.diagnostics)
    [row] = plan.result["learned_components"]
    assert row == {"component": "contention_classifier", "measure": "held_out_accuracy (higher is better)",
                   "value": c["held_out_accuracy"], "baseline": "majority_class", "baseline_value": c["majority_class_accuracy"],
                   "beats_baseline": False, "acted_on": False}


def test_a_classifier_that_beats_the_majority_class_makes_its_calls():
    plan = plan_nvlink(node_fabric(), JOBS, {"rl_planner": False}, logs=contention_logs(informative=True))
    c = plan.result["classifier"]
    assert c["held_out_accuracy"] > c["majority_class_accuracy"] and c["acted_on"] is True
    assert all(p["congested"] == p["model_call"] for p in c["predictions"].values())
    assert not any("majority class" in d for d in plan.diagnostics)
    assert 0.0 <= c["held_out_balanced_accuracy"] <= 1.0


def test_rl_planner_row_matches_the_routing_used():
    plan = plan_nvlink(node_fabric(), JOBS, {"classifier": False, "rl_episodes": 20})
    [row] = plan.result["learned_components"]
    assert row["component"] == "rl_planner" and row["baseline"] == "weighted_ecmp"
    assert row["acted_on"] == (plan.metrics["routing_policy"] == "rl_q_learning") == plan.result["rl"]["adopted"]
    assert row["beats_baseline"] == (row["value"] < row["baseline_value"])
    if not row["acted_on"]:
        assert plan.metrics["estimated_collective_time_s"] == pytest.approx(row["baseline_value"])


@pytest.mark.parametrize(("settings", "logs", "note"), [
    ({"qaoa_layers": 3}, None, "qaoa_layers set but without effect: only the QAOA recolouring uses them and qaoa_optimizer is off"),
    ({"rl_episodes": 10}, None, "rl_episodes set but without effect: rl_planner is off"),
    ({"classifier": True, "classifier_samples": 100}, "informative",
     "classifier_samples set but without effect: the classifier trains on the uploaded logs, not simulated runs"),
    ({}, "informative", "logs were given but the classifier is off: they were validated and not used"),
])
def test_settings_without_effect_say_why(settings, logs, note):
    plan = plan_nvlink(node_fabric(), JOBS, {**FAST, **settings}, logs=None if logs is None else contention_logs(informative=True))
    assert note in plan.diagnostics


def test_default_settings_raise_no_such_note():
    plan = plan_nvlink(node_fabric(), JOBS, FAST)
    assert not any("without effect" in d for d in plan.diagnostics)


@pytest.mark.quantum
def test_qaoa_whose_answers_were_not_used_is_not_in_solver_ran(monkeypatch):
    import qflow.nvlink._quantum as nvq

    real = nvq.run_qaoa

    def never_optimal(*args, **kwargs):  # QAOA that always lands one conflict above the optimum
        result = real(*args, **kwargs)
        return dataclasses.replace(result, energy=result.energy + 1.0)

    monkeypatch.setattr(nvq, "run_qaoa", never_optimal)
    jobs = {"jobs": [{"id": "irregular", "ranks": 7, "traffic": (np.array(IRREGULAR_7) * 1e6).tolist()}]}
    plan = plan_nvlink(node_fabric(), jobs, {**FAST, "qaoa_optimizer": True, "max_qubits": 10, "qaoa_steps": 5})
    assert plan.solver.ran == "classical" and plan.solver.quantum is not None  # it ran, and says so
    assert "no move was applied from its answers" in plan.solver.fallbacks[-1].reason
    assert plan.metrics["recolouring_moves_from_qaoa"] == 0
    assert all(b["used"] == "exact" for b in plan.solver.quantum.blocks if "used" in b)
    assert plan.metrics["rounds"] == 7  # the exact block solver still removed the extra round
