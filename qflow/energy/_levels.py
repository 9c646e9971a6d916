"""Multi-level power windows: two qubits per job choose one of four clock levels.

The one-bit window (:mod:`qflow.energy._quantum`) decides run-now or defer.
Here each job running through the peak slot keeps its start and chooses a
clock level ``l`` in 0..3, encoded in binary on wires ``(2i, 2i + 1)``
(``l = 2 x_{2i} + x_{2i+1}``, wire 0 the most significant bit). Level ``l``
slows the job by ``s_l = 1 + l (max_slowdown - 1) / 3`` (clock ratio
``r = 1 / s_l``); the caps model of :mod:`qflow.energy._caps` gives its
power: the idle part ``g P_idle`` of its ``g`` GPUs stays and the dynamic
part scales with ``r^3``, so at level ``l`` it draws
``p_l = g P_idle + (p - g P_idle) / s_l^3`` for ``d s_l`` slots. On the slot
grid it occupies ``ceil(d s_l)`` slots at its slot-average power
``p_l d s_l / ceil(d s_l)`` (its energy is kept exactly). A level whose
longer run would pass the horizon, a dependent's start or its node's free
GPUs is not offered: that bit pattern means level 0.

The window cost is the same sum of squared slot power (kW^2) as the one-bit
window, ``C = sum_s (B_s + sum_i P_{i, l_i, s})^2``. A job's load is a
function of two bits with a four-term spin expansion, so the square has
terms on up to four wires: it is a :class:`~qflow.core.polynomial.PolynomialModel`,
solved exactly by enumeration and by QAOA through the same
:func:`qflow.core.qaoa.run_qaoa`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qflow.core.polynomial import PolynomialModel
from qflow.energy._schedule import Problem, Schedule, gpu_usage, power_profile

__all__ = ["LEVELS", "LevelWindow", "apply_levels", "build_level_window", "decode_levels", "encode_levels", "greedy_levels",
           "level_energies", "level_model", "level_slowdowns", "level_window_cost"]

#: Clock levels per job (two qubits).
LEVELS = 4


def level_slowdowns(max_slowdown: float) -> np.ndarray:
    """Slowdown of each level, shape (4,): 1 to ``max_slowdown`` in equal steps.

    >>> level_slowdowns(1.3).round(3).tolist()
    [1.0, 1.1, 1.2, 1.3]
    """
    return 1.0 + np.arange(LEVELS) * (max_slowdown - 1.0) / (LEVELS - 1)


def decode_levels(bits: np.ndarray) -> np.ndarray:
    """Levels of the jobs from their two bits each (MSB first), shape (n_bits // 2,).

    >>> decode_levels(np.array([0, 0, 0, 1, 1, 0, 1, 1])).tolist()
    [0, 1, 2, 3]
    """
    b = np.asarray(bits, dtype=int).reshape(-1, 2)
    return 2 * b[:, 0] + b[:, 1]


def encode_levels(levels: np.ndarray) -> np.ndarray:
    """The inverse of :func:`decode_levels`: bits of shape (2 n,)."""
    lv = np.asarray(levels, dtype=int)
    return np.stack([lv // 2, lv % 2], axis=1).ravel()


@dataclass(frozen=True)
class LevelWindow:
    """One multi-level decision block.

    Attributes
    ----------
    slot : int
        The peak slot.
    jobs : ndarray of int, shape (n,)
    slots : ndarray of int, shape (S,)
        The slots any level of any job touches.
    base_kw : ndarray of shape (S,)
        Power of every other job there, kW.
    load_kw : ndarray of shape (n, 4, S)
        Job i's slot power at level l, kW (an infeasible level repeats level 0).
    feasible : ndarray of bool, shape (n, 4)
    duration : ndarray of int, shape (n, 4)
        Slots at each level.
    power_w : ndarray of shape (n, 4)
        Slot-average power at each level, W.
    """

    slot: int
    jobs: np.ndarray
    slots: np.ndarray
    base_kw: np.ndarray
    load_kw: np.ndarray
    feasible: np.ndarray
    duration: np.ndarray
    power_w: np.ndarray

    @property
    def n(self) -> int:
        """Qubits: two per job."""
        return 2 * int(self.jobs.shape[0])

    def effective(self, levels: np.ndarray) -> np.ndarray:
        """The levels that take effect (an infeasible choice stays at level 0)."""
        lv = np.asarray(levels, dtype=int)
        return np.where(self.feasible[np.arange(lv.shape[0]), lv], lv, 0)


def _level_options(problem: Problem, schedule: Schedule, j: int, idle_w_per_gpu: np.ndarray, slowdowns: np.ndarray,
                   horizon: int, succ_start: int, used: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Durations (slots), slot-average powers (W) and feasibility of job ``j``'s four levels."""
    d, p, g = int(problem.duration[j]), float(problem.power_w[j]), int(problem.gpus[j])
    node, start = int(schedule.node[j]), int(schedule.start[j])
    idle = min(g * float(idle_w_per_gpu[node]), p)
    durations = np.array([math.ceil(d * s - 1e-9) for s in slowdowns])
    power = (idle + (p - idle) / slowdowns**3) * d * slowdowns / durations
    feasible = np.ones(LEVELS, dtype=bool)
    for level, length in enumerate(durations):
        end = start + int(length)
        extra = used[node, start + d:end]
        feasible[level] = end <= horizon and end <= succ_start and bool((extra + g <= problem.node_gpus[node]).all())
    return durations, power, feasible


def build_level_window(problem: Problem, schedule: Schedule, slot: int, horizon: int, max_qubits: int,
                       idle_w_per_gpu: np.ndarray, max_slowdown: float, at_level_zero: np.ndarray) -> LevelWindow | None:
    """The multi-level window at ``slot``, or None when fewer than 2 jobs there have a slower feasible level.

    Only jobs still at level 0 (``at_level_zero``, bool of shape (n_jobs,))
    take part, so a level is never applied on top of another; at most
    ``max_qubits // 2`` jobs, highest power first. Each job taken reserves
    its node's GPUs for its longest offered run before the next is checked,
    so every combination of offered levels fits the nodes together.
    """
    slowdowns = level_slowdowns(max_slowdown)
    end = schedule.end(problem)
    succ = np.full(problem.n_jobs, np.iinfo(np.int64).max)
    for j, ds in enumerate(problem.deps):
        for dep in ds:
            succ[dep] = min(succ[dep], schedule.start[j])
    length = max(schedule.makespan(problem), horizon) + int(np.ceil(problem.duration.max() * max_slowdown)) + 1
    used = gpu_usage(problem, schedule, length)
    running = np.flatnonzero((schedule.start <= slot) & (end > slot) & at_level_zero)
    options = []
    # Highest power first; each chosen job reserves the GPUs of its longest offered run, so any mix of levels fits together.
    for j in sorted(running.tolist(), key=lambda j: (-problem.power_w[j], j)):
        durations, power, feasible = _level_options(problem, schedule, int(j), idle_w_per_gpu, slowdowns, horizon, int(succ[j]), used)
        if feasible[1:].any():
            options.append((int(j), durations, power, feasible))
            longest = int(durations[feasible].max())
            start, d = int(schedule.start[j]), int(problem.duration[j])
            used[schedule.node[j], start + d:start + longest] += int(problem.gpus[j])
        if len(options) == max(max_qubits // 2, 1):
            break
    if len(options) < 2:
        return None
    jobs = np.array([o[0] for o in options])
    duration = np.stack([o[1] for o in options])
    power_w = np.stack([o[2] for o in options])
    feasible = np.stack([o[3] for o in options])
    first = int(schedule.start[jobs].min())
    last = int((schedule.start[jobs][:, None] + np.where(feasible, duration, 0)).max())
    slots = np.arange(first, last)
    load = np.zeros((len(jobs), LEVELS, len(slots)))
    for i, j in enumerate(jobs):
        for level in range(LEVELS):
            use = level if feasible[i, level] else 0
            s0 = int(schedule.start[j]) - first
            load[i, level, s0:s0 + int(duration[i, use])] = power_w[i, use] / 1000.0
    profile = power_profile(problem, schedule, length)
    base = profile[slots] / 1000.0 - load[:, 0, :].sum(axis=0)
    return LevelWindow(slot=slot, jobs=jobs, slots=slots, base_kw=base, load_kw=load, feasible=feasible, duration=duration,
                       power_w=power_w)


def level_window_cost(window: LevelWindow, levels: np.ndarray) -> float:
    """``sum_s P_s^2`` in kW^2 for one choice of levels (shape (n_jobs,)), straight from the load table."""
    lv = np.asarray(levels, dtype=int)
    load = window.base_kw + window.load_kw[np.arange(lv.shape[0]), lv].sum(axis=0)
    return float(load @ load)


def level_energies(window: LevelWindow) -> np.ndarray:
    """The window cost of every one of the ``4**n_jobs`` bitstrings, PennyLane order, shape ``(2**n,)``.

    Slot by slot from the load table (independent of the spin expansion, so
    each checks the other).
    """
    n = window.n
    states = np.arange(1 << n, dtype=np.int64)
    total = np.zeros(1 << n)
    levels = [2 * ((states >> (n - 1 - 2 * i)) & 1) + ((states >> (n - 2 - 2 * i)) & 1) for i in range(n // 2)]
    for s in range(window.slots.shape[0]):
        load = np.full(1 << n, window.base_kw[s])
        for i, lv in enumerate(levels):
            load += window.load_kw[i, :, s][lv]
        total += load * load
    return total


def _walsh(values: np.ndarray) -> np.ndarray:
    """Spin expansion of a two-bit table ``values[..., 4]`` (level order 00, 01, 10, 11): (const, z_hi, z_lo, z_hi z_lo)."""
    v0, v1, v2, v3 = (values[..., k] for k in range(LEVELS))
    return np.stack([v0 + v1 + v2 + v3, v0 + v1 - v2 - v3, v0 - v1 + v2 - v3, v0 - v1 - v2 + v3], axis=-1) / 4.0


def level_model(window: LevelWindow) -> PolynomialModel:
    """The window cost as a :class:`PolynomialModel` on ``2 n_jobs`` spins (terms on up to 4 wires).

    Each slot's load is ``B_s + sum_i (c0 + c1 z_{2i} + c2 z_{2i+1} + c3 z_{2i} z_{2i+1})``;
    squaring multiplies monomials (a product of spins, ``z^2 = 1``), so the
    coefficient of each monomial is a sum over slots of products of two
    load coefficients: one Gram matrix over the slots.
    """
    k = window.jobs.shape[0]
    walsh = _walsh(np.moveaxis(window.load_kw, 1, 2))  # (k, S, 4)
    monomials: list[frozenset[int]] = [frozenset()]
    rows = [window.base_kw + walsh[:, :, 0].sum(axis=0)]
    for i in range(k):
        for part, wires in ((1, {2 * i}), (2, {2 * i + 1}), (3, {2 * i, 2 * i + 1})):
            monomials.append(frozenset(wires))
            rows.append(walsh[i, :, part])
    coeff = np.asarray(rows)  # (M, S)
    gram = coeff @ coeff.T
    out: dict[tuple[int, ...], float] = {}
    offset = 0.0
    for a, ma in enumerate(monomials):
        for b, mb in enumerate(monomials):
            value = float(gram[a, b])
            if value == 0.0:
                continue
            key = tuple(sorted(ma ^ mb))
            if key:
                out[key] = out.get(key, 0.0) + value
            else:
                offset += value
    return PolynomialModel(window.n, {w: c for w, c in out.items() if abs(c) > 1e-15}, offset)


def greedy_levels(window: LevelWindow) -> np.ndarray:
    """One job's level at a time from all level 0, the best change first, while the cost drops: shape (n_jobs,)."""
    levels = np.zeros(window.jobs.shape[0], dtype=int)
    current = level_window_cost(window, levels)
    while True:
        best, move = current, None
        for i in range(levels.shape[0]):
            for level in range(LEVELS):
                if level == levels[i] or not window.feasible[i, level]:
                    continue
                trial = levels.copy()
                trial[i] = level
                value = level_window_cost(window, trial)
                if value < best - 1e-12:
                    best, move = value, (i, level)
        if move is None:
            return levels
        levels[move[0]] = move[1]
        current = best


def apply_levels(problem: Problem, window: LevelWindow, levels: np.ndarray) -> Problem:
    """The problem with the window's jobs at their (effective) levels: longer durations, lower slot-average power."""
    lv = window.effective(levels)
    duration, power = problem.duration.copy(), problem.power_w.copy()
    rows = np.arange(lv.shape[0])
    duration[window.jobs] = window.duration[rows, lv]
    power[window.jobs] = window.power_w[rows, lv]
    return Problem(duration, power, problem.gpus, problem.node, problem.deps, problem.node_gpus)
