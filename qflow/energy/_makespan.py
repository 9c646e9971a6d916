"""The budget objective: the shortest makespan whose jobs' power never exceeds the budget.

This is resource-constrained project scheduling (RCPSP) with one cumulative
resource (power, capacity = the budget) and per-node GPU capacities. It is
NP-hard; the heuristic here is the standard one for RCPSP:

1. serial list scheduling (:func:`~qflow.energy._schedule.serial_schedule`)
   at cap = budget under each priority rule and under ``iterations`` randomly
   perturbed bottom-level priorities (biased random sampling);
2. forward-backward improvement ("double justification", Valls et al. 2005)
   of every one of those schedules: re-schedule the jobs right-justified in
   reverse time, latest end first, then left-justified, earliest start first;
   repeated while the makespan drops;
3. the shortest schedule wins; among equally short ones the lowest peak
   (:func:`flatten_within` then bisects a lower cap at that makespan: peak
   flattening is only a tie-break).

:func:`makespan_lower_bound` certifies how far from optimal the answer can
be, and :func:`exact_makespan` solves small instances exactly (a time-indexed
MILP on HiGHS through :func:`scipy.optimize.milp`) for the benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qflow.energy._schedule import (
    Problem,
    Schedule,
    bottom_levels,
    lower_bound_w,
    power_profile,
    priority_rules,
    serial_schedule,
    topological_order,
)

__all__ = ["MakespanResult", "budget_sweep", "exact_makespan", "flatten_within", "makespan_lower_bound", "shortest_schedule",
           "top_levels"]

Heartbeat = Callable[[], None]
#: Forward-backward passes per start at most (each pass is two list-scheduling runs).
FBI_PASSES = 4
#: Candidate head and tail values tried by the energetic bound at most (quantiles beyond that).
BOUND_CANDIDATES = 48


def _successors(problem: Problem) -> list[list[int]]:
    succ: list[list[int]] = [[] for _ in range(problem.n_jobs)]
    for i, ds in enumerate(problem.deps):
        for d in ds:
            succ[d].append(i)
    return succ


def top_levels(problem: Problem) -> np.ndarray:
    """Earliest start of each job from its dependencies alone (longest path to it), slots, shape (n,).

    >>> p = Problem(np.array([2, 3]), np.ones(2), np.ones(2, int), -np.ones(2, int), [[], [0]], np.array([1]))
    >>> top_levels(p).tolist()
    [0, 2]
    """
    head = np.zeros(problem.n_jobs, dtype=int)
    for j in topological_order(problem, np.zeros(problem.n_jobs)):
        head[j] = max((head[d] + problem.duration[d] for d in problem.deps[j]), default=0)
    return head


def _candidates(values: np.ndarray) -> np.ndarray:
    distinct = np.unique(values)
    if distinct.size > BOUND_CANDIDATES:
        distinct = np.unique(np.quantile(distinct, np.linspace(0, 1, BOUND_CANDIDATES), method="lower"))
    return distinct.astype(int)


def _energetic(head: np.ndarray, tail: np.ndarray, work: np.ndarray, capacity: float) -> tuple[int, int, int]:
    """``max over (a, b) of a + ceil(work of jobs with head >= a and tail >= b / capacity) + b``, and its (a, b)."""
    best = (0, 0, 0)
    for a in _candidates(head):
        rows = head >= a
        for b in _candidates(tail[rows]):
            chosen = rows & (tail >= b)
            value = int(a + math.ceil(work[chosen].sum() / capacity - 1e-9) + b)
            if value > best[0]:
                best = (value, int(a), int(b))
    return best


def makespan_lower_bound(problem: Problem, budget_w: float) -> dict[str, Any]:
    """Certified lower bounds on the makespan (slots) of any schedule under ``budget_w``.

    * ``critical_path``: the longest dependency chain;
    * ``energy``: ``ceil(total energy / budget)`` (slots are whole), and the
      issue's unrounded ``energy / budget`` for reference;
    * ``energy_heads_tails``: for any jobs that cannot start before slot
      ``a`` and whose successors need ``b`` more slots after them,
      ``a + ceil(their energy / budget) + b`` (energetic reasoning);
    * ``gpus``: the same with GPU-slots over the cluster's GPUs, and per node
      for the jobs pinned to it;
    * ``disjunctive``: jobs above half the budget can never run together, so
      their durations add up (plus the smallest head and tail among them).

    Returns the components and ``bound`` (their maximum, an integer).

    >>> p = Problem(np.array([2, 2, 1]), np.array([300.0, 300.0, 100.0]), np.ones(3, int), -np.ones(3, int), [[], [], [0]],
    ...             np.array([4]))
    >>> b = makespan_lower_bound(p, 500.0)
    >>> b["critical_path"], b["energy"], b["disjunctive"], b["bound"]
    (3, 3, 4, 4)
    """
    level = bottom_levels(problem)
    head = top_levels(problem)
    tail = level - problem.duration
    energy = problem.power_w * problem.duration
    area = (problem.gpus * problem.duration).astype(float)
    total_gpus = float(problem.node_gpus.sum())
    out: dict[str, Any] = {"critical_path": int(level.max()),
                           "energy_unrounded": round(float(energy.sum() / budget_w), 4),
                           "energy": int(math.ceil(energy.sum() / budget_w - 1e-9))}
    value, a, b = _energetic(head, tail, energy, budget_w)
    out["energy_heads_tails"] = value
    out["energy_heads_tails_window"] = [a, b]
    gpu_bound = _energetic(head, tail, area, total_gpus)[0]
    for n in range(problem.n_nodes):
        pinned = problem.node == n
        if pinned.any():
            gpu_bound = max(gpu_bound, int(math.ceil(area[pinned].sum() / problem.node_gpus[n] - 1e-9)))
    out["gpus"] = gpu_bound
    big = problem.power_w > budget_w / 2 * (1 + 1e-9)
    out["disjunctive"] = int(head[big].min() + problem.duration[big].sum() + tail[big].min()) if big.any() else 0
    out["bound"] = max(out[k] for k in ("critical_path", "energy", "energy_heads_tails", "gpus", "disjunctive"))
    return out


@dataclass(frozen=True)
class MakespanResult:
    """The shortest schedule found under the budget and how it was found."""

    schedule: Schedule
    makespan: int
    peak_w: float
    lower_bound: dict[str, Any]
    starts: int
    passes: int
    source: str
    history: list[int] = field(default_factory=list)

    @property
    def gap(self) -> float:
        """``makespan / bound - 1``."""
        return self.makespan / self.lower_bound["bound"] - 1.0


def _reverse(problem: Problem) -> Problem:
    return Problem(problem.duration, problem.power_w, problem.gpus, problem.node, _successors(problem), problem.node_gpus)


def _order_by(times: np.ndarray, tie: np.ndarray) -> np.ndarray:
    return np.lexsort((tie, times))


def justify(problem: Problem, reverse: Problem, schedule: Schedule, cap_w: float, level: np.ndarray,
            heartbeat: Heartbeat | None = None, max_passes: int = FBI_PASSES) -> tuple[Schedule, int]:
    """Forward-backward improvement of ``schedule`` while its makespan drops; returns the best and the passes run.

    Backward: jobs latest end first, each as late as possible (list scheduling
    of the reversed DAG); forward: jobs earliest start first in that
    right-justified schedule, each as early as possible. Dependency order is
    kept because a job ends before any successor ends and starts after any
    dependency starts.
    """
    best, best_span = schedule, schedule.makespan(problem)
    passes = 0
    for _ in range(max_passes):
        if heartbeat is not None:
            heartbeat()
        end = best.start + problem.duration
        back = serial_schedule(reverse, _order_by(-end, -level), cluster_cap_w=cap_w)
        back_span = back.makespan(reverse)
        right_start = back_span - (back.start + problem.duration)
        forward = serial_schedule(problem, _order_by(right_start, -level), cluster_cap_w=cap_w)
        passes += 1
        span = forward.makespan(problem)
        if span >= best_span:
            break
        best, best_span = forward, span
    return best, passes


def shortest_schedule(problem: Problem, budget_w: float, iterations: int, seed: int,
                      heartbeat: Heartbeat | None = None, fbi_passes: int = FBI_PASSES) -> MakespanResult:
    """The shortest schedule found under ``budget_w`` (see the module docstring), lowest peak among ties.

    Parameters
    ----------
    problem : Problem
    budget_w : float
        Cluster cap on the jobs' power, W (at least the largest job's power).
    iterations : int
        Randomly perturbed priority orders tried besides the fixed rules.
    seed : int
        Seeds the perturbations (the result is deterministic for a seed).
    heartbeat : callable, optional
        Called between list-scheduling runs, so a cancel raised there stops the search.
    fbi_passes : int
        Forward-backward passes per start at most (0: plain list scheduling).
    """
    bound = makespan_lower_bound(problem, budget_w)
    level = bottom_levels(problem).astype(float)
    reverse = _reverse(problem)
    rng = np.random.default_rng(seed)
    orders: list[tuple[str, np.ndarray]] = list(priority_rules(problem).items())
    scale = max(float(level.max()), 1.0)
    for k in range(iterations):
        noise = rng.uniform(0.0, 0.5, problem.n_jobs) * scale
        orders.append((f"random_{k}", topological_order(problem, -(level + noise))))
    best: tuple[int, float] | None = None
    result = None
    history: list[int] = []
    passes = 0
    for name, order in orders:
        if heartbeat is not None:
            heartbeat()
        start = serial_schedule(problem, order, cluster_cap_w=budget_w)
        improved, ran = justify(problem, reverse, start, budget_w, level, heartbeat, fbi_passes)
        passes += ran
        span = improved.makespan(problem)
        key = (span, float(power_profile(problem, improved).max()))
        if best is None or key < best:
            best, result = key, (improved, name)
        history.append(best[0])
        if best[0] <= bound["bound"]:
            break  # provably optimal: nothing shorter exists
    assert result is not None and best is not None
    return MakespanResult(schedule=result[0], makespan=best[0], peak_w=best[1], lower_bound=bound, starts=len(history),
                          passes=passes, source=result[1], history=history)


def budget_sweep(problem: Problem, budgets: list[float], heartbeat: Heartbeat | None = None) -> list[dict[str, float | int]]:
    """Makespan against peak over a sweep of budgets: the trade-off an operator picks a budget from.

    Each budget gets one forward-backward pass after each fixed priority
    rule (no random orders, to stay cheap) and its certified lower bound.
    Returns ``{"budget_w", "makespan_slots", "peak_w", "makespan_lower_bound_slots"}`` per budget.
    """
    out = []
    for budget in budgets:
        found = shortest_schedule(problem, budget, 0, 0, heartbeat=heartbeat, fbi_passes=1)
        out.append({"budget_w": round(float(budget), 3), "makespan_slots": found.makespan, "peak_w": round(found.peak_w, 3),
                    "makespan_lower_bound_slots": found.lower_bound["bound"]})
    return out


def flatten_within(problem: Problem, incumbent: Schedule, budget_w: float, heartbeat: Heartbeat | None = None,
                   rel_tol: float = 0.002, max_probes: int = 12) -> tuple[Schedule, int]:
    """The tie-break: the lowest-peak schedule found that is no longer than ``incumbent``.

    For the incumbent's own start order and each priority rule, bisect the
    cluster cap between the peak lower bound for that makespan and the
    incumbent's peak; a probe counts only if its makespan does not grow.
    Returns the schedule and the probes run.
    """
    span = incumbent.makespan(problem)
    best, best_peak = incumbent, float(power_profile(problem, incumbent).max())
    level = bottom_levels(problem)
    orders = [_order_by(incumbent.start, -level), *priority_rules(problem).values()]
    floor = lower_bound_w(problem, span)
    probes = 0
    for order in orders:
        lo, hi = floor, min(best_peak, budget_w)
        for _ in range(max_probes):
            if hi - lo <= rel_tol * hi:
                break
            if heartbeat is not None:
                heartbeat()
            mid = 0.5 * (lo + hi)
            trial = serial_schedule(problem, order, cluster_cap_w=mid)
            probes += 1
            if trial.makespan(problem) <= span:
                peak = float(power_profile(problem, trial).max())
                if peak < best_peak - 1e-9:
                    best, best_peak = trial, peak
                hi = min(mid, peak)
            else:
                lo = mid
    return best, probes


def exact_makespan(problem: Problem, budget_w: float, horizon: int, time_limit_s: float = 60.0) -> dict[str, Any]:
    """The optimal makespan by a time-indexed MILP on HiGHS (``scipy.optimize.milp``); small instances only.

    Variables ``x[j, n, t] = 1`` when job j starts at slot t on node n
    (``t`` from its earliest start to ``horizon - d_j``) and the makespan
    ``C``. Each job starts once; a job starts after each dependency ends
    (``sum t x_j >= sum (t + d_i) x_i``); in every slot the running jobs'
    power is at most the budget and each node's GPUs suffice;
    ``C >= sum (t + d_j) x_j``. Minimise ``C``.

    Returns ``{"status", "makespan", "bound", "seconds", "variables"}``;
    ``makespan`` is None when HiGHS found no solution in time; ``bound`` is
    its proven lower bound.
    """
    import time

    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import lil_matrix

    head = top_levels(problem)
    index: list[tuple[int, int, int]] = []
    for j in range(problem.n_jobs):
        nodes = [int(problem.node[j])] if problem.node[j] >= 0 else range(problem.n_nodes)
        for n in nodes:
            if problem.gpus[j] > problem.node_gpus[n]:
                continue
            index.extend((j, n, t) for t in range(int(head[j]), horizon - int(problem.duration[j]) + 1))
    nv = len(index) + 1
    cost = np.zeros(nv)
    cost[-1] = 1.0
    rows: list[tuple[dict[int, float], float, float]] = []
    per_job: list[list[int]] = [[] for _ in range(problem.n_jobs)]
    for v, (j, _, _) in enumerate(index):
        per_job[j].append(v)
    for j in range(problem.n_jobs):
        rows.append(({v: 1.0 for v in per_job[j]}, 1.0, 1.0))
        finish = {v: float(index[v][2] + problem.duration[j]) for v in per_job[j]}
        finish[nv - 1] = -1.0
        rows.append((finish, -np.inf, 0.0))
        for i in problem.deps[j]:
            coefs = {v: float(index[v][2]) for v in per_job[j]}
            for v in per_job[i]:
                coefs[v] = coefs.get(v, 0.0) - float(index[v][2] + problem.duration[i])
            rows.append((coefs, 0.0, np.inf))
    for t in range(horizon):
        power: dict[int, float] = {}
        gpus: list[dict[int, float]] = [{} for _ in range(problem.n_nodes)]
        for v, (j, n, s) in enumerate(index):
            if s <= t < s + problem.duration[j]:
                power[v] = float(problem.power_w[j])
                gpus[n][v] = float(problem.gpus[j])
        if power:
            rows.append((power, -np.inf, float(budget_w)))
        for n in range(problem.n_nodes):
            if gpus[n]:
                rows.append((gpus[n], -np.inf, float(problem.node_gpus[n])))
    matrix = lil_matrix((len(rows), nv))
    lower, upper = np.empty(len(rows)), np.empty(len(rows))
    for r, (coefs, lo, hi) in enumerate(rows):
        for v, c in coefs.items():
            matrix[r, v] = c
        lower[r], upper[r] = lo, hi
    integrality = np.ones(nv)
    integrality[-1] = 0
    bounds = Bounds(np.zeros(nv), np.r_[np.ones(nv - 1), horizon])
    start = time.perf_counter()
    res = milp(cost, constraints=LinearConstraint(matrix.tocsr(), lower, upper), integrality=integrality, bounds=bounds,
               options={"time_limit": time_limit_s, "disp": False})
    seconds = time.perf_counter() - start
    makespan = None if res.x is None else int(round(res.x[-1]))
    proven = getattr(res, "mip_dual_bound", None)
    return {"status": res.message, "optimal": res.status == 0, "makespan": makespan,
            "bound": None if proven is None or not np.isfinite(proven) else math.ceil(proven - 1e-6),
            "seconds": round(seconds, 3), "variables": nv}
