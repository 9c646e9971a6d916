"""Multi-level windows: every bitstring decodes to its level, the spin expansion is the direct cost, only improvements applied."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from energy_helpers import small_inputs

from qflow.core.polynomial import PolynomialModel
from qflow.core.qaoa import solve_exact
from qflow.energy import plan_energy
from qflow.energy._levels import (
    LEVELS,
    apply_levels,
    build_level_window,
    decode_levels,
    encode_levels,
    greedy_levels,
    level_energies,
    level_model,
    level_slowdowns,
    level_window_cost,
)
from qflow.energy._schedule import Problem, Schedule, check_schedule, power_profile

#: Three independent 4-slot jobs on a roomy node, all running through slot 0.
PROBLEM = Problem(np.array([4, 4, 3]), np.array([2000.0, 1500.0, 1000.0]), np.ones(3, dtype=int), -np.ones(3, dtype=int),
                  [[], [], []], np.array([8]))
SCHEDULE = Schedule(np.zeros(3, dtype=int), np.zeros(3, dtype=int))
IDLE = np.array([100.0])


def window(max_qubits: int = 6, horizon: int = 20):
    return build_level_window(PROBLEM, SCHEDULE, 0, horizon, max_qubits, IDLE, 1.3, np.ones(3, dtype=bool))


def test_every_bitstring_decodes_to_its_level_and_back() -> None:
    for n_jobs in (1, 2, 3):
        for bits in itertools.product([0, 1], repeat=2 * n_jobs):
            levels = decode_levels(np.array(bits))
            assert levels.tolist() == [2 * bits[2 * i] + bits[2 * i + 1] for i in range(n_jobs)]
            assert encode_levels(levels).tolist() == list(bits)
    assert set(decode_levels(np.array([0, 0, 0, 1, 1, 0, 1, 1])).tolist()) == set(range(LEVELS))


def test_levels_slow_the_job_cut_its_power_and_keep_its_energy() -> None:
    w = window()
    slowdowns = level_slowdowns(1.3)
    i = w.jobs.tolist().index(0)
    assert w.duration[i].tolist() == [4, 5, 5, 6]  # ceil(4 x 1, 1.1, 1.2, 1.3)
    for level in range(LEVELS):
        busy = 100 + 1900 / slowdowns[level] ** 3  # idle part kept, dynamic part / s^3
        assert w.power_w[i, level] * w.duration[i, level] == pytest.approx(busy * 4 * slowdowns[level])
    assert (np.diff(w.power_w[i]) < 0).all()


def test_the_polynomial_and_the_enumeration_agree_with_a_brute_force() -> None:
    w = window()
    assert w.n == 6
    brute = np.array([level_window_cost(w, decode_levels(np.array(bits))) for bits in itertools.product([0, 1], repeat=w.n)])
    model = level_model(w)
    np.testing.assert_allclose(level_energies(w), brute, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(model.energies(), brute, rtol=1e-10, atol=1e-8)
    for bits in itertools.product([0, 1], repeat=w.n):
        assert model.energy(np.array(bits)) == pytest.approx(level_window_cost(w, decode_levels(np.array(bits))), rel=1e-10)
    assert max(len(wires) for wires in model.coefficients) == 4  # the square couples two jobs' two-bit products
    bits, best, _ = solve_exact(model)
    assert best == pytest.approx(brute.min()) and level_window_cost(w, decode_levels(bits)) == pytest.approx(brute.min())


def test_the_cost_is_the_squared_profile_of_the_applied_levels() -> None:
    w = window()
    levels = np.array([3, 0, 2])
    slowed = apply_levels(PROBLEM, w, levels)
    assert check_schedule(slowed, SCHEDULE) == []
    profile = power_profile(slowed, SCHEDULE, length=int(w.slots.max()) + 1) / 1000
    assert level_window_cost(w, levels) == pytest.approx(float(profile[w.slots] @ profile[w.slots]))
    assert slowed.energy_w_slots < PROBLEM.energy_w_slots  # cubic power, linear time: slower is cheaper when idle is small


def test_infeasible_levels_are_not_offered_and_decode_to_level_zero() -> None:
    w = window(horizon=5)  # job 0 and 1 may run 5 slots (levels 1, 2) but not 6; job 2 (3 slots) fits every level
    i = w.jobs.tolist().index(0)
    assert w.feasible[i].tolist() == [True, True, True, False]
    assert w.effective(np.array([3, 3, 3]))[i] == 0
    np.testing.assert_allclose(w.load_kw[i, 3], w.load_kw[i, 0])
    assert window(max_qubits=4).jobs.tolist() == [0, 1]  # two qubits per job, highest power first


def test_greedy_is_a_local_optimum_and_never_beats_the_exact() -> None:
    w = window()
    greedy = greedy_levels(w)
    exact = solve_exact(level_model(w))[1]
    assert level_window_cost(w, greedy) >= exact - 1e-9
    for i in range(greedy.shape[0]):
        for level in range(LEVELS):
            trial = greedy.copy()
            trial[i] = level
            assert level_window_cost(w, trial) >= level_window_cost(w, greedy) - 1e-9


def test_polynomial_model_terms_and_scaling() -> None:
    m = PolynomialModel(3, {(0, 1, 2): 2.0, (1,): -4.0}, 1.0)
    scaled, scale = m.scaled()
    assert scale == 4.0 and scaled.energies().tolist() == pytest.approx((m.energies() / 4).tolist())
    assert m.terms() == ([-4.0, 2.0], [(1,), (0, 1, 2)])


@pytest.mark.quantum
def test_a_plan_with_four_levels_applies_only_improvements_and_reports_them() -> None:
    jobs = [{"id": f"j{i}", "duration": 2 + i % 3, "power_w": 300.0 + 90 * i, "gpus": 1} for i in range(8)]
    plan = plan_energy(small_inputs(jobs, gpus=8), {"qaoa_scheduling": True, "power_levels": 4, "max_slowdown": 1.5,
                                                    "gnn_prediction": False, "max_qubits": 6, "qaoa_steps": 5, "qaoa_windows": 3})
    records = plan.result["windows"]
    assert records and plan.solver.quantum is not None and max(plan.solver.quantum.qubits_per_circuit) <= 6
    for r in records:
        assert r["exact_cost_kw2"] <= r["greedy_cost_kw2"] + 1e-6 and r["cost_check_abs_diff"] < 1e-6
        assert r["applied"] == (r["not_applied_reason"] is None)
    before = plan.baselines["list_before_windows"]
    assert plan.metrics["peak_power_w"] <= before["peak_power_w"] + 1e-6
    assert plan.metrics["jobs_slowed"] == len(plan.result["clock_levels"]["jobs"])
    assert plan.metrics["dependency_violations"] == 0


def test_every_mix_of_offered_levels_keeps_the_schedule_valid() -> None:
    from energy_helpers import random_problem

    from qflow.energy._schedule import asap_schedule

    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(25):
        problem = random_problem(rng, 10, n_nodes=2, gpus=3)
        schedule = asap_schedule(problem)
        horizon = schedule.makespan(problem) + 3
        for slot in range(schedule.makespan(problem)):
            w = build_level_window(problem, schedule, slot, horizon, 6, np.array([50.0, 80.0]), 1.5, np.ones(10, dtype=bool))
            if w is None:
                continue
            for levels in itertools.product(range(LEVELS), repeat=w.jobs.shape[0]):
                slowed = apply_levels(problem, w, np.array(levels))
                assert check_schedule(slowed, schedule) == []
                assert schedule.makespan(slowed) <= horizon
                checked += 1
    assert checked > 100


def test_where_the_slots_after_are_free_the_exact_levels_lower_the_peak_and_the_energy() -> None:
    w = window()
    bits, _, _ = solve_exact(level_model(w))
    slowed = apply_levels(PROBLEM, w, decode_levels(bits))
    assert decode_levels(bits).any()
    assert power_profile(slowed, SCHEDULE).max() < power_profile(PROBLEM, SCHEDULE).max()
    assert slowed.energy_w_slots < PROBLEM.energy_w_slots
