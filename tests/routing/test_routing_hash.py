"""Hash routing: a stable blake2b of the token id, bounded loads, no dependence on row order or process."""

from __future__ import annotations

import hashlib
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


def blake_home(token_id: object, n_experts: int) -> int:
    digest = hashlib.blake2b(str(token_id).encode("utf-8"), digest_size=8, person=b"qflow-route").digest()
    return int.from_bytes(digest, "big") % n_experts


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
        home = blake_home(token, n_experts)
        expert = plan.result["assignments"][token]
        steps = (int(expert[1:]) - home) % n_experts if expert is not None else n_experts
        bad += [f"{token} skipped e{(home + j) % n_experts}" for j in range(steps) if room[f"e{(home + j) % n_experts}"] >= weight]
    return bad


class TestHashExperts:
    @pytest.mark.parametrize("n_experts", [1, 3, 64, 1000])
    def test_equals_independent_blake2b(self, n_experts):
        ids = np.array(["tok-1", "tok-2", "", "ünïcødé", "7", 7, 3.5, "a" * 300], dtype=object)
        expected = [blake_home(t, n_experts) for t in ids]
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
        assert plan.result["assignments"] == {t: f"e{blake_home(t, 4)}" for t in tokens["token_id"]}

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
