"""The compiled top-k merge and sparse softmax-times-V: equal to brute force, ties, -inf and thread splits included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qflow.attention import _kernels
from qflow.attention._blocksparse import ATTENTION_MIN_BLOCKS, BLOCK
from qflow.attention._classical import sparse_attention
from qflow.attention._kernels import NO_KEY, RANK_LIMIT, attend, groups_for, merge_topk


def brute_force(values: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's top k by (value descending, key ascending), float64 lexsort; ``keys`` (T, m)."""
    order = np.lexsort((keys, -values.astype(np.float64)), axis=1)[:, :k]
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(keys, order, axis=1)


def merged(chunks: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """``merge_topk`` over chunks ``(scores (T, m), cols (m,))`` in turn, from empty running top k."""
    t = chunks[0][0].shape[0]
    run_v, run_c = torch.full((t, k), -math.inf), torch.full((t, k), NO_KEY, dtype=torch.int64)
    for scores, cols in chunks:
        merge_topk(torch.from_numpy(scores), torch.from_numpy(cols), run_v, run_c)
    return run_v.numpy(), run_c.numpy()


def rows_of(fill: str, rng) -> np.ndarray:
    """(12, 1000) float32 rows of one adversarial kind (1,000 columns: not a multiple of the group count)."""
    if fill == "random":
        return rng.normal(size=(12, 1000)).astype(np.float32)
    if fill == "small ints":  # many ties everywhere, at the k-th value too
        return rng.choice([-1.0, 0.0, 1.0, 2.0], size=(12, 1000)).astype(np.float32)
    if fill == "all equal":  # every column a candidate: the buffer fills and is placed many times
        return np.full((12, 1000), 0.5, np.float32)
    if fill == "minus inf":
        rows = rng.normal(size=(12, 1000)).astype(np.float32)
        rows[:, 20:] = -np.inf  # fewer finite values than k in some rows: -inf keys fill the rest, lowest keys first
        rows[0] = -np.inf
        rows[1, ::7] = np.inf
        return rows
    if fill == "signed zeros":  # -0.0 == 0.0: equal scores, ordered by key only
        rows = rng.choice([-0.0, 0.0, -1.0], size=(12, 1000)).astype(np.float32)
        rows[:, :300] = -1.0
        return rows
    rows = rng.normal(size=(12, 1000)).astype(np.float32)  # "clustered": the high scores on neighbouring columns
    rows[:, 400:460] += 8.0
    rows[3, 401] = rows[3, 402] = rows[3, 777] = 20.0
    return rows


FILLS = ["random", "small ints", "all equal", "minus inf", "signed zeros", "clustered"]


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("k", [1, 7, 32, 200, 1000])
def test_merge_equals_brute_force_in_one_chunk(fill, k):
    rows = rows_of(fill, np.random.default_rng(0))
    cols = np.arange(1000, dtype=np.int64) * 3 + 5  # key indices that are not positions
    values, keys = merged([(rows, cols)], k)
    ref_v, ref_c = brute_force(rows, np.broadcast_to(cols, rows.shape), k)
    assert np.array_equal(keys, ref_c), (fill, k)
    assert np.array_equal(values, ref_v)


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("k", [1, 5, 32, 120])
def test_merge_over_chunks_in_any_key_order_equals_brute_force(fill, k):
    """Chunks as the bounds path merges them: later chunks may hold lower keys; chunk widths under and over k."""
    rng = np.random.default_rng(1)
    rows = rows_of(fill, rng)
    keys = rng.permutation(1000).astype(np.int64)
    cuts = [0, 3, 40, 41, 300, 1000]
    values, got = merged([(np.ascontiguousarray(rows[:, a:b]), keys[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)], k)
    ref_v, ref_c = brute_force(rows, np.broadcast_to(keys, rows.shape), k)
    assert np.array_equal(got, ref_c), (fill, k)
    assert np.array_equal(values, ref_v)


def test_rank_and_insertion_placements_agree_with_brute_force():
    """Rows with a few candidates go by rank, rows with many ties by insertion, rows with more by repeated placing."""
    rng = np.random.default_rng(2)
    k = 16
    cap = 2 * k + RANK_LIMIT
    rows = rng.normal(size=(4, 512)).astype(np.float32)
    rows[2:] = 0.0
    rows[2, rng.choice(512, RANK_LIMIT + 10, replace=False)] = 1.0  # over RANK_LIMIT candidates, under the buffer
    rows[3, rng.choice(512, cap + 100, replace=False)] = 1.0  # more than the buffer holds
    cols = np.arange(512, dtype=np.int64)
    values, keys = merged([(rows, cols)], k)
    ref_v, ref_c = brute_force(rows, np.broadcast_to(cols, rows.shape), k)
    assert np.array_equal(keys, ref_c) and np.array_equal(values, ref_v)
    assert RANK_LIMIT < (rows[2] == 1.0).sum() <= cap < (rows[3] == 1.0).sum()


def test_nan_scores_rank_first_as_in_torch_topk_and_never_leave_a_slot_empty():
    rng = np.random.default_rng(8)
    rows = rng.normal(size=(6, 300)).astype(np.float32)
    rows[0, [5, 250, 17]] = np.nan
    rows[1, ::3] = np.nan  # NaN in every column group: no threshold from the maxima
    rows[2, 299] = -np.float32(np.nan)  # a NaN with the sign bit set, in the columns past the groups
    cols = np.arange(300, dtype=np.int64)
    values, keys = merged([(rows[:, :100].copy(), cols[:100]), (rows[:, 100:].copy(), cols[100:])], 40)
    ranked = np.where(np.isnan(rows), np.inf, rows)  # no +inf in these rows: inf stands for NaN
    ref_v, ref_c = brute_force(ranked, np.broadcast_to(cols, rows.shape), 40)
    assert np.array_equal(keys, ref_c) and (keys != NO_KEY).all()
    assert np.array_equal(np.isnan(values), np.isinf(ref_v)) and np.array_equal(values[~np.isnan(values)], ref_v[~np.isinf(ref_v)])


def test_attend_refuses_key_indices_outside_the_values():
    v = torch.ones(4, 2)
    with pytest.raises(ValueError, match="within 0..3"):
        attend(torch.zeros(1, 2), torch.tensor([[0, NO_KEY]]), v)


def test_group_count_and_threshold_bound():
    assert groups_for(1024, 32) == 128 and groups_for(256, 32) == 32 and groups_for(100, 32) == 0
    # The threshold never exceeds the k-th value: k groups reach it, so k distinct elements do.
    rng = np.random.default_rng(3)
    for _ in range(50):
        row = rng.normal(size=128).astype(np.float32)
        t = _kernels._threshold(row.copy(), 32, np.float32(-np.inf))
        assert t <= np.sort(row)[-32] and (row >= t).sum() >= 32


def test_rows_split_over_threads_give_the_same_result(monkeypatch):
    rng = np.random.default_rng(4)
    rows = rng.choice([-1.0, 0.0, 1.0], size=(37, 300)).astype(np.float32)
    cols = np.arange(300, dtype=np.int64)
    one = merged([(rows, cols)], 9)
    monkeypatch.setattr(_kernels, "threads_for", lambda work: 4)
    split = merged([(rows, cols)], 9)
    assert np.array_equal(one[0], split[0]) and np.array_equal(one[1], split[1])
    values = torch.from_numpy(one[0]).contiguous()
    v = torch.from_numpy(rng.normal(size=(300, 5)).astype(np.float32))
    assert torch.equal(attend(values, torch.from_numpy(one[1]), v), _attend_one_thread(values, one[1], v))


def _attend_one_thread(values, idx, v):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_kernels, "threads_for", lambda work: 1)
        return attend(values, torch.from_numpy(idx), v)


def test_attend_is_softmax_times_the_gathered_values():
    rng = np.random.default_rng(5)
    values = torch.sort(torch.tensor(rng.normal(size=(20, 6)) * 5, dtype=torch.float32), dim=1, descending=True).values
    values[3, 2:] = -math.inf  # masked keys weigh nothing
    idx = torch.tensor(rng.integers(0, 40, size=(20, 6)))
    v = torch.tensor(rng.normal(size=(40, 7)), dtype=torch.float32)
    ref = torch.einsum("qk,qkd->qd", torch.softmax(values.double(), dim=1), v.double()[idx])
    out = attend(values, idx, v)
    assert out.dtype == torch.float32 and torch.allclose(out.double(), ref, rtol=1e-5, atol=1e-6)
    assert torch.allclose(attend(values[:, :1], idx[:, :1], v), v[idx[:, 0]])  # k = 1: the one value row


def test_sparse_attention_scores_short_sequences_densely_and_says_why():
    rng = np.random.default_rng(6)
    n = (ATTENTION_MIN_BLOCKS - 1) * BLOCK
    q, k, v = (torch.tensor(rng.normal(size=(n, 16)), dtype=torch.float32) for _ in range(3))
    out, idx, stats = sparse_attention(q, k, v, 8)
    assert stats.path == "dense" and f"under {ATTENTION_MIN_BLOCKS}" in stats.reason and stats.fraction_computed == 1.0
    scores = (q @ k.T) / 4.0
    ref_idx = scores.topk(8, dim=1).indices
    assert torch.equal(torch.sort(idx).values, torch.sort(ref_idx).values)
    ref = torch.einsum("qk,qkd->qd", torch.softmax(scores.gather(1, ref_idx), dim=1), v[ref_idx])
    assert torch.allclose(out, ref, atol=1e-5)


def test_warm_up_reports_seconds():
    assert _kernels.warm_up() >= 0.0


def test_sparse_attention_prunes_from_the_block_rule_up_and_matches_the_dense_path():
    rng = np.random.default_rng(7)
    block, segments = 8, ATTENTION_MIN_BLOCKS
    centres = torch.tensor(rng.choice([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0], size=(segments, 8)), dtype=torch.float32)
    k = centres.repeat_interleave(block, dim=0) + 0.01 * torch.tensor(rng.normal(size=(segments * block, 8)), dtype=torch.float32)
    q = 4 * centres[torch.as_tensor(rng.integers(0, segments, 300))]
    v = torch.tensor(rng.normal(size=(segments * block, 5)), dtype=torch.float32)
    out, idx, stats = sparse_attention(q, k, v, 4, block=block)
    dense_out, dense_idx, dense_stats = sparse_attention(q, k, v, 4, block=block, use_bounds=False)
    assert stats.path == "bounds" and stats.fraction_computed < 0.5 and dense_stats.fraction_computed == 1.0
    assert torch.equal(idx, dense_idx) and torch.allclose(out, dense_out, atol=1e-6)
