"""Flow-level fabric simulator: path options, link loads and an alpha-beta time model.

Every undirected fabric link is two directed links (full duplex), each with
the link's ``bandwidth_gbps``. A flow of ``b`` bytes split over paths with
fractions ``w_p`` puts ``b * w_p`` bytes on every directed link of path
``p``. For a set of concurrent flows (one round, or a whole workload):

* link busy time ``busy_l = 8 * bytes_l / (1e9 * bandwidth_l)`` seconds;
* flow time ``t_f = alpha_f + max_{l on f's paths} busy_l`` (alpha-beta:
  ``alpha_f`` is the start-up ``alpha_us`` plus the largest path latency, the
  beta part is the time the busiest link on the route needs to drain, which
  bounds completion under any work-conserving sharing);
* round time ``T = max_f t_f``.

Path options of a GPU pair are its minimum-hop paths (at most ``max_paths``),
cheapest first by ``sum 1 / bandwidth`` then by node ids, found by
breadth-first search once per source GPU (networkx ``predecessor``).

:class:`PaddedPaths` is the one simulator every part of the module uses (the
plan's rounds, the RL planner's episodes, the classifier's logs): the path
options of every flow in one padded array, so a simulation is a few
vectorised NumPy operations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import networkx as nx
import numpy as np

from qflow.nvlink._schemas import SWITCH_KINDS, Fabric

__all__ = ["FlowSet", "PaddedPaths", "PathTable", "injection_bound_s"]

#: Fabrics with at most this many GPUs keep every pair's path options in padded arrays.
ALL_PAIRS_MAX_GPUS = 256


@dataclass(frozen=True)
class FlowSet:
    """Concurrent flows between GPUs.

    Attributes
    ----------
    src, dst : ndarray of shape (n_flows,)
        GPU indices (into ``Fabric.gpus``), ``src != dst``.
    nbytes : ndarray of shape (n_flows,)
        Bytes of each flow.
    """

    src: np.ndarray
    dst: np.ndarray
    nbytes: np.ndarray

    @property
    def n(self) -> int:
        return int(self.src.shape[0])

    @classmethod
    def from_traffic(cls, traffic: np.ndarray, placement: np.ndarray) -> FlowSet:
        """Flows of a job's traffic (ranks, ranks) placed by ``placement`` (rank -> GPU index)."""
        rows, cols = np.nonzero(traffic)
        return cls(placement[rows], placement[cols], traffic[rows, cols].astype(float))

    @classmethod
    def concat(cls, sets: list[FlowSet]) -> FlowSet:
        if not sets:
            return cls(np.zeros(0, int), np.zeros(0, int), np.zeros(0))
        return cls(*(np.concatenate([getattr(s, k) for s in sets]) for k in ("src", "dst", "nbytes")))


class PathTable:
    """Directed links of a fabric and the path options of GPU pairs (computed lazily, cached).

    Attributes
    ----------
    link_ends : list of (str, str)
        Directed link ``l`` goes ``link_ends[l][0] -> link_ends[l][1]``.
    capacity_gbps, latency_us : ndarray of shape (n_links,)
    gpu_capacity_gbps : ndarray of shape (n_gpus,)
        Sum of a GPU's outgoing link bandwidths (its injection limit).
    """

    def __init__(self, fabric: Fabric, max_paths: int = 32) -> None:
        self.fabric = fabric
        self.max_paths = max_paths
        graph = fabric.graph
        self.link_ends: list[tuple[str, str]] = []
        caps, lats = [], []
        for u, v, data in graph.edges(data=True):
            for a, b in ((u, v), (v, u)):
                self.link_ends.append((a, b))
                caps.append(data["bandwidth_gbps"])
                lats.append(data["latency_us"])
        self.link_index = {ends: i for i, ends in enumerate(self.link_ends)}
        self.capacity_gbps = np.asarray(caps, dtype=float)
        self.latency_us = np.asarray(lats, dtype=float)
        self.gpu_index = {g: i for i, g in enumerate(fabric.gpus)}
        self.gpu_capacity_gbps = np.array([sum(graph.edges[g, n]["bandwidth_gbps"] for n in graph.neighbors(g))
                                           for g in fabric.gpus])
        self.hosts = np.array(fabric.hosts())
        self._preds: dict[int, dict[str, list[str]]] = {}
        self._paths: dict[tuple[int, int], list[np.ndarray]] = {}
        self._node_paths: dict[tuple[int, int], list[list[str]]] = {}
        self._pair_gbps: dict[tuple[int, int], float] = {}
        self._all_pairs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def n_links(self) -> int:
        return len(self.link_ends)

    def paths(self, src: int, dst: int) -> list[np.ndarray]:
        """Path options of GPU pair (src, dst): arrays of directed link indices, cheapest first."""
        key = (src, dst)
        if key not in self._paths:
            self._compute(src, dst)
        return self._paths[key]

    def node_paths(self, src: int, dst: int) -> list[list[str]]:
        """The same options as node-id lists."""
        if (src, dst) not in self._node_paths:
            self._compute(src, dst)
        return self._node_paths[(src, dst)]

    def _compute(self, src: int, dst: int) -> None:
        gpus = self.fabric.gpus
        if src not in self._preds:
            self._preds[src] = nx.predecessor(self.fabric.graph, gpus[src])
        preds = self._preds[src]
        source, target = gpus[src], gpus[dst]
        found: list[list[str]] = []
        limit = max(self.max_paths * 4, 64)  # enumerate a few more than kept, then keep the cheapest

        def walk(node: str, suffix: list[str]) -> None:
            if len(found) >= limit:
                return
            if node == source:
                found.append([node, *suffix])
                return
            for p in sorted(preds[node]):
                walk(p, [node, *suffix])

        walk(target, [])
        inv = 1.0 / self.capacity_gbps
        options = []
        for nodes in found:
            links = np.array([self.link_index[(a, b)] for a, b in zip(nodes[:-1], nodes[1:], strict=True)])
            options.append((float(inv[links].sum()), nodes, links))
        options.sort(key=lambda o: (o[0], o[1]))
        options = options[: self.max_paths]
        self._paths[(src, dst)] = [o[2] for o in options]
        self._node_paths[(src, dst)] = [o[1] for o in options]

    def all_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Path options of every GPU pair as padded arrays (computed once).

        Returns ``links`` (n_gpus, n_gpus, n_options, max_hops) with ``-1``
        padding, ``n_options`` (n_gpus, n_gpus), ``latency_s`` and
        ``bottleneck_gbps`` (n_gpus, n_gpus, n_options); the diagonal has no
        options.
        """
        if self._all_pairs is None:
            n = len(self.fabric.gpus)
            options = {(s, d): self.paths(s, d) for s in range(n) for d in range(n) if s != d}
            k = max((len(o) for o in options.values()), default=1)
            hops = max((len(p) for o in options.values() for p in o), default=1)
            links = np.full((n, n, k, hops), -1, dtype=np.int64)
            count = np.zeros((n, n), dtype=np.int64)
            latency = np.zeros((n, n, k))
            bottleneck = np.zeros((n, n, k))
            for (s, d), opts in options.items():
                count[s, d] = len(opts)
                for a, path in enumerate(opts):
                    links[s, d, a, : len(path)] = path
                    latency[s, d, a] = self.latency_us[path].sum() * 1e-6
                    bottleneck[s, d, a] = self.capacity_gbps[path].min()
            self._all_pairs = (links, count, latency, bottleneck)
        return self._all_pairs

    def pair_gbps(self, src: int, dst: int) -> float:
        """Bandwidth between two GPUs over all their path options together (Gbit/s).

        The sum of the paths' bottlenecks when the paths share no link (NVSwitch
        planes), else the maximum flow through the union of the paths
        (networkx ``maximum_flow_value``), so shared NIC or uplink links are
        counted once.
        """
        key = (src, dst)
        if key not in self._pair_gbps:
            paths = self.paths(src, dst)
            every = np.concatenate(paths)
            if np.unique(every).size == every.size:
                value = float(self.bottleneck_gbps(src, dst).sum())
            else:
                graph = nx.DiGraph()
                for link in np.unique(every).tolist():
                    a, b = self.link_ends[link]
                    graph.add_edge(a, b, capacity=float(self.capacity_gbps[link]))
                value = float(nx.maximum_flow_value(graph, self.fabric.gpus[src], self.fabric.gpus[dst]))
            self._pair_gbps[key] = value
        return self._pair_gbps[key]

    def bottleneck_gbps(self, src: int, dst: int) -> np.ndarray:
        """Smallest link bandwidth on each path option of (src, dst): shape (n_options,)."""
        return np.array([self.capacity_gbps[p].min() for p in self.paths(src, dst)])

    def pair_cost_s_per_gb(self, src: int, dst: int) -> float:
        """Seconds per GB between two GPUs when their flow is split over all path options (0 for src == dst).

        ``8 / pair_gbps`` with bandwidths in Gbit/s: the placement's path cost.
        """
        if src == dst:
            return 0.0
        return 8.0 / self.pair_gbps(src, dst)

    def cost_matrix(self, gpu_ids: np.ndarray, heartbeat: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Pair costs (s/GB) between the given GPUs: shape (k, k).

        ``heartbeat(row, k)`` is called before each row (the path search is
        the plan's longest loop on large fabrics; a Cancel raised there stops it).
        """
        k = len(gpu_ids)
        cost = np.zeros((k, k))
        for a in range(k):
            if heartbeat is not None:
                heartbeat(a, k)
            for b in range(k):
                if a != b:
                    cost[a, b] = self.pair_cost_s_per_gb(int(gpu_ids[a]), int(gpu_ids[b]))
        return cost

    def crosses_switches(self, src: int, dst: int) -> bool:
        """Whether the cheapest path between the GPUs passes more than one switch node."""
        kinds = self.fabric.graph.nodes
        return sum(kinds[n]["kind"] in SWITCH_KINDS for n in self.node_paths(src, dst)[0]) > 1


@dataclass(frozen=True)
class PaddedPaths:
    """Path options of every flow as one padded array, for fast repeated simulation.

    Attributes
    ----------
    links : ndarray of shape (n_flows, n_options, max_hops)
        Directed link indices, ``-1`` padding.
    n_options : ndarray of shape (n_flows,)
    latency_s : ndarray of shape (n_flows, n_options)
        Path latency (sum of link latencies), s.
    bottleneck_gbps : ndarray of shape (n_flows, n_options)
    """

    links: np.ndarray
    n_options: np.ndarray
    latency_s: np.ndarray
    bottleneck_gbps: np.ndarray

    @classmethod
    def build(cls, table: PathTable, flows: FlowSet) -> PaddedPaths:
        if len(table.fabric.gpus) <= ALL_PAIRS_MAX_GPUS:
            links, count, latency, bottleneck = table.all_pairs()
            s, d = flows.src, flows.dst
            return cls(links[s, d], count[s, d], latency[s, d], bottleneck[s, d])
        options = [table.paths(s, d) for s, d in zip(flows.src.tolist(), flows.dst.tolist(), strict=True)]
        k = max((len(o) for o in options), default=1)
        hops = max((len(p) for o in options for p in o), default=1)
        links = np.full((flows.n, k, hops), -1, dtype=np.int64)
        latency = np.zeros((flows.n, k))
        bottleneck = np.zeros((flows.n, k))
        for f, opts in enumerate(options):
            for a, path in enumerate(opts):
                links[f, a, : len(path)] = path
                latency[f, a] = table.latency_us[path].sum() * 1e-6
                bottleneck[f, a] = table.capacity_gbps[path].min()
        return cls(links, np.array([len(o) for o in options], dtype=np.int64), latency, bottleneck)

    def flow_times(self, table: PathTable, nbytes: np.ndarray, choice: np.ndarray, alpha_us: float,
                   groups: np.ndarray | None = None) -> np.ndarray:
        """Completion time of every flow (s) when flow ``f`` takes option ``choice[f]``.

        Flows of the same ``groups`` value (a round) run concurrently; groups
        do not overlap in time. Without ``groups`` every flow is concurrent.
        """
        rows = np.arange(len(choice))
        group = np.zeros(len(choice), dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
        n_links = table.n_links
        chosen = self.links[rows, choice]  # (n_flows, max_hops)
        valid = chosen >= 0
        slot = group[:, None] * n_links + np.where(valid, chosen, 0)  # (group, link) pairs
        per_slot = np.bincount(slot[valid], weights=np.broadcast_to(nbytes[:, None], chosen.shape)[valid],
                               minlength=(int(group.max(initial=0)) + 1) * n_links)
        busy = 8.0 * per_slot / (1e9 * np.tile(table.capacity_gbps, int(group.max(initial=0)) + 1))
        worst = np.where(valid, busy[slot], 0.0).max(axis=1)
        return alpha_us * 1e-6 + self.latency_s[rows, choice] + worst

    def link_busy_s(self, table: PathTable, nbytes: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Busy time of every directed link (s), shape (n_links,), when flow ``f`` puts ``weights[f, a]`` of its bytes on option ``a``."""
        valid = self.links >= 0
        share = np.broadcast_to((nbytes[:, None] * weights)[:, :, None], self.links.shape)
        per_link = np.bincount(self.links[valid], weights=share[valid], minlength=table.n_links)
        return 8.0 * per_link / (1e9 * table.capacity_gbps)

    def split_times(self, table: PathTable, nbytes: np.ndarray, weights: np.ndarray, alpha_us: float) -> np.ndarray:
        """Completion time of every flow (s) when flow ``f`` puts ``weights[f, a]`` of its bytes on option ``a``."""
        valid = self.links >= 0
        busy = self.link_busy_s(table, nbytes, weights)
        used = valid & (weights[:, :, None] > 0)
        worst = np.where(used, busy[np.where(valid, self.links, 0)], 0.0).max(axis=(1, 2))
        latency = np.where(weights > 0, self.latency_s, 0.0).max(axis=1)
        return alpha_us * 1e-6 + latency + worst

    def ecmp_weights(self) -> np.ndarray:
        """Weighted ECMP: each option's share of the flow in proportion to its bottleneck bandwidth: shape (n_flows, n_options)."""
        return self.bottleneck_gbps / self.bottleneck_gbps.sum(axis=1, keepdims=True)


def injection_bound_s(table: PathTable, flows: FlowSet) -> float:
    """Lower bound on any routing's time: the busiest GPU's bytes over its total link bandwidth, s."""
    if flows.n == 0:
        return 0.0
    n = len(table.fabric.gpus)
    out = np.bincount(flows.src, weights=flows.nbytes, minlength=n)
    inc = np.bincount(flows.dst, weights=flows.nbytes, minlength=n)
    return float((8.0 * np.maximum(out, inc) / (1e9 * table.gpu_capacity_gbps)).max())

