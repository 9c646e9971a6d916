"""Exact top-k by block bounds: equal to brute force on adversarial inputs, pruning where it can, dense where it can't."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qflow.attention._blocksparse import (
    MIN_SCRATCH,
    SAMPLE_QUERIES,
    SCRATCH_SHARE,
    KeyBlockIndex,
    _Keys,
    blocksparse_topk,
    tile_shape,
)


def brute_force(q: torch.Tensor, k: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every score in float64, ordered by (score descending, key index ascending) with numpy's lexsort."""
    scores = q.double().numpy() @ k.double().numpy().T
    columns = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    idx = np.lexsort((columns, -scores), axis=1)[:, :top_k]
    return torch.from_numpy(np.take_along_axis(scores, idx, axis=1)), torch.from_numpy(idx)


def small_ints(rng, shape, values=(-2, -1, 0, 1, 2)) -> torch.Tensor:
    """Integer-valued floats: every score is exact in float32, so ties are real ties."""
    return torch.tensor(rng.choice(values, size=shape), dtype=torch.float32)


def local_keys(rng, n_segments=16, seg=16, d=8, n_q=40) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys in segments of ``seg`` equal keys (integer valued), queries that each favour one segment strongly."""
    centres = small_ints(rng, (n_segments, d), values=(-3, -2, -1, 1, 2, 3))
    k = centres.repeat_interleave(seg, dim=0)
    q = 4 * centres[torch.as_tensor(rng.integers(0, n_segments, n_q))]
    return q, k


def adversarial_cases():
    rng = np.random.default_rng(0)
    base = small_ints(rng, (32, 8))
    return {
        "many ties": (small_ints(rng, (40, 8)), small_ints(rng, (300, 8))),
        "all keys equal": (small_ints(rng, (20, 8)), torch.ones(300, 8)),
        "all blocks equal": (small_ints(rng, (20, 8)), base.repeat(10, 1)),
        "extremes": (small_ints(rng, (20, 8), values=(-1e3, 0.0, 1e3)), small_ints(rng, (333, 8), values=(-1e3, 0.0, 1.0, 1e3))),
        "local segments": local_keys(rng),
        "one key": (small_ints(rng, (5, 8)), small_ints(rng, (1, 8))),
    }


@pytest.mark.parametrize("case", list(adversarial_cases()))
@pytest.mark.parametrize("use_bounds, block", [(True, 8), (True, 32), (False, 8)])
def test_equals_brute_force_on_adversarial_inputs(case, use_bounds, block):
    q, k = adversarial_cases()[case]
    n = k.shape[0]
    for top_k in sorted({1, 5, 16, 33, n} & set(range(1, n + 1))):
        values, idx, stats = blocksparse_topk(q, k, top_k, block=block, use_bounds=use_bounds)
        ref_values, ref_idx = brute_force(q, k, top_k)
        assert torch.equal(idx, ref_idx), (case, top_k, stats.path)
        assert torch.equal(values.double(), ref_values), (case, top_k)
        assert stats.scores_total == q.shape[0] * n and 0 < stats.scores_computed <= stats.scores_total


def test_bounds_skip_blocks_that_cannot_reach_the_top_k():
    q, k = local_keys(np.random.default_rng(1), n_segments=32, n_q=800)
    values, idx, stats = blocksparse_topk(q, k, 8, block=16)
    assert torch.equal(idx, brute_force(q, k, 8)[1])
    assert stats.path == "bounds" and stats.tiles_dense == 0 and stats.tiles > 1
    # Each query needs its own segment (one block); queries are tiled by their best block, so a tile
    # scores the few segments its queries favour and skips the rest.
    assert stats.fraction_computed < 0.35, stats.fraction_computed
    assert stats.reason == f"bounds left {stats.fraction_computed:.1%} of the scores to compute"


def test_flat_scores_fall_back_to_dense_and_say_why():
    rng = np.random.default_rng(2)
    q, k = torch.tensor(rng.normal(size=(64, 16)), dtype=torch.float32), torch.tensor(rng.normal(size=(512, 16)), dtype=torch.float32)
    values, idx, stats = blocksparse_topk(q, k, 8, block=16)
    assert stats.path == "dense" and "scored densely" in stats.reason and f"sample of {SAMPLE_QUERIES} queries" in stats.reason
    # Decided from the sample before any tile: every tile dense, the sample's scores counted on top.
    assert stats.bound_fractions == [] and stats.tiles == stats.tiles_dense
    assert stats.scores_computed == stats.scores_total + SAMPLE_QUERIES * k.shape[0]
    ref = (q @ k.T).topk(8, dim=1)
    assert torch.equal(values, ref.values) and torch.equal(torch.sort(idx).values, torch.sort(ref.indices).values)


def test_random_floats_match_torch_topk_and_scratch_stays_small():
    rng = np.random.default_rng(3)
    n = 1024
    q = torch.tensor(rng.normal(size=(n, 16)), dtype=torch.float32)
    k = torch.tensor(rng.normal(size=(n, 16)), dtype=torch.float32)
    for use_bounds in (True, False):
        values, idx, stats = blocksparse_topk(q, k, 32, use_bounds=use_bounds)
        ref = (q @ k.T).topk(32, dim=1)
        assert torch.allclose(values, ref.values, rtol=0, atol=1e-5)
        assert (torch.sort(idx).values == torch.sort(ref.indices).values).float().mean() > 0.999
        tile, _ = tile_shape(n, n)
        assert stats.scratch_elements <= max(SCRATCH_SHARE * n * n, MIN_SCRATCH) + tile * 32


def test_scratch_is_a_small_share_of_dense_scores_at_length():
    assert tile_shape(8192, 8192) == (645, 256)  # 645 x (8192 scores + 128 group maxima): 8 % of the 8192 x 8192 matrix
    tile, chunk_blocks = tile_shape(1, 32768)  # decode: the budget floor, one 1 MiB chunk of scores
    assert tile == 1 and chunk_blocks * 32 <= MIN_SCRATCH


def test_tick_reports_every_tile_and_a_raise_cancels():
    q, k = local_keys(np.random.default_rng(5))
    q = q.repeat(20, 1)  # 800 queries: several tiles
    seen = []
    blocksparse_topk(q, k, 4, block=16, tick=seen.append)
    assert len(seen) > 1 and seen[-1] == 1.0 and seen == sorted(seen)

    class Cancelled(Exception):
        pass

    def cancel(fraction):
        raise Cancelled

    with pytest.raises(Cancelled):
        blocksparse_topk(q, k, 4, block=16, tick=cancel)


@pytest.mark.parametrize("case", ["many ties", "extremes", "local segments"])
def test_key_index_appended_in_pieces_equals_brute_force_and_a_rebuild(case):
    q, k = adversarial_cases()[case]
    index = KeyBlockIndex(k.shape[1], block=8, capacity=10)
    held = 0
    for size in (1, 3, 8, 17, 1, 64, 1000):
        piece = k[held:held + size]
        if piece.shape[0] == 0:
            break
        index.append(piece)
        held += piece.shape[0]
        rebuilt = _Keys(k[:held], 8)
        assert torch.equal(index._lo[:rebuilt.nb], rebuilt.lo) and torch.equal(index._hi[:rebuilt.nb], rebuilt.hi)
        assert torch.equal(index.keys(), k[:held])
        for top_k in sorted({1, 5, held} & set(range(1, held + 1))):
            values, idx, stats = index.topk(q, top_k)
            ref_values, ref_idx = brute_force(q, k[:held], top_k)
            assert torch.equal(idx, ref_idx), (case, held, top_k)
            assert torch.equal(values.double(), ref_values)
            assert 0 < stats.scores_computed <= stats.scores_total == q.shape[0] * held


def test_key_index_prunes_while_decoding():
    q, k = local_keys(np.random.default_rng(7), n_segments=64, n_q=1)
    index = KeyBlockIndex(k.shape[1], block=16)
    for start in range(0, k.shape[0], 1):  # one key per decode step
        index.append(k[start])
    values, idx, stats = index.topk(q, 4)
    assert torch.equal(idx, brute_force(q, k, 4)[1])
    assert stats.fraction_computed < 0.1, stats.fraction_computed
    with pytest.raises(ValueError):
        index.topk(q, k.shape[0] + 1)
