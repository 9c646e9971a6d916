"""Plan fields the top-1 and top-k paths share: the gap to the optimum and the cluster fields.

Kept free of the top-k solver's imports (torch, numba) so that the default
top-1 path never loads them (torch's import was 1.1 s of a CLI call).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from qflow.routing._schemas import RoutingProblem

__all__ = ["optimum_metrics", "relative_gap", "cluster_fields"]


def optimum_metrics(bound: float, value: float, n_tokens: int, exact_max_tokens: int,
                    stage: Callable[[str], AbstractContextManager[None]], note: Callable[[str], None],
                    solve_exact: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The plan's objective ``value`` against a certified upper ``bound`` and, up to ``exact_max_tokens``, the optimum.

    ``solve_exact()`` (run as stage ``exact``) returns the LP optimum's
    ``value`` and ``kind``; the optimum is itself an upper bound, and the
    tightest one. Above the size limit ``note`` says the gap is the bound's.
    """
    metrics: dict[str, Any] = {"objective_upper_bound": bound, "gap_to_upper_bound": relative_gap(bound, value),
                               "affinity_gap_to_optimum": None, "optimum_kind": None}
    if 0 < n_tokens <= exact_max_tokens:
        with stage("exact"):
            exact = solve_exact()
        metrics["objective_upper_bound"] = min(bound, exact["value"])
        metrics["gap_to_upper_bound"] = relative_gap(metrics["objective_upper_bound"], value)
        metrics["objective_optimum"] = exact["value"]
        metrics["optimum_kind"] = exact["kind"]
        metrics["affinity_gap_to_optimum"] = relative_gap(exact["value"], value)
    elif exact_max_tokens:
        note(f"exact optimum skipped: {n_tokens} tokens > exact_max_tokens={exact_max_tokens}; "
             "gap_to_upper_bound is a certified bound instead")
    return metrics


def relative_gap(reference: float, value: float) -> float:
    """``(reference - value) / |reference|``, floored at 0."""
    return float(max(0.0, reference - value) / max(abs(reference), 1e-12))


def cluster_fields(problem: RoutingProblem, ids: list[str], capacity: np.ndarray, traffic: np.ndarray) -> dict[str, Any]:
    """The result fields top-1 and top-k plans share: capacities, expert nodes, node-to-node traffic (tokens)."""
    return {
        "expert_capacity": dict(zip(ids, [round(float(c), 6) for c in capacity], strict=True)),
        "expert_node": dict(zip(ids, [problem.graph.node_ids[i] for i in problem.graph.expert_node], strict=True)),
        "node_ids": problem.graph.node_ids,
        "node_traffic_tokens": traffic.tolist(),
        "score_kind": problem.score_kind,
    }
