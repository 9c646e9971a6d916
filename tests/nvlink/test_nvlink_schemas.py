"""Fabric and jobs parsing: both fabric formats, and one clear InputError/InfeasibleError per malformed field."""

from __future__ import annotations

import numpy as np
import pytest
from nvlink_helpers import SAMPLES

from qflow.core.errors import InfeasibleError, InputError
from qflow.nvlink import NvlinkConfig, parse_fabric, parse_jobs, parse_topo_text, pattern_traffic
from qflow.nvlink._sample import dgx_h100_fabric, nvl72_fabric, topo_text


def small_fabric(**link_changes) -> dict:
    link = {"source": "g0", "target": "sw", "bandwidth_gbps": 400, **link_changes}
    return {"nodes": [{"id": "g0", "kind": "gpu"}, {"id": "g1", "kind": "gpu"}, {"id": "sw", "kind": "nvswitch"}],
            "links": [link, {"source": "g1", "target": "sw", "bandwidth_gbps": 400}]}


class TestFabric:
    def test_nvl72_structure(self):
        fab = parse_fabric(nvl72_fabric(), "rack.json")
        assert fab.n_gpus == 72 and fab.describe()["nodes_by_kind"] == {"gpu": 72, "nvswitch": 18}
        for g in fab.gpus:  # every GPU on every switch chip, 18 x 400 Gbit/s = 900 GB/s per direction
            assert fab.graph.degree(g) == 18
            assert sum(fab.graph.edges[g, s]["bandwidth_gbps"] for s in fab.graph.neighbors(g)) / 8 == 900
        assert len(set(fab.hosts())) == 18

    def test_parallel_links_add_up(self):
        data = small_fabric()
        data["links"].append({"source": "sw", "target": "g0", "bandwidth_gbps": 100})
        assert parse_fabric(data).graph.edges["g0", "sw"]["bandwidth_gbps"] == 500

    def test_dgx_nvswitch_planes_5_4_4_5(self):
        fab = parse_fabric(dgx_h100_fabric())
        assert [fab.graph.edges["gpu0", f"nvsw{s}"]["bandwidth_gbps"] for s in range(4)] == [1000, 800, 800, 1000]

    @pytest.mark.parametrize(("data", "message"), [
        (small_fabric(target="sw9"), "f.json: links[0].target: dangling link: endpoint is not a node; expected the id of a node "
                                     "listed under 'nodes', got sw9"),
        (small_fabric(bandwidth_gbps=-5), "f.json: links[0].bandwidth_gbps: out of range; expected a bandwidth in Gbit/s in [0.001, 1e+07], got -5"),
        (small_fabric(bandwidth_gbps="fast"), "f.json: links[0].bandwidth_gbps: not a finite number"),
        (small_fabric(latency_us=-1), "f.json: links[0].latency_us: out of range; expected a latency in us in [0, 1e+06], got -1"),
        (small_fabric(target="g0"), "f.json: links[0]: self-loop"),
        ({"nodes": [{"id": "g0", "kind": "tpu"}], "links": []}, "f.json: nodes[0].kind: unknown node kind"),
        ({"nodes": [{"id": "sw", "kind": "nvswitch"}], "links": []}, "f.json: nodes: no GPU nodes"),
        ({"nodes": [{"id": "g0", "kind": "gpu"}, {"id": "g0", "kind": "gpu"}], "links": []}, "f.json: nodes[1].id: duplicate node id"),
        ({"nodes": [{"id": "g0", "kind": "gpu"}, {"id": "g1", "kind": "gpu"}], "links": []}, "f.json: links: GPUs not connected"),
        ({"links": []}, "f.json: nodes: not node-link data"),
    ])
    def test_malformed(self, data, message):
        with pytest.raises(InputError) as info:
            parse_fabric(data, "f.json")
        assert info.value.message.startswith(message)


class TestTopoText:
    def test_sample_becomes_a_graph(self):
        fab = parse_topo_text((SAMPLES / "dgx_h100_topo.txt").read_text(), "topo.txt")
        assert fab.fmt == "nvidia-smi topo -m" and fab.n_gpus == 8
        assert fab.describe()["nodes_by_kind"] == {"gpu": 8, "nic": 8}
        edges = fab.graph.edges
        assert edges["GPU0", "GPU5"]["bandwidth_gbps"] == 18 * 200 and edges["GPU0", "GPU5"]["topo"] == "NV18"
        assert edges["GPU0", "NIC0"]["topo"] == "PIX" and edges["GPU0", "NIC1"]["topo"] == "NODE"
        assert edges["GPU0", "NIC4"]["topo"] == "SYS"
        assert edges["GPU0", "NIC0"]["bandwidth_gbps"] > edges["GPU0", "NIC4"]["bandwidth_gbps"]
        assert fab.graph.number_of_edges() == 16 * 15 // 2

    def test_terminal_underline_codes_are_ignored(self):
        text = topo_text().replace("\tGPU0\t", "\t\x1b[4mGPU0\t", 1).replace("GPU NUMA ID", "GPU NUMA ID\x1b[0m", 1)
        assert parse_topo_text(text, "t.txt").n_gpus == 8

    def test_sample_file_matches_the_builder(self):
        assert (SAMPLES / "dgx_h100_topo.txt").read_text() == topo_text()

    def test_unknown_connection_named(self):
        text = topo_text().replace("NV18", "QQ", 1)
        with pytest.raises(InputError, match=r"topo.txt: GPU0.GPU1: unknown connection; expected X, NV#, PIX, PXB, PHB, NODE or SYS, got QQ"):
            parse_topo_text(text, "topo.txt")

    def test_not_topo_text(self):
        with pytest.raises(InputError, match="not nvidia-smi topo -m output"):
            parse_topo_text("hello\nworld\n", "x.txt")


class TestJobs:
    def test_patterns(self):
        n, b = 4, 8.0
        assert pattern_traffic("all_to_all", n, b).sum() == pytest.approx(b * (n - 1))
        ring = pattern_traffic("all_reduce", n, b)
        assert np.count_nonzero(ring) == n and ring[0, 1] == pytest.approx(2 * (n - 1) / n * b)
        pipe = pattern_traffic("pipeline", n, b)
        assert np.count_nonzero(pipe) == 2 * (n - 1)

    def test_ranks_default_to_matrix_size(self):
        [job] = parse_jobs({"jobs": [{"id": "m", "traffic": [[0, 5], [1, 0]]}]})
        assert job.ranks == 2 and job.total_bytes == 6

    @pytest.mark.parametrize(("job", "message"), [
        ({"ranks": 2, "traffic": [[0, 1]]}, "j.json: jobs[0].traffic: wrong shape; expected a 2 x 2 list of lists"),
        ({"ranks": 2, "traffic": [[0, -1], [0, 0]]}, "j.json: jobs[0].traffic[0][1]: invalid byte count"),
        ({"ranks": 2, "traffic": [[3, 1], [0, 0]]}, "j.json: jobs[0].traffic[0][0]: a rank sends to itself"),
        ({"ranks": 2, "pattern": "broadcast", "bytes": 1}, "j.json: jobs[0].pattern: unknown pattern; expected one of all_reduce"),
        ({"ranks": 2, "pattern": "all_to_all"}, "j.json: jobs[0].bytes: missing field"),
        ({"ranks": 2, "pattern": "all_to_all", "bytes": -3}, "j.json: jobs[0].bytes: out of range"),
        ({"ranks": 2}, "j.json: jobs[0]: give exactly one of traffic and pattern"),
        ({"ranks": 0, "pattern": "pipeline", "bytes": 1}, "j.json: jobs[0].ranks: invalid rank count"),
    ])
    def test_malformed(self, job, message):
        with pytest.raises(InputError) as info:
            parse_jobs({"jobs": [job]}, "j.json")
        assert info.value.message.startswith(message)

    def test_more_ranks_than_gpus_is_infeasible(self):
        with pytest.raises(InfeasibleError, match=r"jobs\[0\].ranks: job big has more ranks than the fabric has GPUs; expected at most 8 ranks, got 9"):
            parse_jobs({"jobs": [{"id": "big", "ranks": 9, "pattern": "pipeline", "bytes": 1}]}, "j.json", n_gpus=8)
        with pytest.raises(InfeasibleError, match="the jobs together need more GPUs"):
            parse_jobs({"jobs": [{"ranks": 5, "pattern": "pipeline", "bytes": 1}] * 2}, "j.json", n_gpus=8)

    def test_config_bounds(self):
        with pytest.raises(InputError, match=r"config\.max_qubits"):
            NvlinkConfig.from_mapping({"max_qubits": 40})
