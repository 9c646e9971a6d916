"""Peak-slot windows: the Ising model is the window cost, QAOA's ratio matches brute force, only improvements applied."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from energy_helpers import small_inputs

from qflow.core.qaoa import approximation_ratio, solve_exact
from qflow.energy import plan_energy
from qflow.energy._meta import WindowController
from qflow.energy._quantum import apply_window, build_window, greedy_bits, window_cost, window_ising
from qflow.energy._schedule import Problem, Schedule, check_schedule, power_profile

#: Six independent jobs all running in slot 0 on a roomy node: every one can be deferred.
PROBLEM = Problem(np.array([1, 2, 1, 3, 1, 2]), np.array([900.0, 400.0, 700.0, 300.0, 650.0, 500.0]), np.ones(6, dtype=int),
                  -np.ones(6, dtype=int), [[] for _ in range(6)], np.array([8]))
SCHEDULE = Schedule(np.zeros(6, dtype=int), np.zeros(6, dtype=int))


def brute_force(window) -> np.ndarray:
    """The window cost of every bitstring, straight from the decisions (PennyLane order: wire 0 is the leading bit)."""
    return np.array([window_cost(window, np.array(bits)) for bits in itertools.product([0, 1], repeat=window.n)])


def test_the_ising_energies_are_the_window_cost_of_every_bitstring() -> None:
    window = build_window(PROBLEM, SCHEDULE, slot=0, horizon=10, max_qubits=6)
    assert window is not None and window.n == 6
    np.testing.assert_allclose(window_ising(window).energies(), brute_force(window), rtol=1e-10, atol=1e-9)


def test_a_deferred_job_moves_past_the_slot_and_the_cost_matches_the_profile() -> None:
    window = build_window(PROBLEM, SCHEDULE, slot=0, horizon=10, max_qubits=6)
    assert window.jobs.tolist() == [0, 2, 4, 5, 1, 3]  # largest power first
    bits = np.array([1, 0, 1, 0, 0, 0])  # defer jobs 0 and 4
    moved = apply_window(SCHEDULE, window, bits)
    assert moved.start.tolist() == [1, 0, 0, 0, 1, 0] and check_schedule(PROBLEM, moved) == []
    profile = power_profile(PROBLEM, moved, length=int(window.slots.max()) + 1) / 1000
    assert window_cost(window, bits) == pytest.approx(float(profile[window.slots] @ profile[window.slots]))


def test_windows_respect_dependencies_the_horizon_and_the_qubit_budget() -> None:
    problem = Problem(np.array([1, 1, 1, 1]), np.array([500.0, 400.0, 300.0, 200.0]), np.ones(4, dtype=int), -np.ones(4, dtype=int),
                      [[], [0], [], []], np.array([8]))
    schedule = Schedule(np.array([0, 1, 0, 0]), np.zeros(4, dtype=int))
    window = build_window(problem, schedule, slot=0, horizon=10, max_qubits=2)
    assert window.jobs.tolist() == [2, 3]  # job 0 cannot move (job 1 starts when it ends); the two largest of the rest
    assert build_window(problem, schedule, slot=0, horizon=1, max_qubits=4) is None  # nothing may end after slot 1


@pytest.mark.quantum
def test_qaoa_window_ratio_is_checked_against_brute_force() -> None:
    from qflow.core.qaoa import run_qaoa
    from qflow.core.quantum import QuantumBudget, choose_device

    window = build_window(PROBLEM, SCHEDULE, slot=0, horizon=10, max_qubits=5)
    model = window_ising(window)
    costs = brute_force(window)
    result = run_qaoa(model, 2, choose_device(), QuantumBudget(max_qubits=5), max_steps=15, seed=0)
    qaoa_cost = window_cost(window, result.bits)
    assert qaoa_cost == pytest.approx(model.energy(result.bits))
    ratio = approximation_ratio(costs.max(), qaoa_cost, costs.min())
    _, best, worst = solve_exact(model)
    assert (best, worst) == pytest.approx((costs.min(), costs.max()))
    assert 0.0 <= ratio <= 1.0 + 1e-12
    assert result.expectation_history[-1] < result.expectation_history[0]  # the optimiser made progress


@pytest.mark.quantum
def test_plan_with_qaoa_records_brute_force_ratios_and_applies_only_improvements() -> None:
    jobs = [{"id": f"j{i}", "duration": 1 + i % 3, "power_w": 300.0 + 90 * i, "gpus": 1} for i in range(10)]
    jobs += [{"id": "tail", "duration": 2, "power_w": 400.0, "deps": ["j0"]}]
    inputs = small_inputs(jobs, gpus=8)
    plan = plan_energy(inputs, {"qaoa_scheduling": True, "gnn_prediction": False, "max_qubits": 5, "qaoa_steps": 8,
                                "qaoa_windows": 2, "horizon": 8})
    assert plan.solver.ran == "list+qaoa" and not plan.solver.fallbacks
    windows = plan.result["windows"]
    assert windows and plan.solver.quantum is not None
    assert plan.solver.quantum.block_ratios == [w["qaoa_ratio"] for w in windows]
    for w in windows:
        assert w["qubits"] <= 5
        span = w["worst_cost_kw2"] - w["exact_cost_kw2"]
        expected = 1.0 if span <= 1e-12 else (w["worst_cost_kw2"] - w["qaoa_cost_kw2"]) / span
        assert w["qaoa_ratio"] == pytest.approx(expected, abs=1e-5)
        assert w["exact_cost_kw2"] <= min(w["qaoa_cost_kw2"], w["greedy_cost_kw2"], w["keep_all_cost_kw2"]) + 1e-6
        assert w["cost_check_abs_diff"] < 1e-6
        if w["applied"]:
            assert w["peak_after_w"] <= w["peak_before_w"]
        else:
            assert w["not_applied_reason"]
    before = plan.baselines["list_before_windows"]["peak_power_w"]
    assert plan.metrics["peak_power_w"] <= before
    rows = {r["job"]: r for r in plan.result["schedule"]}
    assert rows["tail"]["start"] >= rows["j0"]["end"]


def test_greedy_reaches_a_local_minimum_no_worse_than_keeping_every_job() -> None:
    model = window_ising(build_window(PROBLEM, SCHEDULE, slot=0, horizon=10, max_qubits=6))
    bits = greedy_bits(model)
    assert model.energy(bits) <= model.energy(np.zeros(6, dtype=int))
    for i in range(6):  # no single flip improves it
        flipped = bits.copy()
        flipped[i] ^= 1
        assert model.energy(flipped) >= model.energy(bits) - 1e-9


def test_the_controller_skips_qaoa_where_greedy_is_optimal_and_learns_from_its_gaps() -> None:
    controller = WindowController(decay=0.5)
    assert controller.choose(0.0) == ("heuristic", "the greedy answer is already optimal on this window")
    method, why = controller.choose(0.1)
    assert method == "qaoa" and "optimistic prior 0" in why
    controller.observe_qaoa(0.3)
    controller.observe_qaoa(0.1)
    assert controller.expected_qaoa_gap == pytest.approx(0.2)
    assert controller.choose(0.15)[0] == "heuristic" and controller.choose(0.25)[0] == "qaoa"


def test_meta_learning_records_a_choice_and_a_reason_per_window() -> None:
    jobs = [{"id": f"j{i}", "duration": 1 + i % 2, "power_w": 300.0 + 70 * i, "gpus": 1} for i in range(8)]
    plan = plan_energy(small_inputs(jobs, gpus=8), {"meta_learning": True, "gnn_prediction": False, "max_qubits": 4,
                                                    "qaoa_steps": 5, "qaoa_windows": 2, "horizon": 6})
    choices = plan.result["meta"]["choices"]
    assert choices and len(choices) == len(plan.result["windows"])
    for choice, window in zip(choices, plan.result["windows"], strict=True):
        assert choice["choice"] in ("heuristic", "qaoa") and choice["why"]
        if window["greedy_ratio"] == 1.0:
            assert choice["choice"] == "heuristic"


def test_a_quantum_time_out_falls_back_to_greedy_with_the_reason(monkeypatch) -> None:
    monkeypatch.setenv("QFLOW_QUANTUM_TIME_BUDGET_S", "0")
    jobs = [{"id": f"j{i}", "duration": 1 + i % 2, "power_w": 300.0 + 70 * i, "gpus": 1} for i in range(8)]
    plan = plan_energy(small_inputs(jobs, gpus=8), {"qaoa_scheduling": True, "gnn_prediction": False, "max_qubits": 4,
                                                    "qaoa_windows": 2, "horizon": 6})
    assert plan.solver.requested == "list+qaoa" and plan.solver.ran == "list+greedy"
    assert "quantum time budget of 0 s exceeded" in plan.solver.fallbacks[0].reason
    windows = plan.result["windows"]
    assert windows and all(w["choice"] == "heuristic" and w["qaoa_ratio"] is None for w in windows)
    assert plan.solver.quantum is None
