"""NVLink inputs and config: parse once, validate once, then trust.

Two fabric formats become the same :class:`Fabric` (an undirected
``networkx.Graph``):

* NetworkX node-link JSON: nodes with ``id`` and ``kind`` (``gpu``,
  ``nvswitch``, ``nic``, ``switch``, ``ib_switch``, ``pcie_switch``,
  ``cpu``; optional ``host`` naming the server or compute tray a GPU sits
  in), links with ``source``, ``target``, ``bandwidth_gbps`` (Gbit/s per
  direction; links are full duplex) and optional ``latency_us``. Parallel
  links between the same two nodes are merged (bandwidths add).
* The text ``nvidia-smi topo -m`` prints: a matrix of ``X``, ``NV#``,
  ``PIX``, ``PXB``, ``PHB``, ``NODE``, ``SYS`` (``SOC``) between GPUs and
  NICs. Each pair becomes one direct link costed by
  :data:`TOPO_CLASSES` (``NV#``: ``#`` NVLinks of :data:`NVLINK_GBPS_PER_LINK`).

Jobs are ``{"jobs": [{"id", "ranks", "traffic" | "pattern" + "bytes"}]}``;
``traffic`` is a ranks x ranks matrix of bytes sent from row to column.
Every check that can fail lives here and raises
:class:`~qflow.core.errors.InputError` (or
:class:`~qflow.core.errors.InfeasibleError` when the jobs do not fit the
fabric) naming the file and the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import networkx as nx
import numpy as np
from pydantic import Field

from qflow.core.config import QflowConfig
from qflow.core.errors import InfeasibleError, InputError
from qflow.core.limits import check_limit
from qflow.core.quantum import HARD_MAX_QUBITS

__all__ = [
    "NODE_KINDS",
    "NVLINK_GBPS_PER_LINK",
    "PATTERNS",
    "SWITCH_KINDS",
    "TOPO_CLASSES",
    "Fabric",
    "Job",
    "NvlinkConfig",
    "looks_like_topo_text",
    "parse_fabric",
    "parse_jobs",
    "parse_topo_text",
    "pattern_traffic",
]

NODE_KINDS = ("gpu", "nvswitch", "nic", "switch", "ib_switch", "pcie_switch", "cpu")
#: Node kinds that count as a switch hop for ``cross_switch_bytes``.
SWITCH_KINDS = frozenset({"nvswitch", "switch", "ib_switch", "pcie_switch"})
PATTERNS = ("all_reduce", "all_to_all", "pipeline")
#: One NVLink 4 link (H100), Gbit/s per direction: 25 GB/s.
NVLINK_GBPS_PER_LINK = 200.0
#: ``nvidia-smi topo -m`` connection classes -> (Gbit/s per direction, latency in us), nominal PCIe Gen5 x16
#: figures lowered as the path crosses more of the PCIe tree and the CPU interconnect.
TOPO_CLASSES: dict[str, tuple[float, float]] = {
    "PIX": (504.0, 1.5),   # one PCIe switch
    "PXB": (504.0, 2.0),   # several PCIe switches, no host bridge
    "PHB": (400.0, 2.5),   # through the PCIe host bridge (CPU)
    "NODE": (300.0, 3.0),  # between host bridges of one NUMA node
    "SYS": (200.0, 4.0),   # across the SMP interconnect (QPI/UPI/Infinity Fabric)
}
NVLINK_LATENCY_US = 1.0
MAX_RANKS = 1024
MAX_JOBS = 64
#: Largest byte count of one job's per-rank ``bytes`` or one traffic entry (1 EiB): sums of a whole plan stay finite.
MAX_BYTES = float(2**60)
#: Largest link bandwidth, Gbit/s (10 Pbit/s; NVLink 5 links are 400), so 8 / bandwidth stays a normal number.
MAX_GBPS = 1e7
#: Smallest link bandwidth, Gbit/s (1 Mbit/s): busy times 8 * bytes / bandwidth stay finite.
MIN_GBPS = 1e-3
#: Largest link latency, us (one second).
MAX_LATENCY_US = 1e6
#: Nodes (GPUs, switches, NICs, ...) and links of one node-link file, checked before any is built.
MAX_NODES = 65_536
MAX_LINKS = 1_048_576


class NvlinkConfig(QflowConfig):
    """Toggles and settings of the NVLink planner (page widgets, CLI flags, API form)."""

    qaoa_optimizer: bool = Field(
        False, description="Try to empty the last transfer rounds by recolouring small conflict sub-graphs (Kempe "
        "two-colour blocks) with QAOA; each block is also solved by brute force and the better answer is used.")
    classifier: bool = Field(
        True, description="Train an SVM contention classifier on simulated (or uploaded) logs and flag whether the "
        "planned placement and the baselines are likely to congest; reports held-out accuracy.")
    quantum_kernel: bool = Field(
        False, description="Also train the contention classifier's SVC on a quantum kernel (state overlaps of an angle "
        "embedding with a CNOT ring, PennyLane) and compare it with the RBF SVC on the same split; its calls are used "
        "only when its held-out accuracy is higher.")
    rl_planner: bool = Field(
        True, description="Learn a path per flow with tabular Q-learning agents (one per source GPU), reward = "
        "achieved / uncontended bandwidth in the flow simulator; compared with shortest-path routing.")
    full_duplex: bool = Field(
        False, description="Rounds may let a GPU send one and receive one transfer at once (full-duplex links). "
        "Off: each GPU takes part in at most one transfer per round.")
    partitioner: Literal["kernighan_lin", "spectral", "metis"] = Field(
        "kernighan_lin", description="Bisection used by the recursive placement: networkx Kernighan-Lin, the Fiedler vector's "
        "median split, or METIS (pymetis; Kernighan-Lin when pymetis is not installed).")
    max_qubits: int = Field(16, ge=2, le=HARD_MAX_QUBITS, description="Largest QAOA circuit: transfers per recolouring block.")
    qaoa_layers: int = Field(2, ge=1, le=8, description="QAOA depth p: alternating cost and mixer layers.")
    qaoa_blocks: int = Field(4, ge=1, le=64, description="Recolouring blocks solved by QAOA at most (the rest exactly).")
    qaoa_steps: int = Field(30, ge=1, le=500, description="Optimiser steps per QAOA circuit at most.")
    quantum_time_budget_s: float = Field(60.0, gt=0, le=3600, description="Wall time for all circuits of one plan, s.")
    rl_episodes: int = Field(150, ge=1, le=5000, description="Q-learning episodes (each routes every flow once).")
    classifier_samples: int = Field(240, ge=40, le=5000, description="Simulated runs in the classifier's logs.")
    max_paths: int = Field(32, ge=1, le=256, description="Path options per GPU pair at most (minimum-hop paths).")
    alpha_us: float = Field(2.0, ge=0, le=10_000, description="Software start-up time per transfer (the alpha of the alpha-beta model), us.")
    refine_passes: int = Field(4, ge=0, le=100, description="Pairwise-swap passes refining the partitioned placement.")


@dataclass(frozen=True)
class Fabric:
    """A validated fabric.

    Attributes
    ----------
    graph : networkx.Graph
        Nodes carry ``kind`` and ``host``; edges ``bandwidth_gbps`` (> 0,
        Gbit/s per direction) and ``latency_us`` (>= 0).
    gpus : tuple of str
        GPU node ids in file order; a job's GPU index ``g`` is ``gpus[g]``.
    name : str
        Source name (file) used in messages.
    fmt : str
        ``"node-link"`` or ``"nvidia-smi topo -m"``.
    """

    graph: nx.Graph
    gpus: tuple[str, ...]
    name: str = "fabric"
    fmt: str = "node-link"

    @property
    def n_gpus(self) -> int:
        return len(self.gpus)

    def hosts(self) -> list[str]:
        """Host of every GPU, in ``gpus`` order."""
        return [str(self.graph.nodes[g]["host"]) for g in self.gpus]

    def describe(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for _, data in self.graph.nodes(data=True):
            kinds[data["kind"]] = kinds.get(data["kind"], 0) + 1
        return {"name": self.name, "format": self.fmt, "nodes_by_kind": kinds, "links": self.graph.number_of_edges(),
                "hosts": len(set(self.hosts()))}

    def graph_data(self) -> dict[str, list[list[Any]]]:
        """Nodes as ``[id, kind, host]`` and links as ``[source, target, bandwidth_gbps]`` (for drawing the fabric)."""
        return {"nodes": [[n, d["kind"], d["host"]] for n, d in self.graph.nodes(data=True)],
                "links": [[u, v, d["bandwidth_gbps"]] for u, v, d in self.graph.edges(data=True)]}


@dataclass(frozen=True)
class Job:
    """One job: ``traffic[i, j]`` bytes sent from rank ``i`` to rank ``j`` (shape (ranks, ranks), zero diagonal)."""

    id: str
    ranks: int
    traffic: np.ndarray
    pattern: str = "matrix"
    bytes_per_rank: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def total_bytes(self) -> float:
        return float(self.traffic.sum())


def _shown(value: Any) -> Any:
    """``value`` for an error message: a huge integer by its size (its repr can itself be an error past 4300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    return value


def _number(value: Any, source: str, where: str, expected: str, *, low: float = 0.0, strict: bool = True,
            high: float = math.inf) -> float:
    """``value`` as a float in ``(low, high]`` (``[low, high]`` when not ``strict``), else an :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(_float(value)):
        raise InputError(source, where, "not a finite number", expected, _shown(value))
    x = float(value)
    if (strict and x <= low) or (not strict and x < low) or x > high:
        raise InputError(source, where, "out of range", expected, _shown(value))
    return x


def _float(value: int | float) -> float:
    """``float(value)``, infinite for an integer too large for a float (instead of OverflowError)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def parse_fabric(data: Any, source: str = "fabric") -> Fabric:
    """Validate node-link data (a mapping) or ``nvidia-smi topo -m`` text (a str) into a :class:`Fabric`.

    >>> fab = parse_fabric({"nodes": [{"id": "g0", "kind": "gpu"}, {"id": "g1", "kind": "gpu"},
    ...                               {"id": "sw", "kind": "nvswitch"}],
    ...                     "links": [{"source": "g0", "target": "sw", "bandwidth_gbps": 400},
    ...                               {"source": "g1", "target": "sw", "bandwidth_gbps": 400}]})
    >>> fab.gpus, fab.graph.edges["g0", "sw"]["bandwidth_gbps"]
    (('g0', 'g1'), 400.0)
    """
    if isinstance(data, str):
        return parse_topo_text(data, source)
    if not isinstance(data, Mapping) or not isinstance(data.get("nodes"), list):
        raise InputError(source, "nodes", "not node-link data", "an object with 'nodes' and 'links' (NetworkX node-link JSON) "
                         "or nvidia-smi topo -m text")
    links_key = "links" if "links" in data else "edges"
    links = data.get(links_key, [])
    if not isinstance(links, list):
        raise InputError(source, links_key, "wrong type", "a list of links", type(links).__name__)
    _check_sizes(data["nodes"], links, links_key, source)
    graph = nx.Graph()
    gpus: list[str] = []
    for i, node in enumerate(data["nodes"]):
        where = f"nodes[{i}]"
        if not isinstance(node, Mapping) or "id" not in node:
            raise InputError(source, where, "wrong shape", "an object with an 'id'", node)
        nid = str(node["id"])
        if nid in graph:
            raise InputError(source, f"{where}.id", "duplicate node id", "unique ids", nid)
        kind = str(node.get("kind", node.get("type", ""))).lower()
        if kind not in NODE_KINDS:
            raise InputError(source, f"{where}.kind", "unknown node kind", "one of " + ", ".join(NODE_KINDS), node.get("kind"))
        graph.add_node(nid, kind=kind, host=str(node.get("host", "host0")))
        if kind == "gpu":
            gpus.append(nid)
    if not gpus:
        raise InputError(source, "nodes", "no GPU nodes", "at least one node with kind 'gpu'")
    for i, link in enumerate(links):
        where = f"{links_key}[{i}]"
        if not isinstance(link, Mapping) or "source" not in link or "target" not in link:
            raise InputError(source, where, "wrong shape", "an object with 'source', 'target' and 'bandwidth_gbps'", link)
        u, v = str(link["source"]), str(link["target"])
        for end, name in ((u, "source"), (v, "target")):
            if end not in graph:
                raise InputError(source, f"{where}.{name}", "dangling link: endpoint is not a node",
                                 "the id of a node listed under 'nodes'", end)
        if u == v:
            raise InputError(source, where, "self-loop", "a link between two different nodes", u)
        if "bandwidth_gbps" not in link:
            raise InputError(source, f"{where}.bandwidth_gbps", "missing field", "a bandwidth in Gbit/s > 0")
        bw = _number(link["bandwidth_gbps"], source, f"{where}.bandwidth_gbps", f"a bandwidth in Gbit/s in [{MIN_GBPS:g}, {MAX_GBPS:g}]",
                     low=MIN_GBPS, strict=False, high=MAX_GBPS)
        lat = _number(link.get("latency_us", 1.0), source, f"{where}.latency_us", f"a latency in us in [0, {MAX_LATENCY_US:g}]",
                      strict=False, high=MAX_LATENCY_US)
        if graph.has_edge(u, v):  # parallel links (e.g. 5 NVLinks to one switch chip): bandwidths add
            graph.edges[u, v]["bandwidth_gbps"] += bw
            graph.edges[u, v]["latency_us"] = min(graph.edges[u, v]["latency_us"], lat)
        else:
            graph.add_edge(u, v, bandwidth_gbps=bw, latency_us=lat)
    _check_connected(graph, gpus, source, links_key)
    return Fabric(graph=graph, gpus=tuple(gpus), name=source, fmt="node-link")


def _check_sizes(nodes: list[Any], links: list[Any], links_key: str, source: str) -> None:
    """Node, link and GPU counts against their bounds, before any graph is built (GPUs: the ``fabric_gpus`` limit)."""
    if len(nodes) > MAX_NODES:
        raise InputError(source, "nodes", "too many nodes", f"at most {MAX_NODES}", len(nodes))
    if len(links) > MAX_LINKS:
        raise InputError(source, links_key, "too many links", f"at most {MAX_LINKS}", len(links))
    n_gpus = sum(1 for n in nodes if isinstance(n, Mapping) and str(n.get("kind", n.get("type", ""))).lower() == "gpu")
    check_limit(n_gpus, "fabric_gpus", source, "nodes (kind gpu)")


def _check_connected(graph: nx.Graph, gpus: list[str], source: str, links_key: str) -> None:
    component = nx.node_connected_component(graph, gpus[0])
    missing = [g for g in gpus if g not in component]
    if missing:
        raise InputError(source, links_key, "GPUs not connected", f"every GPU reachable from {gpus[0]}",
                         f"{len(missing)} unreachable, first {missing[0]}")


_TOPO_NAME = re.compile(r"^(GPU\d+|NIC\d+|mlx\d+_\d+)$")
#: nvidia-smi underlines the header row on a terminal (ANSI escape codes); they are dropped.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def looks_like_topo_text(text: str) -> bool:
    """Whether ``text`` is ``nvidia-smi topo -m`` output (a header row starting with ``GPU0``)."""
    text = _ANSI.sub("", text)
    return any(line.split()[:1] == ["GPU0"] and "X" not in line.split()[:2] for line in text.splitlines() if line.strip())


def parse_topo_text(text: str, source: str = "topo.txt", host: str = "node0") -> Fabric:
    """Turn ``nvidia-smi topo -m`` output into a :class:`Fabric`.

    Every pair of devices gets one direct link: ``NV#`` is ``#`` NVLinks of
    :data:`NVLINK_GBPS_PER_LINK`; the PCIe / CPU classes are costed by
    :data:`TOPO_CLASSES`. Legend lines and affinity columns are ignored.

    >>> fab = parse_topo_text("\\tGPU0\\tGPU1\\tCPU Affinity\\nGPU0\\t X \\tNV4\\t0-7\\nGPU1\\tNV4\\t X \\t0-7\\n")
    >>> fab.gpus, fab.graph.edges["GPU0", "GPU1"]["bandwidth_gbps"]
    (('GPU0', 'GPU1'), 800.0)
    """
    lines = [line.rstrip() for line in _ANSI.sub("", text).splitlines()]
    header_at = next((i for i, line in enumerate(lines) if line.split()[:1] == ["GPU0"] and "X" not in line.split()[:2]), None)
    if header_at is None:
        raise InputError(source, "(header)", "not nvidia-smi topo -m output", "a header row 'GPU0 GPU1 ... ' of the matrix")
    names: list[str] = []
    for token in lines[header_at].split():
        if not _TOPO_NAME.match(token):
            break
        names.append(token)
    check_limit(sum(1 for n in names if n.startswith("GPU")), "fabric_gpus", source, "(header) GPU columns")
    rows: dict[str, list[str]] = {}
    for number, line in enumerate(lines[header_at + 1:], start=header_at + 2):
        cells = line.split()
        if not cells or cells[0] not in names:
            if cells and cells[0].rstrip(":").lower() == "legend":
                break
            continue
        if len(cells) < len(names) + 1:
            raise InputError(source, f"(line {number})", "short matrix row", f"{len(names)} entries after {cells[0]}", line.strip())
        rows[cells[0]] = cells[1:len(names) + 1]
    missing = [n for n in names if n not in rows]
    if missing:
        raise InputError(source, "(matrix)", "missing matrix rows", "one row per header column", ", ".join(missing))
    graph = nx.Graph()
    for name in names:
        kind = "gpu" if name.startswith("GPU") else "nic"
        graph.add_node(name, kind=kind, host=host)
    for a_index, a in enumerate(names):
        for b_index, b in enumerate(names):
            value = rows[a][b_index].upper()
            if a_index == b_index:
                if value != "X":
                    raise InputError(source, f"{a}.{b}", "diagonal entry not X", "X on the diagonal", value)
                continue
            bw, lat = _topo_link(value, source, f"{a}.{b}")
            if b_index < a_index:
                continue
            graph.add_edge(a, b, bandwidth_gbps=bw, latency_us=lat, topo=value)
    gpus = [n for n in names if n.startswith("GPU")]
    _check_connected(graph, gpus, source, "(matrix)")
    return Fabric(graph=graph, gpus=tuple(gpus), name=source, fmt="nvidia-smi topo -m")


def _topo_link(value: str, source: str, where: str) -> tuple[float, float]:
    if value == "SOC":
        value = "SYS"
    match = re.fullmatch(r"NV(\d+)", value)
    if match:
        count = int(match.group(1))
        if count < 1:
            raise InputError(source, where, "NVLink count must be positive", "NV1, NV2, ...", value)
        return count * NVLINK_GBPS_PER_LINK, NVLINK_LATENCY_US
    if value in TOPO_CLASSES:
        return TOPO_CLASSES[value]
    raise InputError(source, where, "unknown connection", "X, NV#, PIX, PXB, PHB, NODE or SYS", value)


def pattern_traffic(pattern: str, ranks: int, nbytes: float) -> np.ndarray:
    """Traffic matrix (ranks, ranks) of a collective on ``nbytes`` per rank.

    * ``all_reduce``: ring all-reduce (reduce-scatter + all-gather); each rank
      sends ``2 (n - 1) / n * nbytes`` to its successor.
    * ``all_to_all``: each rank sends ``nbytes / n`` to every other rank.
    * ``pipeline``: stage ``i`` sends ``nbytes`` of activations to ``i + 1``
      and ``i + 1`` sends ``nbytes`` of gradients back.

    >>> pattern_traffic("pipeline", 3, 10.0).tolist()
    [[0.0, 10.0, 0.0], [10.0, 0.0, 10.0], [0.0, 10.0, 0.0]]
    """
    n = ranks
    t = np.zeros((n, n))
    if n < 2:
        return t
    if pattern == "all_reduce":
        for i in range(n):
            t[i, (i + 1) % n] += 2.0 * (n - 1) / n * nbytes
    elif pattern == "all_to_all":
        t[:] = nbytes / n
        np.fill_diagonal(t, 0.0)
    elif pattern == "pipeline":
        for i in range(n - 1):
            t[i, i + 1] = nbytes
            t[i + 1, i] = nbytes
    else:  # pragma: no cover - checked by parse_jobs
        raise ValueError(pattern)
    return t


def parse_jobs(data: Any, source: str = "jobs", n_gpus: int | None = None) -> list[Job]:
    """Validate a jobs mapping (or list) into :class:`Job` objects.

    Raises
    ------
    InputError
        A malformed job (field named, e.g. ``jobs[1].traffic[2][0]``).
    InfeasibleError
        A job, or all jobs together, need more GPUs than ``n_gpus``.

    >>> [j.traffic.sum() for j in parse_jobs({"jobs": [{"id": "a", "ranks": 4, "pattern": "all_to_all", "bytes": 8}]})]
    [np.float64(24.0)]
    """
    items = data.get("jobs") if isinstance(data, Mapping) else data
    if not isinstance(items, list) or not items:
        raise InputError(source, "jobs", "no jobs", "a non-empty list under 'jobs'", type(items).__name__ if items is not None else None)
    if len(items) > MAX_JOBS:
        raise InputError(source, "jobs", "too many jobs", f"at most {MAX_JOBS}", len(items))
    jobs: list[Job] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"jobs[{i}]"
        if not isinstance(item, Mapping):
            raise InputError(source, where, "wrong type", "an object with id, ranks and traffic or pattern", item)
        job_id = str(item.get("id", f"job{i}"))
        if job_id in seen:
            raise InputError(source, f"{where}.id", "duplicate job id", "unique ids", job_id)
        seen.add(job_id)
        ranks = item.get("ranks")
        if "traffic" in item and ranks is None and isinstance(item["traffic"], list):
            ranks = len(item["traffic"])
        if isinstance(ranks, bool) or not isinstance(ranks, int) or not 1 <= ranks <= MAX_RANKS:
            raise InputError(source, f"{where}.ranks", "invalid rank count", f"an integer in [1, {MAX_RANKS}]", _shown(ranks))
        if n_gpus is not None and ranks > n_gpus:
            raise InfeasibleError(source, f"{where}.ranks", f"job {job_id} has more ranks than the fabric has GPUs",
                                  f"at most {n_gpus} ranks", ranks)
        has_traffic, has_pattern = "traffic" in item, "pattern" in item
        if has_traffic == has_pattern:
            raise InputError(source, where, "give exactly one of traffic and pattern",
                             "a 'traffic' matrix or a 'pattern' with 'bytes'", sorted(k for k in ("traffic", "pattern") if k in item))
        if has_traffic:
            traffic = _traffic_matrix(item["traffic"], ranks, source, f"{where}.traffic")
            jobs.append(Job(job_id, ranks, traffic, "matrix"))
        else:
            pattern = str(item["pattern"])
            if pattern not in PATTERNS:
                raise InputError(source, f"{where}.pattern", "unknown pattern", "one of " + ", ".join(PATTERNS), pattern)
            if "bytes" not in item:
                raise InputError(source, f"{where}.bytes", "missing field", "bytes per rank > 0")
            nbytes = _number(item["bytes"], source, f"{where}.bytes", "bytes per rank in (0, 2**60]", high=MAX_BYTES)
            jobs.append(Job(job_id, ranks, pattern_traffic(pattern, ranks, nbytes), pattern, nbytes))
    total = sum(j.ranks for j in jobs)
    if n_gpus is not None and total > n_gpus:
        raise InfeasibleError(source, "jobs", "the jobs together need more GPUs than the fabric has",
                              f"at most {n_gpus} ranks in all", f"{total} ranks")
    return jobs


def _traffic_matrix(value: Any, ranks: int, source: str, where: str) -> np.ndarray:
    if not isinstance(value, list) or len(value) != ranks or not all(isinstance(r, list) and len(r) == ranks for r in value):
        raise InputError(source, where, "wrong shape", f"a {ranks} x {ranks} list of lists (ranks x ranks)",
                         f"{len(value) if isinstance(value, list) else type(value).__name__} rows")
    for r, row in enumerate(value):
        for c, x in enumerate(row):
            if isinstance(x, bool) or not isinstance(x, int | float) or not 0 <= _float(x) <= MAX_BYTES:
                raise InputError(source, f"{where}[{r}][{c}]", "invalid byte count", "a number of bytes in [0, 2**60]", _shown(x))
    t = np.asarray(value, dtype=float)
    if np.any(np.diag(t) != 0):
        r = int(np.flatnonzero(np.diag(t))[0])
        raise InputError(source, f"{where}[{r}][{r}]", "a rank sends to itself", "0 on the diagonal", t[r, r])
    return t
