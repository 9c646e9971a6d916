"""Routing inputs and config: parse once, validate once, then trust.

:func:`build_problem` turns the tokens table and the model graph into a
:class:`RoutingProblem` of plain arrays; every check that can fail lives here
and raises :class:`~qflow.core.errors.InputError` naming the file and field.
The solvers in ``_classical`` and ``_quantum`` take a ``RoutingProblem`` and
assume it is valid.
"""

from __future__ import annotations

import heapq
import json
import re
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import Field

from qflow.core.config import QflowConfig
from qflow.core.errors import InputError
from qflow.core.quantum import HARD_MAX_QUBITS

if TYPE_CHECKING:  # a graph object comes only from callers that imported networkx themselves
    import networkx as nx

__all__ = ["RoutingConfig", "RoutingProblem", "ModelGraph", "build_problem", "parse_model_graph"]

_SCORE_COLUMN = re.compile(r"^score_(\d+)$")
#: Token columns holding identifiers: read as text, compared as text.
ID_COLUMNS = ("token_id", "source", "hint")
_TRUE = {"true", "1", "yes", "y", "t"}
#: Accepted link bandwidths, Gb/s: their ratios become distances, which must stay finite.
BANDWIDTH_GBPS = (1e-6, 1e9)
#: Accepted token complexities (relative weights): sums of a million stay exact enough in float64 and finite in float32.
COMPLEXITY_RANGE = (1e-6, 1e6)
_FALSE = {"false", "0", "no", "n", "f", ""}


class RoutingConfig(QflowConfig):
    """Toggles and settings of the router (page widgets, CLI flags, API form)."""

    qaoa: bool = Field(False, description="Refine the classical plan with QAOA on expert-pair sub-problems.")
    qaoa_layers: int = Field(2, ge=1, le=8, description="QAOA depth p: alternating cost and mixer layers.")
    hqc: bool = Field(False, description="Warm-start each QAOA circuit from the classical plan (hybrid quantum-classical).")
    deterministic_fallback: bool = Field(
        False,
        description="Use the stable token-id hash router (capacity-bounded) instead of the optimiser (qaoa off); "
        "with qaoa on it has no effect: a quantum failure keeps the classical plan.",
    )
    simulator: bool = Field(
        False, description="Replace each QAOA call by the classical drop-in with the same signature (exact block solve)."
    )
    capacity_factor: float = Field(
        1.25, gt=0, le=64, description="Expert capacity = capacity_factor x total complexity / experts."
    )
    locality_weight: float = Field(
        0.1, ge=0, le=100, description="Affinity lost per unit of node-to-node distance between a token and its expert."
    )
    hint_bonus: float = Field(0.25, ge=0, le=10, description="Affinity added to a token's hinted expert.")
    max_qubits: int = Field(16, ge=2, le=HARD_MAX_QUBITS, description="Largest QAOA circuit (qubits = tokens per block; blocks stop at 20 tokens, the exact check's limit).")
    qaoa_blocks: int = Field(4, ge=1, le=64, description="How many expert-pair sub-problems QAOA refines.")
    qaoa_steps: int = Field(40, ge=1, le=500, description="Optimiser steps per QAOA block at most.")
    quantum_time_budget_s: float = Field(120.0, gt=0, le=3600, description="Wall time for all QAOA circuits of one plan, s.")
    baselines: bool = Field(True, description="Also run hash routing, top-1 gating and greedy balanced on the same input.")
    top_k: int = Field(
        1, ge=1, le=64,
        description="Experts per token (distinct); capacity = capacity_factor x top_k x total complexity / experts. "
        "Above 1 the top-k router runs (no QAOA, no hash router).",
    )
    dask_scheduler: str = Field(
        "", max_length=256, description="Dask scheduler (tcp://HOST:PORT; QFLOW_DASK_SCHEDULER when empty): a "
        "multi-layer logits tensor is planned one layer per task on its workers, and the plan names each layer's "
        "worker. Neither, or a single layer: in this process.")
    node_limit: int = Field(
        0, ge=0, le=4096,
        description="Each token's top_k experts lie on at most this many nodes (0 = off); nodes picked by the sum "
        "of their best experts' utilities (DeepSeek-V3's rule), experts then optimised within them.",
    )
    aux_free_steps: int = Field(
        0, ge=0, le=100_000,
        description="Also simulate DeepSeek-V3's auxiliary-loss-free balancing over this many steps (token batches "
        "in row order) as the online baseline; 0 = off.",
    )
    aux_free_step_size: float = Field(0.001, gt=0, le=1.0, description="Its per-step bias update, score units.")
    exact_max_tokens: int = Field(
        10_000, ge=0, le=200_000,
        description="Solve the exact LP optimum when at most this many tokens (0 = never); about 0.5 s at 8k tokens, 7 s at 20k.",
    )


@dataclass(frozen=True)
class ModelGraph:
    """Experts, the nodes they sit on, and node-to-node distances.

    Attributes
    ----------
    expert_ids : list of str, length E
    expert_node : ndarray of shape (E,)
        Node index of each expert.
    expert_capacity_limit : ndarray of shape (E,)
        Hard per-expert cap from the file (``inf`` where none is given).
    node_ids : list of str, length N
    node_distance : ndarray of shape (N, N)
        Path cost between nodes in [0, 1]: 0 on the diagonal, 1 for the
        farthest pair; a link costs 1 / bandwidth, summed along the shortest
        path.
    locator : dict
        Node or GPU id -> node index (how a token's ``source`` is resolved).
    """

    expert_ids: list[str]
    expert_node: np.ndarray
    expert_capacity_limit: np.ndarray
    node_ids: list[str]
    node_distance: np.ndarray
    locator: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def n_experts(self) -> int:
        return len(self.expert_ids)


@dataclass(frozen=True)
class RoutingProblem:
    """A validated routing instance (non-padding tokens only).

    Attributes
    ----------
    token_ids : ndarray of shape (n,), object (str)
    complexity : ndarray of shape (n,), float64, > 0
    affinity : ndarray of shape (n, E), float32
        Router probability per expert (softmax of logits when logits were
        given) plus ``hint_bonus`` on the hinted expert.
    source_node : ndarray of shape (n,), int64
        Node index of each token, -1 when unknown.
    hint : ndarray of shape (n,), int64
        Hinted expert index, -1 when none.
    graph : ModelGraph
    padding_ids : list of str
        Padding tokens: never routed, never counted.
    score_kind : str
        ``"probabilities"``, ``"logits"``, or ``"none"``.
    """

    token_ids: np.ndarray
    complexity: np.ndarray
    affinity: np.ndarray
    source_node: np.ndarray
    hint: np.ndarray
    graph: ModelGraph
    padding_ids: list[str]
    score_kind: str
    notes: list[str] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return int(self.token_ids.shape[0])

    @property
    def unit_weights(self) -> bool:
        return bool(np.all(self.complexity == np.round(self.complexity)))

    def capacity(self, capacity_factor: float) -> np.ndarray:
        """Per-expert capacity in complexity units, shape (E,).

        ``capacity_factor x total / E``, capped by each expert's own limit;
        when every complexity is a whole number (loads can only be whole) the
        share is rounded up and the limit down.
        """
        E = self.graph.n_experts
        fair = np.full(E, capacity_factor * float(self.complexity.sum()) / E)
        limit = self.graph.expert_capacity_limit
        if self.unit_weights:
            # Loads are whole: round the fair share up (as GShard and Megatron
            # do, so a factor of 1 always holds every token) and a hard limit down.
            return np.minimum(np.ceil(fair - 1e-9), np.floor(limit + 1e-9))
        return np.minimum(fair, limit)


# --- model graph -------------------------------------------------------------


def _node_link_to_native(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Translate NetworkX node-link data (nodes with ``kind``) to the native form."""
    nodes, experts = [], []
    for i, node in enumerate(data.get("nodes", [])):
        if not isinstance(node, Mapping) or "id" not in node:
            raise InputError(source, f"nodes[{i}]", "missing id", "an object with 'id'", node)
        if str(node.get("kind", node.get("type", "node"))) == "expert":
            experts.append({"id": node["id"], "node": node.get("node"), "capacity": node.get("capacity")})
        else:
            nodes.append({"id": node["id"], "gpus": node.get("gpus", [])})
    links = data.get("links", data.get("edges", []))
    expert_ids = {str(e["id"]) for e in experts}
    node_links = []
    for link in links:
        if not isinstance(link, Mapping):
            continue
        a, b = str(link.get("source")), str(link.get("target"))
        if a in expert_ids or b in expert_ids:
            # An expert-to-node edge says where the expert lives.
            exp, other = (a, b) if a in expert_ids else (b, a)
            for e in experts:
                if str(e["id"]) == exp and e["node"] is None:
                    e["node"] = other
        else:
            node_links.append(link)
    return {"nodes": nodes, "experts": experts, "links": node_links}


def parse_model_graph(data: Mapping[str, Any] | nx.Graph, source: str = "model_graph") -> ModelGraph:
    """Validate a model graph (native JSON, node-link JSON, or ``nx.Graph``).

    Native form::

        {"nodes": [{"id": "node0", "gpus": ["gpu0", ...]}, ...],
         "experts": [{"id": "e0", "node": "node0", "capacity": 500}, ...],
         "links": [{"source": "node0", "target": "node1", "bandwidth_gbps": 900}]}

    ``capacity`` and ``links`` are optional; without links every pair of
    distinct nodes is one unit apart.
    """
    if _is_networkx_graph(data):
        data = sys.modules["networkx"].node_link_data(data, edges="links")
    if not isinstance(data, Mapping):
        raise InputError(source, "(top level)", "wrong type", "a JSON object with 'experts' and 'nodes'", type(data).__name__)
    if "experts" not in data:
        if "nodes" in data and ("links" in data or "edges" in data):
            data = _node_link_to_native(data, source)
        else:
            raise InputError(source, "experts", "missing field", "a list of experts with 'id' and 'node'")
    raw_nodes = data.get("nodes")
    raw_experts = data["experts"]
    if not isinstance(raw_experts, list) or not raw_experts:
        raise InputError(source, "experts", "wrong type", "a non-empty list of experts", type(raw_experts).__name__)

    node_ids, locator = _parse_nodes(raw_nodes, source)
    expert_ids, expert_node, limits = _parse_experts(raw_experts, bool(raw_nodes), node_ids, locator, source)

    distance, notes = _node_distances(data.get("links") or [], node_ids, locator, source)
    return ModelGraph(
        expert_ids=expert_ids,
        expert_node=np.asarray(expert_node, dtype=np.int64),
        expert_capacity_limit=np.asarray(limits, dtype=float),
        node_ids=node_ids,
        node_distance=distance,
        locator=locator,
        notes=notes,
    )


def _parse_nodes(raw_nodes: Any, source: str) -> tuple[list[str], dict[str, int]]:
    """Node ids in order, and the locator mapping each node id and each GPU id to its node's index."""
    node_ids: list[str] = []
    locator: dict[str, int] = {}
    if raw_nodes is None:
        raw_nodes = []
    if not isinstance(raw_nodes, list):
        raise InputError(source, "nodes", "wrong type", "a list of nodes", type(raw_nodes).__name__)
    for i, node in enumerate(raw_nodes):
        nid = node.get("id") if isinstance(node, Mapping) else node
        if nid is None or isinstance(nid, (list, dict)):
            raise InputError(source, f"nodes[{i}].id", "missing or invalid", "a node id (string)", node)
        nid = str(nid)
        if nid in locator:
            raise InputError(source, f"nodes[{i}].id", "duplicate node id", "unique ids", nid)
        locator[nid] = len(node_ids)
        node_ids.append(nid)
        gpus = node.get("gpus", []) if isinstance(node, Mapping) else []
        if not isinstance(gpus, list):
            raise InputError(source, f"nodes[{i}].gpus", "wrong type", "a list of GPU ids", gpus)
        for gpu in gpus:
            locator.setdefault(str(gpu), locator[nid])
    return node_ids, locator


def _parse_experts(raw_experts: list[Any], nodes_listed: bool, node_ids: list[str], locator: dict[str, int],
                   source: str) -> tuple[list[str], list[int], list[float]]:
    """Expert ids, each one's node index and capacity limit (inf when none).

    Without listed nodes, an expert's node is implied by it and added to
    ``node_ids`` and ``locator`` (which this extends in place).
    """
    expert_ids: list[str] = []
    expert_node: list[int] = []
    limits: list[float] = []
    seen: set[str] = set()
    for i, expert in enumerate(raw_experts):
        if not isinstance(expert, Mapping) or expert.get("id") is None:
            raise InputError(source, f"experts[{i}].id", "missing", "an object with 'id' and 'node'", expert)
        eid = str(expert["id"])
        if eid in seen:
            raise InputError(source, f"experts[{i}].id", "duplicate expert id", "unique ids", eid)
        seen.add(eid)
        node = expert.get("node")
        if node is None:
            raise InputError(source, f"experts[{i}].node", "missing", "the id of the node hosting the expert")
        node = str(node)
        if node not in locator:
            if nodes_listed:
                raise InputError(source, f"experts[{i}].node", "unknown node", f"one of the {len(node_ids)} listed nodes", node)
            locator[node] = len(node_ids)  # nodes may be implied by the experts alone
            node_ids.append(node)
        cap = expert.get("capacity")
        limits.append(np.inf if cap is None else _positive_number(cap, source, f"experts[{i}].capacity", "complexity units"))
        expert_ids.append(eid)
        expert_node.append(locator[node])
    return expert_ids, expert_node, limits


def _positive_number(
    value: Any, source: str, field: str, unit: str, bounds: tuple[float, float] = (0.0, np.inf)
) -> float:
    """``value`` as a finite float in ``(low, high]``, or an InputError naming ``field``."""
    low, high = bounds
    expected = f"a positive finite number ({unit})" if bounds == (0.0, np.inf) else f"a number in ({low:g}, {high:g}] ({unit})"
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float: never printed whole
        raise InputError(source, field, "out of range", expected, f"an integer of about {int(value.bit_length() * 0.30103)} digits") from None
    except (TypeError, ValueError):
        raise InputError(source, field, "not a number", expected, value) from None
    if not np.isfinite(number) or not low < number <= high:
        raise InputError(source, field, "out of range", expected, value)
    return number


def _is_networkx_graph(data: Any) -> bool:
    """Whether ``data`` is a networkx graph, without importing networkx (a caller holding one has imported it)."""
    nx_module = sys.modules.get("networkx")
    return nx_module is not None and isinstance(data, nx_module.Graph)


def _dijkstra_lengths(costs: list[dict[int, float]], source: int) -> dict[int, float]:
    """Shortest-path cost from ``source`` to each reachable node (``costs[v][u]``: cost of the link v-u).

    The textbook heap Dijkstra in networkx's order (neighbours in link order,
    ties by push order), so every length is the same float sum networkx's
    ``all_pairs_dijkstra_path_length`` gives: plans stay bit-identical, and
    networkx (0.1 s to import) is not needed to read a model graph.
    """
    dist: dict[int, float] = {}
    seen: dict[int, float] = {source: 0}
    pushes = 0
    fringe: list[tuple[float, int, int]] = [(0, pushes, source)]
    while fringe:
        d, _, v = heapq.heappop(fringe)
        if v in dist:
            continue
        dist[v] = d
        for u, cost in costs[v].items():
            through_v = d + cost
            if u not in dist and (u not in seen or through_v < seen[u]):
                seen[u] = through_v
                pushes += 1
                heapq.heappush(fringe, (through_v, pushes, u))
    return dist


def _node_distances(links: Any, node_ids: list[str], locator: dict[str, int], source: str) -> tuple[np.ndarray, list[str]]:
    """Shortest-path cost between nodes (link cost 1 / bandwidth), scaled so the farthest pair is 1."""
    N = len(node_ids)
    if not isinstance(links, list):
        raise InputError(source, "links", "wrong type", "a list of {source, target, bandwidth_gbps}", type(links).__name__)
    if not links:
        return (1.0 - np.eye(N)), []
    adjacency: list[dict[int, float]] = [{} for _ in range(N)]  # node -> {neighbour: bandwidth}, in link order
    bandwidths = []
    for i, link in enumerate(links):
        if not isinstance(link, Mapping):
            raise InputError(source, f"links[{i}]", "wrong type", "an object with source, target, bandwidth_gbps", link)
        a, b = link.get("source"), link.get("target")
        for end, name in ((a, "source"), (b, "target")):
            if str(end) not in locator:
                raise InputError(source, f"links[{i}].{name}", "unknown node", "a listed node id", end)
        bw = _positive_number(link.get("bandwidth_gbps", 1.0), source, f"links[{i}].bandwidth_gbps", "Gb/s", BANDWIDTH_GBPS)
        bandwidths.append(bw)
        # A repeated pair keeps its first position and its last bandwidth (as a graph's edge update does).
        adjacency[locator[str(a)]][locator[str(b)]] = bw
        adjacency[locator[str(b)]][locator[str(a)]] = bw
    fastest = max(bandwidths)
    costs = [{v: fastest / bw for v, bw in neighbours.items()} for neighbours in adjacency]
    lengths = {i: _dijkstra_lengths(costs, i) for i in range(N)}
    distance = np.zeros((N, N))
    notes = []
    finite_max = max((d for row in lengths.values() for d in row.values()), default=1.0) or 1.0
    unreachable = 0
    for i in range(N):
        for j in range(N):
            if i != j:
                d = lengths.get(i, {}).get(j)
                if d is None:
                    unreachable += 1
                    d = 2.0 * finite_max
                distance[i, j] = d
    distance /= distance.max() if distance.max() > 0 else 1.0
    if unreachable:
        notes.append(f"{unreachable // 2} node pairs have no link path; they are charged twice the longest path")
    return distance, notes


# --- tokens ------------------------------------------------------------------


def _id_text(values: pd.Series) -> pd.Series:
    """Identifiers as text; missing stays missing (``None``).

    A numeric column with a gap comes out of pandas as floats (``0.0``); ids
    written as whole numbers are turned back into ``"0"``, not ``"0.0"``.
    """
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.astype(str)
    if pd.api.types.is_string_dtype(values.dtype):
        return values.str.strip().astype(object).where(values.notna(), None)

    def one(value: Any) -> str | None:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return None
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value).strip()

    return values.map(one).astype(object)


def _bool_column(values: pd.Series, source: str, name: str) -> np.ndarray:
    if values.dtype == bool:
        return values.to_numpy()
    text = values.astype(str).str.strip().str.lower()
    text = text.where(values.notna(), "")
    bad = ~text.isin(_TRUE | _FALSE | {"nan", "none"})
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(source, f"{name}[row {row}]", "not a boolean", "true/false", values.iloc[row])
    return text.isin(_TRUE).to_numpy()


def _shown(value: Any) -> Any:
    """``value`` as an error message may print it: an integer too long to print is described instead."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    return value


def _numeric(values: pd.Series, source: str, name: str) -> np.ndarray:
    try:
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    except OverflowError:  # an integer beyond float range, in an object column
        row = next(i for i, v in enumerate(values.tolist()) if isinstance(v, int) and abs(v) > 1e308)
        raise InputError(source, f"{name}[row {row}]", "not a finite number", "a finite number", _shown(values.iloc[row])) from None
    bad = ~np.isfinite(numbers)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(source, f"{name}[row {row}]", "not a finite number", "a finite number", values.iloc[row])
    return numbers


def _score_matrix(frame: pd.DataFrame, E: int, source: str) -> tuple[np.ndarray, float, float] | None:
    """The scores as a new (rows, E) float32 array with its min and max; ``None`` when the table has none."""
    numbered = {int(m.group(1)): c for c in frame.columns if (m := _SCORE_COLUMN.match(str(c)))}
    if numbered and "scores" in frame.columns:
        raise InputError(source, "scores", "ambiguous scores", "either a 'scores' column or score_0..score_{E-1}, not both")
    if numbered:
        if sorted(numbered) != list(range(E)):
            missing = sorted(set(range(E)) - set(numbered))[:3]
            raise InputError(
                source, "score_*", "wrong number of score columns", f"score_0..score_{E - 1} for {E} experts",
                f"{len(numbered)} columns" + (f", missing score_{missing[0]}" if missing else ""),
            )
        block = frame[[numbered[i] for i in range(E)]]
        try:
            scores, low, high = _row_major_float32(block)
        except (TypeError, ValueError, OverflowError):
            for i in range(E):
                _numeric(block.iloc[:, i], source, f"score_{i}")
            raise
        if not (np.isfinite(low) and np.isfinite(high)):  # NaN propagates through min and max
            row, col = np.argwhere(~np.isfinite(scores))[0]
            raise InputError(source, f"score_{col}[row {row}]", "not a finite number", "a finite score", block.iat[row, col])
        return scores, low, high
    if "scores" in frame.columns:
        rows = []
        for i, value in enumerate(frame["scores"].tolist()):
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    raise InputError(source, f"scores[row {i}]", "not a list", "a JSON list of numbers", value) from None
            if not isinstance(value, (list, tuple, np.ndarray)) or len(value) != E:
                raise InputError(source, f"scores[row {i}]", "wrong length", f"a list of {E} numbers (one per expert)", value)
            rows.append(value)
        try:
            scores = np.asarray(rows, dtype=np.float32)
        except OverflowError:
            row = next(i for i, r in enumerate(rows) if any(isinstance(v, int) and abs(v) > 1e308 for v in r))
            raise InputError(source, f"scores[row {row}]", "not finite", "finite numbers", "an integer beyond float range") from None
        except (TypeError, ValueError):
            raise InputError(source, "scores", "not numbers", "lists of numbers", _shown(rows[0]) if not isinstance(rows[0], list) else "a list") from None
        if not np.isfinite(scores).all():
            row = int(np.argwhere(~np.isfinite(scores))[0][0])
            raise InputError(source, f"scores[row {row}]", "not finite", "finite numbers", rows[row])
        return scores, float(scores.min()), float(scores.max())
    return None


#: Bytes of one block of score rows converted or softmaxed at a time (about a cache's worth).
_BLOCK_BYTES = 4 << 20


def _row_blocks(shape: tuple[int, int]) -> range:
    """Starts of the blocks of rows :func:`_row_major_float32` and :func:`_as_probabilities` work in."""
    return range(0, shape[0], _rows_per_block(shape))


def _rows_per_block(shape: tuple[int, int]) -> int:
    return max(256, _BLOCK_BYTES // (4 * max(shape[1], 1)))


def _on_threads(work: Any, starts: range) -> list[Any]:
    """``[work(start) for start in starts]`` on up to two threads: numpy's casts, copies and ufuncs release the GIL."""
    if len(starts) < 4:
        return [work(start) for start in starts]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="qflow-scores") as pool:
        return list(pool.map(work, starts))


def _row_major_float32(block: pd.DataFrame) -> tuple[np.ndarray, float, float]:
    """The frame's values as a new C-order float32 array (rows, columns), with its min and max.

    C order: DataFrame columns come out column-major, and every solver step
    works row by row (a 5x difference at a million tokens). Converted a block
    of rows at a time (so the column-major intermediate stays small instead of
    a second full-size array), each block's min and max taken while it is in
    cache; a NaN makes both NaN, an infinity shows in one of them.
    """
    out = np.empty(block.shape, dtype=np.float32)
    rows = _rows_per_block(block.shape)

    def convert(lo: int) -> tuple[float, float]:
        part = out[lo:lo + rows]
        part[...] = block.iloc[lo:lo + rows].to_numpy(dtype=np.float32)
        return (float(part.min()), float(part.max())) if part.size else (np.inf, -np.inf)

    extremes = _on_threads(convert, _row_blocks(block.shape))
    lows, highs = np.array([e[0] for e in extremes]), np.array([e[1] for e in extremes])
    return out, float(lows.min(initial=np.inf)), float(highs.max(initial=-np.inf))


def _as_probabilities(scores: np.ndarray, low: float, high: float) -> tuple[np.ndarray, str]:
    """Probabilities stay; anything else is treated as logits and softmaxed in place (float32, row by row).

    ``scores`` is the array :func:`_score_matrix` built (never the caller's);
    ``low`` and ``high`` its min and max.
    """
    # Row sums (a float64 pass over the whole matrix) only once the values could be probabilities at all.
    if low >= 0.0 and high <= 1.0 and np.allclose(scores.sum(axis=1, dtype=np.float64), 1.0, atol=1e-3):
        return scores, "probabilities"
    rows = _rows_per_block(scores.shape)

    def softmax(lo: int) -> None:  # each row on its own: the block size changes no value
        block = scores[lo:lo + rows]
        block -= block.max(axis=1, keepdims=True)  # exp of at most 0: no overflow
        np.exp(block, out=block)
        block /= block.sum(axis=1, keepdims=True)

    _on_threads(softmax, _row_blocks(scores.shape))
    return scores, "logits"


def build_problem(
    tokens: pd.DataFrame,
    model_graph: Mapping[str, Any] | nx.Graph | ModelGraph,
    config: RoutingConfig,
    tokens_name: str = "tokens",
    model_graph_name: str = "model_graph",
) -> RoutingProblem:
    """Validate both inputs and build the arrays the solvers use."""
    graph = model_graph if isinstance(model_graph, ModelGraph) else parse_model_graph(model_graph, model_graph_name)
    ids = _token_ids(tokens, tokens_name)
    E = graph.n_experts
    if config.top_k > E:
        raise InputError("config", "top_k", "more experts per token than experts", f"at most {E} (the experts in {model_graph_name})",
                         config.top_k)
    _check_node_limit(graph, config, model_graph_name)
    notes: list[str] = []
    padding = _bool_column(tokens["padding"], tokens_name, "padding") if "padding" in tokens.columns else np.zeros(len(tokens), bool)
    complexity = _complexity(tokens, tokens_name)
    affinity, score_kind, hint = _affinity(tokens, graph, config, tokens_name, notes)
    source_node = _source_nodes(tokens, graph, padding, tokens_name, notes)
    keep = ~padding
    if not keep.any():
        raise InputError(tokens_name, "padding", "every token is padding", "at least one token to route")
    return RoutingProblem(
        token_ids=ids.to_numpy(dtype=object)[keep],
        complexity=complexity[keep],
        affinity=affinity[keep] if not keep.all() else affinity,
        source_node=source_node[keep],
        hint=hint[keep],
        graph=graph,
        padding_ids=ids[padding].tolist(),
        score_kind=score_kind,
        notes=notes + list(graph.notes),
    )


def _token_ids(tokens: Any, tokens_name: str) -> pd.Series:
    """The ``token_id`` column as text; a table with no rows, an empty id or a duplicate is refused."""
    if not isinstance(tokens, pd.DataFrame):
        raise InputError(tokens_name, "(top level)", "wrong type", "a table of tokens", type(tokens).__name__)
    if "token_id" not in tokens.columns:
        raise InputError(tokens_name, "token_id", "missing column", "a 'token_id' column", ", ".join(map(str, tokens.columns[:6])))
    if tokens.empty:
        raise InputError(tokens_name, "(rows)", "no tokens", "at least one row")
    ids = _id_text(tokens["token_id"])
    if _may_be_blank(tokens["token_id"]) and (ids.isna().any() or (ids == "").any()):
        row = int(np.flatnonzero((ids.isna() | (ids == "")).to_numpy())[0])
        raise InputError(tokens_name, f"token_id[row {row}]", "empty token id", "a non-empty id")
    dup = ids.duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(tokens_name, f"token_id[row {row}]", "duplicate token id", "unique ids", ids.iloc[row])
    return ids


def _may_be_blank(values: pd.Series) -> bool:
    """False when a text column surely holds no missing or blank value (checked on its Arrow data, 0.2 ms at 200k
    rows, instead of on one Python string per row, 11 ms); True otherwise (then the caller checks each row)."""
    if not isinstance(values.dtype, pd.StringDtype):
        return True
    text = values.str.strip()
    return bool(text.isna().any() or (text.str.len() == 0).any())


def _complexity(tokens: pd.DataFrame, tokens_name: str) -> np.ndarray:
    """Complexity per token, shape (rows,); 1 without the column, each in ``COMPLEXITY_RANGE``."""
    complexity = np.ones(len(tokens))
    if "complexity" in tokens.columns:
        complexity = _numeric(tokens["complexity"], tokens_name, "complexity")
        low, high = COMPLEXITY_RANGE
        bad = (complexity < low) | (complexity > high)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            problem = "not positive" if complexity[row] <= 0 else "out of range"
            raise InputError(tokens_name, f"complexity[row {row}]", problem, f"a positive weight in [{low:g}, {high:g}]",
                             tokens["complexity"].iloc[row])
    return complexity


def _affinity(tokens: pd.DataFrame, graph: ModelGraph, config: RoutingConfig, tokens_name: str,
              notes: list[str]) -> tuple[np.ndarray, str, np.ndarray]:
    """``(affinity (rows, E) with hint bonuses added, score kind, hinted expert per row or -1)``."""
    E = graph.n_experts
    scored = _score_matrix(tokens, E, tokens_name)
    if scored is None:
        affinity, score_kind = np.full((len(tokens), E), 1.0 / E, dtype=np.float32), "none"
    else:
        affinity, score_kind = _as_probabilities(*scored)  # a new array, never the caller's: hints add in place
    hint = np.full(len(tokens), -1, dtype=np.int64)
    if "hint" in tokens.columns:
        hint = _resolve_hints(tokens["hint"], graph, tokens_name)
        has = hint >= 0
        affinity[np.flatnonzero(has), hint[has]] += config.hint_bonus
        if score_kind == "none" and not has.any():
            notes.append("no scores and no hints: affinity is uniform, the plan only balances load and locality")
    return affinity, score_kind, hint


def _source_nodes(tokens: pd.DataFrame, graph: ModelGraph, padding: np.ndarray, tokens_name: str,
                  notes: list[str]) -> np.ndarray:
    """Index of each token's source node (a node or GPU id resolved), -1 when none given."""
    source_node = np.full(len(tokens), -1, dtype=np.int64)
    if "source" in tokens.columns:
        src = tokens["source"]
        if isinstance(src.dtype, pd.StringDtype):  # text (a CSV): stripped and factorized without a string object per row
            src = src.str.strip()
            codes, uniques = pd.factorize(src)
        else:
            src = _id_text(src)
            codes, uniques = pd.factorize(src.where(src != "", None))
        # Factorize first: a handful of distinct sources, looked up once each; an empty one is no source.
        lookup = np.array([-1 if str(name) == "" else graph.locator.get(str(name), -2) for name in uniques] + [-1],
                          dtype=np.int64)
        source_node = lookup[codes]  # code -1 (missing) picks the trailing -1
        if (source_node == -2).any():
            row = int(np.flatnonzero(source_node == -2)[0])
            raise InputError(tokens_name, f"source[row {row}]", "unknown node or GPU",
                             f"one of the model graph's nodes or GPUs ({', '.join(graph.node_ids[:4])}, ...)", src.iloc[row])
        missing = int((~padding & (source_node < 0)).sum())
        if missing:
            notes.append(f"{missing} tokens have no source: no locality penalty for them")
    return source_node


def _check_node_limit(graph: ModelGraph, config: RoutingConfig, model_graph_name: str) -> None:
    """``top_k`` must fit on any ``node_limit`` nodes the rule may pick (the smallest ones, at worst)."""
    if not config.node_limit:
        return
    sizes = np.sort(np.bincount(graph.expert_node)[np.bincount(graph.expert_node) > 0])
    fits = int(sizes[: config.node_limit].sum())
    if config.top_k > fits:
        raise InputError("config", "top_k", "more experts per token than node_limit allows",
                         f"at most {fits} (experts on the {config.node_limit} smallest nodes of {model_graph_name})", config.top_k)


def _resolve_hints(values: pd.Series, graph: ModelGraph, source: str) -> np.ndarray:
    index = {eid: i for i, eid in enumerate(graph.expert_ids)}
    text = _id_text(values).fillna("")
    mapped = text.map(index)
    # Integer hints may also be expert positions when ids are not integers.
    as_int = pd.to_numeric(values, errors="coerce")
    positional = mapped.isna() & as_int.notna() & (as_int >= 0) & (as_int < graph.n_experts) & (as_int == as_int.round())
    mapped = mapped.where(~positional, as_int)
    unknown = (text != "") & mapped.isna()
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise InputError(source, f"hint[row {row}]", "unknown expert", "an expert id from the model graph", values.iloc[row])
    return mapped.fillna(-1).to_numpy(dtype=np.int64)
