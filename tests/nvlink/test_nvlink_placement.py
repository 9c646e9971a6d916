"""Placement: beats round-robin and random on a skewed job; refinement never makes it worse; jobs never share a GPU."""

from __future__ import annotations

import numpy as np
import pytest
from nvlink_helpers import pair_fabric, rack_fabric, skewed_job

from qflow.nvlink import parse_jobs
from qflow.nvlink._placement import HOST_TIE_BREAK, bisect, cut_cost, place_jobs, random_placement, refine, round_robin_placement
from qflow.nvlink._simulator import PathTable


def costs(fabric):
    table = PathTable(fabric)
    cost = table.cost_matrix(np.arange(fabric.n_gpus))
    hosts = table.hosts
    return table, cost, cost * (1 + HOST_TIE_BREAK * (hosts[:, None] != hosts[None, :]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_placement_beats_round_robin_and_random_on_a_skewed_job(seed):
    fabric = pair_fabric()
    table, cost, tie = costs(fabric)
    jobs = parse_jobs({"jobs": [skewed_job(16, 4, seed)]}, n_gpus=fabric.n_gpus)
    [plan] = place_jobs(jobs, tie, table.hosts, seed=seed)
    [rr] = round_robin_placement(jobs, table.hosts)
    [rnd] = random_placement(jobs, fabric.n_gpus, seed)
    t = jobs[0].traffic
    assert cut_cost(t, plan, cost) < cut_cost(t, rr, cost)
    assert cut_cost(t, plan, cost) < cut_cost(t, rnd, cost)
    # The heavy tensor-parallel groups stay inside one DGX: only the light ring crosses InfiniBand.
    hosts = table.hosts
    cross = t[hosts[plan][:, None] != hosts[plan][None, :]].sum()
    assert cross <= 8 * 64e6 + 1  # each of the 4 rings crosses twice at least
    assert t[hosts[rr][:, None] != hosts[rr][None, :]].sum() > 10 * cross


@pytest.mark.parametrize("method", ["kernighan_lin", "spectral", "metis"])
def test_bisection_finds_the_two_cliques(method):
    w = np.zeros((8, 8))
    w[:4, :4] = w[4:, 4:] = 10.0
    w[3, 4] = w[4, 3] = 1.0
    np.fill_diagonal(w, 0)
    perm = np.random.default_rng(0).permutation(8)
    a, b = bisect(w[np.ix_(perm, perm)], method, 0)
    assert len(a) == len(b) == 4
    groups = {frozenset(perm[a].tolist() if isinstance(a, np.ndarray) else [int(perm[i]) for i in a]),
              frozenset(int(perm[i]) for i in b)}
    assert groups == {frozenset(range(4)), frozenset(range(4, 8))}


def test_refine_never_increases_the_cost():
    fabric = pair_fabric()
    _, cost, _ = costs(fabric)
    rng = np.random.default_rng(3)
    for _ in range(5):
        t = rng.random((10, 10)) * (rng.random((10, 10)) < 0.4) * 1e9
        np.fill_diagonal(t, 0)
        start = rng.permutation(16)[:10]
        free = np.setdiff1d(np.arange(16), start)
        better = refine(t, start, cost, free, 50)
        assert len(set(better.tolist())) == 10
        assert cut_cost(t, better, cost) <= cut_cost(t, start, cost) + 1e-12


def test_jobs_never_share_a_gpu_and_every_rank_is_placed():
    fabric = rack_fabric()
    table, _, tie = costs(fabric)
    jobs = parse_jobs({"jobs": [skewed_job(16, 4, 0), {"id": "a", "ranks": 32, "pattern": "all_to_all", "bytes": 1e8},
                                {"id": "p", "ranks": 16, "pattern": "pipeline", "bytes": 1e8}]}, n_gpus=72)
    for placements in (place_jobs(jobs, tie, table.hosts), round_robin_placement(jobs, table.hosts), random_placement(jobs, 72, 0)):
        used = np.concatenate(placements)
        assert [len(p) for p in placements] == [16, 32, 16] and len(set(used.tolist())) == 64


def test_round_robin_spreads_consecutive_ranks_over_hosts():
    fabric = pair_fabric()
    table, _, _ = costs(fabric)
    jobs = parse_jobs({"jobs": [{"id": "p", "ranks": 4, "pattern": "pipeline", "bytes": 1.0}]})
    [rr] = round_robin_placement(jobs, table.hosts)
    assert table.hosts[rr].tolist() == ["dgx0", "dgx1", "dgx0", "dgx1"]
