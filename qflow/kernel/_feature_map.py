"""Feature maps and kernels: angle or IQP embedding states, their overlaps, the RBF baseline, alignment.

Angle map, one qubit per feature, repeated ``layers`` times (the map the
nvlink contention classifier uses when ``layers = 1``)::

    |phi(x)> = [RZ(theta) . CNOT ring . RY(theta)]^layers |0...0>

IQP map (Havlicek et al., 2019; PennyLane's ``IQPEmbedding``), repeated
``layers`` times: Hadamards, ``RZ(theta_i)`` and ``exp(-i theta_i theta_j
Z_i Z_j)`` on every pair, the pairs being its entangling layer.

The kernel is ``k(x, x') = |<phi(x)|phi(x')>|^2``: each row's state is
computed once, so ``n`` rows cost ``n`` circuits and the Gram matrix is one
complex matrix product (``qml.kernels.square_kernel_matrix`` would run one
circuit per pair, ``n^2``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qflow.core.errors import QuantumUnavailableError
from qflow.core.quantum import QuantumBudget, QuantumDevice, available_memory_bytes
from qflow.nvlink._kernel import overlap_kernel

__all__ = ["CLIP", "feature_angles", "feature_states", "gate_count", "kernel_matrix", "rbf_matrix", "target_alignment"]

#: Standardised features are clipped to +-CLIP standard deviations before scaling to angles.
CLIP = 3.0


def feature_angles(X: np.ndarray, scale: float) -> np.ndarray:
    """Rows (n, d) -> angles (n, d): per-column z-scores clipped to +-3, times ``scale`` radians.

    A constant column maps to angle 0.

    >>> feature_angles(np.array([[0.0, 5.0], [2.0, 5.0]]), 0.5).tolist()
    [[-0.5, 0.0], [0.5, 0.0]]
    """
    std = X.std(axis=0)
    z = (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return np.clip(z, -CLIP, CLIP) * scale


def gate_count(embedding: str, n_qubits: int, layers: int) -> int:
    """Gates of one feature-map circuit (for the memory estimate).

    >>> gate_count("angle", 4, 1), gate_count("iqp", 4, 2)
    (12, 28)
    """
    per_layer = 3 * n_qubits if embedding == "angle" else 2 * n_qubits + n_qubits * (n_qubits - 1) // 2
    return per_layer * layers


def _angle_layer(qml: Any, theta: Any, wires: list[int]) -> None:
    """``RY(theta)`` on each wire, a CNOT ring (none on one wire), ``RZ(theta)`` on each wire."""
    qml.AngleEmbedding(theta, wires=wires, rotation="Y")
    if len(wires) > 1:
        for w in wires:
            qml.CNOT(wires=[w, (w + 1) % len(wires)])
    qml.AngleEmbedding(theta, wires=wires, rotation="Z")


def state_circuit(device: QuantumDevice, embedding: str, n_qubits: int, layers: int) -> Any:
    """A QNode ``theta (d,) -> state (2**d,)`` of the feature map."""
    import pennylane as qml

    dev = qml.device(device.name, wires=n_qubits)
    wires = list(range(n_qubits))

    @qml.qnode(dev)
    def state(theta: np.ndarray) -> Any:
        if embedding == "iqp":
            qml.IQPEmbedding(theta, wires=wires, n_repeats=layers)
        else:
            for _ in range(layers):
                _angle_layer(qml, theta, wires)
        return qml.state()

    return state


def feature_states(angles: np.ndarray, embedding: str, layers: int, device: QuantumDevice,
                   budget: QuantumBudget) -> np.ndarray:
    """State vectors of the feature map at ``angles`` (n, d): shape (n, 2**d), complex.

    The budget checks the circuit (qubits, memory) and the memory of all
    ``n`` states before the first circuit, and the time before each (its heartbeat lets a Cancel stop the loop); it raises
    ``QuantumUnavailableError`` when it refuses.
    """
    n, d = angles.shape
    budget.check_circuit(d, gate_count(embedding, d, layers), device)
    need, have = n * 2**d * 16, int(available_memory_bytes() * budget.memory_fraction)
    if need > have:
        raise QuantumUnavailableError(f"{n} states of {d} qubits need about {need / 2**20:.0f} MiB, "
                                      f"over the {have / 2**20:.0f} MiB allowed")
    state = state_circuit(device, embedding, d, layers)
    out = np.empty((n, 2**d), dtype=complex)
    for i in range(n):
        budget.check_time()
        out[i] = np.asarray(state(angles[i]))
    return out


def kernel_matrix(states: np.ndarray) -> np.ndarray:
    """``|<s_i|s_j>|^2`` of states (n, D): shape (n, n), symmetric, unit diagonal (states are normalised)."""
    K = overlap_kernel(states, states)
    K = (K + K.T) / 2  # exact symmetry despite rounding in the product
    np.fill_diagonal(K, 1.0)
    return K


def rbf_matrix(z: np.ndarray, gamma: float) -> np.ndarray:
    """``exp(-gamma ||z_i - z_j||^2)`` of standardised rows (n, d): shape (n, n); gamma 0 means ``1 / d``.

    >>> rbf_matrix(np.array([[0.0], [1.0]]), 0.0).round(4).tolist()
    [[1.0, 0.3679], [0.3679, 1.0]]
    """
    g = gamma if gamma > 0 else 1.0 / z.shape[1]
    sq = (z**2).sum(axis=1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    return np.exp(-g * dist)


def target_alignment(K: np.ndarray, labels: np.ndarray) -> float:
    """Kernel-target alignment ``<K, T>_F / (||K||_F ||T||_F)`` with ``T_ij = +1`` same label, ``-1`` different.

    For two classes ``T = y y^T`` with ``y`` in {-1, +1} (Cristianini et al.,
    2001), as :func:`qflow.nvlink._kernel.kernel_target_alignment`; in [-1, 1],
    higher when the kernel's similarities follow the labels.

    >>> round(target_alignment(np.eye(2), np.array(["a", "b"])), 4)
    0.7071
    """
    labels = np.asarray(labels)
    target = np.where(labels[:, None] == labels[None, :], 1.0, -1.0)
    return float((K * target).sum() / (np.linalg.norm(K) * np.linalg.norm(target)))
