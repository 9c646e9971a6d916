"""Schedulers: dependencies and GPU counts never violated, budget respected when feasible, infeasibility explicit."""

from __future__ import annotations

import numpy as np
import pytest
from energy_helpers import chain_jobs, random_problem, small_inputs
from hypothesis import given, settings
from hypothesis import strategies as st

from qflow.core.errors import InfeasibleError
from qflow.energy import plan_energy
from qflow.energy._schedule import (
    Problem,
    Schedule,
    asap_schedule,
    check_schedule,
    list_schedule,
    lower_bound_w,
    per_node_schedule,
    power_profile,
)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n_jobs=st.integers(1, 14))
def test_every_scheduler_keeps_dependencies_and_gpu_counts(seed: int, n_jobs: int) -> None:
    problem = random_problem(np.random.default_rng(seed), n_jobs)
    asap = asap_schedule(problem)
    horizon = int(np.ceil(1.5 * asap.makespan(problem)))
    caps = np.full(problem.n_nodes, 0.5 * problem.power_w.sum() / problem.n_nodes)
    listed = list_schedule(problem, horizon, None, horizon_is_auto=True)
    for schedule in (asap, per_node_schedule(problem, caps), per_node_schedule(problem, None), listed.schedule):
        assert check_schedule(problem, schedule) == []
        # no schedule within the horizon can beat the lower bound
        assert power_profile(problem, schedule).max() >= lower_bound_w(problem, max(horizon, schedule.makespan(problem))) - 1e-6
    assert listed.schedule.makespan(problem) <= horizon
    assert power_profile(problem, listed.schedule).max() <= power_profile(problem, asap).max() + 1e-6


def test_check_schedule_catches_a_broken_dependency_and_an_overfull_node() -> None:
    problem = Problem(np.array([2, 1]), np.array([100.0, 100.0]), np.array([1, 1]), np.array([-1, -1]), [[], [0]], np.array([1]))
    bad = check_schedule(problem, Schedule(np.array([0, 1]), np.array([0, 0])))
    assert any("before its dependency" in b for b in bad) and any("over its GPU count" in b for b in bad)
    assert check_schedule(problem, Schedule(np.array([0, 2]), np.array([0, 0]))) == []


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), slack=st.floats(1.0, 1.6))
def test_the_list_scheduler_stays_under_a_feasible_budget(seed: int, slack: float) -> None:
    problem = random_problem(np.random.default_rng(seed), 10)
    asap = asap_schedule(problem)
    horizon = int(np.ceil(1.5 * asap.makespan(problem)))
    # A budget the list scheduler itself proved feasible (its best cap), loosened by `slack`.
    best = list_schedule(problem, horizon, None, horizon_is_auto=False)
    budget = best.cap_w * slack
    result = list_schedule(problem, horizon, budget, horizon_is_auto=False)
    assert power_profile(problem, result.schedule).max() <= budget + 1e-6
    assert result.schedule.makespan(problem) <= horizon and check_schedule(problem, result.schedule) == []


def test_budget_below_the_largest_job_is_infeasible_naming_the_job() -> None:
    inputs = small_inputs(chain_jobs())
    with pytest.raises(InfeasibleError) as info:
        plan_energy(inputs, {"power_budget_w": 850})
    assert info.value.message == ("config: power_budget_w: budget below the largest single job; "
                                  "expected at least 900 W (job c), got 850 W")


def test_budget_below_the_lower_bound_for_an_explicit_horizon_is_infeasible() -> None:
    inputs = small_inputs(chain_jobs())
    energy = sum(j["power_w"] * j["duration"] for j in chain_jobs())  # 7650 W x slots
    with pytest.raises(InfeasibleError, match=r"lower bound for 5 slots is 1530 W"):
        plan_energy(inputs, {"power_budget_w": 1000, "horizon": 5})
    assert energy / 5 == 1530


def test_a_horizon_shorter_than_the_critical_path_is_infeasible() -> None:
    with pytest.raises(InfeasibleError, match=r"horizon: shorter than the critical path.*at least 4 slots, got 3 slots"):
        plan_energy(small_inputs(chain_jobs()), {"horizon": 3})


def test_an_auto_horizon_is_extended_to_meet_a_tight_budget() -> None:
    plan = plan_energy(small_inputs(chain_jobs()), {"power_budget_w": 950, "objective": "min_peak"})
    assert plan.metrics["budget_respected"] and plan.metrics["peak_power_w"] <= 950
    assert any("extended" in d for d in plan.diagnostics)
    assert plan.metrics["makespan_slots"] == plan.metrics["horizon_slots"]


def test_the_plan_schedule_keeps_dependencies_nodes_and_the_budget() -> None:
    jobs = chain_jobs()
    plan = plan_energy(small_inputs(jobs, budget=1700), {"gnn_steps": 20})
    rows = {r["job"]: r for r in plan.result["schedule"]}
    assert set(rows) == {j["id"] for j in jobs}
    for job in jobs:
        for dep in job.get("deps", []):
            assert rows[job["id"]]["start"] >= rows[dep]["end"]
        assert rows[job["id"]]["end"] - rows[job["id"]]["start"] == job["duration"]
    assert rows["g"]["node"] == "n1"
    timeline = plan.result["power_timeline_w"]["plan"]
    assert max(timeline) == pytest.approx(plan.metrics["peak_power_w"]) and max(timeline) <= 1700
    assert plan.result["power_budget_source"] == "topology"
    bound = max(900, 7650 / plan.metrics["horizon_slots"])
    assert plan.metrics["lower_bound_w"] == pytest.approx(bound)
    assert plan.metrics["gap_to_lower_bound"] == pytest.approx(plan.metrics["peak_power_w"] / bound - 1, abs=1e-6)
    assert plan.metrics["peak_power_w"] <= plan.baselines["asap"]["peak_power_w"]
