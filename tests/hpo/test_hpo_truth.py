"""What the plan claims is what it did: solver.ran names only proposers whose points were used; settings without effect say why."""

from __future__ import annotations

import pytest
from hpo_helpers import MIXED_SPACE, mixed_history

from qflow.hpo import plan_hpo

BRANIN = {"objective": "branin", "baselines": False, "vqc_steps": 2}


def test_gp_requested_but_every_point_from_the_initial_design_is_reported_as_random():
    plan = plan_hpo(None, None, {**BRANIN, "n_trials": 3, "n_initial": 5, "suggest": 1})
    assert plan.metrics["trials_by_method"] == {"initial": 3} and plan.result["suggestion_method"] == "initial"
    assert plan.solver.requested == "gp-ei" and plan.solver.ran == "random"
    assert "gp-ei proposed no point (0 VQC and 0 GP-EI proposals" in plan.solver.fallbacks[0].reason


@pytest.mark.quantum
def test_hybrid_whose_vqc_never_proposes_says_gp_ei():
    plan = plan_hpo(None, None, {**BRANIN, "hybrid": True, "hybrid_switch": 0, "n_trials": 6, "n_initial": 4, "suggest": 1})
    assert plan.metrics["trials_by_method"] == {"initial": 4, "gp-ei": 2}
    assert plan.solver.ran == "gp-ei" and plan.solver.fallbacks[-1].reason.startswith("vqc proposed no point")


@pytest.mark.quantum
def test_hybrid_that_never_reaches_its_switch_says_vqc():
    plan = plan_hpo(MIXED_SPACE, mixed_history(8), {"hybrid": True, "vqc_steps": 2, "suggest": 2})
    assert plan.result["suggestion_method"] == "vqc"
    assert plan.solver.ran == "vqc" and "the GP's turn never came: hybrid_switch=12" in plan.solver.fallbacks[-1].reason


def test_a_gp_plan_that_used_the_gp_keeps_its_name():
    plan = plan_hpo(None, None, {**BRANIN, "n_trials": 6, "n_initial": 4, "suggest": 1})
    assert plan.solver.ran == "gp-ei" and not plan.solver.fallbacks


@pytest.mark.parametrize(("settings", "note"), [
    ({"objective": "branin", "noise_std": 0.5}, "noise_std set but without effect: only the hartmann6_noisy objective adds noise"),
    ({"objective": "branin", "vqc_layers": 3}, "vqc_layers set but without effect: only the VQC uses them"),
    ({"objective": "branin", "hybrid_switch": 4}, "hybrid_switch set but without effect: hybrid is off"),
    ({"objective": "branin", "model": "hist_gradient_boosting", "cv_folds": 5},
     "model, cv_folds set but without effect: only the train objective fits a model"),
    ({"objective": "none", "n_trials": 50}, "n_trials, baselines set but without effect: suggest mode (objective none) evaluates nothing"),
    ({"objective": "branin", "warm_start": False}, "warm_start set but without effect: no history was given"),
])
def test_settings_without_effect_say_why(settings, note):
    space = MIXED_SPACE if settings["objective"] == "none" else None
    history = mixed_history(6) if settings["objective"] == "none" else None
    plan = plan_hpo(space, history, {"n_trials": 4, "n_initial": 4, "baselines": False, "suggest": 1, **settings})
    assert any(d.startswith(note) for d in plan.diagnostics), plan.diagnostics


def test_defaults_raise_no_such_note():
    plan = plan_hpo(MIXED_SPACE, mixed_history(6), {"suggest": 1})
    assert not any("without effect" in d for d in plan.diagnostics)


def test_optimiser_against_random_search_row_and_warning():
    plan = plan_hpo(None, None, {"objective": "branin", "n_trials": 6, "n_initial": 5, "suggest": 1})
    [row] = plan.result["learned_components"]
    own = min(t["value"] for t in plan.result["trials"])
    base = plan.baselines["random_search"]["best_value"]
    assert row == {"component": "gp-ei", "measure": "best_value (minimize)", "value": own, "baseline": "random_search",
                   "baseline_value": base, "beats_baseline": own < base, "acted_on": True}
    assert any("is not better than random search's" in d for d in plan.diagnostics) == (own >= base)


def test_no_row_without_baselines_or_in_suggest_mode():
    assert plan_hpo(None, None, {**BRANIN, "n_trials": 6, "n_initial": 4, "suggest": 1}).result["learned_components"] == []
    assert plan_hpo(MIXED_SPACE, mixed_history(6), {"suggest": 1}).result["learned_components"] == []
