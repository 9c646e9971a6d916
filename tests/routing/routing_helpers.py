"""Small routing instances and the checks every routing test shares (imported by the routing tests).

Instances are built here from a seeded generator, not from the engine's own
sample module, so the tests know exactly what the scores, sources and
complexities are and can recompute utilities and loads independently.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest


def make_graph(n_nodes: int = 2, experts_per_node: int = 2, *, links: bool = False) -> dict[str, Any]:
    """Native model graph: expert ``e{k}`` sits on node ``n{k // experts_per_node}``.

    Without links every pair of distinct nodes is one unit apart, which keeps
    the utility easy to recompute: ``u = p - locality_weight * [node(t) != node(e)]``.
    """
    nodes = [{"id": f"n{i}", "gpus": [f"n{i}-g0", f"n{i}-g1"]} for i in range(n_nodes)]
    experts = [{"id": f"e{k}", "node": f"n{k // experts_per_node}"} for k in range(n_nodes * experts_per_node)]
    graph: dict[str, Any] = {"nodes": nodes, "experts": experts}
    if links:
        graph["links"] = [
            {"source": f"n{i}", "target": f"n{i + 1}", "bandwidth_gbps": 400.0 * (i + 1)} for i in range(n_nodes - 1)
        ]
    return graph


def make_tokens(
    n: int,
    n_experts: int,
    n_nodes: int = 2,
    *,
    seed: int = 0,
    heavy: float = 0.0,
    padding: float = 0.0,
    skew: float = 1.5,
    logits: bool = False,
) -> pd.DataFrame:
    """Token table with ``score_0..`` columns (probabilities unless ``logits``).

    ``skew`` makes some experts popular (so capacity binds); ``heavy`` is the
    share of tokens of complexity 2; ``padding`` the share marked as padding.
    """
    rng = np.random.default_rng(seed)
    popularity = skew * rng.normal(size=n_experts)
    raw = popularity[None, :] + rng.gumbel(size=(n, n_experts))
    if logits:
        scores = raw
    else:
        scores = np.exp(raw - raw.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
    frame = pd.DataFrame(scores, columns=[f"score_{e}" for e in range(n_experts)])
    frame.insert(0, "token_id", [f"tok{seed}-{i:04d}" for i in range(n)])
    frame.insert(1, "source", [f"n{s}" for s in rng.integers(0, n_nodes, n)])
    frame.insert(2, "complexity", np.where(rng.random(n) < heavy, 2, 1))
    if padding:
        frame["padding"] = rng.random(n) < padding
    return frame


def expert_loads(plan, tokens: pd.DataFrame) -> dict[str, float]:
    """Load per expert recomputed from ``result.assignments`` and the token table."""
    weight = dict(zip(tokens["token_id"].astype(str), tokens.get("complexity", pd.Series(1.0, index=tokens.index)), strict=True))
    loads = dict.fromkeys(plan.result["expert_capacity"], 0.0)
    for token, expert in plan.result["assignments"].items():
        if expert is not None:
            loads[expert] += float(weight[token])
    return loads


def check_plan_consistency(plan, tokens: pd.DataFrame) -> dict[str, float]:
    """Assignments, queues, drops and loads agree with each other and with capacity."""
    padding = set(plan.result["padding_token_ids"])
    routable = [t for t in tokens["token_id"].astype(str) if t not in padding]
    assignments = plan.result["assignments"]
    assert list(assignments) == routable
    capacity = plan.result["expert_capacity"]
    loads = expert_loads(plan, tokens)
    for expert, load in loads.items():
        assert load <= capacity[expert] + 1e-9, f"{expert}: load {load} over capacity {capacity[expert]}"
    assert plan.metrics["capacity_violations"] == 0
    assert plan.metrics["max_overload"] == 0.0
    assert plan.metrics["expert_load"] == pytest.approx(list(loads.values()))
    dropped = [t for t, e in assignments.items() if e is None]
    assert plan.result["dropped"]["token_ids"] == dropped
    assert plan.result["dropped"]["count"] == plan.metrics["dropped_tokens"] == len(dropped)
    queued = {t: e for e, queue in plan.result["expert_queues"].items() for t in queue}
    assert queued == {t: e for t, e in assignments.items() if e is not None}
    return loads
