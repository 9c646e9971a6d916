"""VQC optimizer: a variational circuit fitted to observed losses, candidates read off it.

Encoding: parameter ``j`` of a configuration is the angle of qubit ``j``,
``theta_j = pi * (x_j - a_j) / (b_j - a_j)`` (log scale: of ``log x``;
categoricals: of the choice index over ``0..k-1``), i.e. ``theta = pi * u``.

Ansatz (``layers`` times; the data is re-uploaded in every layer)::

    RY(theta_j) on each qubit j   # encoding
    RY(w[l, j, 0]) RZ(w[l, j, 1]) # trainable
    CNOT(j, j + 1 mod n)          # ring, when n > 1

Readout: ``<Z_j>`` on every qubit and ``<Z_i Z_j>`` on every pair; the
predicted loss is a linear head ``beta_0 + sum_k beta_k <O_k>`` solved in closed form (ridge) after each
step, and the circuit weights ``w`` follow Adam on the mean squared error
with exact parameter-shift gradients ``dE/dw = (E(w + pi/2) - E(w - pi/2)) / 2``.

Training evaluates thousands of small circuits per step, so the state
vectors of a whole batch (data points x shifts) are simulated together in
NumPy; the trained circuit is then run on the PennyLane device chosen by
:func:`qflow.core.quantum.choose_device` and the two must agree (the
difference is recorded in the plan).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qflow.core.errors import QuantumUnavailableError
from qflow.core.quantum import QuantumBudget, QuantumDevice
from qflow.hpo._classical import propose_batch
from qflow.hpo._schemas import Space

__all__ = ["encode_angles", "param_shape", "expectations", "VQCSurrogate"]


def encode_angles(space: Space, configs: list[dict[str, Any]]) -> np.ndarray:
    """Qubit angles ``theta = pi (x - a) / (b - a)`` of each configuration: shape (n, d), in [0, pi].

    >>> from qflow.hpo._schemas import parse_space
    >>> space = parse_space({"x": {"kind": "float", "low": 2.0, "high": 6.0}})
    >>> encode_angles(space, [{"x": 3.0}]).round(6).tolist()
    [[0.785398]]
    """
    return math.pi * space.to_unit(configs)


def param_shape(n_layers: int, n_qubits: int) -> tuple[int, int, int]:
    """Shape of the trainable weights: (layers, qubits, 2) -- one RY and one RZ angle each."""
    return (n_layers, n_qubits, 2)


def _fused(angle_y: np.ndarray, angle_z: np.ndarray) -> np.ndarray:
    """``RZ(angle_z) @ RY(angle_y)`` per item: shape (B, 2, 2).

    ``RY(theta) RY(w0) = RY(theta + w0)`` (same axis), so encoding and the
    trainable RY fuse into one rotation and then one matrix with the RZ: a
    third of the gate applications, the same circuit.
    """
    c, s = np.cos(angle_y / 2), np.sin(angle_y / 2)
    em, ep = np.exp(-0.5j * angle_z), np.exp(0.5j * angle_z)
    return np.stack([np.stack([em * c, -em * s], -1), np.stack([ep * s, ep * c], -1)], -2)


def _apply(psi: np.ndarray, gate: np.ndarray, wire: int, n: int) -> np.ndarray:
    """Apply per-item 2x2 ``gate`` (B, 2, 2) on ``wire`` of states ``psi`` (B, 2**n); wire 0 is the leading bit."""
    B = psi.shape[0]
    view = psi.reshape(B, 2**wire, 2, 2 ** (n - wire - 1))
    a0, a1 = view[:, :, 0, :], view[:, :, 1, :]
    g = gate[:, :, :, None, None]
    out = np.empty_like(view)
    out[:, :, 0, :] = g[:, 0, 0] * a0 + g[:, 0, 1] * a1
    out[:, :, 1, :] = g[:, 1, 0] * a0 + g[:, 1, 1] * a1
    return out.reshape(B, 2**n)


def _cnot_perm(control: int, target: int, n: int) -> np.ndarray:
    k = np.arange(2**n)
    cbit = (k >> (n - 1 - control)) & 1
    return np.where(cbit == 1, k ^ (1 << (n - 1 - target)), k)


def expectations(theta: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``<Z_j>`` then ``<Z_i Z_j>`` (i < j) of the ansatz for each row: shape (B, n + n(n-1)/2).

    Parameters
    ----------
    theta : ndarray of shape (B, n)
        Data angles.
    weights : ndarray of shape (B, layers, n, 2) or (layers, n, 2)
        Trainable angles, per row or shared.
    """
    theta = np.atleast_2d(theta)
    B, n = theta.shape
    if weights.ndim == 3:
        weights = np.broadcast_to(weights, (B, *weights.shape))
    psi = np.zeros((B, 2**n), dtype=complex)
    psi[:, 0] = 1.0
    for layer in range(weights.shape[1]):
        for j in range(n):
            psi = _apply(psi, _fused(theta[:, j] + weights[:, layer, j, 0], weights[:, layer, j, 1]), j, n)
        if n > 1:
            for j in range(n if n > 2 else 1):
                psi = psi[:, _cnot_perm(j, (j + 1) % n, n)]
    return (np.abs(psi) ** 2) @ _readout_signs(n)


def _readout_signs(n: int) -> np.ndarray:
    """Eigenvalues of the readout observables on each basis state: shape (2**n, n + n(n-1)/2).

    Columns: ``Z_j`` for each qubit, then ``Z_i Z_j`` for each pair ``i < j``
    (the correlators give the linear head products of parameters to fit).
    """
    k = np.arange(2**n)
    z = 1.0 - 2.0 * ((k[:, None] >> (n - 1 - np.arange(n))[None, :]) & 1)
    pairs = [z[:, i] * z[:, j] for i in range(n) for j in range(i + 1, n)]
    return np.column_stack([z, *pairs]) if pairs else z


def n_gates(n_qubits: int, n_layers: int) -> int:
    """Gates in one circuit: 3 rotations per qubit and the CNOT ring per layer."""
    return n_layers * (3 * n_qubits + (n_qubits if n_qubits > 2 else n_qubits - 1))


def _head(E: np.ndarray, y: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    A = np.hstack([np.ones((len(E), 1)), E])
    return np.linalg.solve(A.T @ A + ridge * np.eye(A.shape[1]), A.T @ y)


@dataclass
class VQCSurrogate:
    """The VQC model of the losses, refitted as observations arrive (weights carried over).

    Attributes record the work done: ``circuits_run`` (state vectors
    simulated), ``steps`` (Adam steps per refit), ``losses`` (training MSE
    after each step of the latest refit).
    """

    space: Space
    layers: int
    steps: int
    shots: int
    seed: int
    device: QuantumDevice
    budget: QuantumBudget
    weights: np.ndarray = field(init=False)
    beta: np.ndarray = field(init=False)
    circuits_run: int = 0
    refit_steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    _y_mean: float = 0.0
    _y_std: float = 1.0

    def __post_init__(self) -> None:
        n = self.space.dim
        self.budget.check_circuit(n, n_gates(n, self.layers), self.device)
        self._rng = np.random.default_rng([self.seed, 7])
        self.weights = self._rng.normal(0.0, 0.3, param_shape(self.layers, n))
        self.beta = np.zeros(1 + n + n * (n - 1) // 2)

    def _measure(self, theta: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Expectations, with binomial shot noise when ``shots > 0``."""
        E = expectations(theta, weights)
        self.circuits_run += len(E)
        if self.shots:
            p = np.clip((1 + E) / 2, 0.0, 1.0)
            E = 2.0 * self._rng.binomial(self.shots, p) / self.shots - 1.0
        return E

    def fit(self, U: np.ndarray, y: np.ndarray, lr: float = 0.1) -> float:
        """Fit to unit points ``U`` (N, d) and losses ``y`` (N,); returns the final training MSE (standardised units)."""
        self._y_mean, self._y_std = float(np.mean(y)), float(np.std(y)) or 1.0
        ys = (y - self._y_mean) / self._y_std
        theta = math.pi * U
        N, P = len(U), self.weights.size
        shifts = np.vstack([np.zeros(P), np.eye(P) * (math.pi / 2), -np.eye(P) * (math.pi / 2)])  # (2P+1, P)
        m = np.zeros(P)
        v = np.zeros(P)
        self.losses = []
        for step in range(1, self.steps + 1):
            self.budget.check_time()
            W = (self.weights.ravel()[None, :] + shifts).reshape(len(shifts), *self.weights.shape)
            E_all = self._measure(np.tile(theta, (len(shifts), 1)), np.repeat(W, N, axis=0)).reshape(len(shifts), N, -1)
            E = E_all[0]
            self.beta = _head(E, ys)
            resid = np.hstack([np.ones((N, 1)), E]) @ self.beta - ys
            dE = (E_all[1 : P + 1] - E_all[P + 1 :]) / 2  # (P, N, n): exact parameter shift
            grad = 2.0 / N * np.einsum("n,pnj,j->p", resid, dE, self.beta[1:])
            m = 0.9 * m + 0.1 * grad
            v = 0.999 * v + 0.001 * grad**2
            step_size = lr * math.sqrt(1 - 0.999**step) / (1 - 0.9**step)
            self.weights = self.weights - (step_size * m / (np.sqrt(v) + 1e-8)).reshape(self.weights.shape)
            self.losses.append(float(np.mean(resid**2)))
        E = self._measure(theta, self.weights)
        self.beta = _head(E, ys)
        self.refit_steps.append(self.steps)
        return float(np.mean((np.hstack([np.ones((N, 1)), E]) @ self.beta - ys) ** 2))

    def warm_start(self, U: np.ndarray, y: np.ndarray, top: int = 3) -> dict[str, Any]:
        """Seed the RY weights from the encodings of the ``top`` best observations, if that fits them better than the cold start.

        Warm weights ``w[l, j, 0] = -mean(theta_j)`` over the best observations
        (``theta = pi * u``): at their mean every layer's encoding and trainable
        RY cancel, so the circuit stays in ``|0...0>`` there, where every
        readout is at its extreme (+1) and the linear head can place the loss
        minimum. Both starts are trained once on ``U`` (N, d), ``y`` (N,) with
        the same steps; the one whose training MSE is lower on average over the
        steps (it fits faster: with few observations both end near zero) is
        kept, and its trained weights carry over to the next refit. Returns the
        measurement.
        """
        best = np.argsort(y, kind="stable")[:top]
        cold = self.weights.copy()
        warm = cold.copy()
        warm[:, :, 0] = -math.pi * U[best].mean(axis=0)
        fitted = {}
        for label, start in (("cold", cold), ("warm", warm)):
            self.weights = start.copy()
            final = self.fit(U, y)
            fitted[label] = (float(np.mean(self.losses)), final, self.weights.copy(), self.beta.copy(), list(self.losses))
        adopted = fitted["warm"][0] < fitted["cold"][0]
        self.weights, self.beta, self.losses = fitted["warm" if adopted else "cold"][2:]
        return {"from_observations": int(len(best)), "steps": self.steps,
                "mean_training_mse_warm": fitted["warm"][0], "mean_training_mse_cold": fitted["cold"][0],
                "final_training_mse_warm": fitted["warm"][1], "final_training_mse_cold": fitted["cold"][1],
                "adopted": bool(adopted),
                "rule": "warm weights kept only when their first fit's training MSE, averaged over its steps, is below the cold start's"}

    def predict(self, U: np.ndarray) -> np.ndarray:
        """Predicted losses (objective units) at unit points ``U`` (M, d)."""
        E = self._measure(math.pi * np.atleast_2d(U), self.weights)
        return (np.hstack([np.ones((len(E), 1)), E]) @ self.beta) * self._y_std + self._y_mean

    def propose(self, U: np.ndarray, y: np.ndarray, pending: np.ndarray, n: int, rng: np.random.Generator,
                n_candidates: int, explore: float = 1.0) -> np.ndarray:
        """Refit, then read ``n`` distinct candidates off the circuit: (n, d).

        Score = ``-(predicted loss) + explore * distance to the nearest known
        point`` (standardised units; distance over ``sqrt(d)``), so the batch
        spreads out: each pick becomes a known point for the next.
        """
        self.fit(U, y)
        scale = math.sqrt(self.space.dim)

        def factory(U_known: np.ndarray, pend: np.ndarray):
            known = np.vstack([U_known, pend]) if len(pend) else U_known

            def score(C: np.ndarray) -> np.ndarray:
                pred = (self.predict(C) - self._y_mean) / self._y_std
                dist = np.sqrt(((C[:, None, :] - known[None, :, :]) ** 2).sum(-1)).min(axis=1) / scale
                return -pred + explore * dist
            return score

        return propose_batch(self.space, factory, U, y, pending, n, rng, n_candidates)

    def device_check(self, U: np.ndarray) -> float:
        """Run the trained circuit on the PennyLane device at up to 4 points; max |difference| of the readouts.

        Raises
        ------
        QuantumUnavailableError
            When PennyLane cannot build or run the circuit.
        """
        try:
            import pennylane as qml

            n = self.space.dim
            dev = qml.device(self.device.name, wires=n)

            @qml.qnode(dev)
            def circuit(theta, weights):
                for layer in range(weights.shape[0]):
                    for j in range(n):
                        qml.RY(theta[j], wires=j)
                        qml.RY(weights[layer, j, 0], wires=j)
                        qml.RZ(weights[layer, j, 1], wires=j)
                    if n > 1:
                        for j in range(n if n > 2 else 1):
                            qml.CNOT(wires=[j, (j + 1) % n])
                singles = [qml.expval(qml.PauliZ(j)) for j in range(n)]  # measured in the order returned
                return singles + [qml.expval(qml.PauliZ(i) @ qml.PauliZ(j)) for i in range(n) for j in range(i + 1, n)]

            points = np.atleast_2d(U)[:4]
            device_E = np.array([np.asarray(circuit(math.pi * u, self.weights), dtype=float).ravel() for u in points])
        except Exception as exc:  # any PennyLane failure is a fallback, never a crash
            raise QuantumUnavailableError(f"PennyLane device {self.device.name} failed: {type(exc).__name__}: {exc}") from None
        self.circuits_run += len(points)
        return float(np.max(np.abs(device_E - expectations(math.pi * points, self.weights))))
