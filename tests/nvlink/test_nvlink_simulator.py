"""Flow simulator: alpha-beta times, weighted ECMP over the NVSwitch planes, link loads conserved."""

from __future__ import annotations

import numpy as np
import pytest
from nvlink_helpers import node_fabric, pair_fabric, rack_fabric

from qflow.nvlink import pattern_traffic
from qflow.nvlink._rl import PaddedPaths
from qflow.nvlink._simulator import FlowSet, PathTable, ecmp_routing, injection_bound_s, simulate, single_path_routing


def test_single_flow_alpha_beta():
    table = PathTable(rack_fabric())
    flows = FlowSet(np.array([0]), np.array([5]), np.array([9e9]))
    assert len(table.paths(0, 5)) == 18 and all(len(p) == 2 for p in table.paths(0, 5))
    single = simulate(table, flows, single_path_routing(flows), alpha_us=2.0)
    # alpha (2 us) + two 0.3 us hops, then 72 Gbit over one 400 Gbit/s link.
    assert single.time_s == pytest.approx(2.6e-6 + 72 / 400)
    spread = simulate(table, flows, ecmp_routing(table, flows), alpha_us=2.0)
    assert spread.time_s == pytest.approx(2.6e-6 + 72 / (18 * 400))


def test_ecmp_all_to_all_on_the_rack_runs_at_the_injection_bound():
    table = PathTable(rack_fabric())
    flows = FlowSet.from_traffic(pattern_traffic("all_to_all", 72, 1e9), np.arange(72))
    ecmp = simulate(table, flows, ecmp_routing(table, flows))
    bound = injection_bound_s(table, flows)
    assert ecmp.time_s == pytest.approx(bound + 0.6e-6, rel=1e-6)
    shortest = simulate(table, flows, single_path_routing(flows))
    assert shortest.time_s > 17 * bound  # every flow through switch chip 0


def test_weighted_ecmp_keeps_unequal_planes_equally_busy():
    table = PathTable(node_fabric())
    flows = FlowSet(np.array([0]), np.array([3]), np.array([1e9]))
    result = simulate(table, flows, ecmp_routing(table, flows))
    used = result.busy_s[result.busy_s > 0]
    assert used.size == 8 and np.allclose(used, used[0])  # 4 planes x 2 hops, 5/4/4/5 NVLinks each


def test_link_bytes_are_conserved():
    table = PathTable(pair_fabric())
    rng = np.random.default_rng(0)
    t = rng.random((16, 16)) * 1e8
    np.fill_diagonal(t, 0)
    flows = FlowSet.from_traffic(t, np.arange(16))
    routing = ecmp_routing(table, flows)
    result = simulate(table, flows, routing)
    hops = sum(b * sum(w * len(table.paths(s, d)[a]) for a, w in split)
               for s, d, b, split in zip(flows.src, flows.dst, flows.nbytes, routing, strict=True))
    assert result.link_bytes.sum() == pytest.approx(hops)


def test_padded_paths_agree_with_the_reference_simulator():
    table = PathTable(pair_fabric())
    t = pattern_traffic("all_to_all", 16, 1e9)
    flows = FlowSet.from_traffic(t, np.arange(16))
    paths = PaddedPaths.build(table, flows)
    reference = simulate(table, flows, ecmp_routing(table, flows), alpha_us=1.0)
    fast = paths.split_times(table, flows.nbytes, paths.ecmp_weights(), alpha_us=1.0)
    assert fast == pytest.approx(reference.flow_time_s)


def test_cross_node_pairs_cost_more_than_the_nvswitch():
    table = PathTable(pair_fabric())
    cost = table.cost_matrix(np.arange(16))
    assert cost[0, 1] == pytest.approx(8 / 3600)     # 18 NVLink 4 links of 200 Gbit/s
    assert cost[0, 8] == pytest.approx(8 / 400)      # one rail: a single 400 Gbit/s NIC
    assert cost[0, 9] == pytest.approx(8 / 800)      # two rails' NICs reach it (max flow, shared links counted once)
