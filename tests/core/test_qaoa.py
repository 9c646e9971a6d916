"""QAOA pieces: Ising encoding, exact solve, ratio, Hamiltonian, and the optimisation loop."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pennylane as qml
import pytest

from qflow.core.errors import QuantumUnavailableError
from qflow.core.qaoa import (
    PROBE_MIN_QUBITS,
    IsingModel,
    _probe_step_time,
    approximation_ratio,
    bits_of,
    build_cost_hamiltonian,
    param_shape,
    run_qaoa,
    solve_exact,
    warm_start_angles,
)
from qflow.core.quantum import HARD_MAX_QUBITS, QuantumBudget, QuantumDevice, choose_device

DEFAULT_QUBIT = QuantumDevice("default.qubit", "backprop", "test")


def random_qubo(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(seed)
    quadratic = rng.normal(size=(n, n))
    np.fill_diagonal(quadratic, 0.0)  # both triangles used; the diagonal is linear and lives in `linear`
    return rng.normal(size=n), quadratic, float(rng.normal())


def qubo_value(x: np.ndarray, linear: np.ndarray, quadratic: np.ndarray, constant: float) -> float:
    return float(constant + linear @ x + x @ quadratic @ x)


def all_bits(n: int) -> list[np.ndarray]:
    """Bitstrings in basis-state order, wire 0 the most significant bit."""
    return [np.array(b) for b in itertools.product((0, 1), repeat=n)]


class TestIsingModel:
    @pytest.mark.parametrize(("n", "seed"), [(1, 0), (3, 1), (5, 2), (7, 3)])
    def test_from_qubo_energies_equal_direct_qubo(self, n, seed):
        linear, quadratic, constant = random_qubo(n, seed)
        model = IsingModel.from_qubo(linear, quadratic, constant)
        direct = [qubo_value(x, linear, quadratic, constant) for x in all_bits(n)]
        assert model.energies() == pytest.approx(direct, abs=1e-9)
        assert [model.energy(x) for x in all_bits(n)] == pytest.approx(direct, abs=1e-9)

    def test_upper_triangular_qubo(self):
        linear, quadratic, constant = random_qubo(4, 7)
        upper = np.triu(quadratic + quadratic.T, 1)
        a = IsingModel.from_qubo(linear, quadratic, constant).energies()
        b = IsingModel.from_qubo(linear, upper, constant).energies()
        assert a == pytest.approx(b, abs=1e-12)

    def test_spin_convention(self):
        model = IsingModel(h=np.array([1.0, 0.0]), J=np.array([[0.0, 2.0], [0.0, 0.0]]), offset=0.5)
        # z = 1 - 2x: bits 00 -> z=(+1,+1): 0.5 + 1 + 2 ; 10 -> z=(-1,+1): 0.5 - 1 - 2
        assert model.energies().tolist() == pytest.approx([3.5, -0.5, -2.5, 1.5])

    def test_energies_order_matches_pennylane_wires(self):
        linear, quadratic, constant = random_qubo(3, 11)
        model = IsingModel.from_qubo(linear, quadratic, constant)
        hamiltonian = build_cost_hamiltonian(model)
        dev = qml.device("default.qubit", wires=3)

        @qml.qnode(dev)
        def basis(bits):
            qml.BasisState(bits, wires=range(3))
            return qml.expval(hamiltonian), qml.probs(wires=range(3))

        energies = model.energies()
        for bits in all_bits(3):
            expval, probs = basis(bits)
            index = int(np.argmax(probs))
            assert probs[index] == pytest.approx(1.0)
            assert energies[index] == pytest.approx(float(expval) + model.offset, abs=1e-9)
            assert energies[index] == pytest.approx(model.energy(bits), abs=1e-9)

    def test_scaled_keeps_the_ordering(self):
        model = IsingModel.from_qubo(*random_qubo(4, 5))
        scaled, scale = model.scaled()
        assert scale > 0
        assert scaled.energies() * scale == pytest.approx(model.energies(), abs=1e-9)
        assert max(np.abs(scaled.h).max(), np.abs(np.triu(scaled.J, 1)).max()) == pytest.approx(1.0)


class TestSolveExact:
    @pytest.mark.parametrize("seed", range(4))
    def test_equals_brute_force(self, seed):
        linear, quadratic, constant = random_qubo(6, seed)
        model = IsingModel.from_qubo(linear, quadratic, constant)
        values = [qubo_value(x, linear, quadratic, constant) for x in all_bits(6)]
        bits, best, worst = solve_exact(model)
        assert best == pytest.approx(min(values), abs=1e-9)
        assert worst == pytest.approx(max(values), abs=1e-9)
        assert qubo_value(bits, linear, quadratic, constant) == pytest.approx(min(values), abs=1e-9)

    def test_refuses_more_variables_than_any_circuit(self):
        n = HARD_MAX_QUBITS + 1
        model = IsingModel(h=np.zeros(n), J=np.zeros((n, n)))
        with pytest.raises(ValueError, match=f"exact solve limited to {HARD_MAX_QUBITS} variables; got {n}"):
            solve_exact(model)

    def test_hard_max_qubits_enumerates_in_bounded_memory(self):
        """Every circuit a config allows (max_qubits <= 24) has its exact check: the routing and attention
        plans at max_qubits=24 crashed on it. The direct 2**n x n spin table would need over 3 GiB here."""
        import tracemalloc

        n = HARD_MAX_QUBITS
        rng = np.random.default_rng(3)
        model = IsingModel(rng.normal(size=n), np.triu(rng.normal(size=(n, n)), 1), 0.5)
        tracemalloc.start()
        try:
            bits, best, worst = solve_exact(model)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 3 * 8 * 2**n  # the 128 MiB energies array and less than two more of its size
        energies = model.energies()
        assert energies.shape == (2**n,)
        picks = rng.integers(0, 2**n, 64)
        assert np.allclose(energies[picks], [model.energy(bits_of(int(i), n)) for i in picks])
        assert model.energy(bits) == pytest.approx(best) == pytest.approx(float(energies.min()))
        assert worst == pytest.approx(float(energies.max()))


class TestApproximationRatio:
    def test_optimum_is_one_and_worst_is_zero(self):
        assert approximation_ratio(10.0, 2.0, 2.0) == 1.0
        assert approximation_ratio(10.0, 10.0, 2.0) == 0.0

    def test_linear_between(self):
        assert approximation_ratio(10.0, 4.0, 2.0) == pytest.approx(0.75)
        assert approximation_ratio(-1.0, -2.5, -3.0) == pytest.approx(0.75)

    def test_flat_landscape_counts_as_optimal(self):
        assert approximation_ratio(3.0, 3.0, 3.0) == 1.0
        assert approximation_ratio(3.0, 3.0, 3.0 - 1e-14) == 1.0


class TestCostHamiltonian:
    @pytest.mark.parametrize(("n", "seed"), [(1, 0), (2, 1), (3, 2), (4, 3)])
    def test_matrix_is_diagonal_energies_minus_offset(self, n, seed):
        model = IsingModel.from_qubo(*random_qubo(n, seed))
        matrix = np.real_if_close(qml.matrix(build_cost_hamiltonian(model), wire_order=range(n)))
        assert np.allclose(matrix - np.diag(np.diag(matrix)), 0.0)
        assert np.diag(matrix) == pytest.approx(model.energies() - model.offset, abs=1e-9)

    def test_constant_model_is_a_zero_operator(self):
        model = IsingModel(h=np.zeros(2), J=np.zeros((2, 2)), offset=4.0)
        matrix = qml.matrix(build_cost_hamiltonian(model), wire_order=range(2))
        assert np.allclose(matrix, 0.0)

    def test_param_shape(self):
        assert param_shape(3) == (2, 3)

    def test_warm_start_angles_give_the_bits_with_probability(self):
        thetas = warm_start_angles(np.array([1, 0, 1]), epsilon=0.2)
        p_one = np.sin(thetas / 2) ** 2  # RY(theta)|0> has P(1) = sin^2(theta / 2)
        assert p_one == pytest.approx([0.8, 0.2, 0.8])


@pytest.mark.quantum
class TestRunQaoa:
    def model(self, seed: int = 0, n: int = 6) -> IsingModel:
        return IsingModel.from_qubo(*random_qubo(n, seed))

    @pytest.mark.parametrize("seed", [0, 1])
    def test_beats_random_guessing(self, seed):
        model = self.model(seed)
        energies = model.energies()
        _, best, worst = solve_exact(model)
        result = run_qaoa(model, 2, choose_device(), QuantumBudget(max_qubits=8), max_steps=15, seed=0)
        uniform = approximation_ratio(worst, float(energies.mean()), best)  # |+>^n measured: about 0.4-0.6
        final_expectation = approximation_ratio(worst, result.expectation_history[-1], best)
        assert final_expectation >= max(0.7, uniform + 0.1)
        # The read-out bitstring is among the best few: under 10 % of all 64 bitstrings reach 0.85 here.
        ratios = (worst - energies) / (worst - best)
        assert (ratios >= 0.85).mean() < 0.1
        assert approximation_ratio(worst, result.energy, best) >= 0.85
        assert result.energy == pytest.approx(model.energy(result.bits))
        assert 0.0 < result.probability <= 1.0

    def test_history_recorded_in_energy_units(self):
        model = self.model(2)
        _, best, worst = solve_exact(model)
        result = run_qaoa(model, 2, choose_device(), QuantumBudget(max_qubits=8), max_steps=12, seed=1)
        history = result.expectation_history
        assert len(history) == result.steps and 1 <= result.steps <= 12
        assert all(best - 1e-9 <= value <= worst + 1e-9 for value in history)  # an expectation is a mixture of energies
        assert history[-1] < history[0]
        assert result.circuits_run > result.steps
        assert result.angles.shape == param_shape(2)
        assert result.n_qubits == 6

    def test_warm_start_from_optimum_keeps_it(self):
        model = self.model(3)
        bits, best, worst = solve_exact(model)
        result = run_qaoa(model, 2, choose_device(), QuantumBudget(max_qubits=8), warm_bits=bits, max_steps=10, seed=0)
        assert result.bits.tolist() == bits.tolist()
        assert approximation_ratio(worst, result.energy, best) == pytest.approx(1.0)

    def test_simulators_agree(self):
        pytest.importorskip("pennylane_lightning")
        model = self.model(4, n=4)
        runs = [
            run_qaoa(model, 1, device, QuantumBudget(max_qubits=8), max_steps=5, seed=2)
            for device in (QuantumDevice("lightning.qubit", "adjoint", "test"), DEFAULT_QUBIT)
        ]
        assert runs[0].expectation_history == pytest.approx(runs[1].expectation_history, abs=1e-6)
        assert runs[0].bits.tolist() == runs[1].bits.tolist()

    def test_over_qubit_budget(self):
        with pytest.raises(QuantumUnavailableError, match="circuit needs 6 qubits, over the budget of 4"):
            run_qaoa(self.model(), 1, DEFAULT_QUBIT, QuantumBudget(max_qubits=4))

    def test_time_budget_from_environment(self, monkeypatch):
        monkeypatch.setenv("QFLOW_QUANTUM_TIME_BUDGET_S", "0")
        budget = QuantumBudget(max_qubits=8, time_budget_s=60.0)
        assert budget.time_budget_s == 0.0
        with pytest.raises(QuantumUnavailableError, match="quantum time budget of 0 s exceeded"):
            run_qaoa(self.model(n=3), 1, DEFAULT_QUBIT, budget)

    def test_heartbeat_runs_between_steps_and_its_exception_stops_the_loop(self):
        class Cancelled(BaseException):  # what a front end's Cancel raises: not an Exception, never a fallback
            pass

        beats = []

        def heartbeat() -> None:
            beats.append(len(beats))
            if len(beats) == 3:
                raise Cancelled

        with pytest.raises(Cancelled):
            run_qaoa(self.model(n=3), 1, choose_device(), QuantumBudget(max_qubits=8, heartbeat=heartbeat), max_steps=20)
        assert len(beats) == 3  # the loop stopped at the third check, not at its end

    def test_simulator_failure_becomes_unavailable(self):
        broken = QuantumDevice("no.such.device", "backprop", "test")
        with pytest.raises(QuantumUnavailableError, match="no.such.device failed"):
            run_qaoa(self.model(n=2), 1, broken, QuantumBudget(max_qubits=8), max_steps=2)


class TestStepTimeProbe:
    def test_small_circuits_run_no_probe(self):
        calls = []
        assert _probe_step_time(lambda a: calls.append(a), None, PROBE_MIN_QUBITS - 1, QuantumBudget(time_budget_s=0.0)) == 0
        assert calls == []

    def test_step_that_cannot_fit_the_budget_is_refused_before_optimising(self):
        def slow_cost(angles):
            time.sleep(0.05)

        with pytest.raises(QuantumUnavailableError, match="one optimiser step on 20 qubits would take about"):
            _probe_step_time(slow_cost, None, 20, QuantumBudget(time_budget_s=0.15))
        assert _probe_step_time(slow_cost, None, 20, QuantumBudget(time_budget_s=600.0)) == 1


class TestQuantumBudget:
    @pytest.mark.parametrize("qubits", [0, HARD_MAX_QUBITS + 1])
    def test_max_qubits_bounds(self, qubits):
        with pytest.raises(ValueError, match=rf"max_qubits must be in \[1, {HARD_MAX_QUBITS}\]"):
            QuantumBudget(max_qubits=qubits)

    def test_memory_estimate_refuses(self, monkeypatch):
        monkeypatch.setattr("qflow.core.quantum.available_memory_bytes", lambda: 2**20)
        budget = QuantumBudget(max_qubits=20)
        with pytest.raises(QuantumUnavailableError, match="circuit on 20 qubits needs about 64 MiB"):
            budget.check_circuit(20, 100, QuantumDevice("lightning.qubit", "adjoint", "test"))

    def test_choose_device(self):
        device = choose_device()
        assert device.name in {"lightning.qubit", "default.qubit"}
        assert device.diff_method == ("adjoint" if device.name == "lightning.qubit" else "backprop")
        fallback = choose_device(prefer_lightning=False)
        assert fallback.name == "default.qubit" and "lightning not requested" in fallback.reason
