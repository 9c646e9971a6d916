"""The quantum kernel: its matrix, its alignment, its limits, and the CLI and API on a features CSV."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from qflow.api import create_app
from qflow.cli import main as cli_main
from qflow.core.errors import InputError
from qflow.core.limits import LimitExceededError
from qflow.core.quantum import QuantumBudget, choose_device
from qflow.core.runs import RunStore
from qflow.kernel import KernelConfig, plan_kernel
from qflow.kernel._feature_map import feature_angles, feature_states, kernel_matrix, target_alignment
from qflow.kernel._plan import split_table
from qflow.nvlink._kernel import kernel_target_alignment

pytest.importorskip("pennylane")


def _states(angles: np.ndarray, embedding: str = "angle", layers: int = 1) -> np.ndarray:
    return feature_states(angles, embedding, layers, choose_device(), QuantumBudget(max_qubits=16, time_budget_s=60))


def _ry(t: float) -> np.ndarray:
    return np.array([[np.cos(t / 2), -np.sin(t / 2)], [np.sin(t / 2), np.cos(t / 2)]], dtype=complex)


def _rz(t: float) -> np.ndarray:
    return np.diag([np.exp(-0.5j * t), np.exp(0.5j * t)])


def _angle_state_by_hand(theta: np.ndarray) -> np.ndarray:
    """RY on both qubits, CNOT(0,1) then CNOT(1,0), RZ on both; wire 0 is the most significant bit."""
    cnot01 = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=complex)
    cnot10 = np.array([[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0]], dtype=complex)
    psi = np.kron(_ry(theta[0]), _ry(theta[1])) @ np.array([1, 0, 0, 0], dtype=complex)
    psi = cnot10 @ (cnot01 @ psi)
    return np.kron(_rz(theta[0]), _rz(theta[1])) @ psi


class TestMatrix:
    @pytest.mark.parametrize("embedding", ["angle", "iqp"])
    def test_symmetric_psd_unit_diagonal(self, embedding):
        rng = np.random.default_rng(1)
        K = kernel_matrix(_states(rng.uniform(-1.5, 1.5, (12, 3)), embedding, 2))
        assert np.allclose(K, K.T)
        assert np.allclose(np.diag(K), 1.0)
        assert np.linalg.eigvalsh(K).min() > -1e-9
        assert (K >= -1e-12).all() and (K <= 1 + 1e-12).all()
        assert not np.allclose(K, np.eye(12), atol=1e-3)  # distinct points are not orthogonal states

    def test_two_points_equal_the_hand_computed_overlap(self):
        a, b = np.array([0.3, -1.1]), np.array([1.2, 0.4])
        K = kernel_matrix(_states(np.stack([a, b])))
        expected = abs(np.vdot(_angle_state_by_hand(a), _angle_state_by_hand(b))) ** 2
        assert K[0, 1] == pytest.approx(expected, abs=1e-10)
        assert 0.05 < expected < 0.95  # a non-trivial pair

    def test_angle_map_is_the_nvlink_classifiers_map(self):
        from qflow.nvlink._kernel import feature_states as nvlink_states

        angles = np.random.default_rng(7).uniform(-1.5, 1.5, (4, 3))
        budget = QuantumBudget(max_qubits=16, time_budget_s=60)
        np.testing.assert_allclose(_states(angles), nvlink_states(angles, choose_device(), budget), atol=1e-12)

    def test_iqp_differs_from_angle(self):
        angles = np.array([[0.3, -1.1], [1.2, 0.4]])
        assert kernel_matrix(_states(angles, "iqp"))[0, 1] != pytest.approx(kernel_matrix(_states(angles))[0, 1], abs=1e-3)


class TestAlignment:
    def test_higher_for_labels_the_kernel_separates(self):
        # two tight clusters far apart in angle space: the kernel separates them
        rng = np.random.default_rng(0)
        angles = np.vstack([rng.normal(-1.0, 0.05, (8, 3)), rng.normal(1.0, 0.05, (8, 3))])
        K = kernel_matrix(_states(angles))
        by_cluster = np.array(["a"] * 8 + ["b"] * 8)
        shuffled = np.array(["a", "b"] * 8)
        assert target_alignment(K, by_cluster) > target_alignment(K, shuffled) + 0.2

    def test_matches_the_nvlink_definition_for_two_classes(self):
        rng = np.random.default_rng(3)
        x = rng.normal(size=(6, 2))
        K = x @ x.T + 6 * np.eye(6)
        y = np.array([0, 1, 1, 0, 1, 0])
        assert target_alignment(K, y.astype(str)) == pytest.approx(kernel_target_alignment(K, y))


def _frame(rows: int = 16, features: int = 3, labels: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.normal(size=(rows, features)), columns=[f"f{i}" for i in range(features)])
    if labels:
        frame["label"] = np.where(frame["f0"] > 0, "hot", "cold")
    return frame


class TestPlan:
    def test_plan_reports_matrix_alignment_and_the_rbf_baseline(self):
        plan = plan_kernel(_frame(), KernelConfig(embedding="iqp"))
        K = np.array(plan.result["matrix"])
        assert K.shape == (16, 16) and np.allclose(np.diag(K), 1.0)
        assert plan.solver.ran == "quantum_kernel" and plan.solver.quantum.qubits_per_circuit == [3]
        assert plan.solver.quantum.circuits_run == 16
        labels = np.where(_frame()["f0"] > 0, "hot", "cold")
        assert plan.metrics["kernel_target_alignment"] == pytest.approx(target_alignment(K, labels))
        assert set(plan.baselines["rbf"]) >= {"kernel_target_alignment", "mean_off_diagonal", "min_eigenvalue"}
        assert plan.result["classes"] == {"cold": int((labels == "cold").sum()), "hot": int((labels == "hot").sum())}
        assert set(plan.timings_s) >= {"read", "rbf", "states", "kernel"}

    def test_without_labels_no_alignment_and_a_note(self):
        plan = plan_kernel(_frame(labels=False))
        assert plan.metrics["kernel_target_alignment"] is None and plan.result["label_column"] is None
        assert any("alignment not computed" in d for d in plan.diagnostics)

    def test_large_matrix_goes_beside_the_plan(self, tmp_path):
        plan = plan_kernel(_frame(rows=10), KernelConfig(inline_rows=4), out=tmp_path / "k.json")
        assert plan.result["matrix"] is None
        K = np.load(plan.result["matrix_file"], allow_pickle=False)
        assert K.shape == (10, 10) and Path(plan.result["matrix_file"]).name == "k.kernel.npy"

    def test_qubit_budget_falls_back_to_rbf_with_the_reason(self):
        plan = plan_kernel(_frame(features=3), KernelConfig(max_qubits=2))
        assert plan.solver.ran == "rbf_kernel" and "3 qubits" in plan.solver.fallbacks[0].reason
        assert plan.result["kernel"] == "rbf"
        assert plan.metrics["kernel_target_alignment"] == pytest.approx(plan.baselines["rbf"]["kernel_target_alignment"])


class TestInputs:
    def test_rows_over_the_limit_refused_before_work(self, monkeypatch):
        monkeypatch.setenv("QFLOW_MAX_KERNEL_ROWS", "10")
        with pytest.raises(LimitExceededError, match="kernel_rows"):
            split_table(_frame(rows=11), "label")

    def test_features_over_the_limit_refused(self, monkeypatch):
        monkeypatch.setenv("QFLOW_MAX_KERNEL_FEATURES", "2")
        with pytest.raises(LimitExceededError, match="kernel_features"):
            split_table(_frame(features=3), "label")

    @pytest.mark.parametrize(("frame", "match"), [
        (pd.DataFrame({"a": [1.0, "x"], "label": [0, 1]}), r"a \(row 2\): not a number"),
        (pd.DataFrame({"a": [1.0, None, 2.0]}), r"a \(row 2\): missing or non-finite"),
        (pd.DataFrame({"a": [1.0]}), "too few rows"),
        (pd.DataFrame({"label": [1, 2]}), "no feature column"),
        (pd.DataFrame({"a": [1.0, 2.0], "label": ["x", None]}), "missing label"),
    ])
    def test_bad_tables_are_one_line_errors(self, frame, match):
        with pytest.raises(InputError, match=match) as info:
            split_table(frame, "label")
        assert "\n" not in str(info.value)

    def test_angles_standardise_and_clip(self):
        X = np.array([[0.0], [0.0], [0.0], [0.0], [0.0], [0.0], [0.0], [0.0], [0.0], [100.0]])
        angles = feature_angles(X, 0.5)
        assert angles.max() == pytest.approx(1.5)  # z = 3 clipped at 3 standard deviations


SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "kernel" / "features.csv"


class TestFrontEnds:
    def test_cli_happy_path(self, tmp_path, capsys):
        out = tmp_path / "plan.json"
        assert cli_main(["kernel", "--features", str(SAMPLE), "--embedding", "iqp", "--out", str(out)]) == 0
        plan = json.loads(out.read_text())
        assert plan["module"] == "kernel" and len(plan["result"]["matrix"]) == 48
        assert "alignment" in capsys.readouterr().out

    def test_cli_bad_csv_is_exit_2_and_one_line(self, tmp_path, capsys):
        bad = tmp_path / "bad.csv"
        bad.write_text("a,b,label\n1,2,x\n3,oops,y\n")
        assert cli_main(["kernel", "--features", str(bad)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[0].startswith("error: bad.csv: b (row 2): not a number")

    @pytest.mark.parametrize("route", ["/v1/kernel", "/v1/kernel/plan"])
    def test_api_happy_path(self, tmp_path, route):
        with TestClient(create_app(store=RunStore(tmp_path / "runs.db")), base_url="http://localhost") as client:
            response = client.post(route, files={"features": ("features.csv", SAMPLE.read_bytes())},
                                   data={"config": json.dumps({"embedding": "angle"})})
        assert response.status_code == 200, response.text
        body = response.json()
        K = np.array(body["result"]["matrix"])
        assert K.shape == (48, 48) and np.allclose(K, K.T)
        assert body["metrics"]["kernel_target_alignment"] is not None and "rbf" in body["baselines"]

    def test_api_large_matrix_is_an_artifact(self, tmp_path):
        with TestClient(create_app(store=RunStore(tmp_path / "runs.db")), base_url="http://localhost") as client:
            response = client.post("/v1/kernel", files={"features": ("features.csv", SAMPLE.read_bytes())},
                                   data={"config": json.dumps({"inline_rows": 8})})
        assert response.status_code == 200, response.text
        assert response.json()["result"]["matrix"] is None
        assert response.headers["X-Qflow-Artifacts"].endswith(".kernel.npy")

    def test_api_bad_csv_is_a_422_one_line(self, tmp_path):
        with TestClient(create_app(store=RunStore(tmp_path / "runs.db")), base_url="http://localhost") as client:
            response = client.post("/v1/kernel", files={"features": ("f.csv", b"a,label\n1,x\nnope,y\n")})
        assert response.status_code == 422
        assert "a (row 2): not a number" in response.json()["detail"] and "\n" not in response.json()["detail"]
