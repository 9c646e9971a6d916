"""Flow simulator (PaddedPaths): alpha-beta times, weighted ECMP over the NVSwitch planes, link loads conserved."""

from __future__ import annotations

import numpy as np
import pytest
from nvlink_helpers import node_fabric, pair_fabric, rack_fabric

from qflow.nvlink import pattern_traffic
from qflow.nvlink._simulator import FlowSet, PaddedPaths, PathTable, injection_bound_s


def _shortest(paths: PaddedPaths) -> np.ndarray:
    """Every flow on its cheapest option: one-hot weights (n_flows, n_options)."""
    w = np.zeros(paths.bottleneck_gbps.shape)
    w[:, 0] = 1.0
    return w


def _reference_times(table: PathTable, flows: FlowSet, weights: np.ndarray, alpha_us: float) -> np.ndarray:
    """The alpha-beta model written out flow by flow, path by path (the definition in the module docstring)."""
    link_bytes = np.zeros(table.n_links)
    for s, d, b, w in zip(flows.src.tolist(), flows.dst.tolist(), flows.nbytes.tolist(), weights, strict=True):
        for a, links in enumerate(table.paths(s, d)):
            link_bytes[links] += b * w[a]
    busy = 8.0 * link_bytes / (1e9 * table.capacity_gbps)
    times = []
    for s, d, w in zip(flows.src.tolist(), flows.dst.tolist(), weights, strict=True):
        used = [links for a, links in enumerate(table.paths(s, d)) if w[a] > 0]
        latency = max(table.latency_us[links].sum() * 1e-6 for links in used)
        times.append(alpha_us * 1e-6 + latency + max(busy[links].max() for links in used))
    return np.array(times)


def test_single_flow_alpha_beta():
    table = PathTable(rack_fabric())
    flows = FlowSet(np.array([0]), np.array([5]), np.array([9e9]))
    assert len(table.paths(0, 5)) == 18 and all(len(p) == 2 for p in table.paths(0, 5))
    paths = PaddedPaths.build(table, flows)
    single = paths.split_times(table, flows.nbytes, _shortest(paths), alpha_us=2.0)
    # alpha (2 us) + two 0.3 us hops, then 72 Gbit over one 400 Gbit/s link.
    assert single[0] == pytest.approx(2.6e-6 + 72 / 400)
    spread = paths.split_times(table, flows.nbytes, paths.ecmp_weights(), alpha_us=2.0)
    assert spread[0] == pytest.approx(2.6e-6 + 72 / (18 * 400))


def test_ecmp_all_to_all_on_the_rack_runs_at_the_injection_bound():
    table = PathTable(rack_fabric())
    flows = FlowSet.from_traffic(pattern_traffic("all_to_all", 72, 1e9), np.arange(72))
    paths = PaddedPaths.build(table, flows)
    bound = injection_bound_s(table, flows)
    assert paths.split_times(table, flows.nbytes, paths.ecmp_weights(), 0.0).max() == pytest.approx(bound + 0.6e-6, rel=1e-6)
    assert paths.split_times(table, flows.nbytes, _shortest(paths), 0.0).max() > 17 * bound  # every flow through switch chip 0


def test_weighted_ecmp_keeps_unequal_planes_equally_busy():
    table = PathTable(node_fabric())
    flows = FlowSet(np.array([0]), np.array([3]), np.array([1e9]))
    paths = PaddedPaths.build(table, flows)
    busy = paths.link_busy_s(table, flows.nbytes, paths.ecmp_weights())
    used = busy[busy > 0]
    assert used.size == 8 and np.allclose(used, used[0])  # 4 planes x 2 hops, 5/4/4/5 NVLinks each


def test_link_bytes_are_conserved():
    table = PathTable(pair_fabric())
    rng = np.random.default_rng(0)
    t = rng.random((16, 16)) * 1e8
    np.fill_diagonal(t, 0)
    flows = FlowSet.from_traffic(t, np.arange(16))
    paths = PaddedPaths.build(table, flows)
    weights = paths.ecmp_weights()
    link_bytes = paths.link_busy_s(table, flows.nbytes, weights) * 1e9 * table.capacity_gbps / 8.0
    hops = sum(b * sum(w[a] * len(p) for a, p in enumerate(table.paths(s, d)))
               for s, d, b, w in zip(flows.src, flows.dst, flows.nbytes, weights, strict=True))
    assert link_bytes.sum() == pytest.approx(hops)


@pytest.mark.parametrize("fabric", [pair_fabric, node_fabric])
def test_vectorised_times_match_the_model_written_out(fabric):
    table = PathTable(fabric())
    n = len(table.fabric.gpus)
    rng = np.random.default_rng(3)
    t = (rng.random((n, n)) < 0.5) * rng.random((n, n)) * 1e9
    np.fill_diagonal(t, 0)
    flows = FlowSet.from_traffic(t, np.arange(n))
    paths = PaddedPaths.build(table, flows)
    for weights in (paths.ecmp_weights(), _shortest(paths)):
        assert paths.split_times(table, flows.nbytes, weights, 1.0) == pytest.approx(_reference_times(table, flows, weights, 1.0))
    choice = np.floor(rng.random(flows.n) * paths.n_options).astype(int)
    one_hot = np.zeros(paths.bottleneck_gbps.shape)
    one_hot[np.arange(flows.n), choice] = 1.0
    assert paths.flow_times(table, flows.nbytes, choice, 1.0) == pytest.approx(_reference_times(table, flows, one_hot, 1.0))


def test_cross_node_pairs_cost_more_than_the_nvswitch():
    table = PathTable(pair_fabric())
    cost = table.cost_matrix(np.arange(16))
    assert cost[0, 1] == pytest.approx(8 / 3600)     # 18 NVLink 4 links of 200 Gbit/s
    assert cost[0, 8] == pytest.approx(8 / 400)      # one rail: a single 400 Gbit/s NIC
    assert cost[0, 9] == pytest.approx(8 / 800)      # two rails' NICs reach it (max flow, shared links counted once)
