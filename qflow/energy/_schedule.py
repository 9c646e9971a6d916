"""Schedulers: jobs with dependencies placed in time slots on nodes with GPU capacity.

All three share one serial schedule-generation scheme (:func:`serial_schedule`,
the textbook list scheduler for resource-constrained project scheduling):
jobs are taken in a priority order consistent with the dependencies and each
is placed at the earliest slot where its dependencies have ended, its node has
free GPUs for its whole duration, and the power caps hold. Hand-written
(numpy windows) because no installed library schedules under a power profile.

* :func:`asap_schedule` -- no power cap: every job as early as the GPUs allow.
* :func:`per_node_schedule` -- the simple scheduler: jobs are assigned to
  nodes up front (least GPU-slot load) and each node keeps its own share of
  the budget, blind to the others.
* :func:`list_schedule` -- cluster-wide: bisect the smallest cluster power cap
  under which the list scheduler still meets the horizon.

Power here is the jobs' draw in W; a schedule's profile has one value per slot.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qflow.core.errors import InfeasibleError

__all__ = [
    "Problem",
    "Schedule",
    "asap_schedule",
    "bottom_levels",
    "check_schedule",
    "list_schedule",
    "lower_bound_w",
    "per_node_schedule",
    "power_profile",
    "serial_schedule",
]


@dataclass(frozen=True)
class Problem:
    """What the schedulers need, already validated (see :mod:`qflow.energy._schemas`).

    Arrays of shape (n,) over jobs: ``duration`` (slots, int >= 1),
    ``power_w`` (W, > 0), ``gpus`` (int), ``node`` (required node index or -1);
    ``deps[i]`` the jobs that must end before job i starts; ``node_gpus`` of
    shape (m,).
    """

    duration: np.ndarray
    power_w: np.ndarray
    gpus: np.ndarray
    node: np.ndarray
    deps: list[list[int]]
    node_gpus: np.ndarray

    @property
    def n_jobs(self) -> int:
        return int(self.duration.shape[0])

    @property
    def n_nodes(self) -> int:
        return int(self.node_gpus.shape[0])

    @property
    def energy_w_slots(self) -> float:
        """Total job energy, W x slots (the same for every schedule)."""
        return float(self.power_w @ self.duration)


@dataclass(frozen=True)
class Schedule:
    """Start slot and node of every job: ``start`` and ``node`` of shape (n,), int."""

    start: np.ndarray
    node: np.ndarray

    def end(self, problem: Problem) -> np.ndarray:
        return self.start + problem.duration

    def makespan(self, problem: Problem) -> int:
        return int(self.end(problem).max())


def bottom_levels(problem: Problem) -> np.ndarray:
    """Longest path (in slots) from each job's start to the end of the DAG, shape (n,).

    A dependency's bottom level exceeds its dependent's (durations >= 1), so
    sorting by it descending is an order consistent with the dependencies.

    >>> p = Problem(np.array([2, 3]), np.ones(2), np.ones(2, int), -np.ones(2, int), [[], [0]], np.array([1]))
    >>> bottom_levels(p).tolist()
    [5, 3]
    """
    n = problem.n_jobs
    succ: list[list[int]] = [[] for _ in range(n)]
    indeg = np.zeros(n, dtype=int)
    for i, ds in enumerate(problem.deps):
        for d in ds:
            succ[d].append(i)
            indeg[i] += 1
    order, stack = [], [i for i in range(n) if indeg[i] == 0]
    while stack:
        i = stack.pop()
        order.append(i)
        for s in succ[i]:
            indeg[s] -= 1
            if indeg[s] == 0:
                stack.append(s)
    level = np.zeros(n, dtype=int)
    for i in reversed(order):
        level[i] = problem.duration[i] + max((level[s] for s in succ[i]), default=0)
    return level


def priority_order(problem: Problem) -> np.ndarray:
    """Bottom level descending, then power descending, then index: consistent with the dependencies."""
    level = bottom_levels(problem)
    return np.lexsort((np.arange(problem.n_jobs), -problem.power_w, -level))


def topological_order(problem: Problem, key: np.ndarray) -> np.ndarray:
    """Kahn's algorithm taking the ready job with the smallest ``key`` first (ties by index).

    >>> p = Problem(np.array([1, 1, 1]), np.ones(3), np.ones(3, int), -np.ones(3, int), [[2], [], []], np.array([1]))
    >>> topological_order(p, np.array([0.0, 1.0, 2.0])).tolist()
    [1, 2, 0]
    """
    succ: list[list[int]] = [[] for _ in range(problem.n_jobs)]
    indeg = np.zeros(problem.n_jobs, dtype=int)
    for i, ds in enumerate(problem.deps):
        for d in ds:
            succ[d].append(i)
            indeg[i] += 1
    ready = [(float(key[i]), i) for i in range(problem.n_jobs) if indeg[i] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, i = heapq.heappop(ready)
        order.append(i)
        for s in succ[i]:
            indeg[s] -= 1
            if indeg[s] == 0:
                heapq.heappush(ready, (float(key[s]), s))
    return np.asarray(order, dtype=int)


def priority_rules(problem: Problem) -> dict[str, np.ndarray]:
    """The list scheduler's priority orders, all consistent with the dependencies.

    ``bottom_level``: longest path to the end first, then power; ``bottom_level_area``:
    then GPU-slots; ``bottom_level_plus_energy``: the sum of both, each scaled
    to [0, 1] (long chains and big jobs early). List scheduling is not
    monotone in its cap and no rule wins every instance, so all are tried.
    """
    level = bottom_levels(problem).astype(float)
    area = (problem.gpus * problem.duration).astype(float)
    energy = problem.power_w * problem.duration
    index = np.arange(problem.n_jobs)
    return {
        "bottom_level": priority_order(problem),
        "bottom_level_area": np.lexsort((index, -area, -level)),
        "bottom_level_plus_energy": topological_order(problem, -(level / level.max() + energy / energy.max())),
    }


def _first_fits(ok: np.ndarray, est: int, duration: int) -> np.ndarray:
    """Per row of ``ok`` (k, L): the earliest ``t >= est`` with ``ok[row, t:t+duration]`` all true, or -1.

    >>> _first_fits(np.array([[1, 0, 1, 1, 1], [1, 1, 1, 0, 0]], bool), 1, 2).tolist()
    [2, 1]
    """
    run = np.zeros((ok.shape[0], ok.shape[1] + 1), dtype=np.int64)
    np.cumsum(ok[:, est:], axis=1, out=run[:, est + 1:])
    window = run[:, est + duration:] - run[:, est:-duration] if ok.shape[1] - est >= duration else np.zeros((ok.shape[0], 0))
    hits = window == duration
    has = hits.any(axis=1)
    return np.where(has, hits.argmax(axis=1) + est, -1)


def serial_schedule(
    problem: Problem,
    order: np.ndarray,
    cluster_cap_w: float = np.inf,
    node_cap_w: np.ndarray | None = None,
    allowed_node: np.ndarray | None = None,
) -> Schedule:
    """Place jobs one by one in ``order`` at their earliest feasible slot.

    Parameters
    ----------
    problem : Problem
    order : ndarray of int, shape (n,)
        A priority order consistent with the dependencies.
    cluster_cap_w : float
        The jobs' total power may not exceed this in any slot (a job above it
        alone is placed when nothing else runs, so the schedule always exists).
    node_cap_w : ndarray of shape (m,), optional
        Per-node caps (same exception for a single job above its node's cap).
    allowed_node : ndarray of int, shape (n,), optional
        A node per job (-1: any); defaults to ``problem.node``.

    Returns
    -------
    Schedule
        Ties between nodes go to the node with the fewest GPUs in use at the start.
    """
    n, m = problem.n_jobs, problem.n_nodes
    allowed = problem.node if allowed_node is None else allowed_node
    length = int(problem.duration.sum()) + 1  # serial placement never needs more slots than this
    profile = np.zeros(length)
    node_profile = np.zeros((m, length))
    used = np.zeros((m, length), dtype=int)
    start = np.full(n, -1, dtype=int)
    node = np.full(n, -1, dtype=int)
    end = np.zeros(n, dtype=int)
    all_nodes = np.arange(m)
    for j in order:
        d, p, g = int(problem.duration[j]), float(problem.power_w[j]), int(problem.gpus[j])
        est = max((end[k] for k in problem.deps[j]), default=0)
        cap = max(cluster_cap_w, p)
        candidates = all_nodes[problem.node_gpus >= g] if allowed[j] < 0 else np.array([int(allowed[j])])
        candidates = candidates[problem.node_gpus[candidates] >= g]
        # All candidate nodes at once over slots [est, hi): every slot from the latest end on is free, so a fit
        # always exists below hi = max(latest end, est) + d.
        hi = max(int(end.max(initial=0)), est) + d
        span = slice(est, hi)
        ok = (profile[span] + p <= cap * (1 + 1e-9))[None, :] & (used[candidates, span] + g <= problem.node_gpus[candidates, None])
        if node_cap_w is not None:
            ok &= node_profile[candidates, span] + p <= np.maximum(node_cap_w[candidates], p)[:, None] * (1 + 1e-9)
        starts = _first_fits(ok, 0, d)
        starts = np.where(starts >= 0, starts + est, -1)
        found = starts >= 0
        if not found.any():  # cannot happen: after every placed job ends, all caps and GPUs are free
            raise RuntimeError(f"no slot found for job {j}")
        # Earliest start; ties go to the node with the fewest GPUs in use then, then the lowest index.
        nodes, t_nodes = candidates[found], starts[found]
        pick = np.lexsort((nodes, used[nodes, t_nodes], t_nodes))[0]
        best_t, best_n = int(t_nodes[pick]), int(nodes[pick])
        start[j], node[j], end[j] = best_t, best_n, best_t + d
        profile[best_t:best_t + d] += p
        node_profile[best_n, best_t:best_t + d] += p
        used[best_n, best_t:best_t + d] += g
    return Schedule(start=start, node=node)


def power_profile(problem: Problem, schedule: Schedule, length: int | None = None, by_node: bool = False) -> np.ndarray:
    """Jobs' power per slot, W: shape (length,), or (m, length) with ``by_node``.

    >>> p = Problem(np.array([2, 1]), np.array([100.0, 50.0]), np.ones(2, int), -np.ones(2, int), [[], []], np.array([2]))
    >>> power_profile(p, Schedule(np.array([0, 1]), np.array([0, 0]))).tolist()
    [100.0, 150.0]
    """
    size = schedule.makespan(problem) if length is None else length
    out = np.zeros((problem.n_nodes, size)) if by_node else np.zeros(size)
    for j in range(problem.n_jobs):
        s, e = int(schedule.start[j]), int(schedule.start[j] + problem.duration[j])
        if by_node:
            out[schedule.node[j], s:e] += problem.power_w[j]
        else:
            out[s:e] += problem.power_w[j]
    return out


def gpu_usage(problem: Problem, schedule: Schedule, length: int | None = None) -> np.ndarray:
    """GPUs in use per node and slot, shape (m, length)."""
    size = schedule.makespan(problem) if length is None else length
    used = np.zeros((problem.n_nodes, size), dtype=int)
    for j in range(problem.n_jobs):
        used[schedule.node[j], schedule.start[j]:schedule.start[j] + problem.duration[j]] += problem.gpus[j]
    return used


def check_schedule(problem: Problem, schedule: Schedule) -> list[str]:
    """Every broken rule (dependency, GPU capacity, required node); empty when the schedule is valid."""
    problems = []
    end = schedule.end(problem)
    for j, ds in enumerate(problem.deps):
        for d in ds:
            if schedule.start[j] < end[d]:
                problems.append(f"job {j} starts at {schedule.start[j]} before its dependency {d} ends at {end[d]}")
    if (schedule.start < 0).any():
        problems.append("negative start")
    fixed = problem.node >= 0
    if (schedule.node[fixed] != problem.node[fixed]).any():
        problems.append("a job is off its required node")
    over = gpu_usage(problem, schedule) > problem.node_gpus[:, None]
    if over.any():
        n, t = np.argwhere(over)[0]
        problems.append(f"node {n} over its GPU count at slot {t}")
    return problems


def lower_bound_w(problem: Problem, horizon: int) -> float:
    """``max(largest job power, total energy / horizon)``, W: no schedule within ``horizon`` slots peaks lower.

    >>> p = Problem(np.array([2, 2]), np.array([100.0, 60.0]), np.ones(2, int), -np.ones(2, int), [[], []], np.array([2]))
    >>> lower_bound_w(p, 2), lower_bound_w(p, 4)
    (160.0, 100.0)
    """
    return float(max(problem.power_w.max(), problem.energy_w_slots / horizon))


def asap_schedule(problem: Problem) -> Schedule:
    """Every job as early as its dependencies and the GPUs allow; no power cap."""
    return serial_schedule(problem, priority_order(problem))


def assign_nodes(problem: Problem, order: np.ndarray) -> np.ndarray:
    """Static node per job: the required one, else the node with the least GPU-slot load so far (per GPU)."""
    load = np.zeros(problem.n_nodes)
    out = problem.node.copy()
    for j in order:
        if out[j] < 0:
            fits = np.flatnonzero(problem.node_gpus >= problem.gpus[j])
            out[j] = int(fits[np.argmin(load[fits] / problem.node_gpus[fits])])
        load[out[j]] += problem.gpus[j] * problem.duration[j]
    return out


def per_node_schedule(problem: Problem, node_cap_w: np.ndarray | None) -> Schedule:
    """The simple scheduler: static node assignment, then each node ASAP under its own power share.

    ``node_cap_w`` of shape (m,) (None: no cap). A job above its node's share
    runs only when its node is otherwise idle.
    """
    order = priority_order(problem)
    return serial_schedule(problem, order, node_cap_w=node_cap_w, allowed_node=assign_nodes(problem, order))


#: Caps tried per priority rule between the budget and the lower bound when the budget itself is late.
LADDER_STEPS = 8


@dataclass(frozen=True)
class ListResult:
    """The cluster-wide list schedule and how it was found."""

    schedule: Schedule
    cap_w: float
    horizon: int
    horizon_extended: bool
    probes: int
    rule: str


def _refuse_explicit_horizon(problem: Problem, shortest: int, horizon: int, budget_w: float | None, horizon_is_auto: bool,
                             budget_source: str) -> None:
    """Raise when no rule ends within an explicit ``horizon`` (an auto one is extended to ``shortest`` instead)."""
    if horizon_is_auto:
        return
    if budget_w is None:  # even uncapped the GPUs need longer: only an explicit horizon can be too short
        raise InfeasibleError("config", "horizon", "too short for the GPUs even with no power cap",
                              f"at least {shortest} slots", f"{horizon} slots")
    bound = lower_bound_w(problem, horizon)
    why = (f"the lower bound for {horizon} slots is {bound:.0f} W" if bound > budget_w
           else f"the list scheduler needs {shortest} slots under it")
    raise InfeasibleError(budget_source, "power_budget_w", f"no schedule within the horizon under this budget ({why})",
                          "a larger power_budget_w or horizon", f"{budget_w:.0f} W, horizon {horizon}")


def list_schedule(problem: Problem, horizon: int, budget_w: float | None, horizon_is_auto: bool,
                  budget_source: str = "config", rel_tol: float = 0.002, max_probes: int = 30,
                  heartbeat: Callable[[], None] | None = None) -> ListResult:
    """Bisect, per priority rule, the smallest cluster cap whose list schedule ends within ``horizon``.

    The cap is searched in ``[lower bound, min(budget, ASAP peak)]`` for each
    rule of :func:`priority_rules`; the lowest peak wins. With a budget and no
    rule meeting the horizon under it: an auto horizon is extended to the
    shortest makespan the budget allows; an explicit one raises
    :class:`InfeasibleError`.

    Raises
    ------
    InfeasibleError
        When the budget is below the largest job, below the lower bound for
        the horizon, or the horizon is shorter than the critical path.
    """
    rules = priority_rules(problem)
    critical = int(bottom_levels(problem).max())
    if budget_w is not None and budget_w < problem.power_w.max():
        j = int(np.argmax(problem.power_w))
        raise InfeasibleError(budget_source, "power_budget_w", "budget below the largest single job",
                              f"at least {problem.power_w[j]:.0f} W (job #{j})", f"{budget_w:.0f} W")
    if not horizon_is_auto and horizon < critical:
        raise InfeasibleError("config", "horizon", "shorter than the critical path of the dependencies",
                              f"at least {critical} slots", f"{horizon} slots")
    probes = 0

    def attempt(order: np.ndarray, cap: float) -> Schedule:
        nonlocal probes
        probes += 1
        if heartbeat is not None:
            heartbeat()
        return serial_schedule(problem, order, cluster_cap_w=cap)

    asap = attempt(rules["bottom_level"], np.inf)
    asap_peak = float(power_profile(problem, asap).max())
    hi = asap_peak if budget_w is None else min(budget_w, asap_peak)
    starts = {name: (attempt(order, hi) if hi < asap_peak or name != "bottom_level" else asap) for name, order in rules.items()}
    # List scheduling is not monotone in its cap: a rule late at `hi` may be on time at a lower cap.
    # Before calling a budget infeasible (or extending the horizon), walk each rule down a ladder of caps.
    if min(s.makespan(problem) for s in starts.values()) > horizon:
        floor = lower_bound_w(problem, horizon)
        for name, order in rules.items():
            for cap in np.linspace(hi, floor, LADDER_STEPS + 1)[1:]:
                trial = attempt(order, cap)
                if trial.makespan(problem) <= horizon:
                    starts[name] = trial
                    break
    shortest = min(s.makespan(problem) for s in starts.values())
    extended = shortest > horizon
    if extended:
        _refuse_explicit_horizon(problem, shortest, horizon, budget_w, horizon_is_auto, budget_source)
        horizon = shortest
    best_rule, best, best_cap = "", asap, np.inf
    for name, order in rules.items():
        found = starts[name]
        if found.makespan(problem) > horizon:
            continue
        cap = float(power_profile(problem, found).max())
        lo, hi_rule = lower_bound_w(problem, horizon), cap
        budget_probes = probes + max_probes // len(rules)
        while hi_rule - lo > rel_tol * hi_rule and probes < budget_probes:
            mid = 0.5 * (lo + hi_rule)
            trial = attempt(order, mid)
            if trial.makespan(problem) <= horizon:
                peak = float(power_profile(problem, trial).max())
                if peak < cap:
                    found, cap = trial, peak
                hi_rule = min(mid, peak)
            else:
                lo = mid
        if cap < best_cap - 1e-9:
            best_rule, best, best_cap = name, found, cap
    return ListResult(schedule=best, cap_w=best_cap, horizon=horizon, horizon_extended=extended, probes=probes, rule=best_rule)
