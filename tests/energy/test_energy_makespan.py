"""The budget objective: shortest makespan under the budget, certified lower bound, exact MILP on small instances."""

from __future__ import annotations

import numpy as np
import pytest
from energy_helpers import chain_jobs, random_problem, small_inputs

from qflow.energy import plan_energy
from qflow.energy._makespan import exact_makespan, flatten_within, makespan_lower_bound, shortest_schedule, top_levels
from qflow.energy._schedule import Problem, asap_schedule, check_schedule, power_profile


def _budget(problem: Problem, share: float) -> float:
    peak = float(power_profile(problem, asap_schedule(problem)).max())
    return max(share * peak, float(problem.power_w.max()))


@pytest.mark.parametrize("seed", range(4))
def test_the_bound_never_exceeds_the_milp_optimum_and_the_search_is_valid(seed: int) -> None:
    problem = random_problem(np.random.default_rng(seed), 7, n_nodes=2, gpus=4)
    budget = _budget(problem, 0.5)
    found = shortest_schedule(problem, budget, iterations=8, seed=0)
    assert check_schedule(problem, found.schedule) == []
    assert power_profile(problem, found.schedule).max() <= budget * (1 + 1e-9)
    exact = exact_makespan(problem, budget, found.makespan, time_limit_s=30)
    assert exact["optimal"]
    # bound <= optimum <= heuristic: a bound above the optimum would be a false certificate
    assert found.lower_bound["bound"] <= exact["makespan"] <= found.makespan


def test_the_bound_components_on_a_hand_checked_instance() -> None:
    # a -> b chain of 2 + 3 slots at 300 W; c alone 4 slots at 400 W; budget 600 W: a/b and c cannot overlap
    problem = Problem(np.array([2, 3, 4]), np.array([300.0, 300.0, 400.0]), np.ones(3, int), -np.ones(3, int), [[], [0], []],
                      np.array([8]))
    bound = makespan_lower_bound(problem, 600.0)
    assert top_levels(problem).tolist() == [0, 2, 0]
    assert bound["critical_path"] == 5 and bound["energy"] == 6  # 3100 W-slots / 600 W = 5.17
    assert bound["disjunctive"] == 4  # only c is above half the budget
    found = shortest_schedule(problem, 600.0, iterations=0, seed=0)
    assert found.makespan == 9 and exact_makespan(problem, 600.0, 12)["makespan"] == 9  # c must run alone: 5 + 4


def test_the_tie_break_lowers_the_peak_without_lengthening() -> None:
    problem = random_problem(np.random.default_rng(11), 30, n_nodes=3, gpus=8)
    budget = _budget(problem, 0.7)
    found = shortest_schedule(problem, budget, iterations=4, seed=0)
    flat, _ = flatten_within(problem, found.schedule, budget)
    assert flat.makespan(problem) <= found.makespan and check_schedule(problem, flat) == []
    assert power_profile(problem, flat).max() <= found.peak_w + 1e-9


def test_the_default_objective_is_the_shortest_makespan_and_min_peak_keeps_the_old_plan() -> None:
    inputs = small_inputs(chain_jobs(), budget=1800)
    fast = plan_energy(inputs, {"gnn_steps": 10})
    flat = plan_energy(inputs, {"gnn_steps": 10, "objective": "min_peak"})
    m, o = fast.metrics, fast.result["objective"]
    assert o["name"] == "min_makespan" and flat.result["objective"]["name"] == "min_peak"
    assert m["budget_respected"] and m["peak_power_w"] <= 1800
    assert m["makespan_slots"] < flat.metrics["makespan_slots"]
    assert flat.metrics["peak_power_w"] <= m["peak_power_w"]
    assert m["makespan_lower_bound_slots"] == o["makespan_lower_bound_slots"] <= m["makespan_slots"]
    assert m["makespan_gap_to_lower_bound"] == pytest.approx(m["makespan_slots"] / m["makespan_lower_bound_slots"] - 1, abs=1e-6)
    # the min_peak plan reports its makespan gap too, against the same bound
    assert flat.metrics["makespan_lower_bound_slots"] == m["makespan_lower_bound_slots"]
    assert fast.result["horizon_slots"] == m["makespan_slots"]


def test_without_a_budget_the_peak_is_minimised_as_before() -> None:
    plan = plan_energy(small_inputs(chain_jobs()), {"gnn_steps": 10})
    assert plan.result["objective"]["name"] == "min_peak" and "no power budget" in plan.result["objective"]["why"]
    assert plan.metrics["makespan_lower_bound_slots"] is None


def test_the_plan_carries_a_budget_sweep_where_more_budget_never_costs_makespan_bound() -> None:
    plan = plan_energy(small_inputs(chain_jobs(), budget=1800), {"gnn_steps": 10})
    sweep = plan.result["objective"]["budget_sweep"]
    budgets = [row["budget_w"] for row in sweep]
    assert budgets == sorted(budgets) and 1800 in budgets and budgets[0] == 900  # from the largest job up
    for row in sweep:
        assert row["peak_w"] <= row["budget_w"] + 1e-6 and row["makespan_slots"] >= row["makespan_lower_bound_slots"]
    bounds = [row["makespan_lower_bound_slots"] for row in sweep]
    assert bounds == sorted(bounds, reverse=True)  # a larger budget can only loosen the bound
    mine = next(row for row in sweep if row["budget_w"] == 1800)
    assert plan.metrics["makespan_slots"] <= mine["makespan_slots"]  # the plan's own search tried more orders


def test_an_explicit_horizon_longer_than_the_shortest_makespan_is_kept_as_the_deadline() -> None:
    inputs = small_inputs(chain_jobs(), budget=1800)
    shortest = plan_energy(inputs, {"gnn_steps": 10}).metrics["makespan_slots"]
    plan = plan_energy(inputs, {"gnn_steps": 10, "horizon": shortest + 3})
    assert plan.result["objective"]["name"] == "min_makespan" and plan.metrics["makespan_slots"] == shortest
    assert plan.result["horizon_slots"] == shortest + 3 and plan.result["horizon_source"] == "config"
