"""The top-k router's utility table (affinities plus per-source offsets) and the compiled passes that read it.

Every reader must see exactly the float32 utilities ``utility_matrix`` would
have stored: the router's plans must not depend on whether the table was
copied. The selection and measuring kernels are checked against plain numpy
references written here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from routing_helpers import make_graph, make_tokens

from qflow.routing import RoutingConfig
from qflow.routing._classical import utility_matrix
from qflow.routing._plan_topk import topk_metrics
from qflow.routing._schemas import build_problem
from qflow.routing._topk import _shortlist, node_limited_table, route_topk, tightened_topk_bound
from qflow.routing._topk_kernels import slot_utilities
from qflow.routing._utility import UtilityTable, utility_table


def problem_of(n: int = 300, nodes: int = 4, per_node: int = 4, seed: int = 0, unknown: float = 0.2):
    tokens = make_tokens(n, nodes * per_node, nodes, seed=seed, heavy=0.3)
    tokens.loc[np.random.default_rng(seed).random(n) < unknown, "source"] = None  # some tokens of unknown source
    return build_problem(tokens, make_graph(nodes, per_node, links=True), RoutingConfig(top_k=2))


def reference_utility(problem, weight: float) -> np.ndarray:
    """The definition, token by token: affinity minus float32(weight x distance), nothing for unknown sources."""
    penalty = (weight * problem.graph.node_distance[:, problem.graph.expert_node]).astype(np.float32)
    known = problem.source_node >= 0
    per_token = np.where(known[:, None], penalty[np.maximum(problem.source_node, 0)], np.float32(0.0))
    return problem.affinity.astype(np.float32) - per_token


@pytest.mark.parametrize("weight", [0.0, 0.1, 0.7])
def test_table_reads_back_utility_matrix_to_the_bit(weight):
    problem = problem_of()
    dense = utility_matrix(problem, weight)
    assert np.array_equal(dense, reference_utility(problem, weight))  # both are built from the table's offsets
    table = utility_table(problem, weight)
    assert table.values is problem.affinity or np.shares_memory(table.values, problem.affinity)  # no copy
    assert np.array_equal(table.to_array(), dense)
    rows = np.array([5, 0, 299, 5])
    assert np.array_equal(table.rows(rows), dense[rows])
    assert np.array_equal(table.at(rows, np.array([3, 1, 15, 0])), dense[rows, [3, 1, 15, 0]])
    assert table.extremes == (float(dense.min()), float(dense.max()))
    experts = np.random.default_rng(1).integers(-1, 16, size=(300, 3))
    got = slot_utilities(table.values, table.offsets, table.offset_row, experts, np.full(300, -7.0))
    want = np.where(experts >= 0, dense[np.arange(300)[:, None], np.maximum(experts, 0)].astype(np.float64), -7.0)
    assert np.array_equal(got, want)


def test_compiled_subtraction_rounds_as_numpy_float32():
    """Operands far apart in size: the difference must round once, in float32, as numpy's does."""
    rng = np.random.default_rng(3)
    values = (rng.standard_normal((64, 32)) * 10.0 ** rng.integers(-30, 30, (64, 32))).astype(np.float32)
    offsets = (rng.standard_normal((5, 32)) * 10.0 ** rng.integers(-30, 30, (5, 32))).astype(np.float32)
    table = UtilityTable(values, offsets, rng.integers(0, 5, 64))
    experts = np.tile(np.arange(32), (64, 1))
    got = slot_utilities(table.values, table.offsets, table.offset_row, experts, np.zeros(64))
    assert np.array_equal(got, table.to_array().astype(np.float64))


def reference_shortlist(u: np.ndarray, w: np.ndarray, prices: np.ndarray, K: int, rows: np.ndarray):
    """Each row's K best ``u - w * price`` (float64), ties to the first column met scanning from the row's start."""
    E = u.shape[1]
    index = np.empty((rows.size, K), dtype=np.int64)
    for j, t in enumerate(rows):
        value = u[t].astype(np.float64) - float(w[t]) * prices
        start = (t * 40503) % E
        scan = (start + np.arange(E)) % E
        order = scan[np.argsort(-value[scan], kind="stable")]
        index[j] = order[:K]
    return index


@pytest.mark.parametrize("kind", ["random", "ties", "equal rows", "masked nodes"])
def test_shortlist_matches_a_full_sort(kind):
    rng = np.random.default_rng(4)
    n, E, K = 400, 64, 24
    u = rng.random((n, E)).astype(np.float32)
    if kind == "ties":
        u = np.round(u * 4).astype(np.float32) / 4  # five distinct values per row
    elif kind == "equal rows":
        u[:] = 0.5
    elif kind == "masked nodes":
        u[:, 16:48] = -5.0  # two whole nodes far below, as node_limited_table leaves them
    w = rng.choice([1.0, 2.0], n).astype(np.float32)
    prices = rng.random(E) * 0.1 if kind != "equal rows" else np.zeros(E)
    rows = rng.permutation(n)[:300]
    index, values, ceiling = _shortlist(UtilityTable.dense(u), w, prices, K, rows)
    assert np.array_equal(index, reference_shortlist(u, w, prices, K, rows))
    assert np.array_equal(values, u[rows[:, None], index])
    worth = u[rows[:, None], index].astype(np.float64) - w[rows, None] * prices[index]
    assert np.array_equal(ceiling, worth[:, K - 1])


@pytest.mark.parametrize("seed", [0, 1])
def test_router_plans_the_same_on_the_table_and_on_its_copy(seed):
    problem = problem_of(n=500, seed=seed)
    dense = utility_matrix(problem, 0.3)
    table = utility_table(problem, 0.3)
    capacity = problem.capacity(1.1 * 3)
    penalty = 2.0 * float(dense.max() - dense.min()) + 1.0
    on_copy = route_topk(dense, problem.complexity, capacity, 3, penalty=penalty)
    on_table = route_topk(table, problem.complexity, capacity, 3, penalty=penalty)
    assert np.array_equal(on_copy.experts, on_table.experts)
    assert np.array_equal(on_copy.prices, on_table.prices)
    bound_copy = tightened_topk_bound(dense, problem.complexity, capacity, on_copy.prices, penalty, 3, 0.0)[0]
    bound_table = tightened_topk_bound(table, problem.complexity, capacity, on_table.prices, penalty, 3, 0.0)[0]
    assert bound_copy == bound_table


def test_node_limit_in_place_equals_a_copy_and_sits_below_dropping():
    problem = problem_of(n=300, nodes=4, per_node=4)
    penalty, w_max = 3.0, float(problem.complexity.max())
    fresh = utility_table(problem, 0.5)
    copied = node_limited_table(fresh, problem.graph.expert_node, 2, 2, penalty, w_max)
    assert copied.values is not fresh.values
    before = fresh.to_array()
    in_place = node_limited_table(fresh, problem.graph.expert_node, 2, 2, penalty, w_max, in_place=True)
    assert in_place.values is problem.affinity  # written over the affinities
    assert np.array_equal(in_place.values, copied.values)
    masked = in_place.to_array()
    off_rule = masked != before
    assert off_rule.any()
    nodes_used = [np.unique(problem.graph.expert_node[~row]).size for row in off_rule]
    assert max(nodes_used) == 2  # each token keeps exactly its two rule nodes
    assert (masked[off_rule] < (-penalty * problem.complexity[:, None] * np.ones_like(masked))[off_rule]).all()


def reference_metrics(problem, experts, u):
    """The measures of topk_metrics, the plain numpy way (fancy indexing, bincount, a sort per row)."""
    placed = experts >= 0
    rows, cols = np.nonzero(placed)[0], experts[placed]
    known = problem.source_node[rows] >= 0
    cross = problem.graph.expert_node[cols[known]] != problem.source_node[rows[known]]
    node_of = np.sort(np.where(placed, problem.graph.expert_node[np.maximum(experts, 0)], -1), axis=1)
    distinct = ((node_of[:, 1:] != node_of[:, :-1]) & (node_of[:, 1:] >= 0)).sum(axis=1) + (node_of[:, 0] >= 0)
    return {
        "tokens_routed": int(placed.all(axis=1).sum()),
        "dropped_slots": int((~placed).sum()),
        "total_affinity": float(problem.affinity[rows, cols].astype(np.float64).sum()),
        "objective": float(u[rows, cols].astype(np.float64).sum()),
        "cross_node_fraction": float(cross.mean()),
        "nodes_per_token_mean": float(distinct.mean()),
        "nodes_per_token_max": int(distinct.max()),
        "expert_load": [round(float(x), 6) for x in np.bincount(cols, weights=problem.complexity[rows], minlength=16)],
    }


def test_metrics_match_the_numpy_reference():
    problem = problem_of(n=400)
    u = utility_matrix(problem, 0.2)
    rng = np.random.default_rng(5)
    experts = np.stack([rng.permutation(16)[:3] for _ in range(400)])
    experts[rng.random((400, 3)) < 0.15] = -1
    got = topk_metrics(problem, experts, utility_table(problem, 0.2), problem.capacity(3.0), 2.0)
    for name, value in reference_metrics(problem, experts, u).items():
        assert got[name] == value, name


@pytest.mark.parametrize("masked", [False, True])
def test_dual_bound_terms_match_a_full_sort(masked):
    """g(p)'s token terms and the load of each token's k best choices, against numpy sorting every row."""
    from qflow.routing._topk import _bound_at

    problem = problem_of(n=500, seed=2)
    table = utility_table(problem, 0.4)
    if masked:
        table = node_limited_table(table, problem.graph.expert_node, 3, 2, 3.0, float(problem.complexity.max()))
    u, w, k, penalty = table.to_array().astype(np.float64), problem.complexity, 3, 3.0
    prices = np.random.default_rng(6).random(16) * 0.05
    capacity = problem.capacity(1.2 * k)
    value = u - w[:, None] * prices
    best = -np.sort(-value, axis=1, kind="stable")[:, :k]
    terms = np.maximum(best, -penalty * w[:, None])
    chosen = np.argsort(-value, axis=1, kind="stable")[:, :k]
    kept = best >= -penalty * w[:, None]
    load = np.bincount(chosen[kept], weights=np.broadcast_to(w[:, None], chosen.shape)[kept], minlength=16)
    bound, got_load = _bound_at(table, w, capacity, prices, penalty, k)
    assert np.array_equal(got_load, load)
    assert bound == pytest.approx(terms.sum() + capacity @ prices, rel=1e-6)
    assert bound >= terms.sum() + capacity @ prices  # the rounding margin only ever adds


def test_topk_plan_without_baselines_never_imports_torch():
    """Only the top-k baselines use torch; the router, its bound and the node rule are numpy and numba."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\n"
        "sys.path.insert(0, 'tests/routing')\n"
        "from routing_helpers import make_graph, make_tokens\n"
        "from qflow.routing import plan_routing\n"
        "plan = plan_routing(make_tokens(200, 8, 4, seed=1), make_graph(4, 2),\n"
        "                    {'top_k': 3, 'node_limit': 2, 'baselines': False, 'exact_max_tokens': 0})\n"
        "assert plan.metrics['nodes_per_token_max'] <= 2 and plan.solver.ran == 'classical-topk'\n"
        "print('torch' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_topk_node_traffic_counts_each_placed_slot_once():
    from qflow.routing import plan_routing

    tokens = make_tokens(240, 8, 4, seed=7)
    tokens.loc[::5, "source"] = None  # unknown sources send no counted traffic
    plan = plan_routing(tokens, make_graph(4, 2), {"top_k": 3, "capacity_factor": 0.9, "exact_max_tokens": 0})
    node_of = {f"e{e}": e // 2 for e in range(8)}
    want = np.zeros((4, 4), dtype=int)
    sources = dict(zip(tokens["token_id"], tokens["source"], strict=True))
    for token, experts in plan.result["assignments"].items():
        if isinstance(sources[token], str):
            for expert in experts:
                want[int(sources[token][1:]), node_of[expert]] += 1
    assert plan.metrics["dropped_slots"] > 0  # capacity 0.9 drops some: those must not count
    assert plan.result["node_traffic_tokens"] == want.tolist()


@pytest.mark.parametrize(("seed", "heavy"), [(0, False), (1, True), (2, True)])
def test_shed_thresholds_equal_the_sorting_rule(seed, heavy):
    """The selection kernel against ``_grouped_shed`` (a sort per round) on whole-number weights: the same thresholds."""
    from qflow.routing._classical import _grouped_shed
    from qflow.routing._topk_kernels import shed_thresholds

    rng = np.random.default_rng(seed)
    n, k, E1 = 60_000, 4, 13  # above _grouped_shed's 50k-member cut-off, so its histogram prefilter runs too
    chosen = np.stack([rng.permutation(E1)[:k] for _ in range(n)])
    margin = np.round(rng.exponential(size=(n, k)), 2)  # many exact ties
    w = rng.choice([1.0, 2.0, 3.0], n) if heavy else np.ones(n)
    load = np.bincount(chosen.ravel(), weights=np.repeat(w, k), minlength=E1)
    excess = load - np.quantile(load, 0.5)
    excess[-1] = 1.5e-9  # barely over: one slot sheds
    over = excess > 1e-9
    got = shed_thresholds(chosen, margin, w, over, excess, np.empty(n * k), np.empty(n * k))
    flat = chosen.ravel()
    members = np.flatnonzero(over[flat])
    unit = np.repeat(w, k)
    _, want = _grouped_shed(flat[members], margin.ravel()[members] / unit[members], unit[members], np.where(over, excess, 0.0))
    assert np.isnan(got[~over]).all()
    assert np.array_equal(got[over], want[over])


def test_scores_converted_in_threaded_blocks_as_one_array():
    """Score frames large enough for several blocks on two threads: softmax, the NaN check and the caller's frame."""
    from qflow.core.errors import InputError

    rng = np.random.default_rng(8)
    n, E = 20_000, 256  # five blocks of 4,096 rows
    logits = rng.normal(size=(n, E)).astype(np.float32) * 3
    frame = pd.DataFrame(logits.astype(np.float64), columns=[f"score_{e}" for e in range(E)])
    frame.insert(0, "token_id", np.arange(n).astype(str))
    graph = make_graph(8, 32)
    problem = build_problem(frame, graph, RoutingConfig())
    shifted = logits - logits.max(axis=1, keepdims=True)
    want = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    assert problem.score_kind == "logits"
    np.testing.assert_allclose(problem.affinity, want, rtol=2e-6, atol=1e-9)
    probabilities = frame.copy()
    probabilities.iloc[:, 1:] = want.astype(np.float64)
    probabilities["hint"] = "e3"
    before = probabilities.copy()
    assert build_problem(probabilities, graph, RoutingConfig()).score_kind == "probabilities"
    pd.testing.assert_frame_equal(probabilities, before)  # hints were added to a copy, not the caller's frame
    frame.iat[17_000, 1 + 200] = np.nan
    with pytest.raises(InputError, match=r"score_200\[row 17000\]"):
        build_problem(frame, graph, RoutingConfig())
