"""Quantum kernel for the contention classifier, measured against the RBF SVC on the same split.

Feature map, one qubit per feature (``d = len(FEATURES) = 8``): the features
are standardised on the training split, clipped to ``[-3, 3]`` and scaled to
angles ``theta = z * pi / 6`` (so within ``[-pi/2, pi/2]``), then::

    |phi(x)> = RZ(theta) . CNOT ring . RY(theta) |0...0>

(PennyLane ``AngleEmbedding`` with Y rotations, an entangling ring of CNOTs,
``AngleEmbedding`` again with Z rotations). The kernel is the state overlap
``k(x, x') = |<phi(x)|phi(x')>|^2``: each point's state is computed once on
the device (``lightning.qubit`` when installed), and the Gram matrix is one
complex matrix product of the states, so ``n`` points cost ``n`` circuits, not
``n^2`` (``qml.kernels.square_kernel_matrix`` would run one circuit per pair).

Kernel-target alignment (Cristianini et al., 2001), with labels ``y`` in
``{-1, +1}``: ``A(K) = <K, y y^T>_F / (||K||_F ||y y^T||_F)``, in ``[-1, 1]``;
higher means the kernel's similarities follow the classes more closely.

Both models are ``SVC(C=10, class_weight="balanced")`` on the same stratified
75/25 split (:func:`qflow.nvlink._classifier.split_logs`); the quantum one on
the precomputed kernel. The plan uses the quantum model's calls only when its
held-out accuracy is above the RBF model's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from qflow.core.quantum import QuantumBudget, QuantumDevice
from qflow.nvlink._classifier import FEATURES, ContentionModel, split_logs

__all__ = ["QuantumKernelModel", "feature_states", "kernel_target_alignment", "compare_kernels"]

#: Standardised features are clipped to +-CLIP and scaled by ANGLE_SCALE (radians per standard deviation).
CLIP = 3.0
ANGLE_SCALE = math.pi / 6


def _circuit(device: QuantumDevice, n_qubits: int) -> Any:
    import pennylane as qml

    dev = qml.device(device.name, wires=n_qubits)
    wires = list(range(n_qubits))

    @qml.qnode(dev)
    def state(theta: np.ndarray) -> Any:
        qml.AngleEmbedding(theta, wires=wires, rotation="Y")
        for w in wires:
            qml.CNOT(wires=[w, (w + 1) % n_qubits])
        qml.AngleEmbedding(theta, wires=wires, rotation="Z")
        return qml.state()

    return state


def feature_states(angles: np.ndarray, device: QuantumDevice, budget: QuantumBudget) -> np.ndarray:
    """State vectors of the feature map at ``angles`` (n, d): shape (n, 2**d), complex.

    The budget is checked before the first circuit (qubits, memory) and before
    each one (time; its heartbeat lets a Cancel stop the loop).
    """
    n, d = angles.shape
    budget.check_circuit(d, 3 * d, device)
    state = _circuit(device, d)
    out = np.empty((n, 2**d), dtype=complex)
    for i in range(n):
        budget.check_time()
        out[i] = np.asarray(state(angles[i]))
    return out


def overlap_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|<a_i|b_j>|^2`` of two sets of states (n, D) and (m, D): shape (n, m).

    >>> s = np.array([[1, 0], [0, 1], [2**-0.5, 2**-0.5]], dtype=complex)
    >>> overlap_kernel(s, s).round(3).tolist()
    [[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.5, 0.5, 1.0]]
    """
    return np.abs(a.conj() @ b.T) ** 2


def kernel_target_alignment(K: np.ndarray, y: np.ndarray) -> float:
    """``<K, y y^T>_F / (||K||_F ||y y^T||_F)`` with ``y`` (n,) in {0, 1} mapped to {-1, +1}.

    >>> round(kernel_target_alignment(np.eye(2), np.array([0, 1])), 4)  # 2 / (sqrt(2) * 2)
    0.7071
    """
    s = np.where(np.asarray(y) > 0, 1.0, -1.0)
    target = np.outer(s, s)
    return float((K * target).sum() / (np.linalg.norm(K) * np.linalg.norm(target)))


@dataclass
class QuantumKernelModel:
    """SVC on the precomputed quantum kernel, with the training states and the angle map."""

    svc: Any
    mean: np.ndarray
    std: np.ndarray
    train_states: np.ndarray
    device: QuantumDevice
    budget: QuantumBudget

    def angles(self, X: np.ndarray) -> np.ndarray:
        """Feature rows (n, d) -> angles (n, d) of the feature map."""
        return np.clip((X - self.mean) / self.std, -CLIP, CLIP) * ANGLE_SCALE

    def kernel_to_train(self, X: np.ndarray) -> np.ndarray:
        """Kernel between rows ``X`` (n, d) and the training points: shape (n, n_train)."""
        return overlap_kernel(feature_states(self.angles(X), self.device, self.budget), self.train_states)

    def predict(self, features: dict[str, float]) -> dict[str, Any]:
        K = self.kernel_to_train(np.array([[features[f] for f in FEATURES]]))
        return {"congested": bool(self.svc.predict(K)[0]), "score": float(self.svc.decision_function(K)[0])}


def _scores(y_true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    return {"held_out_accuracy": float(accuracy_score(y_true, predicted)),
            "held_out_balanced_accuracy": float(balanced_accuracy_score(y_true, predicted))}


def compare_kernels(logs: pd.DataFrame, seed: int, rbf: ContentionModel, device: QuantumDevice,
                    budget: QuantumBudget) -> tuple[QuantumKernelModel, dict[str, Any], float]:
    """Train the quantum-kernel SVC on the split ``rbf`` was trained on; returns (model, report, fit time in s).

    The report holds each model's held-out accuracy, balanced accuracy and
    training-set kernel-target alignment, the quantum model's confusion matrix,
    and whether it is adopted (its accuracy above the RBF model's). The fit time
    (states + SVC fit) goes to the plan's ``timings_s``, not its result, so plans
    stay deterministic. Raises ``QuantumUnavailableError`` when the budget refuses.
    """
    from sklearn.metrics import confusion_matrix
    from sklearn.metrics.pairwise import rbf_kernel
    from sklearn.svm import SVC

    X_train, X_test, y_train, y_test = split_logs(logs, seed)
    started = time.perf_counter()
    mean, std = X_train.mean(axis=0), np.where(X_train.std(axis=0) > 0, X_train.std(axis=0), 1.0)
    model = QuantumKernelModel(SVC(kernel="precomputed", C=10.0, class_weight="balanced"), mean, std,
                               np.zeros((0, 2 ** X_train.shape[1]), dtype=complex), device, budget)
    model.train_states = feature_states(model.angles(X_train), device, budget)
    K_train = overlap_kernel(model.train_states, model.train_states)
    model.svc.fit(K_train, y_train)
    fit_s = time.perf_counter() - started
    predicted = model.svc.predict(model.kernel_to_train(X_test))
    quantum = _scores(y_test, predicted)
    scaled = rbf.pipeline[0].transform(X_train)
    gamma = 1.0 / (scaled.shape[1] * scaled.var())  # SVC's gamma="scale" on the standardised features
    classical = {k: rbf.report[k] for k in ("held_out_accuracy", "held_out_balanced_accuracy")}
    report = {
        "feature_map": "AngleEmbedding(Y) + CNOT ring + AngleEmbedding(Z), theta = clip(z, -3, 3) * pi/6",
        "device": device.name, "qubits": int(X_train.shape[1]), "circuits": int(len(X_train) + len(X_test)),
        "quantum": {**quantum, "kernel_target_alignment": kernel_target_alignment(K_train, y_train),
                    "confusion_matrix": confusion_matrix(y_test, predicted, labels=[0, 1]).tolist()},
        "rbf": {**classical, "kernel_target_alignment": kernel_target_alignment(rbf_kernel(scaled, gamma=gamma), y_train)},
        "adopted": quantum["held_out_accuracy"] > classical["held_out_accuracy"],
        "adoption_rule": "the quantum kernel's calls are used when its held-out accuracy is above the RBF SVC's",
    }
    return model, report, fit_s
