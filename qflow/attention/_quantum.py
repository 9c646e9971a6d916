"""Quantum pieces: QAOA top-k key selection and a QPE position encoder.

QAOA top-k
    Choosing ``k`` of ``m`` keys for one query is the binary problem::

        min_x  -sum_i s_i x_i  +  lam (sum_i x_i - k)^2,   x in {0,1}^m

    with scores ``s`` rescaled to [0, 1] and ``lam = 1.5 > max s - min s``,
    so any bitstring with the wrong count costs more than the best with the
    right one: the ground state is exactly the top-k set. It is expanded to
    a QUBO (``x_i^2 = x_i``) and handed to :class:`qflow.core.qaoa.IsingModel`.

QPE positions
    Position ``i`` of ``N`` is the eigenphase of ``U = PhaseShift(2 pi i/N)``
    on ``|1>``; phase estimation with ``t`` counting qubits returns
    ``m ~ 2^t i / N`` and ``round(m N / 2^t) = i`` whenever ``2^t >= N``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from qflow.core.errors import QuantumUnavailableError
from qflow.core.qaoa import IsingModel, approximation_ratio, bits_of, cost_layer, run_qaoa, x_mixer_layer
from qflow.core.quantum import QuantumBudget, QuantumDevice

__all__ = ["TOPK_PENALTY", "qaoa_topk", "qpe_circuit_probs", "qpe_recover", "qpe_sweep", "read_topk", "topk_energy_range",
           "topk_model"]

#: Constraint weight of the top-k Ising model (scores live in [0, 1]).
TOPK_PENALTY = 1.5


def topk_model(scores: np.ndarray, k: int, penalty: float = TOPK_PENALTY) -> IsingModel:
    """The Ising model whose ground state selects the ``k`` largest of ``scores`` (m,).

    QUBO: linear ``-s_i + lam (1 - 2k)``, quadratic ``2 lam`` for every pair,
    constant ``lam k^2``.

    >>> topk_model(np.array([0.1, 0.9, 0.5]), 2).energy(np.array([0, 1, 1]))
    -1.5
    """
    s = np.asarray(scores, dtype=float)
    span = s.max() - s.min()
    s = (s - s.min()) / span if span > 0 else np.zeros_like(s)
    m = s.size
    linear = -s + penalty * (1 - 2 * k)
    quadratic = np.triu(np.full((m, m), 2.0 * penalty), 1)
    return IsingModel.from_qubo(linear, quadratic, penalty * k * k)


def topk_energy_range(scores: np.ndarray, k: int, penalty: float = TOPK_PENALTY) -> tuple[np.ndarray, float, float]:
    """Exact ground state and energy range of :func:`topk_model`, without enumerating ``2**m`` bitstrings.

    The model's energy depends on a bitstring only through its count ``c``
    of ones and the sum of the selected (rescaled) scores, so for each ``c``
    the lowest energy takes the ``c`` largest scores and the highest the ``c``
    smallest. That is ``m + 1`` candidates each way instead of ``2**m``, and
    it holds for any window size (a brute-force check stops at
    ``qflow.core.qaoa.EXACT_MAX_VARIABLES``).

    Returns
    -------
    bits : ndarray of shape (m,), int
        A ground state: the top-k set (lowest index first among equal scores).
    best, worst : float
        Lowest and highest energy over all bitstrings.

    >>> bits, best, worst = topk_energy_range(np.array([0.1, 0.9, 0.5]), 2)
    >>> bits.tolist(), best, worst
    ([0, 1, 1], -1.5, 6.0)
    """
    model = topk_model(scores, k, penalty)
    m = model.n
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    counts = np.arange(m + 1)
    highest_first = [np.zeros(m, dtype=np.int64)]
    for c in range(1, m + 1):
        bits = highest_first[-1].copy()
        bits[order[c - 1]] = 1
        highest_first.append(bits)
    lowest = [model.energy(b) for b in highest_first]
    highest = [model.energy(1 - highest_first[m - c]) for c in counts]
    best_count = int(np.argmin(lowest))
    return highest_first[best_count], float(min(lowest)), float(max(highest))


def read_topk(probs: np.ndarray, scores: np.ndarray, k: int) -> dict[str, object]:
    """Post-select QAOA's outcome distribution on exactly ``k`` ones and check it against exact top-k.

    Parameters
    ----------
    probs : ndarray of shape (2**m,)
        Outcome probabilities, PennyLane order (wire 0 = most significant bit).
    scores : ndarray of shape (m,)
    k : int

    Returns
    -------
    dict
        ``qaoa``, ``exact``, ``used``, ``overlap``, ``optimal``, ``ratio``,
        ``probability``, ``feasible_probability`` (see :func:`qaoa_topk`).

    Raises
    ------
    QuantumUnavailableError
        When the model's ground state is not the top-k set (penalty too small).
    """
    model = topk_model(scores, k)
    m = model.n
    ones = _popcount(np.arange(probs.size, dtype=np.int64), m)
    feasible = ones == k
    index = int(np.argmax(np.where(feasible, probs, -1.0)))
    bits = bits_of(index, m)
    energy = model.energy(bits)
    ground, best, worst = topk_energy_range(scores, k)
    exact = np.sort(np.argsort(-np.asarray(scores), kind="stable")[:k])
    if int(ground.sum()) != k:
        raise QuantumUnavailableError("top-k Ising model's ground state is not the top-k set (penalty too small)")
    chosen = np.flatnonzero(bits)
    optimal = energy <= best + 1e-9
    return {
        "qaoa": chosen.tolist(),
        "exact": exact.tolist(),
        "used": (chosen if optimal else exact).tolist(),
        "overlap": len(set(chosen.tolist()) & set(exact.tolist())) / k,
        "optimal": bool(optimal),
        "ratio": approximation_ratio(worst, energy, best),
        "probability": float(probs[index]),
        "feasible_probability": float(probs[feasible].sum()),
    }


def _popcount(states: np.ndarray, n_bits: int) -> np.ndarray:
    """Number of ones in each of ``states`` (int64), ``n_bits`` wide; vectorised (2**24 states in well under a second)."""
    ones = np.zeros(states.shape, dtype=np.int64)
    for bit in range(n_bits):
        ones += (states >> bit) & 1
    return ones


def qaoa_topk(scores: np.ndarray, k: int, layers: int, device: QuantumDevice, budget: QuantumBudget,
              max_steps: int, seed: int) -> dict[str, Any]:
    """Select ``k`` of ``len(scores)`` keys with QAOA; check against exact top-k.

    Returns
    -------
    dict
        ``qaoa`` (indices QAOA read out), ``exact`` (the true top-k),
        ``used`` (the better of the two: QAOA's when it is optimal),
        ``overlap`` (share of the true top-k QAOA found), ``optimal``,
        ``ratio`` (approximation ratio), ``qubits``, ``circuits``, ``steps``,
        ``history``, ``probability`` (of the read-out bitstring),
        ``feasible_probability`` (mass on bitstrings with k ones),
        ``argmax_feasible`` (whether the plain argmax already had k ones).
        QAOA's answer is post-selected on exactly ``k`` ones.

    Raises
    ------
    QuantumUnavailableError
        Over budget or simulator failure (the caller records the fallback).
    """
    model = topk_model(scores, k)
    # tol small: the penalty makes the early landscape flat, and the default
    # stop rule would end the fit before the angles have moved.
    result = run_qaoa(model, layers, device, budget, max_steps=max_steps, tol=1e-7, stepsize=0.05, seed=seed)
    budget.check_time()
    probs = _final_probs(model, result.angles, layers, device)
    # Post-selection: read the likeliest bitstring with exactly k ones (a
    # measurement with another count is discarded and the circuit re-run).
    return {
        **read_topk(probs, scores, k),
        "qubits": result.n_qubits,
        "circuits": result.circuits_run + 1,
        "steps": result.steps,
        "history": result.expectation_history,
        "argmax_feasible": bool(result.bits.sum() == k),
    }


def _final_probs(model: IsingModel, angles: np.ndarray, layers: int, device: QuantumDevice) -> np.ndarray:
    """Outcome distribution (2**n,) of the fitted QAOA circuit (same layers as ``run_qaoa``'s X-mixer path)."""
    import pennylane as qml

    scaled, _ = model.scaled()
    n = model.n

    @qml.qnode(qml.device(device.name, wires=n))
    def circuit():
        for i in range(n):
            qml.Hadamard(wires=i)
        for layer in range(layers):
            cost_layer(angles[0, layer], scaled)
            x_mixer_layer(angles[1, layer], n)
        return qml.probs(wires=range(n))

    try:
        return np.asarray(circuit())
    except Exception as exc:  # the simulator itself failed: record, fall back
        raise QuantumUnavailableError(f"{device.name} failed: {type(exc).__name__}: {exc}") from exc


def qpe_circuit_probs(phases: np.ndarray, n_counting: int, device: QuantumDevice) -> np.ndarray:
    """Phase-estimation outcome distribution for each phase in ``phases`` (radians).

    Counting wires ``0..t-1`` (wire 0 the most significant bit), target wire
    ``t`` prepared in ``|1>``, the eigenstate of ``PhaseShift(phi)`` with
    eigenvalue ``exp(i phi)``. All phases go through one broadcast circuit.

    Returns
    -------
    ndarray of shape (len(phases), 2**t)
    """
    import pennylane as qml

    t = n_counting
    dev = qml.device(device.name, wires=t + 1)

    @qml.qnode(dev)
    def circuit(phi):
        qml.PauliX(wires=t)
        qml.QuantumPhaseEstimation(qml.PhaseShift(phi, wires=t), estimation_wires=range(t))
        return qml.probs(wires=range(t))

    try:
        probs = np.asarray(circuit(np.asarray(phases, dtype=float)))
    except Exception as exc:  # the simulator itself failed: record, fall back
        raise QuantumUnavailableError(f"{device.name} failed on QPE: {type(exc).__name__}: {exc}") from exc
    return probs.reshape(len(phases), 1 << t)


def qpe_recover(probs: np.ndarray, n_positions: int) -> np.ndarray:
    """Positions read back from QPE outcome distributions (N, 2**t): most likely ``m`` -> ``round(m N / 2^t) mod N``.

    >>> qpe_recover(np.eye(4), 4).tolist()
    [0, 1, 2, 3]
    """
    t_states = probs.shape[1]
    m = probs.argmax(axis=1)
    return (np.rint(m * n_positions / t_states).astype(np.int64)) % n_positions


def qpe_sweep(n_positions: int, max_counting: int, device: QuantumDevice, budget: QuantumBudget) -> tuple[list[dict[str, Any]], np.ndarray, int]:
    """Recovery accuracy of every position for ``t = 1 .. max_counting`` counting qubits.

    Returns
    -------
    rows : list of dict
        ``counting_qubits``, ``circuit_qubits`` (t + 1), ``accuracy`` (share of
        positions recovered exactly), ``mean_abs_error`` (positions, on the ring).
    recovered : ndarray of shape (N,), int64
        Positions recovered with the largest ``t``.
    circuits : int
        Circuit evaluations (one per position per ``t``).
    """
    positions = np.arange(n_positions)
    phases = 2 * math.pi * positions / n_positions
    rows, recovered, circuits = [], positions, 0
    for t in range(1, max_counting + 1):
        budget.check_circuit(t + 1, t * (t + 3), device)
        recovered = qpe_recover(qpe_circuit_probs(phases, t, device), n_positions)
        circuits += n_positions
        diff = np.abs(recovered - positions)
        ring = np.minimum(diff, n_positions - diff)
        rows.append({"counting_qubits": t, "circuit_qubits": t + 1, "accuracy": float(np.mean(recovered == positions)),
                     "mean_abs_error": float(ring.mean())})
    return rows, recovered, circuits
