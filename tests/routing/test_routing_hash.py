"""Hash routing: a stable SipHash of the token id, bounded loads, no dependence on row order or process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from routing_helpers import check_plan_consistency, make_graph, make_tokens

from qflow.routing import plan_routing
from qflow.routing._classical import hash_experts

HASH = {"deterministic_fallback": True, "baselines": False, "exact_max_tokens": 0}


MASK = 2**64 - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & MASK


def siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4 (Aumasson & Bernstein), written from the paper: the reference the engine's hash must match."""
    k0, k1 = int.from_bytes(key[:8], "little"), int.from_bytes(key[8:16], "little")
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D, k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]

    def rounds(count: int) -> None:
        for _ in range(count):
            v[0] = (v[0] + v[1]) & MASK; v[1] = _rotl(v[1], 13) ^ v[0]; v[0] = _rotl(v[0], 32)  # noqa: E702
            v[2] = (v[2] + v[3]) & MASK; v[3] = _rotl(v[3], 16) ^ v[2]  # noqa: E702
            v[0] = (v[0] + v[3]) & MASK; v[3] = _rotl(v[3], 21) ^ v[0]  # noqa: E702
            v[2] = (v[2] + v[1]) & MASK; v[1] = _rotl(v[1], 17) ^ v[2]; v[2] = _rotl(v[2], 32)  # noqa: E702

    tail = len(data) % 8
    blocks = [int.from_bytes(data[i:i + 8], "little") for i in range(0, len(data) - tail, 8)]
    blocks.append(int.from_bytes(data[len(data) - tail:], "little") | ((len(data) & 0xFF) << 56))
    for m in blocks:
        v[3] ^= m
        rounds(2)
        v[0] ^= m
    v[2] ^= 0xFF
    rounds(4)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def splitmix_finish(x: int) -> int:
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & MASK
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def stable_home(token_id: object, n_experts: int) -> int:
    """The documented hash: SipHash-2-4 of the UTF-8 id under pandas' fixed key, SplitMix64-finished, mod experts."""
    return splitmix_finish(siphash24(b"0123456789123456", str(token_id).encode("utf-8"))) % n_experts


def ring_violations(plan, tokens, n_experts: int) -> list[str]:
    """Tokens that skipped (or, dropped, never used) an expert with room for them.

    Consistent hashing with bounded loads: a token leaves its home expert only
    for the next experts in ring order, and only past experts too full for it.
    Rooms only shrink while tokens are placed, so the final room of every
    skipped expert must be smaller than the token's complexity.
    """
    capacity = plan.result["expert_capacity"]
    room = {e: capacity[e] - load for e, load in zip(capacity, plan.metrics["expert_load"], strict=True)}
    bad = []
    for token, weight in zip(tokens["token_id"], tokens["complexity"], strict=True):
        home = stable_home(token, n_experts)
        expert = plan.result["assignments"][token]
        steps = (int(expert[1:]) - home) % n_experts if expert is not None else n_experts
        bad += [f"{token} skipped e{(home + j) % n_experts}" for j in range(steps) if room[f"e{(home + j) % n_experts}"] >= weight]
    return bad


class TestHashExperts:
    def test_reference_siphash_matches_the_papers_vector(self):
        # Appendix A of the SipHash paper: key 00..0f, message 00..0e -> a129ca6149be45e5.
        assert siphash24(bytes(range(16)), bytes(range(15))) == 0xA129CA6149BE45E5

    @pytest.mark.parametrize("n_experts", [1, 3, 64, 1000])
    def test_equals_independent_siphash(self, n_experts):
        ids = np.array(["tok-1", "tok-2", "", "ünïcødé", "7", 7, 3.5, "a" * 300], dtype=object)
        expected = [stable_home(t, n_experts) for t in ids]
        assert hash_experts(ids, n_experts).tolist() == expected

    def test_spreads_ids_over_experts(self):
        homes = hash_experts(np.array([f"t{i}" for i in range(4000)], dtype=object), 8)
        counts = np.bincount(homes, minlength=8)
        assert counts.min() > 400 and counts.max() < 600  # ~500 each; a broken hash piles up

    def test_same_in_processes_with_different_hash_seeds(self, tmp_path: Path):
        tokens = make_tokens(40, 4, seed=12)
        tokens.to_csv(tmp_path / "tokens.csv", index=False)
        (tmp_path / "graph.json").write_text(json.dumps(make_graph(2, 2)))
        script = (
            "import json, sys\n"
            "from qflow.routing import load_routing_inputs, plan_routing\n"
            "frame, graph, digests = load_routing_inputs(sys.argv[1], sys.argv[2])\n"
            f"plan = plan_routing(frame, graph, {HASH!r} | {{'capacity_factor': 1.0}}, digests=digests)\n"
            "print(json.dumps(plan.result['assignments']))\n"
        )
        runs = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(tmp_path / "tokens.csv"), str(tmp_path / "graph.json")],
                env={**os.environ, "PYTHONHASHSEED": seed}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for seed in ("1", "987654")
        ]
        outputs = [run.communicate(timeout=120) for run in runs]
        assert all(run.returncode == 0 for run in runs), [err for _, err in outputs]
        here = plan_routing(tokens, make_graph(2, 2), {**HASH, "capacity_factor": 1.0}).result["assignments"]
        assert [json.loads(out) for out, _ in outputs] == [here, here]


class TestHashPlan:
    def test_ample_capacity_is_plain_hashing(self):
        tokens = make_tokens(50, 4, seed=3, heavy=0.3)
        plan = plan_routing(tokens, make_graph(2, 2), {**HASH, "capacity_factor": 8.0})
        assert plan.solver.ran == "hash" and plan.solver.requested == "hash"
        assert plan.result["assignments"] == {t: f"e{stable_home(t, 4)}" for t in tokens["token_id"]}

    def test_ignores_scores(self):
        tokens = make_tokens(30, 4, seed=4)
        flipped = tokens.assign(**{f"score_{e}": tokens[f"score_{3 - e}"] for e in range(4)})
        graph = make_graph(2, 2)
        assert (
            plan_routing(tokens, graph, {**HASH, "capacity_factor": 1.0}).result["assignments"]
            == plan_routing(flipped, graph, {**HASH, "capacity_factor": 1.0}).result["assignments"]
        )

    @pytest.mark.parametrize("capacity_factor", [0.5, 1.0, 1.25])
    def test_stable_under_row_shuffling(self, capacity_factor):
        tokens = make_tokens(64, 4, seed=5, heavy=0.3)
        graph = make_graph(2, 2)
        plan = plan_routing(tokens, graph, {**HASH, "capacity_factor": capacity_factor})
        for seed in range(3):
            shuffled = tokens.sample(frac=1.0, random_state=seed).reset_index(drop=True)
            again = plan_routing(shuffled, graph, {**HASH, "capacity_factor": capacity_factor})
            assert again.result["assignments"] == plan.result["assignments"]  # same token -> same expert
            assert sorted(again.result["dropped"]["token_ids"]) == sorted(plan.result["dropped"]["token_ids"])

    @pytest.mark.parametrize("capacity_factor", [0.4, 0.8, 1.0, 1.5])
    def test_bounded_loads_respect_capacity_and_ring_order(self, capacity_factor):
        for seed in range(4):
            tokens = make_tokens(37, 4, seed=seed)
            plan = plan_routing(tokens, make_graph(2, 2), {**HASH, "capacity_factor": capacity_factor})
            check_plan_consistency(plan, tokens)
            assert ring_violations(plan, tokens, 4) == []

    def test_mixed_complexity_respects_capacity(self):
        for seed in range(4):
            tokens = make_tokens(45, 4, seed=seed, heavy=0.4)
            plan = plan_routing(tokens, make_graph(2, 2), {**HASH, "capacity_factor": 1.0})
            check_plan_consistency(plan, tokens)

    def test_mixed_complexity_ring_order(self):
        violations = []
        for seed in range(8):
            tokens = make_tokens(37, 4, seed=seed, heavy=0.4)
            plan = plan_routing(tokens, make_graph(2, 2), {**HASH, "capacity_factor": 1.0})
            violations += ring_violations(plan, tokens, 4)
        assert violations == []
