"""Sample fabrics and jobs, built from the published structure of the systems.

* GB200 NVL72 rack: 72 Blackwell GPUs in 18 compute trays (4 GPUs each), 9
  NVLink switch trays with 2 NVSwitch chips each (18 chips). Every GPU has 18
  NVLink 5 links, one to every switch chip: 50 GB/s per direction per link,
  900 GB/s per direction (1.8 TB/s bidirectional) per GPU.
* DGX H100: 8 H100 GPUs, 4 NVSwitch chips; each GPU has 18 NVLink 4 links
  (25 GB/s per direction each) split 5/4/4/5 over the four chips; one
  ConnectX-7 400 Gb/s NIC per GPU behind a PCIe switch.
* Two DGX H100 joined by InfiniBand: rail-optimised, NIC ``k`` of both nodes
  on leaf switch ``k``, the 8 leaves under one spine (400 Gb/s per port).
* ``nvidia-smi topo -m`` as a DGX H100 prints it (GPUs NV18 to each other,
  each GPU's own NIC behind PIX, two NUMA nodes).

Jobs (``jobs.json``, for the NVL72): a skewed 16-rank training job (four
tensor-parallel groups of 4 ranks, scattered over the rank numbers, exchanging
much more inside a group than the data-parallel traffic between groups), a
32-rank all-to-all (MoE dispatch), a 16-stage pipeline and an irregular
7-rank exchange whose greedy colouring needs a round more than the lower
bound; 71 of 72 GPUs.
``jobs_2node.json`` (16 GPUs) and ``jobs_node.json`` (8 GPUs) are smaller
mixes for the DGX fabrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SAMPLE_SCENARIOS", "dgx_h100_cluster_fabric", "dgx_h100_fabric", "dgx_h100_pair_fabric", "nvl72_fabric", "sample_jobs", "skewed_traffic",
           "topo_text", "write_sample"]

NVLINK5_GBPS = 400.0   # one NVLink 5 link, Gbit/s per direction (50 GB/s)
NVLINK4_GBPS = 200.0   # one NVLink 4 link (25 GB/s)
NIC_GBPS = 400.0       # ConnectX-7 / NDR InfiniBand port
PCIE_GBPS = 504.0      # PCIe Gen5 x16 (63 GB/s)

#: An irregular exchange among 7 ranks whose greedy colourings need one round more than the lower bound
#: (7); a Kempe recolouring block removes it (the sample that exercises the QAOA path).
IRREGULAR_7 = [[0, 0, 0, 1, 0, 1, 0], [0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 1, 1],
               [0, 0, 0, 1, 0, 0, 1], [1, 1, 0, 0, 1, 0, 0], [1, 1, 1, 1, 1, 0, 0]]

#: Fabric file -> the jobs file made for it (the page's bundled scenarios).
SAMPLE_SCENARIOS = {
    "gb200_nvl72.json": "jobs.json",
    "dgx_h100_x2_ib.json": "jobs_2node.json",
    "dgx_h100.json": "jobs_node.json",
    "dgx_h100_topo.txt": "jobs_node.json",
}


def _link(a: str, b: str, gbps: float, latency_us: float) -> dict[str, Any]:
    return {"source": a, "target": b, "bandwidth_gbps": gbps, "latency_us": latency_us}


def _node_link(nodes: list[dict[str, Any]], links: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return {"directed": False, "multigraph": False, "graph": {"name": name}, "nodes": nodes, "links": links}


def nvl72_fabric() -> dict[str, Any]:
    """GB200 NVL72 as node-link data: 72 GPUs + 18 NVSwitch chips, 1296 links of 400 Gbit/s."""
    nodes = [{"id": f"gpu{g:02d}", "kind": "gpu", "host": f"tray{g // 4:02d}"} for g in range(72)]
    nodes += [{"id": f"nvsw{s:02d}", "kind": "nvswitch", "host": f"switch_tray{s // 2}"} for s in range(18)]
    links = [_link(f"gpu{g:02d}", f"nvsw{s:02d}", NVLINK5_GBPS, 0.3) for g in range(72) for s in range(18)]
    return _node_link(nodes, links, "GB200 NVL72")


def _dgx_parts(prefix: str, host: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    nodes = [{"id": f"{prefix}gpu{g}", "kind": "gpu", "host": host} for g in range(8)]
    nodes += [{"id": f"{prefix}nvsw{s}", "kind": "nvswitch", "host": host} for s in range(4)]
    nodes += [{"id": f"{prefix}nic{g}", "kind": "nic", "host": host} for g in range(8)]
    links = []
    for g in range(8):
        for s, count in enumerate((5, 4, 4, 5)):
            links.append(_link(f"{prefix}gpu{g}", f"{prefix}nvsw{s}", count * NVLINK4_GBPS, 0.5))
        links.append(_link(f"{prefix}gpu{g}", f"{prefix}nic{g}", PCIE_GBPS, 1.0))
    return nodes, links


def dgx_h100_fabric() -> dict[str, Any]:
    """One DGX H100: 8 GPUs, 4 NVSwitch chips (5/4/4/5 NVLinks per GPU), 8 NICs."""
    nodes, links = _dgx_parts("", "dgx0")
    return _node_link(nodes, links, "DGX H100")


def dgx_h100_pair_fabric() -> dict[str, Any]:
    """Two DGX H100 on a rail-optimised InfiniBand fabric (8 leaves, 1 spine)."""
    return dgx_h100_cluster_fabric(2)


def dgx_h100_cluster_fabric(n_nodes: int) -> dict[str, Any]:
    """``n_nodes`` DGX H100 on a rail-optimised InfiniBand fabric (8 leaves, 1 spine)."""
    nodes, links = [], []
    for i in range(n_nodes):
        n, lk = _dgx_parts(f"dgx{i}/", f"dgx{i}")
        nodes += n
        links += lk
    nodes += [{"id": f"ib_leaf{k}", "kind": "ib_switch", "host": "ib"} for k in range(8)]
    nodes.append({"id": "ib_spine", "kind": "ib_switch", "host": "ib"})
    for k in range(8):
        for i in range(n_nodes):
            links.append(_link(f"dgx{i}/nic{k}", f"ib_leaf{k}", NIC_GBPS, 1.5))
        links.append(_link(f"ib_leaf{k}", "ib_spine", n_nodes * NIC_GBPS, 1.5))
    return _node_link(nodes, links, f"{n_nodes} x DGX H100 + InfiniBand")


def topo_text() -> str:
    """``nvidia-smi topo -m`` of a DGX H100 (8 GPUs, 8 compute NICs, two NUMA nodes)."""
    names = [f"GPU{g}" for g in range(8)] + [f"NIC{k}" for k in range(8)]

    def numa(name: str) -> int:
        return int(name[3:]) // 4

    lines = ["\t" + "\t".join(names) + "\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID"]
    for a in names:
        cells = []
        for b in names:
            if a == b:
                cells.append(" X ")
            elif a.startswith("GPU") and b.startswith("GPU"):
                cells.append("NV18")
            elif a[3:] == b[3:]:
                cells.append("PIX")
            else:
                cells.append("NODE" if numa(a) == numa(b) else "SYS")
        tail = [f"{0 if numa(a) == 0 else 56}-{55 if numa(a) == 0 else 111}", str(numa(a)), str(numa(a))] if a.startswith("GPU") else []
        lines.append("\t".join([a, *cells, *tail]))
    lines += ["", "Legend:", "", "  X    = Self",
              "  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)",
              "  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node",
              "  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)",
              "  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)",
              "  PIX  = Connection traversing at most a single PCIe bridge",
              "  NV#  = Connection traversing a bonded set of # NVLinks", "", "NIC Legend:", ""]
    lines += [f"  NIC{k}: mlx5_{k}" for k in range(8)]
    return "\n".join(lines) + "\n"


def skewed_traffic(ranks: int, group: int, seed: int, heavy: float = 2e9, light: float = 64e6) -> list[list[float]]:
    """Traffic of a job with tensor-parallel groups of ``group`` ranks scattered over the rank numbers.

    Inside a group every pair exchanges ``heavy`` bytes each way; a
    data-parallel ring over the groups' first members carries ``light``.
    """
    rng = np.random.default_rng([seed, 3])
    order = rng.permutation(ranks)
    t = np.zeros((ranks, ranks))
    groups = [order[i:i + group] for i in range(0, ranks, group)]
    for members in groups:
        for a in members:
            for b in members:
                if a != b:
                    t[a, b] = heavy
    for i in range(group):
        ring = [g[i] for g in groups if i < len(g)]
        for a, b in zip(ring, ring[1:] + ring[:1], strict=True):
            if a != b:
                t[a, b] += light
    return t.tolist()


def sample_jobs(kind: str = "nvl72", seed: int = 0) -> dict[str, Any]:
    """The jobs files: ``nvl72`` (64 ranks), ``2node`` (16) or ``node`` (8)."""
    if kind == "nvl72":
        jobs = [
            {"id": "train_tp4x4", "ranks": 16, "traffic": skewed_traffic(16, 4, seed)},
            {"id": "moe_all_to_all", "ranks": 32, "pattern": "all_to_all", "bytes": 512e6},
            {"id": "pipeline_16", "ranks": 16, "pattern": "pipeline", "bytes": 256e6},
            {"id": "sparse_exchange_7", "ranks": 7, "traffic": (np.array(IRREGULAR_7) * 128e6).tolist()},
        ]
    elif kind == "2node":
        jobs = [
            {"id": "train_tp4x2", "ranks": 8, "traffic": skewed_traffic(8, 4, seed)},
            {"id": "moe_all_to_all", "ranks": 4, "pattern": "all_to_all", "bytes": 512e6},
            {"id": "pipeline_4", "ranks": 4, "pattern": "pipeline", "bytes": 256e6},
        ]
    else:
        jobs = [
            {"id": "all_reduce_4", "ranks": 4, "pattern": "all_reduce", "bytes": 1e9},
            {"id": "all_to_all_4", "ranks": 4, "pattern": "all_to_all", "bytes": 512e6},
        ]
    return {"jobs": jobs}


def write_sample(directory: str | Path, seed: int = 0) -> list[Path]:
    """Write the four fabrics and three jobs files under ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "gb200_nvl72.json": nvl72_fabric(),
        "dgx_h100.json": dgx_h100_fabric(),
        "dgx_h100_x2_ib.json": dgx_h100_pair_fabric(),
        "jobs.json": sample_jobs("nvl72", seed),
        "jobs_2node.json": sample_jobs("2node", seed),
        "jobs_node.json": sample_jobs("node", seed),
    }
    written = []
    for name, data in files.items():
        path = out / name
        path.write_text(json.dumps(data, indent=1 if name.startswith("jobs") else None) + "\n")
        written.append(path)
    topo = out / "dgx_h100_topo.txt"
    topo.write_text(topo_text())
    written.append(topo)
    return written
