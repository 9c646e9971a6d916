"""Rank -> GPU placement: minimise sum_ij traffic_ij * cost(gpu_i, gpu_j) (a quadratic assignment problem).

Method (per job, heaviest job first, on the GPUs still free):

1. Pick the job's GPUs: grow a compact set from the free GPU closest to all
   others, adding the free GPU cheapest to reach from the set.
2. Recursive bisection: split the ranks' communication graph (weights
   ``T + T^T``) and the GPU set's affinity graph (weights ``1 / cost``) into
   halves of equal size, map half to half, recurse. The bisection is
   networkx's Kernighan-Lin (default), a spectral split at the median of the
   Fiedler vector, or METIS through pymetis when installed.
3. Refine with best-improvement pairwise swaps and moves to free GPUs,
   evaluated exactly for all pairs at once:
   ``delta(a, b) = M_ab + M_ba - M_aa - M_bb + 2 W_ab D_ab`` with
   ``D = C[p][:, p]`` and ``M = W D``.

The cost is the pair's seconds per GB over all its paths
(:meth:`PathTable.pair_cost_s_per_gb`) times ``1 + 1e-3`` across hosts, so
that on a flat fabric (NVL72: every pair one switch hop apart) ties are broken
towards keeping heavy pairs in one compute tray.

Baselines: round-robin (rank ``i`` on host ``i mod H``, as a scheduler
spreading ranks over nodes does) and a seeded random placement.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import networkx as nx
import numpy as np

from qflow.nvlink._schemas import Job

__all__ = ["HOST_TIE_BREAK", "bisect", "cut_cost", "place_jobs", "random_placement", "refine", "round_robin_placement"]

HOST_TIE_BREAK = 1e-3


def cut_cost(traffic: np.ndarray, placement: np.ndarray, cost: np.ndarray) -> float:
    """``sum_ij traffic_ij / 1e9 * cost[p_i, p_j]``: seconds if every transfer ran alone on its pair's paths.

    >>> cut_cost(np.array([[0, 2e9], [0, 0]]), np.array([0, 1]), np.array([[0, 0.5], [0.5, 0]]))
    1.0
    """
    return float((traffic / 1e9 * cost[np.ix_(placement, placement)]).sum())


def _symmetric(traffic: np.ndarray) -> np.ndarray:
    return traffic + traffic.T


def bisect(weights: np.ndarray, method: str, seed: int) -> tuple[list[int], list[int]]:
    """Split nodes ``0..n-1`` of a weighted graph (n, n) into halves of sizes ``n // 2`` and ``n - n // 2``.

    >>> w = np.zeros((4, 4)); w[0, 1] = w[1, 0] = w[2, 3] = w[3, 2] = 5.0; w[1, 2] = w[2, 1] = 1.0
    >>> sorted(map(sorted, bisect(w, "kernighan_lin", 0)))
    [[0, 1], [2, 3]]
    """
    n = weights.shape[0]
    half = n // 2
    if n < 2:
        return [], list(range(n))
    if method == "metis" and importlib.util.find_spec("pymetis") is not None and n >= 4:
        a, b = _metis_bisect(weights)
    elif method == "spectral" and n >= 3 and weights.sum() > 0:
        a, b = _spectral_bisect(weights)
    else:
        graph = nx.Graph()
        graph.add_nodes_from(range(n))
        rows, cols = np.nonzero(np.triu(weights, 1))
        graph.add_weighted_edges_from(zip(rows.tolist(), cols.tolist(), weights[rows, cols].tolist(), strict=True))
        first = list(range(half))
        second = list(range(half, n))
        a_set, b_set = nx.algorithms.community.kernighan_lin_bisection(graph, (first, second), weight="weight", seed=seed)
        a, b = sorted(a_set), sorted(b_set)
    if len(a) != half:  # partitioners may be off by a few: move the weakest-attached nodes across
        a, b = _rebalance(weights, a, b, half)
    return a, b


def _rebalance(weights: np.ndarray, a: list[int], b: list[int], half: int) -> tuple[list[int], list[int]]:
    a, b = list(a), list(b)
    while len(a) > half:
        gain = [weights[x, b].sum() - weights[x, a].sum() for x in a]
        b.append(a.pop(int(np.argmax(gain))))
    while len(a) < half:
        gain = [weights[x, a].sum() - weights[x, b].sum() for x in b]
        a.append(b.pop(int(np.argmax(gain))))
    return sorted(a), sorted(b)


def _spectral_bisect(weights: np.ndarray) -> tuple[list[int], list[int]]:
    """Median split of the Fiedler vector of the weighted Laplacian (dense eigh: n is a job's rank count)."""
    lap = np.diag(weights.sum(axis=1)) - weights
    _, vectors = np.linalg.eigh(lap)
    order = np.argsort(vectors[:, 1], kind="stable")
    half = weights.shape[0] // 2
    return sorted(order[:half].tolist()), sorted(order[half:].tolist())


def _metis_bisect(weights: np.ndarray) -> tuple[list[int], list[int]]:
    import pymetis

    n = weights.shape[0]
    scale = 1000.0 / max(float(weights.max()), 1e-300)
    xadj, adjncy, eweights = [0], [], []
    for i in range(n):
        for j in np.flatnonzero(weights[i]).tolist():
            if j != i:
                adjncy.append(j)
                eweights.append(max(1, int(round(weights[i, j] * scale))))
        xadj.append(len(adjncy))
    if not adjncy:
        return list(range(n // 2)), list(range(n // 2, n))
    _, parts = pymetis.part_graph(2, pymetis.CSRAdjacency(adj_starts=xadj, adjacent=adjncy), eweights=eweights)
    a = [i for i, p in enumerate(parts) if p == 0]
    b = [i for i, p in enumerate(parts) if p == 1]
    return a, b


def _choose_gpus(free: np.ndarray, k: int, cost: np.ndarray) -> np.ndarray:
    """``k`` of the ``free`` GPU indices forming a cheap cluster (greedy growth)."""
    sub = cost[np.ix_(free, free)]
    chosen = [int(np.argmin(sub.sum(axis=1)))]
    reach = sub[chosen[0]].copy()
    taken = np.zeros(len(free), dtype=bool)
    taken[chosen[0]] = True
    while len(chosen) < k:
        candidates = np.where(taken, np.inf, reach)
        nxt = int(np.argmin(candidates))
        chosen.append(nxt)
        taken[nxt] = True
        reach += sub[nxt]
    return free[np.sort(chosen)]


def _map_recursive(weights: np.ndarray, ranks: list[int], gpus: list[int], cost: np.ndarray, out: np.ndarray,
                   method: str, seed: int) -> None:
    if len(ranks) == 1:
        out[ranks[0]] = gpus[0]
        return
    rank_a, rank_b = bisect(weights[np.ix_(ranks, ranks)], method, seed)
    sub = cost[np.ix_(gpus, gpus)]
    affinity = np.where(sub > 0, 1.0 / np.where(sub > 0, sub, 1.0), 0.0)
    gpu_a, gpu_b = bisect(affinity, method, seed)
    _map_recursive(weights, [ranks[i] for i in rank_a], [gpus[i] for i in gpu_a], cost, out, method, seed)
    _map_recursive(weights, [ranks[i] for i in rank_b], [gpus[i] for i in gpu_b], cost, out, method, seed)


def refine(traffic: np.ndarray, placement: np.ndarray, cost: np.ndarray, free: np.ndarray, max_steps: int) -> np.ndarray:
    """Best-improvement swaps of two ranks or moves of a rank to a free GPU until none lowers :func:`cut_cost`.

    Parameters
    ----------
    traffic : ndarray of shape (n, n)
    placement : ndarray of shape (n,)
        GPU index per rank (distinct).
    cost : ndarray of shape (n_gpus, n_gpus)
        Symmetric pair costs.
    free : ndarray
        GPU indices nobody uses (moves may take them).
    max_steps : int
        Improving steps at most.
    """
    p = placement.copy()
    free = [int(g) for g in free]
    W = _symmetric(traffic) / 1e9
    n = len(p)
    if n < 2 or n > 512:
        return p
    for _ in range(max_steps):
        D = cost[np.ix_(p, p)]
        M = W @ D
        diag = np.diag(M)
        swap = M + M.T - diag[:, None] - diag[None, :] + 2.0 * W * D
        np.fill_diagonal(swap, 0.0)
        a, b = np.unravel_index(int(np.argmin(swap)), swap.shape)
        best = swap[a, b]
        move = None
        if free:
            E = cost[np.ix_(free, p)]
            moves = E @ W - diag[None, :]
            g, r = np.unravel_index(int(np.argmin(moves)), moves.shape)
            if moves[g, r] < best:
                best, move = moves[g, r], (int(g), int(r))
        if best >= -1e-12 * max(1.0, abs(float((W * D).sum()))):
            break
        if move is None:
            p[a], p[b] = p[b], p[a]
        else:
            g, r = move
            free[g], p[r] = int(p[r]), free[g]
    return p


def place_jobs(jobs: Sequence[Job], cost: np.ndarray, hosts: np.ndarray, method: str = "kernighan_lin", seed: int = 0,
               refine_passes: int = 4) -> list[np.ndarray]:
    """Placement of every job (rank -> GPU index), heaviest job first, no GPU shared.

    ``cost`` is (n_gpus, n_gpus) with the host tie-break already applied.
    Returns one array of shape (ranks,) per job, in the order of ``jobs``.
    """
    n_gpus = cost.shape[0]
    used = np.zeros(n_gpus, dtype=bool)
    out: list[np.ndarray | None] = [None] * len(jobs)
    order = sorted(range(len(jobs)), key=lambda j: (-jobs[j].total_bytes, j))
    for j in order:
        job = jobs[j]
        free = np.flatnonzero(~used)
        gpus = _choose_gpus(free, job.ranks, cost)
        placement = np.zeros(job.ranks, dtype=int)
        _map_recursive(_symmetric(job.traffic), list(range(job.ranks)), gpus.tolist(), cost, placement, method, seed)
        others = np.setdiff1d(free, placement)
        placement = refine(job.traffic, placement, cost, others, refine_passes * job.ranks)
        used[placement] = True
        out[j] = placement
    return [p for p in out if p is not None]


def round_robin_placement(jobs: Sequence[Job], hosts: np.ndarray) -> list[np.ndarray]:
    """Rank ``i`` of each job (in file order) on host ``i mod H`` (next free GPU there; a full host is skipped)."""
    host_ids = list(dict.fromkeys(hosts.tolist()))
    queues = {h: [int(g) for g in np.flatnonzero(hosts == h)] for h in host_ids}
    cursor = 0
    out = []
    for job in jobs:
        placement = np.zeros(job.ranks, dtype=int)
        for r in range(job.ranks):
            for step in range(len(host_ids)):
                h = host_ids[(cursor + step) % len(host_ids)]
                if queues[h]:
                    placement[r] = queues[h].pop(0)
                    cursor = (cursor + step + 1) % len(host_ids)
                    break
        out.append(placement)
    return out


def random_placement(jobs: Sequence[Job], n_gpus: int, seed: int) -> list[np.ndarray]:
    """A seeded random permutation of the GPUs, cut into the jobs' rank counts."""
    perm = np.random.default_rng([seed, 7]).permutation(n_gpus)
    out, start = [], 0
    for job in jobs:
        out.append(perm[start:start + job.ranks].copy())
        start += job.ranks
    return out
