"""QAOA recolouring blocks: every block checked against brute force; the colouring reached equals the brute-force optimum on small graphs."""

from __future__ import annotations

import numpy as np
import pytest
from nvlink_helpers import FAST, brute_force_chromatic_index, node_fabric

from qflow.core.qaoa import solve_exact
from qflow.core.quantum import QuantumBudget, choose_device
from qflow.nvlink import pattern_traffic, plan_nvlink
from qflow.nvlink._quantum import QaoaBlockSolver
from qflow.nvlink._rounds import colour_transfers, empty_last_rounds, is_proper, lower_bound, n_colours, transfers_of
from qflow.nvlink._sample import IRREGULAR_7

pytestmark = pytest.mark.quantum

#: Small graphs whose first-fit colouring exceeds the max degree (found by search; IRREGULAR_7 is the sample's).
SMALL = {
    "irregular_7": np.array(IRREGULAR_7, dtype=float),
    "odd_ring_5": pattern_traffic("all_reduce", 5, 1.0),
}


def solver(max_blocks: int = 8) -> QaoaBlockSolver:
    return QaoaBlockSolver(choose_device(), QuantumBudget(max_qubits=12, time_budget_s=120), layers=2, steps=15,
                           max_blocks=max_blocks, seed=0)


@pytest.mark.parametrize("name", list(SMALL))
def test_qaoa_blocks_are_checked_against_brute_force(name):
    t = transfers_of(SMALL[name], full_duplex=False)
    colour, _ = colour_transfers(t)
    qs = solver()
    better, stats = empty_last_rounds(t, colour, qs, max_size=12)
    assert qs.blocks and stats["blocks"] == len(qs.blocks) + qs.exact_only
    for block in qs.blocks:
        assert block["qubits"] <= 12
        assert block["exact_conflicts"] <= block["qaoa_conflicts"] <= block["worst_conflicts"]
        assert block["optimal"] == (block["qaoa_conflicts"] == block["exact_conflicts"])
        assert block["used"] == ("qaoa" if block["optimal"] else "exact")
        assert 0.0 <= block["ratio"] <= 1.0 + 1e-9
    assert is_proper(t, better) and n_colours(better) <= n_colours(colour)
    # The rounds reached are the brute-force optimum (chromatic index) of these small graphs.
    assert n_colours(better) == brute_force_chromatic_index(t.ports, t.n_ports, lower_bound(t))


def test_block_answers_match_exact_enumeration():
    """The bits a solver returns always have the brute-force minimum energy (QAOA's, or the exact fallback's)."""
    t = transfers_of(SMALL["irregular_7"], full_duplex=False)
    colour, _ = colour_transfers(t)
    seen = []
    qs = solver()

    def checking(block):
        bits = qs(block)
        seen.append(block.model.energy(bits) == pytest.approx(solve_exact(block.model)[1]))
        return bits

    empty_last_rounds(t, colour, checking, max_size=12)
    assert seen and all(seen)


def test_plan_with_qaoa_reports_every_block_and_matches_the_classical_rounds():
    jobs = {"jobs": [{"id": "irregular", "ranks": 7, "traffic": (np.array(IRREGULAR_7) * 1e6).tolist()}]}
    fabric = node_fabric()
    settings = {**FAST, "qaoa_optimizer": True, "max_qubits": 10, "qaoa_steps": 10}
    plan = plan_nvlink(fabric, jobs, settings)
    classical = plan_nvlink(fabric, jobs, FAST)
    assert plan.solver.requested == "qaoa" and plan.solver.ran == "qaoa"
    q = plan.solver.quantum
    assert q is not None and q.exact_checked and all(q.exact_checked) and max(q.qubits_per_circuit) <= 10
    assert len(q.block_ratios) == len(q.qubits_per_circuit) == len(q.convergence)
    assert plan.metrics["rounds"] == classical.metrics["rounds"] == 7 == plan.metrics["rounds_lower_bound"]
    assert plan.result["colouring"]["irregular"]["rounds_before"] == 8


def test_time_budget_spent_falls_back_with_a_reason(monkeypatch):
    monkeypatch.setenv("QFLOW_QUANTUM_TIME_BUDGET_S", "0")
    jobs = {"jobs": [{"id": "irregular", "ranks": 7, "traffic": (np.array(IRREGULAR_7) * 1e6).tolist()}]}
    plan = plan_nvlink(node_fabric(), jobs, {**FAST, "qaoa_optimizer": True})
    assert plan.solver.ran == "classical" and plan.solver.quantum is None
    assert "quantum time budget" in plan.solver.fallbacks[0].reason
    assert plan.metrics["rounds"] == 7  # the exact block solver still removed the extra round


def test_no_block_needed_is_recorded():
    jobs = {"jobs": [{"id": "p", "ranks": 6, "pattern": "pipeline", "bytes": 1e6}]}
    plan = plan_nvlink(node_fabric(), jobs, {**FAST, "qaoa_optimizer": True})
    assert plan.solver.ran == "classical" and "no recolouring block was needed" in plan.solver.fallbacks[0].reason
