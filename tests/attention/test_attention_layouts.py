"""The head pruner on real checkpoint layouts: BERT and Llama/Mistral (grouped-query), every layer, pruned checkpoint round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from attention_helpers import qkv

from qflow.attention import load_attention_inputs, run_attention
from qflow.attention._checkpoint import parse_checkpoint
from qflow.attention._classical import head_report, layer_forward
from qflow.cli import main
from qflow.core.errors import InputError

D, DH = 16, 4


def reference_layer(x: np.ndarray, q, k, v, o, bq, bk, bv, bo, n_heads: int, n_kv: int) -> np.ndarray:
    """Grouped-query attention written out head by head in float64 (independent of the code under test)."""
    x = x.astype(np.float64)
    dh = q.shape[0] // n_heads
    group = n_heads // n_kv
    out = np.tile(bo.astype(np.float64), (x.shape[0], 1))
    for h in range(n_heads):
        g = h // group
        qh = x @ q[h * dh:(h + 1) * dh].T + bq[h * dh:(h + 1) * dh]
        kh = x @ k[g * dh:(g + 1) * dh].T + bk[g * dh:(g + 1) * dh]
        vh = x @ v[g * dh:(g + 1) * dh].T + bv[g * dh:(g + 1) * dh]
        s = qh @ kh.T / np.sqrt(dh)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        out += (p @ vh) @ o[:, h * dh:(h + 1) * dh].T
    return out


def bert_state(layers=2, heads=4, dead=((0, 1),), seed=0) -> dict[str, np.ndarray]:
    """A BERT-style state dict (with the embedding and MLP arrays a real one has); heads in ``dead`` write nothing."""
    rng = np.random.default_rng(seed)
    state = {"embeddings.word_embeddings.weight": rng.normal(size=(30, D)).astype(np.float32)}
    for i in range(layers):
        pre = f"encoder.layer.{i}.attention."
        for name in ("self.query", "self.key", "self.value", "output.dense"):
            state[f"{pre}{name}.weight"] = (rng.normal(size=(D, D)) / 4).astype(np.float32)
            state[f"{pre}{name}.bias"] = (0.1 * rng.normal(size=D)).astype(np.float32)
        state[f"encoder.layer.{i}.intermediate.dense.weight"] = rng.normal(size=(32, D)).astype(np.float32)
    for layer, head in dead:
        pre = f"encoder.layer.{layer}.attention."
        state[f"{pre}self.value.weight"][head * DH:(head + 1) * DH] = 0
        state[f"{pre}self.value.bias"][head * DH:(head + 1) * DH] = 0
        state[f"{pre}output.dense.weight"][:, head * DH:(head + 1) * DH] = 0
    return state


def llama_state(layers=2, heads=4, kv_heads=2, dead=((1, 2), (1, 3), (0, 0)), seed=1) -> dict[str, np.ndarray]:
    """A Llama-style state dict without biases; query heads in ``dead`` have zero o columns."""
    rng = np.random.default_rng(seed)
    state = {"model.embed_tokens.weight": rng.normal(size=(30, D)).astype(np.float32)}
    for i in range(layers):
        pre = f"model.layers.{i}.self_attn."
        state[pre + "q_proj.weight"] = (rng.normal(size=(heads * DH, D)) / 4).astype(np.float32)
        state[pre + "k_proj.weight"] = (rng.normal(size=(kv_heads * DH, D)) / 4).astype(np.float32)
        state[pre + "v_proj.weight"] = (rng.normal(size=(kv_heads * DH, D)) / 4).astype(np.float32)
        state[pre + "o_proj.weight"] = (rng.normal(size=(D, heads * DH)) / 4).astype(np.float32)
        state[f"model.layers.{i}.mlp.gate_proj.weight"] = rng.normal(size=(32, D)).astype(np.float32)
    for layer, head in dead:
        state[f"model.layers.{layer}.self_attn.o_proj.weight"][:, head * DH:(head + 1) * DH] = 0
    return state


def write_model(folder, state, config) -> None:
    from safetensors.numpy import save

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(save(state))
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture
def x() -> np.ndarray:
    return qkv(n=12, d=D, seed=4)[0] * 0.5


class TestParsing:
    def test_bert_layers_and_the_layer_output(self, x):
        state = bert_state()
        checkpoint = parse_checkpoint({**state, "config.num_attention_heads": np.array(4)}, D, heads=1)
        assert checkpoint.layout == "bert" and [layer.index for layer in checkpoint.layers] == [0, 1]
        assert checkpoint.heads_from == "weights file (config.num_attention_heads)"
        for layer in checkpoint.layers:
            pre = f"encoder.layer.{layer.index}.attention."
            args = [state[pre + n] for n in ("self.query.weight", "self.key.weight", "self.value.weight", "output.dense.weight",
                                               "self.query.bias", "self.key.bias", "self.value.bias", "output.dense.bias")]
            assert np.allclose(layer_forward(x, layer).numpy(), reference_layer(x, *args, 4, 4), atol=1e-5)

    def test_llama_grouped_query_layers_and_the_layer_output(self, x):
        state = llama_state()
        checkpoint = parse_checkpoint({**state, "config.num_attention_heads": np.array(4),
                                       "config.num_key_value_heads": np.array(2)}, D, heads=1)
        assert checkpoint.layout == "llama"
        layer = checkpoint.layers[1]
        assert (layer.n_heads, layer.n_kv_heads, layer.group, layer.d_head) == (4, 2, 2, DH)
        pre = "model.layers.1.self_attn."
        zeros = np.zeros(4 * DH, dtype=np.float32)
        args = [state[pre + f"{p}_proj.weight"] for p in "qkvo"] + [zeros, zeros[:2 * DH], zeros[:2 * DH], zeros[:D]]
        assert np.allclose(layer_forward(x, layer).numpy(), reference_layer(x, *args, 4, 2), atol=1e-5)

    def test_head_counts_from_settings_when_the_file_has_none(self):
        checkpoint = parse_checkpoint(llama_state(), D, heads=4, kv_heads=2)
        assert checkpoint.heads_from == "settings (heads, kv_heads)"
        assert [(layer.n_heads, layer.n_kv_heads) for layer in checkpoint.layers] == [(4, 2), (4, 2)]

    @pytest.mark.parametrize("change, match", [
        (lambda s: s.pop("encoder.layer.1.attention.self.key.weight"), r"layer 1: k_proj\.weight: missing array"),
        (lambda s: s.__setitem__("encoder.layer.0.attention.output.dense.weight", np.ones((D, 8), np.float32)),
         r"layer 0: projection shapes do not fit the head width"),
        (lambda s: s.__setitem__("config.num_attention_heads", np.array(0)), r"config\.num_attention_heads: not a positive"),
        (lambda s: s.__setitem__("encoder.layer.0.attention.self.query.bias", np.full(D, np.nan, np.float32)),
         r"self\.query\.bias: not a finite number"),
    ])
    def test_broken_checkpoints_name_the_layer_and_field(self, change, match):
        state = {**bert_state(), "config.num_attention_heads": np.array(4)}
        change(state)
        with pytest.raises(InputError, match=match):
            parse_checkpoint(state, D, heads=4, source="model.safetensors")

    def test_nothing_attention_like_is_refused(self):
        with pytest.raises(InputError, match=r"no attention weights found"):
            parse_checkpoint({"fc.weight": np.ones((4, 4))}, 4, 1)


class TestPruning:
    def test_grouped_query_heads_go_only_with_their_whole_group(self, x):
        counts = {"config.num_attention_heads": np.array(4), "config.num_key_value_heads": np.array(2)}
        run = run_attention(x, {**llama_state(), **counts}, {"top_k": 4, "svd_pruner": True, "prune_threshold": 1e-6})
        heads = run.plan.result["heads"]
        # L0.H0 is dead but shares its key/value head with the live L0.H1: equal groups keep it.
        assert heads["layout"] == "llama" and [row["under_threshold"] for row in heads["layers"]] == [[0], [2, 3]]
        assert [row["pruned"] for row in heads["layers"]] == [[], [2, 3]]
        assert [heads["head_labels"][i] for i in heads["pruned"]] == ["L1.H2", "L1.H3"]
        assert all(row["output_relative_change"] < 1e-6 for row in heads["layers"])
        # L1: two query heads (q rows + o columns) and their shared key/value head (k and v rows).
        per_query, per_kv = 2 * D * DH, 2 * D * DH
        assert run.plan.metrics["params_saved"] == 2 * per_query + per_kv
        shapes = run.plan.result["pruned_checkpoint"]["shapes"]
        assert shapes["model.layers.0.self_attn.q_proj.weight"] == [4 * DH, D]
        assert shapes["model.layers.0.self_attn.k_proj.weight"] == [2 * DH, D]
        assert shapes["model.layers.1.self_attn.k_proj.weight"] == [DH, D]
        assert shapes["model.layers.1.self_attn.o_proj.weight"] == [D, 2 * DH]

    def test_pruned_bert_checkpoint_loads_back_and_computes_the_pruned_layers(self, tmp_path, x):
        write_model(tmp_path / "bert", bert_state(), {"num_attention_heads": 4, "hidden_size": D})
        np.save(tmp_path / "x.npy", x)
        emb, w, digests = load_attention_inputs(tmp_path / "x.npy", tmp_path / "bert" / "model.safetensors")
        assert [d.name for d in digests] == ["embeddings", "weights", "weights_config"]
        run = run_attention(emb, w, {"top_k": 4, "svd_pruner": True, "prune_threshold": 1e-6}, digests=digests)
        assert run.plan.result["heads"]["layers"][0]["pruned"] == [1]
        assert run.pruned_config["pruned_heads"] == {"0": [1]} and run.pruned_config["head_dim"] == DH
        folder = tmp_path / "pruned"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(run.pruned_checkpoint)
        (folder / "config.json").write_text(json.dumps(run.pruned_config))
        _, w_back, _ = load_attention_inputs(tmp_path / "x.npy", folder / "model.safetensors")
        assert w_back["embeddings.word_embeddings.weight"].shape == (30, D)  # other arrays kept as they were
        back = parse_checkpoint(w_back, D, heads=1)
        original = parse_checkpoint(w, D, heads=1)
        assert [layer.n_heads for layer in back.layers] == [3, 4]
        keep = np.array([True, False, True, True])
        assert np.allclose(layer_forward(x, back.layers[0]).numpy(), layer_forward(x, original.layers[0], keep).numpy(),
                           atol=1e-6)
        assert np.allclose(layer_forward(x, back.layers[1]).numpy(), layer_forward(x, original.layers[1]).numpy(), atol=1e-6)
        assert head_report(back.layers[0], 1e-6).keep.all()  # nothing left to prune

    def test_cli_writes_the_pruned_checkpoint_folder(self, tmp_path, x, capsys):
        write_model(tmp_path / "m", llama_state(), {"num_attention_heads": 4, "num_key_value_heads": 2})
        np.save(tmp_path / "x.npy", x)
        out = tmp_path / "plan.json"
        code = main(["attention", "--embeddings", str(tmp_path / "x.npy"), "--weights", str(tmp_path / "m" / "model.safetensors"),
                     "--top-k", "4", "--svd-pruner", "--prune-threshold", "1e-6", "--out", str(out)])
        stdout = capsys.readouterr().out
        assert code == 0 and "llama layout, 2 layers" in stdout
        plan = json.loads(out.read_text())
        folder = tmp_path / "plan.pruned"
        assert plan["result"]["pruned_checkpoint"]["written_to"] == str(folder)
        assert json.loads((folder / "config.json").read_text())["pruned_heads"] == {"1": [2, 3]}
        _, w_back, _ = load_attention_inputs(tmp_path / "x.npy", folder / "model.safetensors")
        assert [(layer.n_heads, layer.n_kv_heads) for layer in parse_checkpoint(w_back, D, 1).layers] == [(4, 2), (2, 1)]

    def test_a_broken_config_json_is_named(self, tmp_path, x):
        write_model(tmp_path / "m", bert_state(), {"num_attention_heads": "twelve"})
        np.save(tmp_path / "x.npy", x)
        with pytest.raises(InputError, match=r"^config\.json: num_attention_heads: not a usable count"):
            load_attention_inputs(tmp_path / "x.npy", tmp_path / "m" / "model.safetensors")
