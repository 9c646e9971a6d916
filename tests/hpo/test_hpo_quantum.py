"""VQC: the angle encoding formula, the simulator against PennyLane, exact parameter-shift gradients, fallbacks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hpo_helpers import MIXED_SPACE

from qflow.core.quantum import QuantumBudget, choose_device
from qflow.hpo import parse_space, plan_hpo
from qflow.hpo._quantum import VQCSurrogate, encode_angles, expectations, param_shape

BRANIN_SPACE = {"x1": {"kind": "float", "low": -5, "high": 10}, "x2": {"kind": "float", "low": 0, "high": 15}}


class TestAngleEncoding:
    def test_exactly_the_formula(self):
        space = parse_space(MIXED_SPACE)
        config = {"lr": 1e-3, "depth": 7, "act": "gelu", "dropout": 0.125}
        theta = encode_angles(space, [config])[0]
        expected = [math.pi * (math.log(1e-3) - math.log(1e-4)) / (math.log(1e-1) - math.log(1e-4)),
                    math.pi * (7 - 2) / (9 - 2), math.pi * 2 / 2, math.pi * 0.125 / 0.5]
        assert theta.tolist() == pytest.approx(expected, abs=1e-12)
        assert encode_angles(parse_space({"x": {"kind": "float", "low": -5, "high": 10}}), [{"x": 0.0}])[0, 0] == \
            pytest.approx(math.pi * 5 / 15, abs=1e-15)

    def test_round_trips(self):
        # The plan decodes a VQC proposal's angles as space.from_unit(theta / pi).
        space = parse_space(MIXED_SPACE)
        configs = space.from_unit(space.sample_unit(np.random.default_rng(3), 20))
        back = space.from_unit(encode_angles(space, configs) / math.pi)
        for a, b in zip(configs, back, strict=True):
            assert a["depth"] == b["depth"] and a["act"] == b["act"]
            assert a["lr"] == pytest.approx(b["lr"], rel=1e-12) and a["dropout"] == pytest.approx(b["dropout"], abs=1e-12)
        assert np.all((encode_angles(space, configs) >= 0) & (encode_angles(space, configs) <= math.pi))


class TestCircuit:
    def test_simulator_matches_pennylane(self):
        space = parse_space({f"x{i}": {"kind": "float", "low": 0, "high": 1} for i in range(3)})
        device = choose_device()
        vqc = VQCSurrogate(space, 2, 1, 0, 0, device, QuantumBudget())
        U = np.random.default_rng(0).random((3, 3))
        assert vqc.device_check(U) < 1e-10

    def test_single_qubit_closed_form(self):
        # One qubit, one layer: <Z> = cos(theta + w0) (RZ does not change Z).
        theta = np.array([[0.3], [1.2]])
        weights = np.array([[[0.4, 0.9]]])
        assert expectations(theta, weights)[:, 0] == pytest.approx(np.cos(theta[:, 0] + 0.4))

    def test_parameter_shift_equals_finite_differences(self):
        rng = np.random.default_rng(1)
        theta, w = rng.random((4, 3)) * math.pi, rng.normal(size=param_shape(2, 3))
        for index in [(0, 0, 0), (1, 2, 1), (1, 1, 0)]:
            plus, minus, hplus, hminus = w.copy(), w.copy(), w.copy(), w.copy()
            plus[index] += math.pi / 2
            minus[index] -= math.pi / 2
            hplus[index] += 1e-6
            hminus[index] -= 1e-6
            shift = (expectations(theta, plus) - expectations(theta, minus)) / 2
            fd = (expectations(theta, hplus) - expectations(theta, hminus)) / 2e-6
            assert shift == pytest.approx(fd, abs=1e-6)

    def test_training_reduces_the_loss(self):
        space = parse_space({"x": {"kind": "float", "low": 0, "high": 1}, "z": {"kind": "float", "low": 0, "high": 1}})
        U = np.random.default_rng(2).random((12, 2))
        y = np.cos(math.pi * U[:, 0]) + 0.5 * U[:, 1]
        vqc = VQCSurrogate(space, 2, 40, 0, 0, choose_device(), QuantumBudget())
        vqc.fit(U, y)
        assert vqc.losses[-1] < 0.5 * vqc.losses[0]


class TestVqcPlans:
    def test_vqc_records_shots_steps_and_proposes(self):
        plan = plan_hpo(BRANIN_SPACE, None, {"objective": "branin", "vqc_optimizer": True, "n_trials": 8, "n_initial": 4,
                                             "vqc_steps": 3, "vqc_shots": 200, "baselines": False, "suggest": 2})
        assert plan.solver.requested == plan.solver.ran == "vqc" and not plan.solver.fallbacks
        q = plan.solver.quantum
        assert q.qubits_per_circuit == [2] and q.layers == 2 and q.blocks[0]["shots"] == 200
        assert q.optimizer_steps == [3] * 5  # 4 VQC rounds + the final suggestions, 3 steps each
        assert q.circuits_run > 0 and q.blocks[0]["device_check_max_abs_diff"] < 1e-10
        assert plan.metrics["trials_by_method"] == {"initial": 4, "vqc": 4}

    def test_hybrid_switches_to_the_gp_where_configured(self):
        plan = plan_hpo(BRANIN_SPACE, None, {"objective": "branin", "hybrid": True, "hybrid_switch": 3, "n_trials": 10,
                                             "n_initial": 4, "vqc_steps": 3, "baselines": False, "suggest": 1})
        methods = [t["method"] for t in plan.result["trials"]]
        assert methods == ["initial"] * 4 + ["vqc"] * 3 + ["gp-ei"] * 3
        assert plan.result["hybrid"] == {"switch_after_vqc_trials": 3, "switch_trial": 8, "vqc_trials": 3, "gp_trials": 3}

    def test_too_many_qubits_falls_back_with_a_reason(self):
        plan = plan_hpo(MIXED_SPACE, None, {"objective": "none", "vqc_optimizer": True, "max_qubits": 2})
        assert plan.solver.requested == "vqc" and "4 qubits, over the budget of 2" in plan.solver.fallbacks[0].reason
        # No history: the suggestions come from the random initial design, and the plan says so.
        assert plan.solver.ran == "random" and [(f.from_, f.to) for f in plan.solver.fallbacks] == [("vqc", "gp-ei"), ("gp-ei", "random")]
        assert plan.solver.quantum is None

    def test_time_budget_exceeded_falls_back(self, monkeypatch):
        monkeypatch.setenv("QFLOW_QUANTUM_TIME_BUDGET_S", "0")
        plan = plan_hpo(BRANIN_SPACE, None, {"objective": "branin", "vqc_optimizer": True, "n_trials": 6, "n_initial": 4,
                                             "baselines": False, "suggest": 1})
        assert plan.solver.ran == "gp-ei" and "time budget" in plan.solver.fallbacks[0].reason
        assert [t["method"] for t in plan.result["trials"]][4:] == ["gp-ei", "gp-ei"]


class TestWarmStart:
    def test_warm_weights_are_the_negated_encodings_of_the_best_trials(self):
        space = parse_space(BRANIN_SPACE)
        rng = np.random.default_rng(0)
        U = space.sample_unit(rng, 8)
        y = rng.random(8)
        vqc = VQCSurrogate(space, 2, 2, 0, 0, choose_device(), QuantumBudget(max_qubits=4, time_budget_s=60))
        cold = vqc.weights.copy()
        seen = []
        real_fit = vqc.fit

        def recording_fit(U_, y_):
            seen.append(vqc.weights.copy())
            return real_fit(U_, y_)

        vqc.fit = recording_fit
        report = vqc.warm_start(U, y, top=3)
        best = np.argsort(y)[:3]
        assert np.array_equal(seen[0], cold)
        assert np.allclose(seen[1][:, :, 0], -math.pi * U[best].mean(axis=0)) and np.array_equal(seen[1][:, :, 1], cold[:, :, 1])
        assert report["adopted"] == (report["mean_training_mse_warm"] < report["mean_training_mse_cold"])
        assert report["from_observations"] == 3 and report["steps"] == 2

    def test_plan_reports_the_warm_start_against_the_cold_start(self):
        history = pd.DataFrame({"x1": [-3.0, 2.0, 3.1, 9.0, 0.0], "x2": [12.0, 3.0, 2.3, 2.0, 7.0]})
        history["objective"] = [(x2 - 5.1 / (4 * math.pi**2) * x1**2 + 5 / math.pi * x1 - 6) ** 2 for x1, x2 in
                                zip(history["x1"], history["x2"], strict=True)]
        plan = plan_hpo(BRANIN_SPACE, history, {"objective": "branin", "vqc_optimizer": True, "vqc_warm_start": True,
                                                "n_trials": 2, "n_initial": 2, "vqc_steps": 2, "baselines": False,
                                                "suggest": 1})
        w = plan.result["vqc_warm_start"]
        assert w["adopted"] == (w["mean_training_mse_warm"] < w["mean_training_mse_cold"])
        assert ("did not beat the cold start's" in " ".join(plan.diagnostics)) == (not w["adopted"])
        assert plan.solver.quantum.optimizer_steps[:2] == [2, 2]  # the two measured first fits are reported work
        assert "vqc_warm_start" in plan.timings_s

    def test_without_history_it_says_it_has_no_effect(self):
        plan = plan_hpo(BRANIN_SPACE, None, {"objective": "branin", "vqc_optimizer": True, "vqc_warm_start": True,
                                             "n_trials": 4, "n_initial": 4, "vqc_steps": 2, "baselines": False, "suggest": 1})
        assert "vqc_warm_start" not in plan.result
        assert any(d.startswith("vqc_warm_start set but without effect: it starts from the history's trials") for d in plan.diagnostics)
