"""Transfer rounds: every round is a matching, Koenig reaches the max degree on bipartite patterns, Kempe blocks are exact."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nvlink_helpers import brute_force_chromatic_index

from qflow.nvlink import pattern_traffic
from qflow.nvlink._rounds import (
    build_block,
    colour_transfers,
    empty_last_rounds,
    first_fit,
    is_proper,
    lower_bound,
    n_colours,
    rounds_of,
    solve_block_exactly,
    transfers_of,
)
from qflow.nvlink._sample import IRREGULAR_7, skewed_traffic


def assert_rounds_are_matchings(traffic: np.ndarray, rounds: list[list[dict]], full_duplex: bool) -> None:
    """No GPU twice in a round (no sender or receiver twice with full duplex); every transfer exactly once."""
    for transfers in rounds:
        if full_duplex:
            senders = [t["src"] for t in transfers]
            receivers = [t["dst"] for t in transfers]
            assert len(senders) == len(set(senders)) and len(receivers) == len(set(receivers))
        else:
            used = [r for t in transfers for r in (t["src"], t["dst"])]
            assert len(used) == len(set(used))
    seen = sorted((t["src"], t["dst"], t["bytes"]) for r in rounds for t in r)
    rows, cols = np.nonzero(traffic)
    assert seen == sorted(zip(rows.tolist(), cols.tolist(), traffic[rows, cols].tolist(), strict=True))


PATTERNS = {
    "all_to_all_8": pattern_traffic("all_to_all", 8, 1e6),
    "all_to_all_7": pattern_traffic("all_to_all", 7, 1e6),
    "ring_6": pattern_traffic("all_reduce", 6, 1e6),
    "ring_5": pattern_traffic("all_reduce", 5, 1e6),
    "pipeline_9": pattern_traffic("pipeline", 9, 1e6),
    "skewed_16": np.array(skewed_traffic(16, 4, 0)),
    "irregular_7": np.array(IRREGULAR_7, dtype=float),
}


@pytest.mark.parametrize("full_duplex", [False, True])
@pytest.mark.parametrize("name", list(PATTERNS))
def test_every_round_is_a_matching(name, full_duplex):
    traffic = PATTERNS[name]
    t = transfers_of(traffic, full_duplex)
    colour, _ = colour_transfers(t)
    colour, _ = empty_last_rounds(t, colour, solve_block_exactly, 16)
    assert is_proper(t, colour)
    assert_rounds_are_matchings(traffic, rounds_of(t, colour), full_duplex)
    assert n_colours(colour) >= lower_bound(t)


@pytest.mark.parametrize(("name", "full_duplex", "delta"), [
    ("pipeline_9", False, 4),    # a path: bipartite; the middle stages send and receive both ways
    ("ring_6", False, 2),        # an even ring: bipartite
    ("all_to_all_8", True, 7),   # full duplex: senders vs receivers is always bipartite
    ("all_to_all_7", True, 6),
    ("ring_5", True, 1),
    ("skewed_16", True, 4),
    ("irregular_7", True, 5),
])
def test_koenig_reaches_the_max_degree_on_bipartite_patterns(name, full_duplex, delta):
    t = transfers_of(PATTERNS[name], full_duplex)
    colour, method = colour_transfers(t)
    assert method == "koenig"
    assert lower_bound(t) == delta and n_colours(colour) == delta and is_proper(t, colour)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 9).flatmap(lambda n: st.lists(st.lists(st.integers(0, 3), min_size=n, max_size=n), min_size=n, max_size=n)))
def test_random_bipartite_multigraphs_take_max_degree_rounds(rows):
    """Any traffic with full duplex (a bipartite multigraph) gets exactly Delta rounds, each a matching."""
    traffic = np.array(rows, dtype=float)
    np.fill_diagonal(traffic, 0.0)
    t = transfers_of(traffic, full_duplex=True)
    colour, method = colour_transfers(t)
    assert method == "koenig" and is_proper(t, colour) and n_colours(colour) == lower_bound(t)


def test_odd_ring_needs_three_rounds_without_duplex():
    t = transfers_of(PATTERNS["ring_5"], full_duplex=False)
    colour, method = colour_transfers(t)
    assert method.startswith("first-fit") and lower_bound(t) == 2 and n_colours(colour) == 3
    assert brute_force_chromatic_index(t.ports, t.n_ports, 2) == 3


def test_greedy_baseline_is_proper_and_no_better_than_the_plan():
    for traffic in PATTERNS.values():
        for duplex in (False, True):
            t = transfers_of(traffic, duplex)
            greedy = first_fit(t, np.arange(t.m))
            assert is_proper(t, greedy)
            assert n_colours(colour_transfers(t)[0]) <= n_colours(greedy)


def test_kempe_blocks_remove_the_extra_round_of_the_irregular_sample():
    t = transfers_of(PATTERNS["irregular_7"], full_duplex=False)
    colour, _ = colour_transfers(t)
    assert n_colours(colour) == lower_bound(t) + 1 == 8
    better, stats = empty_last_rounds(t, colour, solve_block_exactly, 16)
    assert is_proper(t, better) and n_colours(better) == 7 and stats["rounds_removed"] == 1 and stats["blocks"] >= 1


def _conflicts(t, colour) -> int:
    return sum(1 for e, w in itertools.combinations(range(t.m), 2)
               if colour[e] == colour[w] for _ in set(t.ports[e].tolist()) & set(t.ports[w].tolist()))


def test_block_energy_counts_conflicts_exactly():
    """For every bitstring, the block's Ising energy equals the conflicts created among its members and fixed neighbours."""
    t = transfers_of(PATTERNS["irregular_7"], full_duplex=False)
    colour, _ = colour_transfers(t)
    at_port = [[e for e in range(t.m) if p in t.ports[e]] for p in range(t.n_ports)]
    last = n_colours(colour) - 1
    target = int(np.flatnonzero(colour == last)[0])
    checked = 0
    for a, b in itertools.permutations(range(last), 2):
        block = build_block(t, colour, at_port, target, a, b, max_size=16)
        members = block.members
        others = [e for e in range(t.m) if e not in members]
        base = _conflicts(t, np.where(np.isin(np.arange(t.m), others), colour, -1 - np.arange(t.m)))
        for bits in itertools.product((0, 1), repeat=len(members)):
            trial = colour.copy()
            for member, bit in zip(members, bits, strict=True):
                trial[member] = b if bit else a
            assert block.model.energy(np.array(bits)) == pytest.approx(_conflicts(t, trial) - base)
        checked += 1
        if checked >= 3:
            break
    assert checked == 3
