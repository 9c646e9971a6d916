"""QPE position recovery and QAOA top-k selection (PennyLane circuits), checked against exact answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from qflow.attention._quantum import qaoa_topk, qpe_recover, qpe_sweep, topk_model
from qflow.core.qaoa import solve_exact
from qflow.core.quantum import QuantumBudget, choose_device

pytestmark = pytest.mark.quantum


@pytest.fixture(scope="module")
def device():
    return choose_device()


class TestQpe:
    @pytest.mark.parametrize("n_positions, qubits", [(16, 4), (12, 4), (20, 5)])
    def test_recovers_every_index_exactly_when_qubits_suffice(self, device, n_positions, qubits):
        rows, recovered, circuits = qpe_sweep(n_positions, qubits, device, QuantumBudget(max_qubits=8))
        assert rows[-1]["counting_qubits"] == qubits and 2 ** qubits >= n_positions
        assert rows[-1]["accuracy"] == 1.0 and rows[-1]["mean_abs_error"] == 0.0
        assert recovered.tolist() == list(range(n_positions))
        assert circuits == qubits * n_positions

    def test_too_few_qubits_cannot_tell_positions_apart(self, device):
        rows, recovered, _ = qpe_sweep(16, 2, device, QuantumBudget(max_qubits=8))
        # 2 counting qubits distinguish 4 phases: at most 4 of 16 positions come back right.
        assert rows[-1]["accuracy"] == 4 / 16
        assert rows[0]["accuracy"] < rows[1]["accuracy"]
        assert len(set(recovered.tolist())) <= 4

    def test_recover_reads_the_most_likely_outcome(self):
        probs = np.zeros((3, 8))
        probs[[0, 1, 2], [0, 3, 6]] = 1.0
        assert qpe_recover(probs, 8).tolist() == [0, 3, 6]


class TestTopKIsing:
    @pytest.mark.parametrize("seed", range(5))
    def test_ground_state_is_the_top_k_set(self, seed):
        rng = np.random.default_rng(seed)
        scores = rng.normal(size=8)
        for k in (1, 3, 4):
            bits, _, _ = solve_exact(topk_model(scores, k))
            assert set(np.flatnonzero(bits)) == set(np.argsort(-scores)[:k]), (seed, k)

    def test_every_wrong_count_costs_more_than_the_optimum(self):
        scores = np.array([0.3, -1.0, 2.0, 0.5, 0.1])
        model = topk_model(scores, 2)
        best = solve_exact(model)[1]
        for bits in itertools.product([0, 1], repeat=5):
            if sum(bits) != 2:
                assert model.energy(np.array(bits)) > best + 0.4


def test_qaoa_topk_is_checked_against_exact(device):
    scores = np.array([0.9, -0.2, 0.4, 1.3, -1.1, 0.0])
    out = qaoa_topk(scores, 2, layers=2, device=device, budget=QuantumBudget(max_qubits=8), max_steps=15, seed=0)
    assert out["exact"] == [0, 3]
    assert out["qubits"] == 6 and out["circuits"] > 0
    assert len(out["qaoa"]) == 2  # post-selected on exactly k ones
    assert out["overlap"] == len(set(out["qaoa"]) & {0, 3}) / 2
    assert 0.0 <= out["ratio"] <= 1.0
    assert out["used"] == (out["qaoa"] if out["optimal"] else out["exact"])
    assert 0 < out["feasible_probability"] <= 1
