"""Shortcuts in the top-1 CLI path give exactly what the plain versions give.

Each test compares a fast path with the straightforward version it replaced
(written out here), on inputs built to hit its edge cases: ties, whole and
fractional weights, dropped tokens, repeated and self links, files changed
while read.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from routing_helpers import make_graph, make_tokens

import qflow.core.io as qio
from qflow.routing import plan_routing
from qflow.routing._classical import (
    _accept_in_order,
    _best_choices,
    _fill_spare_capacity,
    _grouped_shed,
    drop_penalty,
    greedy_balanced,
    hash_experts,
    route_metrics,
    top1_gating,
    utility_matrix,
)
from qflow.routing._schemas import RoutingConfig, _dijkstra_lengths, build_problem, parse_model_graph

ROOT = Path(__file__).resolve().parents[2]


def test_a_routing_command_line_imports_neither_networkx_nor_yaml(tmp_path):
    """networkx (0.1 s) and PyYAML load only for graph objects and YAML files, not for a CSV + JSON call."""
    tokens, graph = tmp_path / "tokens.csv", tmp_path / "graph.json"
    make_tokens(200, 4, seed=1).to_csv(tokens, index=False)
    graph.write_text(json.dumps(make_graph(2, 2, links=True)))
    code = ("import sys\nfrom qflow.cli import main\n"
            f"assert main(['routing', '--tokens', {str(tokens)!r}, '--model-graph', {str(graph)!r}, '--json']) == 0\n"
            "print('networkx' in sys.modules, 'yaml' in sys.modules, file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120)
    assert out.stderr.strip().splitlines()[-1] == "False False"


@pytest.mark.parametrize("seed", range(40))
def test_model_graph_distances_are_networkx_dijkstra_lengths(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 10))
    links = [(int(rng.integers(n)), int(rng.integers(n)), float(rng.choice([1.0, 2.0, 3.0, 900.0, 0.3, rng.uniform(0.1, 1e3)])))
             for _ in range(int(rng.integers(1, 25)))]
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    for a, b, bw in links:
        graph.add_edge(a, b, bandwidth_gbps=bw)
    fastest = max(bw for _, _, bw in links)
    for _, _, attrs in graph.edges(data=True):
        attrs["cost"] = fastest / attrs["bandwidth_gbps"]
    expected = dict(nx.all_pairs_dijkstra_path_length(graph, weight="cost"))
    adjacency: list[dict[int, float]] = [{} for _ in range(n)]
    for a, b, bw in links:
        adjacency[a][b] = adjacency[b][a] = bw
    costs = [{v: fastest / bw for v, bw in row.items()} for row in adjacency]
    got = {i: _dijkstra_lengths(costs, i) for i in range(n)}
    assert got == expected and all(list(got[i].items()) == list(expected[i].items()) for i in range(n))


def test_a_networkx_graph_is_still_accepted_as_the_model_graph():
    graph = nx.Graph()
    for node in ("n0", "n1"):
        graph.add_node(node, kind="node")
    graph.add_node("e0", kind="expert", node="n0")
    graph.add_node("e1", kind="expert", node="n1")
    graph.add_edge("n0", "n1", bandwidth_gbps=100.0)
    parsed = parse_model_graph(graph)
    assert parsed.expert_ids == ["e0", "e1"] and parsed.node_distance[0, 1] == 1.0


def _grouped_shed_by_full_sort(group, margin, weight, excess):
    """Every member sorted by (group, margin): the version without the histogram subset."""
    order = np.lexsort((margin, group))
    g, m, w = group[order], margin[order], weight[order]
    cum = np.cumsum(w)
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    before = np.repeat(cum[starts] - w[starts], np.diff(np.r_[starts, len(g)]))
    shed_sorted = (cum - before - w) < excess[g] - 1e-9
    shed = np.zeros(group.shape[0], dtype=bool)
    shed[order[shed_sorted]] = True
    threshold = np.full(excess.shape[0], -np.inf)
    np.maximum.at(threshold, g[shed_sorted], m[shed_sorted])
    return shed, np.where(np.isfinite(threshold), threshold, np.nan)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("size", [5_000, 30_000])
def test_grouped_shed_with_whole_weights_sheds_what_the_full_sort_sheds(seed, size):
    rng = np.random.default_rng(seed)
    E = 16
    group = rng.integers(0, E, size)
    margin = np.round(rng.exponential(0.01, size), 4)  # rounded: many exact ties
    margin[rng.random(size) < 0.05] = 0.0
    weight = rng.integers(1, 4, size).astype(float) if seed % 2 else np.ones(size)
    load = np.bincount(group, weights=weight, minlength=E)
    excess = np.where(rng.random(E) < 0.7, np.floor(load * rng.uniform(0.05, 1.2, E)), 0.0)
    shed, threshold = _grouped_shed(group, margin, weight, excess)
    want_shed, want_threshold = _grouped_shed_by_full_sort(group, margin, weight, excess)
    assert np.array_equal(shed, want_shed)
    assert np.array_equal(threshold, want_threshold, equal_nan=True)


def _best_choices_by_fancy_indexing(cand_u, cand_e, prices, weight, drop_value):
    charged = prices[cand_e]
    value = cand_u - charged if weight is None else cand_u - weight * charged
    best_value = value.max(axis=0)
    best_k = np.zeros(value.shape[1], dtype=np.int64)
    for j in range(value.shape[0] - 1, -1, -1):
        best_k[value[j] == best_value] = j
    cols = np.arange(value.shape[1])
    value[best_k, cols] = -np.inf
    runner_up = np.maximum(value.max(axis=0), drop_value)
    dropped = best_value < drop_value
    return np.where(dropped, -1, cand_e[best_k, cols]), np.where(dropped, drop_value - best_value, best_value - runner_up)


@pytest.mark.parametrize("weighted", [False, True])
def test_one_price_round_equals_the_fancy_indexing_version(weighted):
    rng = np.random.default_rng(7)
    K, n = 9, 3_000
    cand_e = rng.integers(0, 12, (K, n))
    cand_u = np.round(rng.random((K, n)), 2).astype(np.float32)  # coarse values: ties between candidates
    cand_e[4, ::5], cand_u[4, ::5] = cand_e[6, ::5], cand_u[6, ::5]
    prices = np.round(rng.random(12) * 0.1, 2).astype(np.float32)
    weight = (rng.integers(1, 4, n) / 2).astype(np.float32) if weighted else None
    drop_value = np.full(n, -2.0, dtype=np.float32)
    drop_value[::13] = 5.0  # dropping beats every candidate
    got = _best_choices(cand_u, cand_e, prices, weight, drop_value)
    want = _best_choices_by_fancy_indexing(cand_u, cand_e, prices, weight, drop_value)
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


def _fill_spare_capacity_on_all_rows(cand_u, cand_e, u, w, capacity, expert, rounds=8):
    expert = expert.copy()
    n, E = u.shape
    routed = expert >= 0
    room = capacity - np.bincount(expert[routed], weights=w[routed], minlength=E)
    wt = w.astype(np.float32)[:, None]
    rows = np.arange(n)
    current = u[rows, np.maximum(expert, 0)]
    current[expert < 0] = -np.inf
    for _ in range(rounds):
        fits = room.astype(np.float32)[cand_e] >= wt - np.float32(1e-6)
        gain = np.where(fits & (cand_e != expert[:, None]), cand_u - current[:, None], np.float32(-np.inf))
        best_k = gain.argmax(axis=1)
        best_gain = gain[rows, best_k]
        movers = np.flatnonzero(best_gain > np.float32(1e-7))
        if movers.size == 0:
            break
        movers = movers[np.argsort(-best_gain[movers], kind="stable")]
        target = cand_e[movers, best_k[movers]]
        took = _accept_in_order(target, w[movers], room)
        moved, to = movers[took], target[took]
        np.add.at(room, expert[moved][expert[moved] >= 0], w[moved][expert[moved] >= 0])
        expert[moved] = to
        current[moved] = cand_u[moved, best_k[moved]]
    return expert


@pytest.mark.parametrize("seed", range(5))
def test_spare_capacity_pass_on_improvable_rows_moves_what_the_all_rows_pass_moves(seed):
    rng = np.random.default_rng(seed)
    n, E, K = 4_000, 10, 4
    u = np.round(rng.random((n, E)), 3).astype(np.float32)
    cand_e = np.argsort(-u, axis=1, kind="stable")[:, :K]
    cand_u = np.take_along_axis(u, cand_e, axis=1)
    w = rng.choice([0.5, 1.0, 1.5], n) if seed % 2 else np.ones(n)
    expert = cand_e[np.arange(n), rng.integers(0, K, n)]
    expert[rng.random(n) < 0.05] = -1
    capacity = np.full(E, w.sum() / E * rng.uniform(0.9, 1.3))
    got = _fill_spare_capacity(cand_u, cand_e, u, w, capacity, expert)
    assert np.array_equal(got, _fill_spare_capacity_on_all_rows(cand_u, cand_e, u, w, capacity, expert))
    assert (got != expert).any()  # the case moves tokens at all


def test_plan_baselines_are_the_baselines_on_the_same_problem():
    """Gating and greedy balancing now run on a second thread beside the router: same figures as run directly."""
    frame, graph = make_tokens(3_000, 8, seed=5, heavy=0.3), make_graph(2, 4, links=True)
    config = RoutingConfig(exact_max_tokens=0)
    plan = plan_routing(frame, graph, config)
    problem = build_problem(frame, graph, config)
    u = utility_matrix(problem, config.locality_weight)
    w, capacity = problem.complexity, problem.capacity(config.capacity_factor)
    penalty = drop_penalty(u)
    want = {
        "hash": route_metrics(problem, hash_experts(problem.token_ids, 8), u, capacity, penalty),
        "top1_gating": route_metrics(problem, top1_gating(problem.affinity, w, capacity), u, capacity, penalty),
        "greedy_balanced": route_metrics(problem, greedy_balanced(u, w, capacity), u, capacity, penalty),
    }
    assert list(plan.baselines) == list(want) and plan.baselines == want


def _tokens_csv(n: int, seed: int) -> bytes:
    frame = make_tokens(n, 4, seed=seed)
    return frame.to_csv(index=False).encode()


def test_a_large_csv_path_is_parsed_from_the_file_to_the_same_frame(tmp_path, monkeypatch):
    data = _tokens_csv(2_000, 1)
    path = tmp_path / "tokens.csv"
    path.write_bytes(data)
    monkeypatch.setattr(qio, "PARALLEL_CSV_BYTES", 1_000)
    seen = []
    read_csv = pd.read_csv
    monkeypatch.setattr(pd, "read_csv", lambda target, **kw: seen.append(type(target).__name__) or read_csv(target, **kw))
    frame, digest = qio.load_table_digested(path, "tokens", text_columns=("token_id", "source", "hint"))
    assert seen == ["str"]  # parsed from the path
    want, _ = qio.load_table(data, name="tokens.csv", text_columns=("token_id", "source", "hint"))
    pd.testing.assert_frame_equal(frame, want)
    assert digest.sha256 == hashlib.sha256(data).hexdigest() and digest.rows == 2_000


def test_a_csv_changed_while_read_is_read_again_whole(tmp_path, monkeypatch):
    first, second = _tokens_csv(2_000, 1), _tokens_csv(1_500, 2)
    path = tmp_path / "tokens.csv"
    path.write_bytes(first)
    monkeypatch.setattr(qio, "PARALLEL_CSV_BYTES", 1_000)
    digest_file = qio.digest_file

    def hash_then_rewrite(target):
        digest = digest_file(target)
        path.write_bytes(second)  # another writer, while the table is parsed
        return digest

    monkeypatch.setattr(qio, "digest_file", hash_then_rewrite)
    frame, digest = qio.load_table_digested(path, "tokens", text_columns=("token_id", "source", "hint"))
    assert digest.sha256 == hashlib.sha256(second).hexdigest()  # the table and its digest from one read
    assert len(frame) == 1_500 and digest.rows == 1_500


@pytest.mark.parametrize("text", [b" token_id, source\n a, n0\n b ,n1\n", b'[{"token_id": "a"}, {"token_id": "b"}]', b"\n \n"])
def test_a_large_file_read_from_its_path_parses_or_fails_as_its_bytes_do(tmp_path, monkeypatch, text):
    """Spaces after commas, JSON text under a .csv name, a blank file: the same table or error either way."""
    path = tmp_path / "tokens.csv"
    path.write_bytes(text)
    monkeypatch.setattr(qio, "PARALLEL_CSV_BYTES", 1)

    def outcome(load):
        try:
            return load()[0].to_dict("list")
        except qio.InputError as exc:
            return str(exc)

    by_path = outcome(lambda: qio.load_table_digested(path, "tokens", records_key="tokens", text_columns=("token_id",)))
    by_bytes = outcome(lambda: qio.load_table(text, name="tokens.csv", records_key="tokens", text_columns=("token_id",)))
    assert by_path == by_bytes
