"""plan_attention end to end: the envelope contract, validation messages, loaders, the CLI, sample data."""

from __future__ import annotations

import io
import json
import math
import types
import typing

import annotated_types as at
import numpy as np
import pytest
import torch
from attention_helpers import SAMPLES, layer_weights, qkv

from qflow.attention import AttentionConfig, load_attention_inputs, npy_bytes, plan_attention, run_attention
from qflow.cli import main
from qflow.core.errors import InputError, QuantumUnavailableError
from qflow.core.plan import PLAN_SCHEMA, Plan, digest_bytes
from qflow.core.tensors import load_tensors

NUMERIC = [n for n, f in AttentionConfig.model_fields.items() if f.annotation in (int, float)]


def small_inputs():
    q, _, _ = qkv(n=24, d=16, sharp=1.0)
    return q, layer_weights()


class TestConfigContract:
    """The same contract tests/core/test_config_contract.py applies to routing."""

    def test_every_field_described_typed_and_bounded(self):
        for name, f in AttentionConfig.model_fields.items():
            assert (f.description or "").strip(), name
            assert f.annotation in (bool, int, float) or typing.get_origin(f.annotation) is typing.Literal, name
            assert not isinstance(f.annotation, types.UnionType)
        for name in NUMERIC:
            meta = AttentionConfig.model_fields[name].metadata
            assert any(isinstance(m, at.Ge | at.Gt) for m in meta) and any(isinstance(m, at.Le | at.Lt) for m in meta), name

    def test_toggles_are_the_issue_switches(self):
        assert AttentionConfig.toggles() == ["qaoa_sparse", "qpe_positions", "contrastive_trainer", "svd_pruner"]
        assert {"top_k", "heads", "prune_threshold", "max_qubits", "seed"} <= set(AttentionConfig.model_fields)

    def test_out_of_bounds_wrong_types_and_unknown_fields_rejected(self):
        for name in NUMERIC:
            for m in AttentionConfig.model_fields[name].metadata:
                bad = {at.Ge: lambda m: m.ge - 1, at.Gt: lambda m: m.gt, at.Le: lambda m: m.le + 1, at.Lt: lambda m: m.lt}
                for kind, make in bad.items():
                    if isinstance(m, kind):
                        with pytest.raises(InputError, match=rf"^a\.yaml: config\.{name}: invalid value; expected "):
                            AttentionConfig.from_mapping({name: make(m)}, "a.yaml")
            for value in (math.nan, math.inf, [1]):
                with pytest.raises(InputError, match=rf"config\.{name}: "):
                    AttentionConfig.from_mapping({name: value})
        with pytest.raises(InputError, match=r"config\.qaoa_sparse: "):
            AttentionConfig.from_mapping({"qaoa_sparse": "maybe"})
        with pytest.raises(InputError, match=r"config\.nope: unknown field"):
            AttentionConfig.from_mapping({"nope": 1})
        assert AttentionConfig.from_mapping(AttentionConfig().model_dump()) == AttentionConfig()


class TestPlan:
    def test_envelope_round_trip_and_config_echo(self):
        plan = plan_attention(*small_inputs(), {"top_k": 4, "heads": 4, "svd_pruner": True, "seed": 3})
        data = plan.to_dict()
        assert data["schema"] == PLAN_SCHEMA and data["module"] == "attention"
        assert Plan.from_json(plan.to_json()) == plan
        assert plan.config == AttentionConfig(top_k=4, svd_pruner=True, seed=3).model_dump()
        assert [d.name for d in plan.inputs] == ["embeddings", "weights"] and all(len(d.sha256) == 64 for d in plan.inputs)
        assert set(data["baselines"]) == {"dense", "random_k"}
        # 24 keys make one block of 32: nothing to prune, and the plan says so.
        assert data["solver"] == {"requested": "topk_bounds+svd_prune", "ran": "topk_dense+svd_prune", "quantum": None,
                                  "fallbacks": [{"from": "topk_bounds+svd_prune", "to": "topk_dense+svd_prune",
                                                 "reason": "1 key blocks: too few to prune"}]}
        assert plan.metrics["scores_computed_fraction"] == 1.0

    def test_same_seed_same_plan(self):
        config = {"top_k": 4, "contrastive_trainer": True, "train_steps": 5, "svd_pruner": True, "seed": 5}
        first, second = (plan_attention(*small_inputs(), config).to_dict() for _ in range(2))
        for volatile in ("created_at", "timings_s"):
            first.pop(volatile), second.pop(volatile)
        assert first == second

    def test_result_carries_shape_and_hash_of_the_embeddings_not_the_numbers(self):
        x, w = small_inputs()
        run = run_attention(x, w, {"top_k": 6})
        info = run.plan.result["updated_embeddings"]
        assert info["shape"] == [24, 16] and info["sha256"] == digest_bytes(npy_bytes(run.embeddings))
        assert run.selected_keys.shape == (24, 6)
        assert run.plan.result["selected_key_indices"]["indices"] == run.selected_keys.tolist()
        ref = torch.nn.functional.scaled_dot_product_attention(*(torch.from_numpy(x)[None],) * 3)[0].numpy()
        err = np.linalg.norm(run.embeddings - ref) / np.linalg.norm(ref)
        assert run.plan.metrics["relative_error"] == pytest.approx(err, rel=1e-4)
        assert run.plan.baselines["random_k"]["relative_error"] > run.plan.metrics["relative_error"]

    def test_all_toggles_on_the_sample(self):
        emb, w, digests = load_attention_inputs(SAMPLES / "embeddings.npy", SAMPLES / "attention_weights.safetensors")
        plan = plan_attention(emb, w, {"qaoa_sparse": True, "qpe_positions": True, "contrastive_trainer": True,
                                       "svd_pruner": True, "qaoa_queries": 1, "qaoa_steps": 30, "max_qubits": 9,
                                       "train_steps": 10}, digests=digests)
        m, r = plan.metrics, plan.result
        assert plan.solver.requested == "topk_bounds+qaoa+qpe+infonce+svd_prune"
        # 256 keys in 8 blocks: too few for bounds to pay for their work, so it is dense, and said so.
        assert plan.solver.ran == "topk_dense+qaoa+qpe+infonce+svd_prune"
        assert plan.solver.fallbacks[0].reason == r["topk_search"]["reason"] and "scored densely" in r["topk_search"]["reason"]
        assert m["qpe_recovery_accuracy"] == 1.0 and m["position_encoding_relative_error"] == 0.0  # 2^8 >= 256
        assert m["infonce_final"] < m["infonce_initial"]
        # The sample's trained layer: two heads carry the lag-3 copy, two were shrunk by the group lasso.
        assert r["heads"]["pruned"] == [0, 1] and m["layer_output_relative_change"] < 1e-3
        assert m["params_saved"] == 2 * (4 * 64 * 16 + 3 * 16)
        row = r["qaoa_topk"][0]
        assert row["adopted"] and set(row["used"]) == set(row["exact"]) and plan.solver.quantum.exact_checked == [True]
        assert set(row["used"]) <= set(r["selected_key_indices"]["indices"][0])  # the output's selection holds QAOA's pick
        assert plan.solver.quantum.qubits_per_circuit == [9, 9]  # QPE (8 counting + 1), QAOA window of 9 keys

    def test_quantum_unavailable_falls_back_and_says_so(self, monkeypatch):
        def refuse(*args, **kwargs):
            raise QuantumUnavailableError("pennylane is not installed")

        monkeypatch.setattr("qflow.core.skeleton.choose_device", refuse)
        plan = plan_attention(qkv(n=16)[0], None, {"top_k": 4, "qaoa_sparse": True, "qpe_positions": True})
        reasons = [(f.from_, f.to, f.reason) for f in plan.solver.fallbacks]
        assert reasons == [
            ("topk_bounds+qaoa+qpe", "topk_bounds+qaoa+qpe_classical", "pennylane is not installed"),
            ("topk_bounds+qaoa+qpe_classical", "topk_dense+qaoa+qpe_classical", "1 key blocks: too few to prune"),
            ("topk_dense+qaoa+qpe_classical", "topk_dense+qpe_classical+qaoa_classical", "pennylane is not installed")]
        assert plan.solver.ran == "topk_dense+qpe_classical+qaoa_classical"
        assert all("overlap" not in row and row["used"] == row["exact"] and not row["adopted"] for row in plan.result["qaoa_topk"])
        assert plan.solver.quantum is None and plan.metrics["qpe_recovery_accuracy"] is None

    def test_time_budget_exceeded_is_a_recorded_fallback(self, monkeypatch):
        monkeypatch.setenv("QFLOW_QUANTUM_TIME_BUDGET_S", "0")
        plan = plan_attention(qkv(n=16)[0], None, {"top_k": 4, "qaoa_sparse": True, "qaoa_queries": 1})
        assert plan.solver.ran == "topk_dense+qaoa_classical"
        assert "time budget" in plan.solver.fallbacks[-1].reason
        assert plan.result["qaoa_topk"][0]["used"] == plan.result["qaoa_topk"][0]["exact"]


class TestValidation:
    def test_nan_named_with_its_position(self):
        x = qkv(n=10)[0]
        x[3, 2] = np.nan
        with pytest.raises(InputError, match=r"^emb\.npy: embeddings\[3, 2\]: not a finite number; expected finite"):
            plan_attention(x, config={"top_k": 2}, digests=[load_tensors(npy_bytes(x), "emb.npy")[1].digest("embeddings")])

    def test_top_k_larger_than_the_sequence(self):
        with pytest.raises(InputError, match=r"config\.top_k: larger than the sequence; expected at most 10 .*, got 11"):
            plan_attention(qkv(n=10)[0], config={"top_k": 11})

    @pytest.mark.parametrize("arrays, match", [
        ({"q": np.ones((4, 3)), "k": np.ones((5, 2)), "v": np.ones((5, 2))}, r"q: shape mismatch with keys; expected width d = 2"),
        ({"q": np.ones((4, 2)), "k": np.ones((5, 2)), "v": np.ones((6, 2))}, r"v: shape mismatch with keys; expected 5 rows"),
        ({"q": np.ones((4, 2)), "k": np.ones((5, 2))}, r"v: missing array"),
        ({"array": np.ones((2, 3, 4))}, r"wrong number of dimensions; expected a 2-D array"),
    ])
    def test_shape_errors(self, arrays, match):
        with pytest.raises(InputError, match=match):
            plan_attention(arrays, config={"top_k": 1})

    def test_weights_of_the_wrong_width_or_head_count(self):
        x = qkv(n=8, d=8)[0]
        with pytest.raises(InputError, match=r"weights: q_proj\.weight: shape mismatch with the embeddings; expected shape "
                           r"\(heads \* head_dim, 8\)"):
            plan_attention(x, layer_weights(d=16), {"top_k": 2})
        with pytest.raises(InputError, match=r"n_heads: does not divide the model width; expected a divisor of d = 8, got 3"):
            plan_attention(x, {k: v for k, v in layer_weights(d=8).items() if k != "n_heads"}, {"top_k": 2, "heads": 3})
        # The file's own head count wins over the setting, and the plan says so.
        plan = plan_attention(x, layer_weights(d=8, heads=2), {"top_k": 2, "heads": 8})
        assert plan.result["heads"]["layers"][0]["n_heads"] == 2
        assert "heads = 8 has no effect: head counts come from the weights file (n_heads)" in plan.diagnostics
        with pytest.raises(InputError, match=r"svd_pruner needs the attention layer's weights"):
            plan_attention(x, None, {"top_k": 2, "svd_pruner": True})


class TestLoaders:
    def test_every_format_loads_the_same_arrays(self, tmp_path):
        x = qkv(n=6, d=4)[0]
        from safetensors.numpy import save

        np.save(tmp_path / "a.npy", x)
        np.savez(tmp_path / "b.npz", q=x, k=x, v=x)
        torch.save({"embeddings": torch.from_numpy(x)}, tmp_path / "c.pt")
        (tmp_path / "d.safetensors").write_bytes(save({"embeddings": x}))
        for name in ("a.npy", "b.npz", "c.pt", "d.safetensors"):
            arrays, raw = load_tensors(tmp_path / name)
            assert all(np.array_equal(a, x) for a in arrays.values()), name
            assert raw.name == name

    def test_pickles_and_unknown_types_are_refused(self, tmp_path):
        np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        with pytest.raises(InputError, match=r"^obj\.npy: \(file\): not a plain \.npy array"):
            load_tensors(tmp_path / "obj.npy")
        buffer = io.BytesIO()
        torch.save({"w": torch.ones(2), "f": io.StringIO}, buffer)  # a class reference: not weights-only
        with pytest.raises(InputError, match=r"^m\.pt: \(file\): not a weights-only torch file"):
            load_tensors(buffer.getvalue(), "m.pt")
        with pytest.raises(InputError, match=r"unsupported file type"):
            load_tensors(b"1,2,3", "x.csv")
        with pytest.raises(InputError, match=r"file too large"):
            from qflow.core.io import read_input

            read_input(tmp_path / "obj.npy", max_bytes=10)


class TestCli:
    def run(self, monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    def test_acceptance_command_writes_plan_and_embeddings(self, monkeypatch, capsys, tmp_path):
        out = tmp_path / "plan.json"
        code, stdout, _ = self.run(monkeypatch, capsys, "attention", "--embeddings", str(SAMPLES / "embeddings.npy"),
                                   "--top-k", "32", "--out", str(out))
        assert code == 0
        plan = json.loads(out.read_text())
        npy = tmp_path / "plan.embeddings.npy"
        assert plan["result"]["updated_embeddings"]["file"] == "plan.embeddings.npy"
        assert digest_bytes(npy.read_bytes()) == plan["result"]["updated_embeddings"]["sha256"]
        assert np.load(npy).shape == (256, 64)
        assert f"written to {npy}" in stdout and "top-k" in stdout and "random-k" in stdout
        assert plan["metrics"]["relative_error"] < 0.05 < plan["baselines"]["random_k"]["relative_error"]

    @pytest.mark.parametrize("make, flags, message", [
        (lambda x: x.__setitem__((0, 0), np.nan) or x, ["--top-k", "4"], "error: bad.npy: embeddings[0, 0]: not a finite number"),
        (lambda x: x, ["--top-k", "300"], "error: bad.npy: config.top_k: larger than the sequence; expected at most 256"),
        (lambda x: x[:, :32], ["--weights", str(SAMPLES / "attention_weights.safetensors")],
         "error: attention_weights.safetensors: q_proj.weight: shape mismatch with the embeddings; expected shape "
         "(heads * head_dim, 32)"),
    ])
    def test_bad_inputs_exit_2_with_one_line(self, monkeypatch, capsys, tmp_path, make, flags, message):
        x = np.load(SAMPLES / "embeddings.npy")
        np.save(tmp_path / "bad.npy", make(x.copy()))
        code, _, err = self.run(monkeypatch, capsys, "attention", "--embeddings", str(tmp_path / "bad.npy"), *flags)
        assert code == 2
        assert err.startswith(message) and err.count("\n") == 1, err


def test_sample_data_is_small_and_the_layer_is_trained():
    files = sorted(SAMPLES.iterdir())
    assert [f.name for f in files] == ["attention_weights.safetensors", "embeddings.npy"]
    assert sum(f.stat().st_size for f in files) < 2 * 2**20
    arrays, _ = load_tensors(SAMPLES / "attention_weights.safetensors")
    assert int(arrays["n_heads"]) == 4 and arrays["q_proj.weight"].shape == (64, 64)
