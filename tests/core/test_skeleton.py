"""The plan skeleton and the shared quantum step."""

import pytest

from qflow.core.config import QflowConfig
from qflow.core.errors import InputError
from qflow.core.plan import SolverReport
from qflow.core.quantum import QuantumBudget, QuantumDevice
from qflow.core.skeleton import PlanRun, quantum_step

DEVICE = QuantumDevice("default.qubit", "backprop", "test")


class _Config(QflowConfig):
    depth: int = 1


def test_stages_report_progress_in_order_and_land_in_timings():
    seen = []
    run = PlanRun.start("demo", {"depth": 2}, _Config, requested=lambda c: f"d{c.depth}",
                        progress=lambda f, m: seen.append((f, m)))
    with run.stage("load", 0.1, "loading"):
        pass
    with run.stage("solve"):
        pass
    run.note("careful")
    plan = run.finish({"x": 1}, {"cost": 2.0})
    assert seen == [(0.1, "loading"), (1.0, "done")]
    assert list(plan.timings_s) == ["load", "solve"]
    assert plan.solver.requested == plan.solver.ran == "d2"
    assert plan.config["depth"] == 2 and plan.diagnostics == ["careful"]


def test_invalid_config_names_the_field():
    with pytest.raises(InputError, match="depth"):
        PlanRun.start("demo", {"depth": "deep"}, _Config, requested="x")


def test_quantum_step_returns_the_value_when_it_runs():
    solver = SolverReport(requested="qaoa", ran="qaoa")
    out = quantum_step(solver, lambda d, b: (d.name, b.max_qubits), QuantumBudget(max_qubits=5),
                       fallback_to="classical", device=DEVICE)
    assert out == ("default.qubit", 5) and solver.ran == "qaoa" and not solver.fallbacks


def test_quantum_step_records_the_fallback_with_its_reason():
    solver = SolverReport(requested="qaoa", ran="qaoa")

    def too_big(device, budget):
        budget.check_circuit(budget.max_qubits + 1, 10, device)

    out = quantum_step(solver, too_big, QuantumBudget(max_qubits=3), fallback_to="classical", what="block 2",
                       device=DEVICE)
    assert out is None and solver.ran == "classical"
    assert solver.fallbacks[0].reason.startswith("block 2: circuit needs 4 qubits")


def test_quantum_step_can_name_the_step_it_drops():
    solver = SolverReport(requested="plain+hhl+qsvt", ran="plain+hhl+qsvt")

    def too_big(device, budget):
        budget.check_circuit(budget.max_qubits + 1, 10, device)

    quantum_step(solver, too_big, QuantumBudget(max_qubits=3), fallback_to="plain+qsvt", fallback_from="hhl", device=DEVICE)
    assert solver.ran == "plain+qsvt"
    assert (solver.fallbacks[0].from_, solver.fallbacks[0].to) == ("hhl", "plain+qsvt")


def test_quantum_step_lets_other_errors_through():
    solver = SolverReport(requested="qaoa", ran="qaoa")

    def broken(device, budget):
        raise ValueError("bug")

    with pytest.raises(ValueError):
        quantum_step(solver, broken, QuantumBudget(), fallback_to="classical", device=DEVICE)
    assert solver.ran == "qaoa" and not solver.fallbacks


@pytest.mark.parametrize("bad", ["abc", 3, ["depth", 1]])
def test_a_config_that_is_not_a_mapping_is_one_line(bad):
    with pytest.raises(InputError, match="not a mapping"):
        PlanRun.start("demo", bad, _Config, requested="x")
