"""The top-k branch of ``plan_routing`` (``top_k > 1``): route, measure, report.

Kept apart from the top-1 path so that path (and its sample plans) is
unchanged; see :mod:`qflow.routing._topk` for the solver and the bound.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qflow.core.plan import SolverReport, StageTimer
from qflow.routing._classical import exact_optimum
from qflow.routing._measure import cluster_fields, optimum_metrics
from qflow.routing._schemas import RoutingConfig, RoutingProblem
from qflow.routing._topk import (
    aux_loss_free_routing,
    combine_weights,
    node_limited_mask,
    node_limited_table,
    route_topk,
    tightened_topk_bound,
    topk_gating,
    topk_uncapped,
)
from qflow.routing._topk_kernels import slot_counts, slot_load, slot_traffic, slot_utilities
from qflow.routing._utility import UtilityTable, as_table

__all__ = ["INLINE_MAX_SLOTS", "PER_TOKEN_ARRAYS", "route_and_measure_topk", "topk_metrics"]


def topk_metrics(
    problem: RoutingProblem, experts: np.ndarray, u: np.ndarray | UtilityTable, capacity: np.ndarray, penalty: float
) -> dict[str, Any]:
    """Quality figures of one top-k assignment (plan and baselines alike).

    ``experts`` (n, k), -1 for a dropped slot. ``tokens_routed`` counts
    tokens with all k slots placed, ``dropped_tokens`` those with at least
    one dropped, ``dropped_slots`` the slots; loads, imbalance and
    ``cross_node_fraction`` (over placed slots of tokens of known source)
    are as for k = 1. Compiled passes over the slots, no (n, k) index
    arrays; the sums are numpy's over the placed slots in row order.
    """
    n, k = experts.shape
    E = problem.graph.n_experts
    w = problem.complexity
    experts = np.ascontiguousarray(experts, dtype=np.int64)
    placed = experts >= 0
    load = slot_load(experts, np.ascontiguousarray(w, dtype=np.float64), E)
    full, dropped, known, cross, distinct_sum, distinct_max = slot_counts(
        experts, np.ascontiguousarray(problem.source_node, dtype=np.int64),
        np.ascontiguousarray(problem.graph.expert_node, dtype=np.int64))
    table, zero = as_table(u), np.zeros(n)
    affinity = UtilityTable.dense(problem.affinity)
    mean_load = load.mean() if E else 0.0
    return {
        "tokens_routed": int(full),
        "dropped_tokens": int(n - full),
        "dropped_slots": int(dropped),
        "dropped_complexity": float((w[:, None] * ~placed).sum()),
        "capacity_violations": int((load > capacity + 1e-9).sum()),
        "max_overload": float(max(0.0, (load - capacity).max())),
        "load_imbalance": float(load.max() / mean_load) if mean_load > 0 else 1.0,
        "total_affinity": float(slot_utilities(affinity.values, affinity.offsets, affinity.offset_row, experts, zero)[placed].sum()),
        "objective": float(slot_utilities(table.values, table.offsets, table.offset_row, experts, zero)[placed].sum()),
        "cross_node_fraction": float(cross / known) if known else 0.0,
        "nodes_per_token_mean": float(distinct_sum / n) if n else 0.0,
        "nodes_per_token_max": int(distinct_max) if n else 0,
        "expert_load": [round(float(x), 6) for x in load],
    }


def chosen_probabilities(problem: RoutingProblem, experts: np.ndarray, hint_bonus: float) -> np.ndarray:
    """The router's own probabilities (affinity without the hint bonus) of each token's experts, shape (n, k).

    Gathered per chosen expert (0 at dropped slots): a float64 copy of the whole (n, E) table is 2 GB at a
    million x 256.
    """
    affinity = UtilityTable.dense(problem.affinity)
    experts = np.ascontiguousarray(experts, dtype=np.int64)
    chosen = slot_utilities(affinity.values, affinity.offsets, affinity.offset_row, experts, np.zeros(experts.shape[0]))
    chosen -= hint_bonus * ((experts == problem.hint[:, None]) & (problem.hint[:, None] >= 0))
    return chosen


def route_and_measure_topk(
    problem: RoutingProblem, u: UtilityTable, penalty: float, config: RoutingConfig, solver: SolverReport,
    timer: StageTimer, diagnostics: list[str],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Top-k plan: returns ``(result, metrics, baselines, arrays)`` (``arrays``: see :func:`_topk_result`).

    QAOA blocks and the hash router exchange one expert per token, so with
    ``top_k > 1`` they do not run; ``solver`` records that with the reason.
    Without baselines and with a node limit, ``problem.affinity`` (``u``'s
    values) is masked in place off each token's rule nodes: from then on it
    is read only at the plan's slots, which all lie on them.
    """
    k = config.top_k
    w = problem.complexity
    capacity = problem.capacity(config.capacity_factor * k)
    if config.qaoa:
        solver.fall_back(solver.requested, "classical-topk", f"QAOA blocks move one expert per token; top_k={k} ran the classical top-k router")
    elif config.deterministic_fallback:
        solver.fall_back(solver.requested, "classical-topk", f"the hash router is top-1 only; top_k={k} ran the classical top-k router")
    else:
        solver.ran = "classical-topk"
    limited = _node_limit_applies(problem, config, diagnostics)
    with timer.stage("route"):
        u_route = u
        if limited:
            # Without baselines nothing reads the affinities off the rule nodes again (the plan's slots all lie
            # on them), so they are masked in place rather than copied (1 GB of fresh memory at a million x 256).
            u_route = node_limited_table(u, problem.graph.expert_node, k, config.node_limit, penalty, float(w.max()),
                                         in_place=not config.baselines)
        routed = route_topk(u_route, w, capacity, k, penalty=penalty)
    metrics = topk_metrics(problem, routed.experts, u, capacity, penalty)
    # topk_objective(u, w, routed.experts, penalty) from the sums topk_metrics already took (the same ones).
    value = metrics["objective"] - penalty * metrics["dropped_complexity"]
    with timer.stage("bound"):
        bound, _ = tightened_topk_bound(u_route, w, capacity, routed.prices, penalty, k, value)
    metrics.update(optimum_metrics(
        bound, value, problem.n_tokens, config.exact_max_tokens, timer.stage, diagnostics.append,
        lambda: exact_optimum(u_route.to_array(), w, capacity, penalty, prices=routed.prices, k=k)))
    metrics["router_iterations"] = routed.iterations
    metrics["expert_capacity"] = [round(float(c), 6) for c in capacity]
    metrics["top_k"] = k
    metrics["node_limit"] = config.node_limit if limited else 0
    metrics["node_limit_affinity_cost"] = None
    metrics["cross_node_fraction_saved"] = None
    baselines: dict[str, dict[str, Any]] = {}
    if config.baselines:
        with timer.stage("baselines"):
            baselines = {
                "topk_gating": topk_metrics(problem, topk_gating(problem.affinity, w, capacity, k), u, capacity, penalty),
                "topk_no_capacity": topk_metrics(problem, topk_uncapped(problem.affinity, k), u, capacity, penalty),
            }
            if config.aux_free_steps:
                online = aux_loss_free_routing(problem.affinity, k, config.aux_free_steps, config.aux_free_step_size)
                baselines["aux_loss_free"] = topk_metrics(problem, online, u, capacity, penalty)
            if limited:
                rule = node_limited_mask(problem.affinity, problem.graph.expert_node, k, config.node_limit)
                gated = topk_gating(np.where(rule, problem.affinity, -np.inf), w, capacity, k)
                baselines["node_limited_gating"] = topk_metrics(problem, gated, u, capacity, penalty)
                free = topk_metrics(problem, route_topk(u, w, capacity, k, penalty=penalty).experts, u, capacity, penalty)
                baselines["router_no_node_limit"] = free
                metrics["node_limit_affinity_cost"] = free["total_affinity"] - metrics["total_affinity"]
                metrics["cross_node_fraction_saved"] = free["cross_node_fraction"] - metrics["cross_node_fraction"]
    elif limited:
        diagnostics.append("baselines off: the affinity the node limit costs and the traffic it saves are not measured")
    with timer.stage("result"):
        result, arrays = _topk_result(problem, routed.experts, capacity, config)
    return result, metrics, baselines, arrays


def _node_limit_applies(problem: RoutingProblem, config: RoutingConfig, diagnostics: list[str]) -> bool:
    """True when ``node_limit`` constrains anything; otherwise a diagnostic says why not."""
    if not config.node_limit:
        return False
    nodes = int(np.unique(problem.graph.expert_node).size)
    if config.node_limit >= nodes:
        diagnostics.append(f"node_limit={config.node_limit} >= the {nodes} nodes hosting experts: no effect")
        return False
    return True


#: Above this many slots (tokens x top_k) a plan keeps its per-token experts and combine weights as arrays
#: (:attr:`Plan.arrays`, written beside ``--out`` as ``<out stem>.tokens.npz``) instead of JSON dicts:
#: 8 million slots as Python lists took 10-15 s of a million-token call and a JSON of hundreds of MB.
INLINE_MAX_SLOTS = 1_000_000

#: What each array of a large plan's ``<out stem>.tokens.npz`` holds (also in ``result.per_token.arrays``).
PER_TOKEN_ARRAYS = {
    "token_ids": "(n,) str: token ids in input order",
    "expert_ids": "(E,) str: the experts, in the order expert indices refer to",
    "experts": "(n, k) int32: each token's expert indices into expert_ids, best first; -1 marks a dropped slot",
    "combine_weights": "(n, k) float32: router probabilities of those experts renormalised to sum 1; 0 where dropped",
}


def _per_token(problem: RoutingProblem, experts: np.ndarray, weights: np.ndarray, placed: np.ndarray,
               k: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(result fields, arrays)`` for a plan above :data:`INLINE_MAX_SLOTS`: the per-token results as arrays.

    The result names the arrays and their shape; the routing command fills in ``file``, ``sha256`` and
    ``written_to`` when it writes them (``None`` without ``--out``).
    """
    arrays = {
        "token_ids": problem.token_ids.astype(str),
        "expert_ids": np.asarray(problem.graph.expert_ids, dtype=str),
        "experts": np.where(placed, experts, -1).astype(np.int32),
        "combine_weights": np.where(placed, weights, 0.0).astype(np.float32),
    }
    info = {"format": "npz", "file": None, "sha256": None, "written_to": None, "shape": [int(experts.shape[0]), k],
            "arrays": dict(PER_TOKEN_ARRAYS), "load": "numpy.load(file, allow_pickle=False)"}
    fields = {"assignments": None, "combine_weights": None, "expert_queues": None, "per_token": info}
    return fields, arrays


def _inline_per_token(problem: RoutingProblem, experts: np.ndarray, weights: np.ndarray, placed: np.ndarray) -> dict[str, Any]:
    """``assignments``, ``combine_weights`` and ``expert_queues`` as JSON dicts (plans up to :data:`INLINE_MAX_SLOTS`)."""
    ids = problem.graph.expert_ids
    names = np.asarray(ids, dtype=object)
    token_ids = problem.token_ids.tolist()
    expert_lists = names[np.maximum(experts, 0)].tolist()
    weight_lists = np.round(weights, 6).tolist()
    for i in np.flatnonzero(~placed.all(axis=1)):  # only rows with a dropped slot need filtering
        keep = placed[i]
        expert_lists[i] = names[experts[i][keep]].tolist()
        weight_lists[i] = np.round(weights[i][keep], 6).tolist()
    rows, cols = np.nonzero(placed)
    flat = experts[rows, cols]
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(len(ids) + 1))
    queue_tokens = problem.token_ids[rows[order]]
    return {
        "assignments": dict(zip(token_ids, expert_lists, strict=True)),
        "combine_weights": dict(zip(token_ids, weight_lists, strict=True)),
        "expert_queues": {ids[e]: queue_tokens[bounds[e]:bounds[e + 1]].tolist() for e in range(len(ids))},
    }


def _topk_result(problem: RoutingProblem, experts: np.ndarray, capacity: np.ndarray,
                 config: RoutingConfig) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(result, arrays)``: per token its placed experts (best first) and combine weights in the same order.

    Up to :data:`INLINE_MAX_SLOTS` slots they are ``result.assignments`` and ``result.combine_weights``
    (token -> list) and ``arrays`` is empty; above, they are ``arrays`` and ``result.per_token`` says so.
    """
    ids = problem.graph.expert_ids
    placed = experts >= 0
    weights = combine_weights(chosen_probabilities(problem, experts, config.hint_bonus), experts, gathered=True)
    arrays: dict[str, np.ndarray] = {}
    if experts.size > INLINE_MAX_SLOTS:
        per_token, arrays = _per_token(problem, experts, weights, placed, config.top_k)
    else:
        per_token = _inline_per_token(problem, experts, weights, placed)
    short = ~placed.all(axis=1)
    traffic = slot_traffic(np.ascontiguousarray(experts, dtype=np.int64), np.ascontiguousarray(problem.source_node, dtype=np.int64),
                           np.ascontiguousarray(problem.graph.expert_node, dtype=np.int64), len(problem.graph.node_ids))
    total = float(problem.complexity.sum()) * config.top_k
    dropped = {
        "count": int(short.sum()),
        "slots": int((~placed).sum()),
        "token_ids": problem.token_ids[short].tolist(),
        "reason": None,
    }
    if dropped["slots"]:
        dropped["reason"] = (
            f"total capacity {capacity.sum():g} < top_k x total complexity {total:g}" if capacity.sum() < total - 1e-9
            else "capacity left on the experts a token may still use is smaller than its complexity (packing)"
        )
    result = {
        "expert_ids": ids,
        "top_k": config.top_k,
        **per_token,
        "dropped": dropped,
        "padding_token_ids": problem.padding_ids,
        **cluster_fields(problem, ids, capacity, traffic),
    }
    return result, arrays

