"""Limits before work, cancel through progress, max_qubits up to 24, settings that cannot act, QAOA's pick in the output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from attention_helpers import qkv

import qflow.attention._plan as planmod
import qflow.attention._quantum as quantummod
from qflow.attention import plan_attention, run_attention
from qflow.attention._quantum import read_topk, topk_energy_range, topk_model
from qflow.core.limits import LimitExceededError
from qflow.core.qaoa import QaoaResult, solve_exact
from qflow.core.quantum import HARD_MAX_QUBITS


class Cancelled(Exception):
    pass


def test_work_over_the_attention_limit_is_refused_before_any_scoring(monkeypatch):
    monkeypatch.setenv("QFLOW_MAX_ATTENTION_CELLS", str(64 * 64 * 32 - 1))

    def must_not_run(*args, **kwargs):
        raise AssertionError("scoring started")

    monkeypatch.setattr(planmod, "sparse_attention", must_not_run)
    with pytest.raises(LimitExceededError, match=r"^embeddings: \(shapes q 64x16, k 64x16, v 64x16\): over the "
                       r"attention_cells limit .*QFLOW_MAX_ATTENTION_CELLS.*expected at most 131,071, got 131,072"):
        plan_attention(qkv(n=64, d=16, d_v=16)[0], config={"top_k": 4})
    monkeypatch.setenv("QFLOW_MAX_ATTENTION_CELLS", str(64 * 64 * 32))
    monkeypatch.undo()
    assert plan_attention(qkv(n=64, d=16, d_v=16)[0], config={"top_k": 4}).metrics["n_keys"] == 64


def test_a_cancel_raised_from_progress_stops_inside_the_sparse_stage():
    calls = []

    def progress(fraction, message):
        calls.append(message)
        if message == "sparse top-k attention" and calls.count(message) == 2:
            raise Cancelled

    x = qkv(n=2500, d=8, seed=1)[0]  # several query tiles: a report after each
    with pytest.raises(Cancelled):
        plan_attention(x, config={"top_k": 4}, progress=progress)
    assert "dense attention (baseline)" not in calls


class TestLargeWindows:
    @pytest.mark.parametrize("seed", range(4))
    def test_closed_form_range_equals_brute_force(self, seed):
        rng = np.random.default_rng(seed)
        scores = np.round(rng.normal(size=10), 1)  # rounded: some equal scores
        for k in (1, 3, 5):
            bits, best, worst = topk_energy_range(scores, k)
            _, brute_best, brute_worst = solve_exact(topk_model(scores, k))
            assert best == pytest.approx(brute_best) and worst == pytest.approx(brute_worst)
            assert topk_model(scores, k).energy(bits) == pytest.approx(brute_best) and bits.sum() == k

    def test_read_out_of_a_21_qubit_distribution(self):
        rng = np.random.default_rng(0)
        scores = rng.normal(size=21)
        exact = np.sort(np.argsort(-scores)[:7])
        probs = np.full(1 << 21, 1e-9)
        best = int(sum(1 << (20 - i) for i in exact))  # wire 0 is the most significant bit
        probs[best] = 0.5
        out = read_topk(probs, scores, 7)
        assert out["qaoa"] == exact.tolist() and out["optimal"] and out["ratio"] == pytest.approx(1.0)

    def test_max_qubits_up_to_the_documented_cap_runs(self, monkeypatch):
        """The circuit itself is replaced by its perfect outcome: what is tested is everything around it at 24 qubits."""
        def perfect_qaoa(model, layers, device, budget, **kwargs):
            return QaoaResult(bits=np.zeros(model.n, dtype=int), energy=0.0, expectation_history=[0.0], steps=1,
                              circuits_run=1, probability=1.0, angles=np.zeros((2, layers)), n_qubits=model.n)

        def perfect_probs(model, angles, layers, device):
            """All weight on the top-k bitstring of the scores the window was given."""
            chosen = np.argsort(-perfect_probs.scores, kind="stable")[:perfect_probs.k]
            probs = np.zeros(1 << model.n)
            probs[int(sum(1 << (model.n - 1 - i) for i in chosen))] = 1.0
            return probs

        original = quantummod.qaoa_topk

        def capture(scores, k, *args, **kwargs):
            perfect_probs.scores, perfect_probs.k = np.asarray(scores), k
            return original(scores, k, *args, **kwargs)

        monkeypatch.setattr(quantummod, "run_qaoa", perfect_qaoa)
        monkeypatch.setattr(quantummod, "_final_probs", perfect_probs)
        monkeypatch.setattr(planmod, "qaoa_topk", capture)
        plan = plan_attention(qkv(n=40, d=8)[0], config={"top_k": 10, "qaoa_sparse": True, "qaoa_queries": 1,
                                                         "max_qubits": HARD_MAX_QUBITS})
        row = plan.result["qaoa_topk"][0]
        assert len(row["candidates"]) == 24 and row["slots"] == 8
        assert row["optimal"] and row["adopted"] and row["used"] == row["exact"]
        assert plan.solver.ran.endswith("+qaoa") and plan.solver.quantum.qubits_per_circuit == [24]


class TestQaoaPickIsWhatTheOutputUses:
    def test_an_adopted_pick_replaces_the_last_slots_of_the_query(self, monkeypatch):
        q, k, v = qkv(n=30, d=8, seed=2)
        arrays = {"q": q, "k": k, "v": v}
        plain = run_attention(arrays, config={"top_k": 6})

        def claims_optimal(scores, k_sub, *args, **kwargs):
            worst = np.argsort(scores, kind="stable")[:k_sub]  # deliberately the lowest candidates
            return {"qaoa": np.sort(worst).tolist(), "exact": [], "used": np.sort(worst).tolist(), "overlap": 0.0,
                    "optimal": True, "ratio": 1.0, "probability": 1.0, "feasible_probability": 1.0,
                    "argmax_feasible": True, "qubits": len(scores), "circuits": 1, "steps": 1, "history": [0.0]}

        monkeypatch.setattr(planmod, "qaoa_topk", claims_optimal)
        run = run_attention(arrays, config={"top_k": 6, "qaoa_sparse": True, "qaoa_queries": 1, "max_qubits": 6})
        row = run.plan.result["qaoa_topk"][0]
        assert row["adopted"] and set(row["used"]) != set(row["exact"])
        assert set(row["used"]) <= set(run.selected_keys[0].tolist())
        assert not np.allclose(run.embeddings[0], plain.embeddings[0])  # the output row follows QAOA's pick
        assert np.array_equal(run.embeddings[1:], plain.embeddings[1:])
        scores = torch.from_numpy(k) @ torch.from_numpy(q[0]) / np.sqrt(8)
        chosen = torch.from_numpy(run.selected_keys[0])
        expected = torch.softmax(scores[chosen], dim=0) @ torch.from_numpy(v)[chosen]
        assert np.allclose(run.embeddings[0], expected.numpy(), atol=1e-6)

    def test_a_missed_pick_is_not_used_and_the_path_says_so(self, monkeypatch):
        def misses(scores, k_sub, *args, **kwargs):
            exact = np.sort(np.argsort(-scores, kind="stable")[:k_sub]).tolist()  # what qaoa_topk uses when not optimal
            return {"qaoa": list(range(k_sub)), "exact": exact, "used": exact, "overlap": 0.0, "optimal": False, "ratio": 0.5,
                    "probability": 0.1, "feasible_probability": 0.5, "argmax_feasible": False, "qubits": len(scores),
                    "circuits": 1, "steps": 1, "history": [0.0]}

        monkeypatch.setattr(planmod, "qaoa_topk", misses)
        x = qkv(n=30, d=8, seed=3)[0]
        plain = run_attention(x, config={"top_k": 6})
        run = run_attention(x, config={"top_k": 6, "qaoa_sparse": True, "qaoa_queries": 2, "max_qubits": 6})
        assert run.plan.solver.ran.endswith("+qaoa_classical")
        assert "QAOA missed the exact top-k on all 2 windows" in run.plan.solver.fallbacks[-1].reason
        assert all(not r["adopted"] and r["used"] == r["exact"] for r in run.plan.result["qaoa_topk"])
        assert np.allclose(run.embeddings, plain.embeddings, atol=1e-6)


class TestSettingsThatCannotAct:
    def test_each_idle_setting_gets_a_diagnostic(self):
        plan = plan_attention(qkv(n=16)[0], config={"top_k": 4, "qaoa_steps": 50, "train_steps": 7, "max_qubits": 12,
                                                      "heads": 2, "topk_bounds_limit": 0, "key_block": 8})
        notes = plan.diagnostics
        assert "qaoa_steps = 50 has no effect: qaoa_sparse is off" in notes
        assert "train_steps = 7 has no effect: contrastive_trainer is off" in notes
        assert "max_qubits = 12 has no effect: qaoa_sparse and qpe_positions are off" in notes
        assert "heads = 2 has no effect: no weights file was given" in notes
        assert "key_block = 8 has no effect: topk_bounds_limit is 0 (every key is scored)" in notes
        assert plan.solver.ran == "topk_dense" and not plan.solver.fallbacks

    def test_defaults_and_active_settings_get_none(self):
        plan = plan_attention(qkv(n=16)[0], config={"top_k": 4, "contrastive_trainer": True, "train_steps": 3})
        assert not [d for d in plan.diagnostics if "has no effect" in d]

    def test_qaoa_with_every_key_selected_says_it_has_nothing_to_choose(self):
        plan = plan_attention(qkv(n=8)[0], config={"top_k": 8, "qaoa_sparse": True})
        assert any("qaoa_sparse has no effect: top_k = 8 keeps every one of the 8 keys" in d for d in plan.diagnostics)
        assert plan.result["qaoa_topk"] == []


def test_contrastive_training_work_is_limited_and_cancellable(monkeypatch):
    x = qkv(n=64, d=16, d_v=16)[0]
    monkeypatch.setenv("QFLOW_MAX_ATTENTION_CELLS", str(3 * 100 * 64 * 64 * 16 - 1))
    with pytest.raises(LimitExceededError, match=r"\(contrastive trainer: 100 steps x 64\^2 pairs x width 16 x 3\)"):
        plan_attention(x, config={"top_k": 4, "contrastive_trainer": True, "train_steps": 100})
    monkeypatch.delenv("QFLOW_MAX_ATTENTION_CELLS")
    seen = []

    def progress(fraction, message):
        if message == "contrastive training (InfoNCE)":
            seen.append(fraction)
            if len(seen) == 5:
                raise Cancelled

    with pytest.raises(Cancelled):
        plan_attention(x, config={"top_k": 4, "contrastive_trainer": True, "train_steps": 100}, progress=progress)
    assert seen == sorted(seen) and seen[-1] < 0.3  # stopped after a few of the 100 steps
