"""The QAOA path of plan_routing: what it reports, that it only improves, and how it falls back."""

from __future__ import annotations

import itertools

import numpy as np
import pennylane as qml
import pytest
from routing_helpers import check_plan_consistency, make_graph, make_tokens

from qflow.core.errors import QuantumUnavailableError
from qflow.core.qaoa import EXACT_MAX_VARIABLES, approximation_ratio
from qflow.core.quantum import QuantumBudget, choose_device
from qflow.routing import RoutingConfig, plan_routing
from qflow.routing._classical import utility_matrix
from qflow.routing._quantum import block_model, refine_with_qaoa, select_blocks
from qflow.routing._schemas import build_problem

pytestmark = pytest.mark.quantum

QAOA = {
    "qaoa": True, "hqc": True, "qaoa_layers": 2, "max_qubits": 6, "qaoa_steps": 10, "qaoa_blocks": 2,
    "capacity_factor": 2.0, "baselines": False,
}
SEEDS = (0, 1, 2, 3, 5)  # seed 0: no block worth applying; the others move tokens (QAOA or exact answer)


def instance(seed: int):
    return make_tokens(24, 4, seed=seed, skew=1.0), make_graph(2, 2)


@pytest.fixture(scope="module")
def qaoa_plans():
    """One QAOA plan and its classical counterpart per seed (shared: circuits are the slow part)."""
    plans = {}
    for seed in SEEDS:
        tokens, graph = instance(seed)
        quantum = plan_routing(tokens, graph, {**QAOA, "seed": seed})
        classical = plan_routing(tokens, graph, {**QAOA, "qaoa": False, "seed": seed})
        plans[seed] = (tokens, quantum, classical)
    return plans


def all_bits(n: int) -> np.ndarray:
    return np.array(list(itertools.product((0, 1), repeat=n)))


class TestQuantumReport:
    @pytest.mark.parametrize("seed", SEEDS)
    def test_solver_section(self, qaoa_plans, seed):
        tokens, plan, _ = qaoa_plans[seed]
        solver = plan.solver
        quantum = solver.quantum
        assert quantum is not None
        if any(b["applied_from"] == "qaoa" for b in quantum.blocks):
            assert (solver.requested, solver.ran, solver.fallbacks) == ("qaoa+hqc", "qaoa+hqc", [])
        else:  # QAOA ran and nothing it found was used: not in solver.ran, recorded with its effect
            (fallback,) = solver.fallbacks
            assert (solver.requested, solver.ran, fallback.to) == ("qaoa+hqc", "classical", "classical")
            exact_moves = sum(b["tokens_moved"] for b in quantum.blocks if b["applied"])
            assert f"exact block solves moved {exact_moves} tokens" in fallback.reason
        assert quantum is not None
        assert quantum.device == choose_device().name and quantum.layers == 2
        k = len(quantum.blocks)
        assert 1 <= k <= QAOA["qaoa_blocks"]
        assert len(quantum.block_ratios) == len(quantum.exact_checked) == len(quantum.qubits_per_circuit) == k
        assert len(quantum.optimizer_steps) == len(quantum.convergence) == k
        assert all(quantum.exact_checked)
        assert all(2 <= q <= QAOA["max_qubits"] for q in quantum.qubits_per_circuit)
        assert all(1 <= s <= QAOA["qaoa_steps"] for s in quantum.optimizer_steps)
        assert quantum.circuits_run == sum(b["circuits"] for b in quantum.blocks) > 0
        assert plan.metrics["qaoa_blocks"] == k
        assert plan.metrics["circuit_evaluations"] == quantum.circuits_run
        check_plan_consistency(plan, tokens)

    @pytest.mark.parametrize("seed", SEEDS)
    def test_block_ratios_match_reported_costs(self, qaoa_plans, seed):
        _, plan, _ = qaoa_plans[seed]
        quantum = plan.solver.quantum
        for ratio, block in zip(quantum.block_ratios, quantum.blocks, strict=True):
            assert 0.0 <= ratio <= 1.0
            assert block["exact_cost"] <= block["qaoa_cost"] + 1e-9 <= block["worst_cost"] + 2e-9
            expected = approximation_ratio(block["worst_cost"], block["qaoa_cost"], block["exact_cost"])
            assert ratio == pytest.approx(expected, abs=1e-6)
            assert set(block["experts"]) <= set(plan.result["expert_capacity"])

    def test_mean_ratio_metric(self, qaoa_plans):
        _, plan, _ = qaoa_plans[SEEDS[0]]
        assert plan.metrics["qaoa_mean_ratio"] == pytest.approx(np.mean(plan.solver.quantum.block_ratios))


class TestOnlyImprovementsApplied:
    def test_moves_stay_inside_applied_blocks(self, qaoa_plans):
        applied_somewhere = False
        for _, quantum, classical in qaoa_plans.values():
            blocks = quantum.solver.quantum.blocks
            pairs = [set(b["experts"]) for b in blocks if b["applied"]]
            applied_somewhere |= bool(pairs)
            before, after = classical.result["assignments"], quantum.result["assignments"]
            moved = [t for t in before if before[t] != after[t]]
            for token in moved:
                assert any({before[token], after[token]} <= pair for pair in pairs), token
            assert len(moved) == sum(b["tokens_moved"] for b in blocks)
            by_qaoa = sum(b["tokens_moved"] for b in blocks if b["applied_from"] == "qaoa")
            assert quantum.metrics["tokens_moved_by_qaoa"] == by_qaoa
            assert quantum.metrics["tokens_moved_by_exact_blocks"] == len(moved) - by_qaoa
            assert quantum.metrics["dropped_tokens"] <= classical.metrics["dropped_tokens"]
        assert applied_somewhere  # otherwise this test would check nothing

    def test_ran_names_qaoa_in_some_plan_and_not_in_others(self, qaoa_plans):
        """Both branches of the adoption rule are exercised by the seeds."""
        ran = {plan.solver.ran for _, plan, _ in qaoa_plans.values()}
        assert ran == {"qaoa+hqc", "classical"}

    def test_applied_only_when_block_cost_falls(self, qaoa_plans):
        blocks = [block for _, plan, _ in qaoa_plans.values() for block in plan.solver.quantum.blocks]
        assert {b["applied_from"] for b in blocks} == {None, "qaoa", "exact"}  # every branch is exercised
        for block in blocks:
            feasible = [block["exact_feasible_cost"]] if block["exact_feasible_cost"] is not None else []
            if block["qaoa_feasible"]:
                feasible.append(block["qaoa_cost"])
            best = min(feasible, default=np.inf)
            assert block["applied"] == (best < block["current_cost"] - 1e-9)
            if block["applied_from"] == "qaoa":
                assert block["qaoa_feasible"] and block["qaoa_cost"] <= best + 1e-12
            elif block["applied"]:
                assert block["applied_from"] == "exact" and block["exact_feasible_cost"] == best
            else:
                assert block["tokens_moved"] == 0


class TestBlocksByBruteForce:
    """refine_with_qaoa's per-block figures against enumeration of each block's model."""

    @pytest.mark.parametrize(("seed", "capacity_factor"), [(2, 2.0), (3, 1.0)])
    def test_reported_costs_and_ratios(self, seed, capacity_factor):
        """With capacity_factor=1.0 (seed 3) the unconstrained ground state breaks a capacity: the ratio
        is still measured against it, and the feasible optimum is reported apart."""
        tokens, graph = instance(seed)
        settings = {**QAOA, "seed": seed, "capacity_factor": capacity_factor}
        config = RoutingConfig(**settings)
        start = plan_routing(tokens, graph, {**settings, "qaoa": False})
        problem = build_problem(tokens, graph, config)
        u = utility_matrix(problem, config.locality_weight)
        w = problem.complexity
        ids = problem.graph.expert_ids
        expert = np.array([ids.index(start.result["assignments"][t]) for t in problem.token_ids])
        capacity = np.array([start.result["expert_capacity"][e] for e in ids])
        load = np.bincount(expert, weights=w, minlength=len(ids))

        refined, reports = refine_with_qaoa(
            u, w, expert, capacity, layers=2, block_size=6, n_blocks=2, warm_start=True,
            device=choose_device(), budget=QuantumBudget(max_qubits=8), max_steps=10, seed=seed,
        )
        blocks = select_blocks(u, expert, load, capacity, 6, 2)
        assert [[b.expert_a, b.expert_b] for b in blocks] == [r["experts"] for r in reports]
        constrained = False
        for block, report in zip(blocks, reports, strict=True):
            model, current, _ = block_model(block, u, w, expert, load, capacity)
            bits = all_bits(model.n)
            energies = np.array([model.energy(x) for x in bits])
            assert report["exact_cost"] == pytest.approx(energies.min(), abs=1e-9)
            assert report["worst_cost"] == pytest.approx(energies.max(), abs=1e-9)
            assert np.isclose(energies, report["qaoa_cost"], atol=1e-9).any()
            expected = (energies.max() - report["qaoa_cost"]) / (energies.max() - energies.min())
            assert report["ratio"] == pytest.approx(expected, abs=1e-9)
            assert report["current_cost"] == pytest.approx(model.energy(current), abs=1e-9)
            # Feasible: both experts within capacity after the block's tokens are re-split.
            t, a, b = block.tokens, block.expert_a, block.expert_b
            on_b = bits @ w[t]
            base_a = load[a] - w[t][current == 0].sum()
            base_b = load[b] - w[t][current == 1].sum()
            ok = (base_b + on_b <= capacity[b] + 1e-9) & (base_a + w[t].sum() - on_b <= capacity[a] + 1e-9)
            assert report["exact_feasible_cost"] == pytest.approx(energies[ok].min(), abs=1e-9)
            constrained |= bool(energies[ok].min() > energies.min() + 1e-9)
            # Only the block's tokens may move, and only between its two experts.
            if report["applied"]:
                assert set(refined[t].tolist()) <= {a, b}
        assert constrained == (capacity_factor == 1.0)
        untouched = np.ones(len(expert), bool)
        for block in blocks:
            untouched[block.tokens] = False
        assert (refined[untouched] == expert[untouched]).all()

    def test_block_cost_is_affinity_plus_load_parabola(self):
        """C(x) + affinity(x) depends on x only through b's load, as a convex parabola (unit tokens)."""
        tokens, graph = instance(3)
        config = RoutingConfig(**{**QAOA, "seed": 3})
        start = plan_routing(tokens, graph, {**QAOA, "qaoa": False, "seed": 3})
        problem = build_problem(tokens, graph, config)
        u = utility_matrix(problem, config.locality_weight).astype(float)
        ids = problem.graph.expert_ids
        expert = np.array([ids.index(start.result["assignments"][t]) for t in problem.token_ids])
        capacity = np.array([start.result["expert_capacity"][e] for e in ids])
        load = np.bincount(expert, minlength=len(ids)).astype(float)
        block = select_blocks(u, expert, load, capacity, 6, 1)[0]
        model, _, _ = block_model(block, u, problem.complexity, expert, load, capacity)
        t, a, b = block.tokens, block.expert_a, block.expert_b
        bits = all_bits(model.n)
        affinity = (u[t, a] * (1 - bits) + u[t, b] * bits).sum(axis=1)
        rest = np.array([model.energy(x) for x in bits]) + affinity
        ones = bits.sum(axis=1)
        by_load = np.array([rest[ones == k] for k in range(model.n + 1)], dtype=object)
        levels = np.array([group.mean() for group in by_load])
        assert all(np.allclose(group, level, atol=1e-9) for group, level in zip(by_load, levels, strict=True))
        second = np.diff(levels, 2)
        assert np.allclose(second, second[0], atol=1e-9) and second[0] > 0


class TestFallbacks:
    def classical_and_hash(self, tokens, graph):
        classical = plan_routing(tokens, graph, {**QAOA, "qaoa": False})
        hashed = plan_routing(tokens, graph, {**QAOA, "qaoa": False, "deterministic_fallback": True})
        return classical.result["assignments"], hashed.result["assignments"]

    def test_simulator_toggle_runs_no_circuit(self, monkeypatch):
        def no_device(*args, **kwargs):
            raise AssertionError("a simulator was started although simulator=True")

        monkeypatch.setattr(qml, "device", no_device)
        tokens, graph = instance(1)
        plan = plan_routing(tokens, graph, {**QAOA, "simulator": True})
        assert plan.solver.ran == "classical-drop-in"
        (fallback,) = plan.solver.fallbacks
        assert (fallback.from_, fallback.to) == ("qaoa+hqc", "classical-drop-in")
        assert "simulator" in fallback.reason
        quantum = plan.solver.quantum
        assert quantum.device == "classical-drop-in" and quantum.circuits_run == 0
        assert quantum.block_ratios and all(r == 1.0 for r in quantum.block_ratios)
        check_plan_consistency(plan, tokens)

    @pytest.mark.parametrize("deterministic", [False, True])
    def test_time_budget_zero_keeps_the_classical_plan(self, monkeypatch, deterministic):
        monkeypatch.setenv("QFLOW_QUANTUM_TIME_BUDGET_S", "0")
        tokens, graph = instance(2)
        plan = plan_routing(tokens, graph, {**QAOA, "deterministic_fallback": deterministic})
        (fallback,) = plan.solver.fallbacks
        assert (plan.solver.requested, plan.solver.ran, fallback.to) == ("qaoa+hqc", "classical", "classical")
        assert "time budget" in fallback.reason
        assert plan.solver.quantum is None
        classical, hashed = self.classical_and_hash(tokens, graph)
        assert plan.result["assignments"] == classical != hashed
        assert plan.metrics["tokens_moved_by_qaoa"] == plan.metrics["tokens_moved_by_exact_blocks"] == 0
        assert any("deterministic_fallback" in note for note in plan.diagnostics) == deterministic
        check_plan_consistency(plan, tokens)

    @pytest.mark.parametrize("deterministic", [False, True])
    def test_no_quantum_library_keeps_the_classical_plan(self, monkeypatch, deterministic):
        def unavailable(*args, **kwargs):
            raise QuantumUnavailableError("pennylane is not installed")

        monkeypatch.setattr("qflow.core.skeleton.choose_device", unavailable)
        tokens, graph = instance(3)
        plan = plan_routing(tokens, graph, {**QAOA, "hqc": False, "deterministic_fallback": deterministic})
        assert plan.solver.requested == "qaoa" and plan.solver.ran == "classical"
        assert [f.reason for f in plan.solver.fallbacks] == ["pennylane is not installed"]
        classical, hashed = self.classical_and_hash(tokens, graph)
        assert plan.result["assignments"] == classical != hashed

    def test_hash_only_when_asked_with_qaoa_off(self):
        tokens, graph = instance(3)
        plan = plan_routing(tokens, graph, {**QAOA, "qaoa": False, "deterministic_fallback": True})
        assert plan.solver.requested == plan.solver.ran == "hash"
        assert not any("deterministic_fallback" in note for note in plan.diagnostics)

    def test_simulator_without_qaoa_is_flagged(self):
        tokens, graph = instance(1)
        plan = plan_routing(tokens, graph, {**QAOA, "qaoa": False, "simulator": True})
        assert plan.solver.ran == "classical" and plan.solver.fallbacks == []
        assert any("simulator" in note and "qaoa is off" in note for note in plan.diagnostics)
        quiet = plan_routing(tokens, graph, {**QAOA, "qaoa": False})
        assert not any("simulator" in note for note in quiet.diagnostics)

    @pytest.mark.parametrize("max_qubits", [21, 24])
    def test_max_qubits_up_to_the_documented_cap_runs(self, max_qubits):
        """The documented range reaches 24: blocks grow past 16 tokens, never past the exact check's reach."""
        tokens, graph = make_tokens(120, 4, seed=4, skew=0.2), make_graph(2, 2)
        plan = plan_routing(tokens, graph, {**QAOA, "simulator": True, "max_qubits": max_qubits, "qaoa_blocks": 1})
        quantum = plan.solver.quantum
        largest = max(quantum.qubits_per_circuit)
        assert 16 < largest <= min(max_qubits, EXACT_MAX_VARIABLES)
        assert any("limited to" in note for note in plan.diagnostics) == (max_qubits > EXACT_MAX_VARIABLES)
        check_plan_consistency(plan, tokens)

    def test_simulator_crash_falls_back(self, monkeypatch):
        def broken(*args, **kwargs):
            raise RuntimeError("out of device memory")

        monkeypatch.setattr(qml, "device", broken)
        tokens, graph = instance(5)
        plan = plan_routing(tokens, graph, QAOA)
        assert plan.solver.ran == "classical"
        assert "RuntimeError: out of device memory" in plan.solver.fallbacks[0].reason
        check_plan_consistency(plan, tokens)

    def test_hqc_without_qaoa_is_flagged(self):
        tokens, graph = instance(1)
        plan = plan_routing(tokens, graph, {**QAOA, "qaoa": False})
        assert plan.solver.requested == plan.solver.ran == "classical"
        assert any("hqc" in note for note in plan.diagnostics)


def test_progress_sink_can_stop_qaoa_between_steps():
    """The console's Cancel raises from the progress sink; during QAOA it must fire per optimiser step."""

    class Cancelled(BaseException):
        pass

    qaoa_reports = []

    def progress(fraction: float, message: str) -> None:
        if message == "QAOA refinement":
            qaoa_reports.append(fraction)
            if len(qaoa_reports) == 4:  # the stage's own report, then three optimiser steps
                raise Cancelled

    tokens, graph = instance(1)
    with pytest.raises(Cancelled):
        plan_routing(tokens, graph, {**QAOA, "seed": 1}, progress=progress)
    assert len(qaoa_reports) == 4
