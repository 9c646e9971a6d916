"""``plan_placement``: expert placement with replicas as a plan (CLI ``qflow placement``, ``POST /v1/placement/plan``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from qflow.core.config import QflowConfig
from qflow.core.errors import InputError
from qflow.core.io import digest_frame, digest_mapping
from qflow.core.plan import InputDigest, Plan
from qflow.core.skeleton import PlanRun, input_sources
from qflow.routing._placement import Placement, contiguous, eplb_greedy, improve, lower_bound, place_layer, placement_metrics

__all__ = ["PlacementConfig", "plan_placement", "load_matrix", "cluster_shape"]

#: Largest accepted loads table: experts per layer and layers.
MAX_EXPERTS, MAX_LAYERS = 4096, 1024
#: Per-GPU and per-node load vectors: kept in ``result.layers``, left out of ``metrics.layers``.
_LOAD_VECTORS = ("gpu_load", "node_load", "eplb_gpu_load", "eplb_node_load")


class PlacementConfig(QflowConfig):
    """Settings of the placement planner."""

    redundant_experts: int = Field(0, ge=0, le=65_536, description="Extra replica slots in total (per layer), beyond one per expert.")
    slots_per_gpu: int = Field(
        0, ge=0, le=4096,
        description="Expert slots per GPU; 0 = (experts + redundant_experts) / GPUs, which must then divide evenly.",
    )


def load_matrix(frame: pd.DataFrame, source: str = "loads") -> tuple[np.ndarray, list[str], list[int]]:
    """Loads table (``layer``, ``expert``, ``load``; ``layer`` optional) -> (layers, experts) matrix.

    Experts keep their order of first appearance; a (layer, expert) pair not
    listed has load 0; a pair listed twice is an error.
    """
    for column in ("expert", "load"):
        if column not in frame.columns:
            raise InputError(source, column, "missing column", "columns layer, expert, load", ", ".join(map(str, frame.columns[:5])))
    layer = pd.to_numeric(frame["layer"], errors="coerce") if "layer" in frame.columns else pd.Series(0, index=frame.index)
    if layer.isna().any() or (layer < 0).any() or (layer != layer.round()).any():
        row = int(np.flatnonzero((layer.isna() | (layer < 0) | (layer != layer.round())).to_numpy())[0])
        raise InputError(source, f"layer[row {row}]", "not a layer index", "an integer >= 0", frame["layer"].iloc[row])
    load = pd.to_numeric(frame["load"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(load) | (load < 0) | (load > 1e15)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(source, f"load[row {row}]", "out of range", "a finite load in [0, 1e15]", frame["load"].iloc[row])
    expert_codes, expert_ids = pd.factorize(frame["expert"].astype(str))
    layer_codes, layer_ids = pd.factorize(layer.astype(np.int64), sort=True)
    if len(expert_ids) > MAX_EXPERTS or len(layer_ids) > MAX_LAYERS:
        raise InputError(source, "(rows)", "too many experts or layers", f"at most {MAX_EXPERTS} experts and {MAX_LAYERS} layers",
                         f"{len(expert_ids)} experts, {len(layer_ids)} layers")
    pair = layer_codes * len(expert_ids) + expert_codes
    dup = pd.Series(pair).duplicated().to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        raise InputError(source, f"expert[row {row}]", "listed twice for its layer", "one row per (layer, expert)", frame["expert"].iloc[row])
    matrix = np.zeros((len(layer_ids), len(expert_ids)))
    matrix[layer_codes, expert_codes] = load
    return matrix, [str(e) for e in expert_ids], [int(x) for x in layer_ids]


def cluster_shape(graph: Mapping[str, Any], source: str = "model_graph") -> tuple[list[str], list[str], int]:
    """Node ids, GPU ids (node-major) and GPUs per node from the model graph's ``nodes[].gpus``."""
    nodes = graph.get("nodes") if isinstance(graph, Mapping) else None
    if not isinstance(nodes, list) or not nodes:
        raise InputError(source, "nodes", "missing", "a list of nodes with their gpus")
    node_ids, gpu_ids, counts = [], [], []
    for i, node in enumerate(nodes):
        gpus = node.get("gpus") if isinstance(node, Mapping) else None
        if not isinstance(gpus, list) or not gpus:
            raise InputError(source, f"nodes[{i}].gpus", "missing", "a non-empty list of GPU ids", gpus)
        node_ids.append(str(node.get("id", i)))
        gpu_ids.extend(str(g) for g in gpus)
        counts.append(len(gpus))
    if len(set(counts)) > 1:
        raise InputError(source, "nodes[].gpus", "uneven GPU counts", "the same number of GPUs on every node", counts)
    return node_ids, gpu_ids, counts[0]


def _slots(E: int, gpus: int, config: PlacementConfig) -> int:
    physical = E + config.redundant_experts
    if config.slots_per_gpu:
        if physical != gpus * config.slots_per_gpu:
            problem = "more redundant slots than the GPUs can hold" if physical > gpus * config.slots_per_gpu else "slots left empty"
            raise InputError("config", "redundant_experts", problem,
                             f"experts + redundant_experts = GPUs x slots_per_gpu = {gpus * config.slots_per_gpu} ({E} experts)", physical)
        return config.slots_per_gpu
    if physical % gpus:
        raise InputError("config", "redundant_experts", "slots do not divide over the GPUs",
                         f"experts + redundant_experts a multiple of the {gpus} GPUs ({E} experts)", physical)
    return physical // gpus


def _summary(metrics: list[dict[str, Any]]) -> dict[str, float]:
    return {
        "max_gpu_imbalance": float(max(m["gpu_imbalance"] for m in metrics)),
        "mean_gpu_imbalance": float(np.mean([m["gpu_imbalance"] for m in metrics])),
        "max_node_imbalance": float(max(m["node_imbalance"] for m in metrics)),
        "mean_node_imbalance": float(np.mean([m["node_imbalance"] for m in metrics])),
        "cross_node_dispatch": float(np.mean([m["cross_node_dispatch"] for m in metrics])),
    }


def plan_placement(
    loads: pd.DataFrame, model_graph: Mapping[str, Any], config: PlacementConfig | Mapping[str, Any] | None = None,
    *, digests: list[InputDigest] | None = None,
) -> Plan:
    """Place experts and their replicas on GPUs, per layer (see :mod:`qflow.routing._placement`).

    Returns
    -------
    Plan
        ``result.layers[i]``: ``physical_to_logical`` (GPU-major slots ->
        expert index into ``result.expert_ids``), ``logical_to_physical``
        (padded with -1), ``logical_replica_count``, ``gpu_load``,
        ``node_load``, and EPLB's baseline ``eplb_gpu_load`` and ``eplb_node_load``. ``metrics``: per layer and summarised; ``baselines``:
        ``eplb`` and ``contiguous`` (no replication; when experts divide over GPUs).
    """
    run = PlanRun.start("placement", config, PlacementConfig, requested="placement", digests=digests)
    names = input_sources(digests)
    with run.stage("validate"):
        matrix, expert_ids, layer_ids = load_matrix(loads, names.get("loads", "loads"))
        node_ids, gpu_ids, per_node = cluster_shape(model_graph, names.get("model_graph", "model_graph"))
        slots = _slots(matrix.shape[1], len(gpu_ids), run.config)
    if digests is None:
        run.digests = [digest_frame(loads, "loads"), digest_mapping(model_graph, "model_graph")]
    with run.stage("place"):
        layers, metrics, eplb_metrics, flat_metrics, starts = _place_layers(matrix, len(node_ids), per_node, slots)
    run.solver.ran = "placement+swap"
    if "eplb" in starts:
        run.note(f"{starts.count('eplb')} of {len(starts)} layers: the swap search did better from EPLB's placement "
                 "(made distinct per GPU) than from the hierarchical longest-first one, and kept it")
    run.baselines = {"eplb": _summary(eplb_metrics)}
    if flat_metrics:
        run.baselines["contiguous"] = _summary(flat_metrics)
    else:
        run.note(f"no contiguous baseline: {matrix.shape[1]} experts do not divide over {len(gpu_ids)} GPUs")
    summary = _summary(metrics)
    summary["max_gap_to_lower_bound"] = float(max(m["gap_to_lower_bound"] for m in metrics))
    return run.finish(
        {"expert_ids": expert_ids, "layer_ids": layer_ids, "gpu_ids": gpu_ids, "node_ids": node_ids,
         "slots_per_gpu": slots, "layers": layers},
        {**summary, "starts": starts, "layers": [{k: v for k, v in m.items() if k not in _LOAD_VECTORS} for m in metrics]},
    )


def _place_layers(matrix: np.ndarray, nodes: int, per_node: int, slots: int) -> tuple[list, list, list, list, list[str]]:
    """Place every layer of ``matrix`` (layers, experts): our placement and the baselines on each.

    Returns ``(layer results, our metrics, EPLB metrics, contiguous metrics,
    the start each layer kept: "lpt" or "eplb")``; contiguous metrics are
    empty when the experts do not divide over the GPUs.
    """
    G, E = nodes * per_node, matrix.shape[1]
    layers, metrics, eplb_metrics, flat_metrics, starts = [], [], [], [], []
    for load in matrix:
        ours = improve(place_layer(load, nodes, per_node, slots), load, G)
        eplb = eplb_greedy(load, nodes, per_node, slots)
        from_eplb = improve(_distinct(eplb, G), load, G)
        best, start = min(((ours, "lpt"), (from_eplb, "eplb")), key=lambda c: c[0].gpu_load(load, G).max() + 0.0)
        starts.append(start)
        m = placement_metrics(best, load, nodes, per_node)
        bound = lower_bound(load, G, slots)
        m["lower_bound_max_gpu_load"] = bound
        m["gap_to_lower_bound"] = float((m["max_gpu_load"] - bound) / max(bound, 1e-12))
        metrics.append(m)
        eplb_metrics.append(placement_metrics(eplb, load, nodes, per_node))
        m["eplb_gpu_load"], m["eplb_node_load"] = eplb_metrics[-1]["gpu_load"], eplb_metrics[-1]["node_load"]
        flat = contiguous(E, G, slots)
        if flat is not None:
            flat_metrics.append(placement_metrics(flat, load, nodes, per_node))
        layers.append(_layer_result(best, load, G, m))
    return layers, metrics, eplb_metrics, flat_metrics, starts


def _distinct(placement: Placement, gpus: int) -> Placement:
    """EPLB may put two replicas of an expert on one GPU; swap them apart so the comparison is fair."""
    slots = placement.physical_to_logical.reshape(gpus, -1).copy()
    for g in range(gpus):
        for j in range(slots.shape[1]):
            e = slots[g, j]
            if (slots[g] == e).sum() > 1:
                for h in range(gpus):
                    if h == g or (slots[h] == e).any():
                        continue
                    swap = next((k for k in range(slots.shape[1]) if not (slots[g] == slots[h, k]).any()), None)
                    if swap is not None:
                        slots[g, j], slots[h, swap] = slots[h, swap], slots[g, j]
                        break
    return Placement(slots.ravel(), placement.replicas)


def _layer_result(placement: Placement, load: np.ndarray, gpus: int, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "physical_to_logical": placement.physical_to_logical.tolist(),
        "logical_to_physical": placement.logical_to_physical().tolist(),
        "logical_replica_count": placement.replicas.tolist(),
        "gpu_load": metrics["gpu_load"],
        "node_load": metrics["node_load"],
        "eplb_gpu_load": metrics["eplb_gpu_load"],
        "eplb_node_load": metrics["eplb_node_load"],
    }
