"""Exact top-k key selection that skips key blocks which cannot reach a query's top k.

Keys are cut into contiguous blocks of ``block`` positions (Quest's pages,
Tang et al. 2024). For each block the per-dimension minimum and maximum of
its keys bound any query's score against it::

    q . k  <=  sum_d max(q_d * min_d, q_d * max_d)      for every key k of the block

Queries go in tiles. For a tile, the blocks with the highest bounds are
scored first, which gives each query a k-th best score ``tau``; then only
blocks whose bound reaches some query's ``tau`` are scored. A block is
skipped only when its bound is below ``tau`` minus a float rounding margin,
so every key that could be in (or tie with) the top k is scored exactly and
the result is exact top-k (ties broken towards the lower key index).

Where bounds prune too little (flat attention, keys with no positional
locality) a few queries scored densely before any tile say so (or the first
tiles do) and the rest is scored densely: every score computed. Either way
each chunk of scores is merged into the queries' running top k by the
compiled kernel of :mod:`qflow.attention._kernels` (a threshold from column
group maxima, one collecting pass, candidates placed by rank), and scores
are held for one tile and one key chunk at a time, never ``n_q x n``. For
decoding, :class:`KeyBlockIndex` keeps the blocks' bounds as keys are
appended.

Why hand-written: torch and numpy have dense top-k only; Quest's kernels are
CUDA and approximate (they keep whole pages). This is the exact variant on
CPU, with torch matmuls doing the arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import torch

from qflow.attention._kernels import (
    MAX_GROUPS,
    MAX_KEYS,
    MIN_GROUP_WIDTH,
    NO_KEY,
    candidate_elements,
    groups_for,
    merge_topk,
    merge_topk_arrays,
    threads_for,
)
from qflow.core.threads import one_torch_thread

__all__ = ["ATTENTION_MIN_BLOCKS", "BLOCK", "PRUNE_LIMIT", "KeyBlockIndex", "SelectionStats", "blocksparse_topk", "tile_shape"]

#: Keys per block (a Quest page).
BLOCK = 32
#: Key blocks below which bounds cannot prune anything worth their cost.
MIN_BLOCKS = 4
#: Key blocks below which sparse attention scores every key: the bounds path's work per tile of queries (a bounds
#: matmul, a top-k, a union of blocks, two merges) costs more than the scores it saves. Measured (bench/attention.py,
#: one thread, local keys, d = 64): at 1,024 keys (32 blocks) bounds computing 20 % of the scores took 2.2x the
#: dense path's time; at 4,096 (128 blocks) computing 13 %, 1.2-1.25x; at 8,192 (256 blocks) computing 9 %, 0.67-0.77x.
ATTENTION_MIN_BLOCKS = 64
#: Share of scores above which a tile's bounds are judged not worth it and the rest goes dense.
PRUNE_LIMIT = 0.5
#: Score scratch held at once, as a share of the dense n_q x n matrix (for inputs large enough to matter).
SCRATCH_SHARE = 0.08
#: Queries per tile at most.
MAX_TILE = 1024
#: Queries per tile on the bounds path: a tile scores the union of its queries' surviving blocks, which grows
#: with the tile (measured on the bench's local keys at 8,192: 5 % of the blocks for 16 queries, 41 % for 256).
BOUNDS_TILE = 32
#: Queries scored densely to decide, before any tile, whether bounds can prune.
SAMPLE_QUERIES = 16
#: Tiles whose mean share of blocks scored decides between bounds and dense.
PROBE_TILES = 4
#: Up to this many scores (n_q x n), one torch thread: many small ops, where OpenMP spin-waits cost more than they save.
SMALL_PROBLEM = 1 << 22
#: Scratch floor (elements, 256 KiB of float32): below it, splitting the work costs more than the memory it saves.
MIN_SCRATCH = 1 << 16

Tick = Callable[[float], None]


@dataclass
class SelectionStats:
    """What one selection did.

    Attributes
    ----------
    path : str
        ``"bounds"`` (blocks pruned by their bounds) or ``"dense"`` (every score computed).
    reason : str
        Why that path.
    scores_computed, scores_total : int
        Exact query-key scores computed, and ``n_q * n``.
    scratch_elements : int
        Largest score matrix held at once (elements; 4 bytes each).
    tiles, tiles_dense : int
    """

    path: str = "bounds"
    reason: str = ""
    scores_computed: int = 0
    scores_total: int = 0
    scratch_elements: int = 0
    tiles: int = 0
    tiles_dense: int = 0
    bound_fractions: list[float] = field(default_factory=list)

    @property
    def fraction_computed(self) -> float:
        return self.scores_computed / max(self.scores_total, 1)


def tile_shape(n_q: int, n: int, block: int = BLOCK) -> tuple[int, int]:
    """Queries per tile and keys per chunk so a tile's scores (and their group maxima) stay within the scratch budget.

    Returns
    -------
    tile : int
        Queries per tile (1 .. MAX_TILE).
    chunk_blocks : int
        Key blocks scored at once (at least 1).
    """
    budget = max(int(SCRATCH_SHARE * n_q * n), MIN_SCRATCH)
    row = n + min(MAX_GROUPS, n // MIN_GROUP_WIDTH)  # a query's scores and its column-group maxima (see _kernels)
    tile = max(1, min(MAX_TILE, n_q, budget // max(row, 1)))
    chunk_blocks = max(1, min(math.ceil(n / block), budget // (tile * block)))
    return tile, chunk_blocks


def _padded_blocks(k: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keys as (nb, block, d) (the last block padded with copies of the last key) and each block's min and max (nb, d)."""
    n, d = k.shape
    nb = math.ceil(n / block)
    pad = nb * block - n
    padded = torch.cat([k, k[-1:].expand(pad, d)]) if pad else k
    blocks = padded.reshape(nb, block, d)
    return blocks, blocks.amin(dim=1), blocks.amax(dim=1)


def _bounds(q: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``sum_d max(q_d lo_d, q_d hi_d)`` for every query and block: (T, d), (nb, d) -> (T, nb)."""
    return q.clamp(min=0) @ hi.T + q.clamp(max=0) @ lo.T


def _rounding_margin(q: torch.Tensor, k_absmax: float) -> torch.Tensor:
    """Per query (T,), more than the float32 rounding of a score or a bound: ``2 gamma_d |q|_1 max|k|``.

    A dot product of length d summed in float32 is off by at most
    ``gamma_d sum_i |q_i k_i|`` with ``gamma_d = d u / (1 - d u)``, u = 2**-24;
    the bound and the score each carry one such error.
    """
    d = q.shape[1]
    u = 2.0 ** -24
    gamma = (d + 2) * u / (1 - (d + 2) * u)
    return 2 * gamma * q.abs().sum(dim=1) * k_absmax + 1e-30


class _Running:
    """Each query's best ``k`` (value, key) so far, best first, merged chunk by chunk by the compiled kernel.

    Empty slots are ``(-inf, NO_KEY)``: a real key, even at ``-inf``, ranks before them.
    """

    def __init__(self, t: int, k: int) -> None:
        self.k = k
        self.values = torch.full((t, k), -math.inf)
        self.cols = torch.full((t, k), NO_KEY, dtype=torch.int64)

    def merge(self, values: torch.Tensor, cols: torch.Tensor) -> int:
        """Merge scores (T, m) of keys ``cols`` (m,) in; returns the kernel's scratch elements besides ``values``."""
        return merge_topk(values, cols, self.values, self.cols)


class _Keys:
    """The keys in blocks, with what scoring a set of blocks needs."""

    def __init__(self, k: torch.Tensor, block: int) -> None:
        self.n, self.block = int(k.shape[0]), block
        self.blocks, self.lo, self.hi = _padded_blocks(k, block)
        self.nb = self.blocks.shape[0]
        if self.nb * block >= MAX_KEYS:
            raise ValueError(f"at most {MAX_KEYS - block} keys, got {self.n}")
        self.absmax = float(torch.maximum(self.hi.amax(), -self.lo.amin()))
        self.flat = self.blocks.reshape(self.nb * block, -1)

    @cached_property
    def every(self) -> torch.Tensor:
        """Every block id (nb,): the dense path's, made once (``score`` knows it by identity)."""
        return torch.arange(self.nb)

    @cached_property
    def every_col(self) -> torch.Tensor:
        """Every column's key index (nb * block,), made once."""
        return torch.arange(self.nb * self.block)

    def score(self, q: torch.Tensor, block_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Exact scores (T, len(block_ids) * block) of queries ``q`` (T, d) against blocks ``block_ids`` (ascending).

        Returns the scores, each column's key index, and how many columns are real keys (the rest are the
        last block's padding, scored ``-inf``).
        """
        count = block_ids.numel()
        first, last = (0, self.nb - 1) if block_ids is self.every else (int(block_ids[0]), int(block_ids[-1]))
        if last - first + 1 == count:  # a contiguous run: a view, no copy
            keys = self.flat[first * self.block:(first + count) * self.block]
            cols = self.every_col[first * self.block:(first + count) * self.block]
        else:
            keys = self.blocks[block_ids].reshape(-1, self.blocks.shape[2])
            cols = (block_ids[:, None] * self.block + torch.arange(self.block)).reshape(-1)
        scores = q @ keys.T
        padding = self.block - self.n % self.block if last == self.nb - 1 and self.n % self.block else 0
        if padding:
            scores[:, scores.shape[1] - padding:] = -math.inf  # padding copies of the last key
        return scores, cols, scores.shape[1] - padding


def _score_blocks(q, keys: _Keys, ids: torch.Tensor, running: _Running, chunk_blocks: int, stats: SelectionStats) -> None:
    """Score blocks ``ids`` for the tile ``q`` in chunks and merge them into ``running``."""
    for start in range(0, ids.numel(), chunk_blocks):
        part = ids if start == 0 and ids.numel() <= chunk_blocks else ids[start:start + chunk_blocks]
        scores, cols, real = keys.score(q, part)
        stats.scores_computed += q.shape[0] * real
        kernel_scratch = running.merge(scores, cols)
        stats.scratch_elements = max(stats.scratch_elements, scores.numel() + running.values.numel() + kernel_scratch)


class _DenseTiles:
    """Dense tiles: every key scored. Where one chunk holds every key, the score and maxima buffers are made
    once and reused by every tile, and the selection writes straight into the output rows.

    That saves what :func:`_score_blocks` and :func:`merge_topk` cost per call
    in torch calls and allocations (tens of microseconds, against about 50 of
    selection for 72 queries x 1,024 keys).
    """

    def __init__(self, keys: _Keys, tile: int, top_k: int, chunk_blocks: int) -> None:
        self.keys, self.top_k, self.chunk_blocks = keys, top_k, chunk_blocks
        width = keys.nb * keys.block
        self.one_chunk = chunk_blocks >= keys.nb
        self.padding = width - keys.n
        self.groups = groups_for(width, top_k)
        self.scores = torch.empty(tile if self.one_chunk else 0, width)
        self.maxima = torch.empty(tile if self.one_chunk else 0, self.groups)
        self.cols = keys.every_col.numpy()
        self.threads = threads_for(tile * width)

    def select(self, rows: torch.Tensor, out_v: torch.Tensor, out_c: torch.Tensor, stats: SelectionStats) -> None:
        """The exact top k of every key for the queries ``rows`` (T, d) into ``out_v``/``out_c`` (T, k), empty on entry."""
        if not self.one_chunk:
            running = _Running(rows.shape[0], self.top_k)
            _score_blocks(rows, self.keys, self.keys.every, running, self.chunk_blocks, stats)
            out_v.copy_(running.values), out_c.copy_(running.cols)
            return
        t, width = rows.shape[0], self.scores.shape[1]
        scores, maxima = self.scores[:t], self.maxima[:t]
        torch.mm(rows, self.keys.flat.T, out=scores)
        if self.padding:
            scores[:, width - self.padding:] = -math.inf  # padding copies of the last key
        if self.groups:
            torch.amax(scores[:, :width - width % self.groups].view(t, -1, self.groups), dim=1, out=maxima)
        threads = min(self.threads, t)
        merge_topk_arrays(scores.numpy(), maxima.numpy(), self.cols, out_v.numpy(), out_c.numpy(), threads)
        stats.scores_computed += t * self.keys.n
        scratch = self.scores.numel() + self.maxima.numel() + out_v.numel() + threads * candidate_elements(self.top_k)
        stats.scratch_elements = max(stats.scratch_elements, scratch)


def _sampled_block_share(q: torch.Tensor, keys: _Keys, top_k: int, chunk_blocks: int, stats: SelectionStats) -> float:
    """Mean share of key blocks whose bound reaches a query's exact k-th score, over evenly spaced sample queries.

    The cheap early test of whether bounds can prune at all: the sample is
    scored densely (``SAMPLE_QUERIES x n`` scores, counted in ``stats``), so
    each sampled query's threshold is its true k-th score, the best any tile
    of the bounds path can reach. A tile scores the union of its queries'
    blocks, so the bounds path scores at least this share.
    """
    picks = torch.linspace(0, q.shape[0] - 1, min(SAMPLE_QUERIES, q.shape[0])).round().long().unique()
    sample = q[picks]
    running = _Running(sample.shape[0], top_k)
    _score_blocks(sample, keys, keys.every, running, chunk_blocks, stats)
    tau = running.values[:, -1] - _rounding_margin(sample, keys.absmax)
    reach = _bounds(sample, keys.lo, keys.hi) >= tau[:, None]
    return float(reach.float().mean())


def _query_order(q: torch.Tensor, keys: _Keys, tile: int) -> torch.Tensor:
    """Queries sorted by the block with their highest bound, so a tile's queries want the same blocks.

    Returns a permutation (n_q,), int64.
    """
    best = torch.cat([_bounds(q[start:start + tile], keys.lo, keys.hi).argmax(dim=1) for start in range(0, q.shape[0], tile)])
    return torch.argsort(best, stable=True)


def _tile_with_bounds(q, keys: _Keys, top_k: int, chunk_blocks: int, stats: SelectionStats) -> tuple[_Running, float]:
    """One tile by bounds: the highest-bound blocks first, then every block that can still reach a query's k-th score."""
    t = q.shape[0]
    bounds = _bounds(q, keys.lo, keys.hi)
    # Enough blocks for k keys; a seed set that includes the short last block may hold fewer, and then that
    # query's k-th score is -inf and every block is scored for it (exact, only slower).
    seed_count = min(keys.nb, math.ceil(top_k / keys.block))
    seeds = torch.unique(bounds.topk(seed_count, dim=1).indices)
    running = _Running(t, top_k)
    _score_blocks(q, keys, seeds, running, chunk_blocks, stats)
    tau = running.values[:, -1] - _rounding_margin(q, keys.absmax)
    reach = bounds >= tau[:, None]
    reach[:, seeds] = False
    rest = torch.nonzero(reach.any(dim=0)).flatten()
    _score_blocks(q, keys, rest, running, chunk_blocks, stats)
    return running, (seeds.numel() + rest.numel()) / keys.nb


def blocksparse_topk(
    q: torch.Tensor, k: torch.Tensor, top_k: int, *, block: int = BLOCK, use_bounds: bool = True,
    prune_limit: float = PRUNE_LIMIT, min_blocks: int = MIN_BLOCKS, tick: Tick | None = None,
) -> tuple[torch.Tensor, torch.Tensor, SelectionStats]:
    """Exact top-k keys of every query, scoring only blocks that can reach its k-th score.

    Parameters
    ----------
    q : tensor of shape (n_q, d), float32
        Queries, already multiplied by the score scale (1 / sqrt(d)).
    k : tensor of shape (n, d), float32
    top_k : int
        ``1 <= top_k <= n``.
    block : int
    use_bounds : bool
        False scores every key (the dense path), still tile by tile.
    prune_limit : float
        A tile whose bounds leave more than this share of the key blocks to
        score switches the remaining tiles to the dense path.
    min_blocks : int
        With fewer key blocks every key is scored (the dense path), bounds unused.
    tick : callable, optional
        ``tick(fraction_done)`` after every tile (a cancel raised there stops the work).

    Returns
    -------
    values : tensor of shape (n_q, top_k)
        Scores, highest first.
    idx : tensor of shape (n_q, top_k), int64
        Key indices; among equal scores the lower index.
    stats : SelectionStats
    """
    if q.shape[0] * k.shape[0] <= SMALL_PROBLEM:
        with one_torch_thread():
            return _blocksparse_topk(q, k, top_k, block, use_bounds, prune_limit, min_blocks, tick)
    return _blocksparse_topk(q, k, top_k, block, use_bounds, prune_limit, min_blocks, tick)


def _blocksparse_topk(q, k, top_k, block, use_bounds, prune_limit, min_blocks, tick) -> tuple[torch.Tensor, torch.Tensor, SelectionStats]:
    """:func:`blocksparse_topk` with torch's thread count already chosen."""
    n_q, n = int(q.shape[0]), int(k.shape[0])
    keys = _Keys(k, block)
    tile, chunk_blocks = tile_shape(n_q, n, block)
    stats = SelectionStats(scores_total=n_q * n)
    if not use_bounds or prune_limit <= 0:
        stats.path, stats.reason = "dense", "bounds not requested (topk_bounds_limit = 0)"
    elif keys.nb < MIN_BLOCKS:
        stats.path, stats.reason = "dense", f"{keys.nb} key blocks: too few to prune"
    elif keys.nb < min_blocks:
        stats.path, stats.reason = "dense", (f"{keys.nb} key blocks (under {min_blocks}): every key scored densely, which "
                                             "costs less than the bounds' work per tile of queries at this length")
    elif n_q >= 4 * SAMPLE_QUERIES:
        sample_share = _sampled_block_share(q, keys, top_k, max(1, tile * chunk_blocks // SAMPLE_QUERIES), stats)
        if sample_share > prune_limit:
            stats.path = "dense"
            stats.reason = (f"on a sample of {min(SAMPLE_QUERIES, n_q)} queries the bounds of {sample_share:.0%} of the key "
                            f"blocks reach a query's k-th score (over {prune_limit:.0%}): scored densely")
    order = _query_order(q, keys, tile) if stats.path == "bounds" else None
    rows_in_order = q if order is None else q[order]
    values_out, idx_out = torch.full((n_q, top_k), -math.inf), torch.full((n_q, top_k), NO_KEY, dtype=torch.int64)
    start, dense = 0, None
    while start < n_q:
        size = min(tile, BOUNDS_TILE) if stats.path == "bounds" else tile
        rows = rows_in_order[start:start + size]
        stats.tiles += 1
        if stats.path == "bounds":
            running, share = _tile_with_bounds(rows, keys, top_k, chunk_blocks, stats)
            stats.bound_fractions.append(share)
            probed = len(stats.bound_fractions) >= PROBE_TILES or start + size >= n_q
            mean_share = sum(stats.bound_fractions) / len(stats.bound_fractions)
            if probed and mean_share > prune_limit:
                stats.path = "dense"
                stats.reason = (f"bounds left {mean_share:.0%} of the key blocks of the first {len(stats.bound_fractions)} "
                                f"tiles to score (over {prune_limit:.0%}); the remaining tiles were scored densely")
            values_out[start:start + size], idx_out[start:start + size] = running.values, running.cols
        else:
            stats.tiles_dense += 1
            dense = dense or _DenseTiles(keys, tile, top_k, chunk_blocks)
            dense.select(rows, values_out[start:start + size], idx_out[start:start + size], stats)
        start += size
        if tick is not None:
            tick(min(1.0, start / n_q))
    if stats.path == "bounds":
        stats.reason = f"bounds left {stats.fraction_computed:.1%} of the scores to compute"
    if order is not None:
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(n_q)
        values_out, idx_out = values_out[inverse], idx_out[inverse]
    return values_out, idx_out, stats


class KeyBlockIndex:
    """A key cache that keeps its blocks' bounds up to date as keys are appended (decoding).

    What a serving engine does with Quest's pages: appending a key updates
    the per-dimension min/max of the block it lands in (O(d)), so a decode
    step costs the append plus the pruned search, never a rebuild of every
    block's bounds. Storage grows by doubling.

    Parameters
    ----------
    dim : int
        Key width d.
    block : int
    capacity : int
        Keys held before the first growth.

    >>> index = KeyBlockIndex(2, block=2)
    >>> index.append(torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]]))
    >>> index.topk(torch.tensor([[1.0, 0.0]]), 2)[1].tolist()
    [[2, 0]]
    """

    def __init__(self, dim: int, block: int = BLOCK, capacity: int = 1024) -> None:
        self.dim, self.block, self.n, self.absmax = int(dim), int(block), 0, 0.0
        self._alloc(max(1, math.ceil(capacity / block)))

    def _alloc(self, n_blocks: int) -> None:
        """(Re)allocate room for ``n_blocks`` blocks, keeping what is held."""
        buf = torch.zeros(n_blocks * self.block, self.dim)
        lo, hi = torch.full((n_blocks, self.dim), math.inf), torch.full((n_blocks, self.dim), -math.inf)
        if self.n:
            used = math.ceil(self.n / self.block)
            buf[:self.n], lo[:used], hi[:used] = self._buf[:self.n], self._lo[:used], self._hi[:used]
        self._buf, self._lo, self._hi = buf, lo, hi

    def append(self, keys: torch.Tensor) -> None:
        """Add keys (m, d) after the ones held; only the bounds of the blocks they land in change."""
        keys = keys.reshape(-1, self.dim).to(torch.float32)
        m = int(keys.shape[0])
        if m == 0:
            return
        if self.n + m > self._buf.shape[0]:
            self._alloc(max(2 * self._lo.shape[0], math.ceil((self.n + m) / self.block)))
        self._buf[self.n:self.n + m] = keys
        start = 0
        while start < m:  # one block at a time: the partly filled one, then whole ones, then the rest
            b = (self.n + start) // self.block
            stop = min(m, (b + 1) * self.block - self.n)
            part = keys[start:stop]
            if stop - start == self.block:
                whole = (m - start) // self.block
                span = keys[start:start + whole * self.block].view(whole, self.block, self.dim)
                self._lo[b:b + whole], self._hi[b:b + whole] = span.amin(dim=1), span.amax(dim=1)
                stop = start + whole * self.block
            else:
                torch.minimum(self._lo[b], part.amin(dim=0), out=self._lo[b])
                torch.maximum(self._hi[b], part.amax(dim=0), out=self._hi[b])
            start = stop
        self.absmax = max(self.absmax, float(keys.abs().max()))
        self.n += m

    def keys(self) -> torch.Tensor:
        """The keys held, (n, d) (a view)."""
        return self._buf[:self.n]

    def _as_keys(self) -> _Keys:
        """The held keys as the search sees them (views, no copy)."""
        view = _Keys.__new__(_Keys)
        nb = math.ceil(self.n / self.block)
        view.n, view.block, view.nb, view.absmax = self.n, self.block, nb, self.absmax
        view.flat = self._buf[:nb * self.block]
        view.blocks = view.flat.view(nb, self.block, self.dim)
        view.lo, view.hi = self._lo[:nb], self._hi[:nb]
        return view

    def topk(self, q: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor, SelectionStats]:
        """Exact top-k keys of a few queries (n_q, d), already scaled: values, indices (n_q, top_k), stats.

        The queries form one tile (decode: one query per sequence step).
        """
        if not 1 <= top_k <= self.n:
            raise ValueError(f"top_k must be within 1..{self.n}, got {top_k}")
        keys = self._as_keys()
        _, chunk_blocks = tile_shape(q.shape[0], self.n, self.block)
        stats = SelectionStats(scores_total=int(q.shape[0]) * self.n)
        with one_torch_thread():
            running, share = _tile_with_bounds(q, keys, top_k, chunk_blocks, stats)
        stats.tiles, stats.bound_fractions = 1, [share]
        stats.reason = f"bounds left {stats.fraction_computed:.1%} of the scores to compute"
        return running.values, running.cols, stats
