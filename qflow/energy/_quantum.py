"""Run-now/defer windows at the peak slots, as Ising models for QAOA.

A window is a slot ``t`` of the schedule (highest power first) and up to
``max_qubits`` jobs running through it that could instead start at ``t + 1``
without breaking a dependency, the horizon or their node's GPU count on their
own. Bit ``x_i = 1`` defers job ``i`` (it then frees slot ``t``); ``x_i = 0``
keeps it. The window cost is the sum of squared power over the slots the
window touches (kW^2; a flatter profile, the usual convex proxy for the peak):

    C(x) = sum_s (B_s + A_s + sum_i p_i c_is x_i)^2

with ``B`` the power of the other jobs, ``A_s`` the window's jobs as scheduled
and ``c_is = 1`` if deferring ``i`` adds it to slot ``s``, ``-1`` if it frees
``s``. Expanded, this is the seed's ``H(z) = sum_i alpha_i z_i +
sum_ij beta_ij z_i z_j``: the fields ``alpha`` come from each job's power
against the slots' load, the couplings ``beta_ij = 2 p_i p_j sum_s c_is c_js``
are the concurrency penalty of jobs released together (shared dependencies
put them in the same window) that would run in the same slots.

Each window is solved exactly (all ``2^n`` costs), greedily (single flips from
"keep all") and, when chosen, by QAOA through :func:`qflow.core.qaoa.run_qaoa`.
The caller applies an answer only if the whole schedule improves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qflow.core.qaoa import IsingModel
from qflow.energy._schedule import Problem, Schedule, gpu_usage, power_profile

__all__ = ["Window", "apply_window", "build_window", "greedy_bits", "window_cost", "window_ising"]


@dataclass(frozen=True)
class Window:
    """One run-now/defer decision block.

    Attributes
    ----------
    slot : int
        The peak slot ``t``.
    jobs : ndarray of int, shape (n,)
        The jobs deciding (each defers to start ``t + 1``).
    shift : ndarray of int, shape (n,)
        Slots each job moves when deferred.
    slots : ndarray of int, shape (S,)
        The slots the window touches.
    base_kw : ndarray of shape (S,)
        Power of every other job there, kW.
    keep : ndarray of shape (n, S)
        1 where job i runs in slot s as scheduled.
    defer : ndarray of shape (n, S)
        1 where it would run when deferred.
    power_kw : ndarray of shape (n,)
    """

    slot: int
    jobs: np.ndarray
    shift: np.ndarray
    slots: np.ndarray
    base_kw: np.ndarray
    keep: np.ndarray
    defer: np.ndarray
    power_kw: np.ndarray

    @property
    def n(self) -> int:
        return int(self.jobs.shape[0])


def build_window(problem: Problem, schedule: Schedule, slot: int, horizon: int, max_qubits: int) -> Window | None:
    """The window at ``slot``, or None when fewer than 2 jobs there can be deferred."""
    end = schedule.end(problem)
    succ_start = np.full(problem.n_jobs, np.iinfo(np.int64).max)
    for j, ds in enumerate(problem.deps):
        for d in ds:
            succ_start[d] = min(succ_start[d], schedule.start[j])
    length = max(schedule.makespan(problem), horizon) + 1
    used = gpu_usage(problem, schedule, length)
    running = np.flatnonzero((schedule.start <= slot) & (end > slot))
    candidates = []
    for j in running:
        shift = slot + 1 - int(schedule.start[j])
        new_end = int(end[j]) + shift
        if new_end > horizon or new_end > succ_start[j]:
            continue
        n, g = int(schedule.node[j]), int(problem.gpus[j])
        mine = np.zeros(length, dtype=int)
        mine[schedule.start[j]:end[j]] = g
        after = used[n] - mine
        if (after[slot + 1:new_end] + g > problem.node_gpus[n]).any():
            continue
        candidates.append((j, shift))
    if len(candidates) < 2:
        return None
    candidates.sort(key=lambda c: (-problem.power_w[c[0]], c[0]))
    chosen = candidates[:max_qubits]
    jobs = np.array([c[0] for c in chosen])
    shift = np.array([c[1] for c in chosen])
    first = int(schedule.start[jobs].min())
    last = int((end[jobs] + shift).max())
    slots = np.arange(first, last)
    profile = power_profile(problem, schedule, length)
    keep = np.zeros((len(jobs), len(slots)))
    defer = np.zeros_like(keep)
    for i, (j, s) in enumerate(zip(jobs, shift, strict=True)):
        keep[i, schedule.start[j] - first:end[j] - first] = 1
        defer[i, schedule.start[j] + s - first:end[j] + s - first] = 1
    power_kw = problem.power_w[jobs] / 1000.0
    base = profile[slots] / 1000.0 - power_kw @ keep
    return Window(slot=slot, jobs=jobs, shift=shift, slots=slots, base_kw=base, keep=keep, defer=defer, power_kw=power_kw)


def window_cost(window: Window, bits: np.ndarray) -> float:
    """``sum_s P_s(x)^2`` in kW^2, evaluated directly from the decisions (no Ising algebra)."""
    x = np.asarray(bits, dtype=float)
    load = window.base_kw + window.power_kw @ (window.keep * (1 - x)[:, None] + window.defer * x[:, None])
    return float(load @ load)


def window_ising(window: Window) -> IsingModel:
    """The window cost as an :class:`IsingModel` (exact: the cost is quadratic in the bits).

    QUBO: ``C(x) = const + sum_i a_i x_i + sum_{i<j} b_ij x_i x_j`` with
    ``a_i = sum_s 2 L_s p_i c_is + p_i^2 c_is^2``, ``b_ij = 2 p_i p_j sum_s c_is c_js``,
    ``L = B + A`` the load with nothing deferred.
    """
    c = (window.defer - window.keep) * window.power_kw[:, None]  # (n, S): load change per deferred job
    load = window.base_kw + window.power_kw @ window.keep
    linear = 2 * c @ load + (c**2).sum(axis=1)
    quadratic = np.triu(2 * c @ c.T, 1)
    return IsingModel.from_qubo(linear, quadratic, float(load @ load))


def greedy_bits(model: IsingModel) -> np.ndarray:
    """Single-bit flips from all zeros (keep every job), best flip first, while the cost drops."""
    bits = np.zeros(model.n, dtype=int)
    current = model.energy(bits)
    while True:
        best, best_i = current, -1
        for i in range(model.n):
            bits[i] ^= 1
            value = model.energy(bits)
            bits[i] ^= 1
            if value < best - 1e-12:
                best, best_i = value, i
        if best_i < 0:
            return bits
        bits[best_i] ^= 1
        current = best


def apply_window(schedule: Schedule, window: Window, bits: np.ndarray) -> Schedule:
    """The schedule with the window's deferred jobs (bit 1) moved."""
    start = schedule.start.copy()
    deferred = np.asarray(bits, dtype=bool)
    start[window.jobs[deferred]] += window.shift[deferred]
    return Schedule(start=start, node=schedule.node.copy())
