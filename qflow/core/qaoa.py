"""QAOA on diagonal Ising models, built from small named pieces.

An :class:`IsingModel` is the problem (``H(z) = sum_ij J_ij z_i z_j +
sum_i h_i z_i + offset``, spins ``z = 1 - 2x`` for bits ``x``). Because the
cost is diagonal, every energy of every bitstring is one vectorised numpy
expression (:meth:`IsingModel.energies`): that is what makes the exact check
cheap and what the ``default.qubit`` path uses for its expectation instead of
asking PennyLane for a dense Hamiltonian matrix (64 GiB at 16 qubits).

Layers are kept apart from the encoding, as in ``pennylane/qaoa/layers.py``:
:func:`cost_layer`, :func:`x_mixer_layer`, :func:`warm_start_mixer_layer`.
:func:`run_qaoa` ties them together with a PennyLane optimiser, a stop rule
and the budget checks of :mod:`qflow.core.quantum`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qflow.core.errors import QuantumUnavailableError
from qflow.core.quantum import HARD_MAX_QUBITS, QuantumBudget, QuantumDevice

__all__ = [
    "EXACT_MAX_VARIABLES",
    "IsingModel",
    "QaoaResult",
    "approximation_ratio",
    "build_cost_hamiltonian",
    "cost_layer",
    "hamming_weights",
    "param_shape",
    "run_qaoa",
    "solve_exact",
    "warm_start_angles",
    "x_mixer_layer",
    "warm_start_mixer_layer",
]

#: Sub-problems up to this many binary variables are also solved exactly: every
#: circuit a config allows (``HARD_MAX_QUBITS``) has its exact check, which at
#: 24 variables takes about a second and 256 MiB (:meth:`IsingModel.energies`).
EXACT_MAX_VARIABLES = HARD_MAX_QUBITS


@dataclass(frozen=True)
class IsingModel:
    """A diagonal cost on ``n`` spins.

    Attributes
    ----------
    h : ndarray of shape (n,)
        Local fields.
    J : ndarray of shape (n, n)
        Couplings; only the strict upper triangle is used.
    offset : float
        Constant added to every energy.
    """

    h: np.ndarray
    J: np.ndarray
    offset: float = 0.0

    @property
    def n(self) -> int:
        return int(self.h.shape[0])

    @classmethod
    def from_qubo(cls, linear: np.ndarray, quadratic: np.ndarray, constant: float = 0.0) -> IsingModel:
        """Convert ``C(x) = constant + a.x + sum_{i<j} B_ij x_i x_j`` to spins.

        With ``x = (1 - z) / 2``:
        ``h_i = -a_i/2 - sum_j B_ij/4`` (both triangles), ``J_ij = B_ij/4``.

        >>> m = IsingModel.from_qubo(np.array([1.0, -2.0]), np.array([[0, 3.0], [0, 0]]))
        >>> [float(m.energy(np.array(b))) for b in ([0, 0], [1, 0], [0, 1], [1, 1])]
        [0.0, 1.0, -2.0, 2.0]
        """
        a = np.asarray(linear, dtype=float)
        b = np.triu(np.asarray(quadratic, dtype=float), 1) + np.tril(np.asarray(quadratic, dtype=float), -1).T
        h = -a / 2 - (b.sum(axis=1) + b.sum(axis=0)) / 4
        offset = constant + a.sum() / 2 + b.sum() / 4
        return cls(h=h, J=b / 4, offset=float(offset))

    def energy(self, bits: np.ndarray) -> float:
        """Energy of one bitstring ``bits`` of shape (n,), values 0/1."""
        z = 1.0 - 2.0 * np.asarray(bits, dtype=float)
        return float(self.offset + self.h @ z + z @ np.triu(self.J, 1) @ z)

    def energies(self) -> np.ndarray:
        """Energies of all ``2**n`` bitstrings, PennyLane order (wire 0 = MSB).

        The spins are split into a high half ``A`` (the leading wires) and a
        low half ``B``: ``E(a, b) = E_A(a) + E_B(b) + z_A(a)^T J_AB z_B(b)``,
        one ``(2**|A|, 2**|B|)`` matrix product whose row-major ravel is the
        PennyLane order. Peak memory is about one output array (128 MiB at 24
        spins) instead of the ``2**n x n`` spin table a direct formula needs
        (over 3 GiB at 24 spins, several times over for its temporaries).

        Returns
        -------
        ndarray of shape (2**n,)

        >>> m = IsingModel(np.array([1.0, -0.5, 0.25]), np.triu(np.full((3, 3), 0.5), 1))
        >>> bool(np.allclose(m.energies(), [m.energy(bits_of(i, 3)) for i in range(8)]))
        True
        """
        n = self.n
        if n > HARD_MAX_QUBITS:
            raise ValueError(f"refusing to enumerate 2**{n} states (at most 2**{HARD_MAX_QUBITS})")
        upper = np.triu(np.asarray(self.J, dtype=float), 1)
        h = np.asarray(self.h, dtype=float)
        cut = n // 2
        z_a, z_b = _spin_table(cut), _spin_table(n - cut)
        e_a = z_a @ h[:cut] + np.einsum("si,ij,sj->s", z_a, upper[:cut, :cut], z_a)
        e_b = z_b @ h[cut:] + np.einsum("si,ij,sj->s", z_b, upper[cut:, cut:], z_b)
        table = (z_a @ upper[:cut, cut:]) @ z_b.T  # (2**cut, 2**(n - cut)) cross terms
        table += e_a[:, None]
        table += e_b[None, :]
        table += self.offset
        return table.ravel()

    def terms(self) -> tuple[list[float], list[tuple[int, ...]]]:
        """Non-zero coefficients and the wires they act on (1 or 2 wires)."""
        coeffs: list[float] = []
        wires: list[tuple[int, ...]] = []
        for i in range(self.n):
            if self.h[i] != 0.0:
                coeffs.append(float(self.h[i]))
                wires.append((i,))
        rows, cols = np.nonzero(np.triu(self.J, 1))
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
            coeffs.append(float(self.J[i, j]))
            wires.append((i, j))
        return coeffs, wires

    def scaled(self) -> tuple[IsingModel, float]:
        """The model divided by its largest coefficient, and that scale.

        QAOA angles live on a scale set by the coefficients; normalising keeps
        one initial-angle schedule good for every instance.
        """
        scale = float(max(np.abs(self.h).max(initial=0.0), np.abs(np.triu(self.J, 1)).max(initial=0.0)))
        if scale == 0.0:
            return self, 1.0
        return IsingModel(self.h / scale, self.J / scale, self.offset / scale), scale


def _spin_table(n: int) -> np.ndarray:
    """Spins ``z = 1 - 2x`` of all ``2**n`` bitstrings, shape ``(2**n, n)``, wire 0 = MSB."""
    states = np.arange(1 << n, dtype=np.int64)
    return 1.0 - 2.0 * ((states[:, None] >> np.arange(n - 1, -1, -1)) & 1)


def hamming_weights(n: int) -> np.ndarray:
    """Number of ones in each of the ``2**n`` bitstrings, shape ``(2**n,)``, PennyLane order.

    >>> hamming_weights(2).tolist()
    [0, 1, 1, 2]
    """
    return np.bitwise_count(np.arange(1 << n, dtype=np.uint64)).astype(np.int64)


def bits_of(index: int, n: int) -> np.ndarray:
    """Bitstring of basis state ``index`` (wire 0 = most significant bit)."""
    return (index >> np.arange(n - 1, -1, -1)) & 1


def solve_exact(model: IsingModel) -> tuple[np.ndarray, float, float]:
    """Brute-force ground state.

    Returns
    -------
    bits : ndarray of shape (n,)
        A minimiser.
    best : float
        Its energy.
    worst : float
        The largest energy over all bitstrings (for the approximation ratio).
    """
    if model.n > EXACT_MAX_VARIABLES:
        raise ValueError(f"exact solve limited to {EXACT_MAX_VARIABLES} variables; got {model.n}")
    energies = model.energies()
    idx = int(np.argmin(energies))
    return bits_of(idx, model.n), float(energies[idx]), float(energies.max())


def approximation_ratio(worst: float, found: float, best: float) -> float:
    """``(worst - found) / (worst - best)``: 1.0 optimal, 0.0 the worst answer.

    >>> approximation_ratio(10.0, 4.0, 2.0)
    0.75
    """
    span = worst - best
    if span <= 1e-12:
        return 1.0
    return float((worst - found) / span)


def param_shape(layers: int) -> tuple[int, int]:
    """Shape of the QAOA angles: ``(2, layers)`` -- row 0 gammas, row 1 betas."""
    return (2, layers)


def build_cost_hamiltonian(model: IsingModel):
    """The cost as a PennyLane operator ``sum h_i Z_i + sum J_ij Z_i Z_j``."""
    import pennylane as qml

    coeffs, wires = model.terms()
    ops = [qml.Z(w[0]) if len(w) == 1 else qml.prod(*(qml.Z(i) for i in w)) for w in wires]
    if not ops:
        ops, coeffs = [qml.Identity(0)], [0.0]
    return qml.Hamiltonian(coeffs, ops)


def cost_layer(gamma, model: IsingModel) -> None:
    """Apply ``exp(-i gamma H_C)`` with native RZ and IsingZZ gates (MultiRZ for terms on 3 or more wires)."""
    import pennylane as qml

    coeffs, wires = model.terms()
    for c, w in zip(coeffs, wires, strict=True):
        if len(w) == 1:
            qml.RZ(2 * gamma * c, wires=w[0])
        elif len(w) == 2:
            qml.IsingZZ(2 * gamma * c, wires=list(w))
        else:
            qml.MultiRZ(2 * gamma * c, wires=list(w))


def x_mixer_layer(beta, n: int) -> None:
    """Apply ``exp(-i beta sum X_i)``."""
    import pennylane as qml

    for i in range(n):
        qml.RX(2 * beta, wires=i)


def warm_start_mixer_layer(beta, thetas: np.ndarray) -> None:
    """Warm-start mixer (Egger et al., Quantum 5, 479, 2021).

    Rotates each qubit about the Bloch axis of its warm-start state
    ``RY(theta_i)|0>``, so that state is the mixer's eigenstate; with
    ``theta = pi/2`` this is the standard X mixer.
    """
    import pennylane as qml

    for i, theta in enumerate(thetas):
        qml.RY(-theta, wires=i)
        qml.RZ(2 * beta, wires=i)
        qml.RY(theta, wires=i)


def warm_start_angles(bits: np.ndarray, epsilon: float = 0.25) -> np.ndarray:
    """RY angles whose state has probability ``1 - epsilon`` of ``bits``.

    ``epsilon`` is the perturbation that keeps the warm start from freezing
    the circuit in the classical answer (epsilon = 0 would make it an
    eigenstate of every layer).
    """
    c = np.where(np.asarray(bits) == 1, 1.0 - epsilon, epsilon)
    return 2.0 * np.arcsin(np.sqrt(c))


@dataclass
class QaoaResult:
    """Outcome of one QAOA run on one :class:`IsingModel`."""

    bits: np.ndarray
    energy: float
    expectation_history: list[float]
    steps: int
    circuits_run: int
    probability: float
    angles: np.ndarray
    n_qubits: int
    notes: list[str] = field(default_factory=list)


def _initial_angles(layers: int, rng: np.random.Generator, warm: bool) -> np.ndarray:
    """Linear-ramp schedule (a discretised anneal) plus a small jitter."""
    k = (np.arange(layers) + 0.5) / layers
    scale = 0.4 if warm else 0.8
    gammas = scale * k
    betas = scale * (1.0 - k)
    return np.stack([gammas, betas]) + rng.normal(0.0, 0.01, size=(2, layers))


#: From this many qubits one circuit is timed before optimising (see :func:`_probe_step_time`).
PROBE_MIN_QUBITS = 18


def _probe_step_time(cost, angles, n: int, budget: QuantumBudget) -> int:
    """Time one cost evaluation on large circuits; refuse when a step would overrun the time budget.

    The budget is checked between optimiser steps, and one step on 24 qubits
    can take minutes, so without this a plan could overrun its budget many
    times over. An adjoint step costs about three evaluations and the read-out
    one more, so four evaluations must fit in what is left. Below
    :data:`PROBE_MIN_QUBITS` a step takes milliseconds and nothing is run.

    Returns
    -------
    int
        Circuits run (0 or 1), for the plan's count.
    """
    if n < PROBE_MIN_QUBITS:
        return 0
    start = time.perf_counter()
    cost(angles)
    one = time.perf_counter() - start
    budget.check_time()
    left = budget.time_budget_s - budget.elapsed_s()
    if 4 * one > left:
        raise QuantumUnavailableError(
            f"one optimiser step on {n} qubits would take about {3 * one:.0f} s (one circuit took {one:.1f} s), "
            f"more than the {left:.0f} s left of the quantum time budget"
        )
    return 1


def run_qaoa(
    model: IsingModel,
    layers: int,
    device: QuantumDevice,
    budget: QuantumBudget,
    *,
    warm_bits: np.ndarray | None = None,
    max_steps: int = 40,
    tol: float = 1e-3,
    patience: int = 5,
    stepsize: float = 0.1,
    seed: int = 0,
) -> QaoaResult:
    """Optimise QAOA angles for ``model`` and read off the likeliest bitstring.

    The circuit is a Hadamard (or warm-start) state followed by ``layers``
    alternating cost and mixer layers. Angles are fitted with PennyLane's Adam
    optimiser on the exact expectation (adjoint gradients on lightning; on
    default.qubit, backprop through ``probs @ energies``, which uses the
    diagonal cost instead of a dense Hamiltonian). Optimisation stops when the
    best expectation has improved by less than ``tol`` (in units of the
    largest coefficient) for ``patience`` steps, or after ``max_steps``; the
    best angles seen are the ones read out.

    Raises
    ------
    QuantumUnavailableError
        Over the qubit, memory or time budget, or when the simulator fails.
    """
    n = model.n
    scaled, scale = model.scaled()
    coeffs, _ = scaled.terms()
    n_gates = layers * (len(coeffs) + 3 * n) + 2 * n
    budget.check_circuit(n, n_gates, device)
    thetas = warm_start_angles(warm_bits) if warm_bits is not None else None
    evolve = _ansatz(scaled, layers, thetas)
    try:
        cost = _expectation(scaled, evolve, device)
        final_probs = _readout(evolve, n, device)
        initial = _initial_angles(layers, np.random.default_rng(seed), thetas is not None)
        fit = _fit_angles(cost, initial, n, device, budget, lambda value: (value + scaled.offset) * scale,
                          max_steps=max_steps, tol=tol, patience=patience, stepsize=stepsize)
        probs = np.asarray(final_probs(fit.angles))
    except QuantumUnavailableError:
        raise
    except Exception as exc:  # the simulator itself failed: record, fall back
        raise QuantumUnavailableError(f"{device.name} failed: {type(exc).__name__}: {exc}") from exc
    history, steps, angles, circuits = fit.history, fit.steps, fit.angles, fit.circuits + 1
    idx = int(np.argmax(probs))
    bits = bits_of(idx, n)
    return QaoaResult(
        bits=bits,
        energy=model.energy(bits),
        expectation_history=[float(v) for v in history],
        steps=steps,
        circuits_run=circuits,
        probability=float(probs[idx]),
        angles=np.asarray(angles),
        n_qubits=n,
    )


def _ansatz(scaled: IsingModel, layers: int, thetas: np.ndarray | None) -> Callable[[Any], None]:
    """``evolve(angles)``: the initial state (Hadamards, or the warm start's RY) then ``layers`` cost and mixer layers."""
    import pennylane as qml

    n = scaled.n

    def evolve(angles) -> None:
        if thetas is None:
            for i in range(n):
                qml.Hadamard(wires=i)
        else:
            for i in range(n):
                qml.RY(thetas[i], wires=i)
        for layer in range(layers):
            cost_layer(angles[0, layer], scaled)
            if thetas is None:
                x_mixer_layer(angles[1, layer], n)
            else:
                warm_start_mixer_layer(angles[1, layer], thetas)

    return evolve


def _expectation(scaled: IsingModel, evolve: Callable[[Any], None], device: QuantumDevice) -> Callable[[Any], Any]:
    """``cost(angles)``: the expectation of ``scaled`` less its offset, differentiable.

    On an adjoint device it is ``<H>`` of :func:`build_cost_hamiltonian`; on
    default.qubit ``probs @ energies`` by backprop (the diagonal cost instead
    of a dense Hamiltonian matrix).
    """
    import pennylane as qml
    from pennylane import numpy as pnp

    n = scaled.n
    dev = qml.device(device.name, wires=n)
    if device.diff_method == "adjoint":
        hamiltonian = build_cost_hamiltonian(scaled)

        @qml.qnode(dev, diff_method="adjoint")
        def expectation(angles):
            evolve(angles)
            return qml.expval(hamiltonian)

        return expectation
    energies = pnp.array(scaled.energies() - scaled.offset, requires_grad=False)

    @qml.qnode(dev, diff_method="backprop")
    def probabilities(angles):
        evolve(angles)
        return qml.probs(wires=range(n))

    def cost(angles):
        return pnp.dot(probabilities(angles), energies)

    return cost


def _readout(evolve: Callable[[Any], None], n: int, device: QuantumDevice) -> Callable[[Any], Any]:
    """``probs(angles)``: the final state's bitstring probabilities, shape (2**n,), on a device of its own."""
    import pennylane as qml

    @qml.qnode(qml.device(device.name, wires=n))
    def final_probs(angles):
        evolve(angles)
        return qml.probs(wires=range(n))

    return final_probs


@dataclass
class _AngleFit:
    """Outcome of :func:`_fit_angles`: the best angles, the expectation per step (model units), steps and circuits."""

    angles: Any
    history: list[float]
    steps: int
    circuits: int


def _fit_angles(cost: Callable[[Any], Any], initial: np.ndarray, n: int, device: QuantumDevice, budget: QuantumBudget,
                to_model_units: Callable[[float], float], *, max_steps: int, tol: float, patience: int,
                stepsize: float) -> _AngleFit:
    """Adam on ``cost`` from ``initial`` (2, layers) angles until it stops improving; keeps the best angles seen.

    The time budget is checked before every step; ``to_model_units`` turns a
    cost value into the model's own energy for the history.
    """
    import pennylane as qml
    from pennylane import numpy as pnp

    angles = pnp.array(initial, requires_grad=True)
    opt = qml.AdamOptimizer(stepsize=stepsize)
    history: list[float] = []
    circuits = _probe_step_time(cost, angles, n, budget)
    best_value, best_angles, stale = np.inf, angles, 0
    steps = 0
    for steps in range(1, max_steps + 1):  # noqa: B007 - steps is reported
        budget.check_time()
        # step_and_cost returns the cost *before* the step: one circuit
        # evaluation per step serves both the history and the stop rule.
        new_angles, value = opt.step_and_cost(cost, angles)
        value = float(value)
        circuits += 2 if device.diff_method == "adjoint" else 1
        history.append(to_model_units(value))
        # Adam overshoots and comes back, so a single worse step is no
        # reason to stop: stop once the best value has not improved by
        # `tol` for `patience` steps, and keep the best angles seen.
        if value < best_value - tol:
            stale = 0
        else:
            stale += 1
        if value < best_value:
            best_value, best_angles = value, angles
        if stale >= patience:
            break
        angles = new_angles
    return _AngleFit(best_angles, history, steps, circuits)
