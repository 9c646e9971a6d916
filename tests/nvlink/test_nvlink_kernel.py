"""Quantum kernel of the contention classifier: the documented feature map, the kernel's properties, adoption against the RBF SVC."""

from __future__ import annotations

import math

import numpy as np
import pytest
from nvlink_helpers import JOBS, contention_logs, node_fabric

from qflow.core.quantum import QuantumBudget, choose_device
from qflow.nvlink import plan_nvlink
from qflow.nvlink._kernel import feature_states, kernel_target_alignment, overlap_kernel

pytestmark = pytest.mark.quantum


def _reference_state(theta: np.ndarray) -> np.ndarray:
    """RZ(theta) . CNOT ring . RY(theta) |0...0> written out with NumPy (wire 0 = the leading bit)."""
    n = len(theta)
    psi = np.zeros(2**n, dtype=complex)
    psi[0] = 1.0
    psi = psi.reshape([2] * n)

    def one(psi, gate, w):
        return np.moveaxis(np.tensordot(gate, psi, axes=([1], [w])), 0, w)

    for w, t in enumerate(theta):
        psi = one(psi, np.array([[math.cos(t / 2), -math.sin(t / 2)], [math.sin(t / 2), math.cos(t / 2)]]), w)
    for w in range(n):
        c, x = w, (w + 1) % n
        flipped = psi.copy()
        index = [slice(None)] * n
        index[c] = 1
        flipped[tuple(index)] = np.flip(psi[tuple(index)], axis=x - (x > c))
        psi = flipped
    for w, t in enumerate(theta):
        psi = one(psi, np.diag([np.exp(-0.5j * t), np.exp(0.5j * t)]), w)
    return psi.reshape(-1)


def test_states_are_the_documented_feature_map():
    rng = np.random.default_rng(1)
    angles = rng.uniform(-math.pi / 2, math.pi / 2, (3, 4))
    states = feature_states(angles, choose_device(), QuantumBudget(max_qubits=8, time_budget_s=60))
    for theta, state in zip(angles, states, strict=True):
        assert state == pytest.approx(_reference_state(theta), abs=1e-10)


def test_overlap_kernel_is_a_normalised_psd_gram_matrix():
    rng = np.random.default_rng(2)
    states = feature_states(rng.uniform(-1.5, 1.5, (6, 3)), choose_device(), QuantumBudget(max_qubits=8, time_budget_s=60))
    K = overlap_kernel(states, states)
    assert np.allclose(np.diag(K), 1.0) and np.allclose(K, K.T) and np.linalg.eigvalsh(K).min() > -1e-10
    assert np.all((K >= -1e-12) & (K <= 1 + 1e-12))


def test_kernel_target_alignment_is_one_for_the_ideal_kernel_and_lower_otherwise():
    y = np.array([0, 0, 1, 1])
    ideal = (y[:, None] == y[None, :]).astype(float) * 2 - 1  # +1 same class, -1 different
    assert kernel_target_alignment(ideal, y) == pytest.approx(1.0)
    assert kernel_target_alignment(np.ones((4, 4)), y) == pytest.approx(0.0)
    assert kernel_target_alignment(np.eye(4), y) == pytest.approx(0.5)


def test_plan_compares_both_kernels_on_one_split_and_adopts_only_a_better_one():
    plan = plan_nvlink(node_fabric(), JOBS, {"rl_planner": False, "quantum_kernel": True}, logs=contention_logs(informative=True))
    c = plan.result["classifier"]
    k = c["quantum_kernel"]
    assert k["qubits"] == 8 and k["circuits"] == 120 and k["device"] == choose_device().name
    assert k["rbf"]["held_out_accuracy"] == pytest.approx(plan_nvlink(node_fabric(), JOBS, {"rl_planner": False},
                                                                       logs=contention_logs(informative=True)).result["classifier"]["held_out_accuracy"])
    assert k["adopted"] == (k["quantum"]["held_out_accuracy"] > k["rbf"]["held_out_accuracy"])
    assert -1.0 <= k["quantum"]["kernel_target_alignment"] <= 1.0 and -1.0 <= k["rbf"]["kernel_target_alignment"] <= 1.0
    assert plan.solver.requested == "classical+quantum_kernel"
    assert {"classifier_rbf_fit", "quantum_kernel_fit"} <= set(plan.timings_s)
    row = next(r for r in plan.result["learned_components"] if r["component"] == "quantum_kernel")
    assert row["beats_baseline"] == k["adopted"]
    if k["adopted"]:
        assert plan.solver.ran == "classical+quantum_kernel" and c["held_out_accuracy"] == k["quantum"]["held_out_accuracy"]
    else:
        assert plan.solver.ran == "classical" and c["held_out_accuracy"] == k["rbf"]["held_out_accuracy"]
        assert plan.solver.fallbacks[-1].from_ == "quantum_kernel" and "is not above the RBF SVC's" in plan.solver.fallbacks[-1].reason


def test_a_qubit_budget_below_the_feature_count_leaves_the_rbf_svc_in_charge():
    plan = plan_nvlink(node_fabric(), JOBS, {"rl_planner": False, "quantum_kernel": True, "max_qubits": 4},
                       logs=contention_logs(informative=True))
    assert plan.result["classifier"]["quantum_kernel"] == {"adopted": False, "unavailable": "circuit needs 8 qubits, over the budget of 4"}
    assert plan.solver.ran == "classical"
    assert (plan.solver.fallbacks[-1].from_, plan.solver.fallbacks[-1].to) == ("quantum_kernel", "rbf_svc")


def test_quantum_kernel_without_the_classifier_says_so():
    plan = plan_nvlink(node_fabric(), JOBS, {"classifier": False, "rl_planner": False, "quantum_kernel": True})
    assert "quantum_kernel set but without effect: classifier is off" in plan.diagnostics
    assert plan.solver.requested == "classical"
