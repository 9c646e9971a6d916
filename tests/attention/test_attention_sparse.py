"""Sparse top-k attention against dense SDPA: exactness at k = n, error falling with k, the baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from attention_helpers import qkv

from qflow.attention._classical import (
    attention_memory_bytes,
    dense_attention,
    error_vs_k,
    random_k_attention,
    relative_error,
    topk_attention,
)


def naive_attention(q, k, v, keep=None):
    """softmax(q k^T / sqrt(d)) v in float64 numpy, optionally restricted to keys ``keep[i]`` per query."""
    s = q.astype(np.float64) @ k.T.astype(np.float64) / np.sqrt(q.shape[1])
    if keep is not None:
        mask = np.full_like(s, -np.inf)
        np.put_along_axis(mask, keep, 0.0, axis=1)
        s = s + mask
    p = np.exp(s - s.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)) @ v


class TestTopK:
    def test_equals_dense_attention_when_k_is_n(self):
        q, k, v = qkv(n=40)
        out, idx = topk_attention(q, k, v, 40)
        dense = dense_attention(q, k, v)
        assert torch.allclose(out, dense, atol=1e-5)
        assert relative_error(out, dense) < 1e-6
        assert np.allclose(dense.numpy(), naive_attention(q, k, v), atol=1e-5)  # SDPA is the textbook formula

    def test_selects_the_highest_scoring_keys_and_softmaxes_over_them_only(self):
        q, k, v = qkv(n=30, seed=1)
        scores = q @ k.T
        expected = np.argsort(-scores, axis=1)[:, :5]
        for use_bounds, block in ((True, 4), (False, 4), (True, 32)):  # the search path must not change anything
            out, idx = topk_attention(q, k, v, 5, use_bounds=use_bounds, block=block)
            assert np.array_equal(np.sort(idx.numpy(), axis=1), np.sort(expected, axis=1))
            assert np.allclose(out.numpy(), naive_attention(q, k, v, expected), atol=1e-5)

    def test_error_falls_as_k_grows_and_beats_random_k(self):
        q, k, v = qkv(n=64, seed=2)
        rows = error_vs_k(q, k, v, [1, 2, 4, 8, 16, 32, 64], seed=0)
        errors = [r["topk_relative_error"] for r in rows]
        assert all(later < earlier for earlier, later in zip(errors, errors[1:], strict=False)), errors
        assert errors[-1] < 1e-6 and errors[0] > 0.05
        for r in rows[:-1]:
            assert r["topk_relative_error"] < r["random_k_relative_error"], r

    def test_random_k_is_seeded_and_without_replacement(self):
        q, k, v = qkv(n=20)
        a_out, a_idx = random_k_attention(q, k, v, 6, seed=3)
        b_out, b_idx = random_k_attention(q, k, v, 6, seed=3)
        c_out, c_idx = random_k_attention(q, k, v, 6, seed=4)
        assert torch.equal(a_idx, b_idx) and torch.equal(a_out, b_out)
        assert not torch.equal(a_idx, c_idx)
        assert all(len(set(row)) == 6 for row in a_idx.tolist())
        assert np.allclose(a_out.numpy(), naive_attention(q, k, v, a_idx.numpy()), atol=1e-5)


def test_memory_bytes():
    assert attention_memory_bytes(1024, 1024, None) == 4 * 1024 * 1024
    assert attention_memory_bytes(1024, 1024, 32) == 12 * 1024 * 32


@pytest.mark.parametrize("shape", [(3,), (2, 5)])
def test_relative_error_is_the_l2_ratio(shape):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=shape), rng.normal(size=shape)
    assert relative_error(a, b) == pytest.approx(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_gathers_are_chunked_by_k_times_width():
    from qflow.attention._classical import GATHER_ELEMENTS, QUERY_CHUNK, _gather_rows

    assert _gather_rows(32, 64) == QUERY_CHUNK  # the usual case: 512 queries at once
    assert _gather_rows(16384, 64) * 16384 * 64 <= GATHER_ELEMENTS
    q, k, v = qkv(n=50, seed=5)
    for kk in (3, 20, 50):  # 3 * 8 < 50 gathers value rows; 20 * 8 > 50 scatters weights into rows of 50
        out, idx = topk_attention(q, k, v, kk)
        assert np.allclose(out.numpy(), naive_attention(q, k, v, idx.numpy()), atol=1e-5)
        r_out, r_idx = random_k_attention(q, k, v, kk, seed=1)
        assert np.allclose(r_out.numpy(), naive_attention(q, k, v, r_idx.numpy()), atol=1e-5)
