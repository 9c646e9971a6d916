"""SVD head pruning: dead heads go and change nothing; live heads stay; the bound and the savings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from attention_helpers import layer_weights

from qflow.attention._classical import head_report, layer_forward, params_per_head, relative_error
from qflow.attention._schemas import parse_weights


def mha_reference(x: np.ndarray, w: dict[str, np.ndarray], heads: int) -> np.ndarray:
    """The layer by torch.nn.MultiheadAttention with the same weights (an independent implementation)."""
    d = x.shape[1]
    mha = torch.nn.MultiheadAttention(d, heads, bias=True, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.from_numpy(np.concatenate([w["q_proj.weight"], w["k_proj.weight"], w["v_proj.weight"]])))
        mha.in_proj_bias.copy_(torch.from_numpy(np.concatenate([w["q_proj.bias"], w["k_proj.bias"], w["v_proj.bias"]])))
        mha.out_proj.weight.copy_(torch.from_numpy(w["o_proj.weight"]))
        mha.out_proj.bias.copy_(torch.from_numpy(w["o_proj.bias"]))
        xt = torch.from_numpy(x)[None]
        return mha(xt, xt, xt, need_weights=False)[0][0].numpy()


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(5).normal(size=(24, 16)).astype(np.float32)


def test_layer_forward_matches_torch_multihead_attention(x):
    raw = layer_weights()
    out = layer_forward(x, parse_weights(raw, 16, 4)).numpy()
    assert np.allclose(out, mha_reference(x, raw, 4), atol=1e-5)


def test_pruning_a_head_with_zeroed_weights_changes_nothing(x):
    weights = parse_weights(layer_weights(dead=(1,)), 16, 4)
    report = head_report(weights, threshold=1e-6)
    assert report.keep.tolist() == [True, False, True, True]
    assert report.singular_values[1, 0] == 0.0
    full, pruned = layer_forward(x, weights), layer_forward(x, weights, report.keep)
    assert relative_error(pruned, full) < 1e-6


def test_pruning_a_live_head_changes_the_output(x):
    weights = parse_weights(layer_weights(), 16, 4)
    report = head_report(weights, threshold=0.0)
    assert report.keep.all()
    keep = np.array([True, False, True, True])
    assert relative_error(layer_forward(x, weights, keep), layer_forward(x, weights)) > 0.05


def test_leading_singular_value_bounds_each_heads_contribution(x):
    weights = parse_weights(layer_weights(seed=2), 16, 4)
    sv = head_report(weights, 0.0).singular_values[:, 0]
    full = layer_forward(x, weights).numpy()
    x_norm = np.linalg.norm(np.c_[x, np.ones(len(x))], axis=1).max()
    for h in range(4):
        keep = np.ones(4, dtype=bool)
        keep[h] = False
        contribution = np.linalg.norm(full - layer_forward(x, weights, keep).numpy(), axis=1).max()
        assert 0 < contribution <= sv[h] * x_norm + 1e-5, h


def test_parameters_saved_per_head():
    weights = parse_weights(layer_weights(d=16, heads=4), 16, 4)
    assert params_per_head(weights) == 4 * 16 * 4 + 3 * 4


def test_singular_values_equal_those_of_the_full_circuit_matrices_with_grouped_heads():
    """The report's small QR-reduced SVDs against SVDs of the full d x (d+1) and d x d matrices."""
    from qflow.attention._checkpoint import AttentionWeights

    rng = np.random.default_rng(7)
    d, heads, kv_heads, dh = 24, 4, 2, 6
    w = {"q_proj": rng.normal(size=(heads * dh, d)), "k_proj": rng.normal(size=(kv_heads * dh, d)),
         "v_proj": rng.normal(size=(kv_heads * dh, d)), "o_proj": rng.normal(size=(d, heads * dh))}
    w = {name: a.astype(np.float32) for name, a in w.items()}
    b = {name: rng.normal(size=a.shape[0]).astype(np.float32) for name, a in w.items()}
    report = head_report(AttentionWeights(w=w, b=b, n_heads=heads, n_kv_heads=kv_heads), 0.0)
    for h in range(heads):
        rows, kv = slice(h * dh, (h + 1) * dh), slice((h // 2) * dh, (h // 2 + 1) * dh)
        wo = w["o_proj"][:, rows].astype(np.float64)
        ov = np.concatenate([wo @ w["v_proj"][kv], (wo @ b["v_proj"][kv])[:, None]], axis=1)
        assert np.allclose(report.singular_values[h], np.linalg.svd(ov, compute_uv=False)[:dh + 1], rtol=1e-6, atol=1e-9)
        qk = w["q_proj"][rows].T.astype(np.float64) @ w["k_proj"][kv]
        assert report.qk_leading[h] == pytest.approx(np.linalg.svd(qk, compute_uv=False)[0], rel=1e-9)
