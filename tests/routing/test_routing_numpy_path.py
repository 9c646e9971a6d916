"""The default top-1 path without torch: no torch import, and the greedy baseline's shortcut is exact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from routing_helpers import make_graph, make_tokens

from qflow.routing._classical import _accept_in_order, greedy_balanced

ROOT = Path(__file__).resolve().parents[2]


def test_default_top1_plan_never_imports_torch(tmp_path):
    """Importing torch was 1.1 s of a CLI call; the top-1 router, baselines and bound are numpy."""
    tokens = tmp_path / "tokens.csv"
    make_tokens(300, 4, seed=3, heavy=0.2).to_csv(tokens, index=False)
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps(make_graph(2, 2, links=True)))
    code = (
        "import sys\n"
        "from qflow.routing import load_routing_inputs, plan_routing\n"
        f"frame, graph, digests = load_routing_inputs({str(tokens)!r}, {str(graph)!r})\n"
        "plan = plan_routing(frame, graph, {'exact_max_tokens': 0}, digests=digests)\n"
        "assert plan.metrics['tokens_routed'] > 0 and plan.baselines\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _greedy_with_blocked_mask(u: np.ndarray, weight: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """The greedy baseline as first written: every refusal recorded per token and masked out."""
    n, E = u.shape
    expert = np.full(n, -1, dtype=np.int64)
    room = capacity.astype(np.float64).copy()
    blocked = np.zeros((n, E), dtype=bool)
    active = np.arange(n)
    for _ in range(E):
        if active.size == 0:
            break
        scores = u[active].astype(np.float32)
        scores[blocked[active]] = -np.inf
        scores[:, room < weight[active].min() - 1e-9] = -np.inf
        best = scores.argmax(axis=1)
        value = scores[np.arange(best.size), best]
        alive = np.isfinite(value)
        active, best, value = active[alive], best[alive], value[alive]
        if active.size == 0:
            break
        order = np.argsort(-value, kind="stable")
        toks, g = active[order], best[order]
        took = _accept_in_order(g, weight[toks], room)
        expert[toks[took]] = g[took]
        blocked[toks[~took], g[~took]] = True
        active = np.sort(toks[~took])
    return expert


@pytest.mark.parametrize("seed", range(40))
def test_greedy_baseline_equals_the_blocked_mask_version(seed):
    """With equal complexities the blocked mask is skipped (a refusal closes the expert for everyone)."""
    rng = np.random.default_rng(seed)
    n, E = int(rng.integers(1, 200)), int(rng.integers(1, 10))
    u = rng.normal(size=(n, E)).astype(np.float32)
    if seed % 3 == 0:
        u = np.round(u, 1)  # ties
    weight = np.ones(n) if seed % 2 else rng.integers(1, 4, n).astype(float)
    capacity = rng.uniform(0.2, 2.0) * weight.sum() / E * np.ones(E)
    if seed % 5 == 0:
        capacity[0] = 0.0  # an expert closed from the start
    np.testing.assert_array_equal(greedy_balanced(u, weight, capacity), _greedy_with_blocked_mask(u, weight, capacity))
