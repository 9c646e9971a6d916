"""Compiled (numba) kernels of exact top-k attention: the per-row selection and the sparse softmax-times-V.

Why compiled: torch's CPU operators select with a full ``topk`` or a mask and
``nonzero`` over every score, several passes and allocations per tile; at
1,024 positions that costs about 5 ns a score on top of the 1.5 ns matmul,
more than dense SDPA itself. Here each row of a tile's scores (already
computed by a BLAS matmul, so they are in cache) is read once more:

1. a threshold: with the row's maxima over ``G`` column groups (group ``g``
   is columns ``g, g + G, g + 2G, ...``, reduced by torch), any value ``t``
   that at least ``k`` group maxima reach is at most the row's k-th value
   (those maxima are k distinct elements at or above ``t``). ``t`` is found
   by bisection between the lowest and highest maximum, so on random rows
   about ``k + k/8`` elements reach it;
2. one pass collects the elements at or above ``t`` (and the running top k
   from earlier key chunks) into a buffer;
3. each candidate's rank is counted (how many candidates beat it: higher
   value, or equal value and lower key index, both in one int64 order key),
   which places it directly; the count over a few dozen candidates is a
   vectorised loop. Where many values tie (more than ``RANK_LIMIT``
   candidates), candidates are inserted into the sorted top k one at a time
   instead.

Every step keeps what is at or above the threshold, so ties with the k-th
value are always candidates and the tie rule (lower key index first)
decides: the result is exactly the brute-force top k, ``-inf`` scores
included (a NaN score, which validated inputs never give, ranks above every
value, as in ``torch.topk``). With more than one torch thread, large calls
split their rows over as many threads as torch uses.

Compiled on first use and cached on disk (:func:`qflow.core.compiled.kernel`):
:func:`warm_up` compiles (or loads) every kernel on tiny inputs and returns
the seconds it took.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import torch

from qflow.core.compiled import kernel

__all__ = ["NO_KEY", "RANK_LIMIT", "attend", "candidate_elements", "groups_for", "merge_topk", "merge_topk_arrays", "threads_for",
           "warm_up"]

#: Key index of an empty slot of a running top k: past every real key, so the tie rule ranks it last.
NO_KEY = np.iinfo(np.int64).max
#: Key indices are below this (they fill 32 bits of a candidate's order key, see _order_key).
MAX_KEYS = (1 << 32) - 1
#: Candidates up to which ranks are counted (quadratic, vectorised); above it they are inserted one by one.
RANK_LIMIT = 96
#: Column groups of the threshold at most (a row of m columns uses at most m / MIN_GROUP_WIDTH of them).
MAX_GROUPS = 128
#: Columns per group at least: fewer, and the group maxima cost as much to scan as the row.
MIN_GROUP_WIDTH = 8
#: Bisection steps of the threshold: each halves the gap between the lowest and highest group maximum.
THRESHOLD_STEPS = 8
#: Below this many elements (scores, or weights x value columns) a kernel call stays on the calling thread.
PARALLEL_MIN = 1 << 18


@kernel(nogil=True, inline="always")
def _count_at_least(values, n, t):
    """How many of ``values[:n]`` are >= t (branch-free: vectorised)."""
    count = 0
    for i in range(n):
        count += values[i] >= t
    return count


@kernel(nogil=True)
def _threshold(maxima, k, floor):
    """A value at most the row's k-th highest, from its group maxima (G,): at least ``k`` of them reach it.

    ``floor`` (the running k-th value, or -inf) is returned when it is higher.
    """
    groups = maxima.shape[0]
    if groups < k:
        return floor
    lo, hi = maxima[0], maxima[0]
    for g in range(groups):
        if maxima[g] != maxima[g]:  # a NaN score: no bound from the maxima (NaN ranks above every value)
            return floor
        lo = min(lo, maxima[g])
        hi = max(hi, maxima[g])
    if lo > -np.inf and hi < np.inf:
        for _ in range(THRESHOLD_STEPS):
            mid = np.float32(0.5) * (lo + hi)
            if _count_at_least(maxima, groups, mid) >= k:
                lo = mid
            else:
                hi = mid
    return max(lo, floor)


@kernel(nogil=True, inline="always")
def _order_key(x, key):
    """One int64 that orders (value, key) pairs as the tie rule does: higher value first, then lower key.

    The high 32 bits are the float's bits made order-preserving as a signed
    integer (negative floats' magnitude bits flipped; -0.0 first made +0.0,
    which compares equal to it; any NaN above +inf), the low 32 bits ``2**32 - 1 - key`` (keys
    below ``2**32 - 1``). One integer comparison, which vectorises, replaces
    a value comparison and a key comparison on ties.
    """
    bits = np.int64(np.float32(x + np.float32(0.0)).view(np.int32))
    if x != x:  # every NaN as the positive quiet NaN: above +inf
        bits = 0x7FC00000
    elif bits < 0:
        bits = bits ^ 0x7FFFFFFF
    return (bits << 32) | (0xFFFFFFFF - key)


@kernel(nogil=True)
def _place(buf_v, buf_c, buf_u, count, run_v, run_c):
    """The top k of ``count`` candidates with distinct keys into run_v/run_c (k,), best first.

    A few (up to ``RANK_LIMIT``): each one's rank is the count of candidates
    that beat it (quadratic, vectorised). Many (ties): inserted one by one
    into the sorted top k.
    """
    k = run_v.shape[0]
    for i in range(k):
        run_v[i], run_c[i] = -np.inf, NO_KEY
    for i in range(count):
        buf_u[i] = _order_key(buf_v[i], buf_c[i])
    if count <= RANK_LIMIT:
        for i in range(count):
            mine = buf_u[i]
            rank = 0
            for j in range(count):
                rank += buf_u[j] > mine
            if rank < k:
                run_v[rank], run_c[rank] = buf_v[i], buf_c[i]
        return
    filled = 0
    for i in range(count):
        mine = buf_u[i]
        if filled == k and mine < buf_u[k - 1]:
            continue
        pos = min(filled, k - 1)
        while pos > 0 and mine > buf_u[pos - 1]:  # the sorted top k so far lives in buf_u[:k] (already read)
            buf_u[pos], run_v[pos], run_c[pos] = buf_u[pos - 1], run_v[pos - 1], run_c[pos - 1]
            pos -= 1
        buf_u[pos], run_v[pos], run_c[pos] = mine, buf_v[i], buf_c[i]
        filled = min(filled + 1, k)


@kernel(nogil=True)
def _kept_running(run_v, run_c, t, buf_v, buf_c):
    """Copy the running entries at or above ``t`` (empty slots never) to the buffer's start; returns how many."""
    count = 0
    for i in range(run_v.shape[0]):
        if run_c[i] != NO_KEY and not run_v[i] < t:  # "not <": NaN is kept
            buf_v[count], buf_c[count] = run_v[i], run_c[i]
            count += 1
    return count


@kernel(nogil=True)
def _merge_row(row, maxima, cols, run_v, run_c, buf_v, buf_c, buf_u):
    """Merge one row of scores (m,) with keys ``cols`` (m,) into its running top k (run_v, run_c: (k,), best first).

    ``maxima`` (G,) are the row's maxima over the columns ``g, g + G, ...`` of
    the first ``m - m % G`` columns; the remaining columns are folded in here.
    ``buf_v``/``buf_c``/``buf_u`` hold the candidates (at least ``2 k + 1``); when they
    fill up (many ties), the top k so far is placed, the threshold rises to
    its k-th value and collection goes on.
    """
    m, k, cap = row.shape[0], run_v.shape[0], buf_v.shape[0]
    groups = maxima.shape[0]
    if groups:
        full = m - m % groups
        for j in range(full, m):
            maxima[j - full] = max(maxima[j - full], row[j])
    t = _threshold(maxima, k, run_v[k - 1])
    count = _kept_running(run_v, run_c, t, buf_v, buf_c)
    for j in range(m):
        if not row[j] < t:  # at or above t, or NaN (which ranks above every value, as in torch.topk)
            if count == cap:
                _place(buf_v, buf_c, buf_u, count, run_v, run_c)
                t = max(t, run_v[k - 1])
                count = _kept_running(run_v, run_c, t, buf_v, buf_c)
            buf_v[count], buf_c[count] = row[j], cols[j]
            count += 1
    _place(buf_v, buf_c, buf_u, count, run_v, run_c)


@kernel(nogil=True)
def _merge_span(scores, maxima, cols, run_v, run_c, first, stop):
    """:func:`_merge_row` on rows ``first .. stop - 1``, with one candidate buffer."""
    cap = _candidate_cap(run_v.shape[1])
    buf_v = np.empty(cap, np.float32)
    buf_c = np.empty(cap, np.int64)
    buf_u = np.empty(cap, np.int64)
    for r in range(first, stop):
        _merge_row(scores[r], maxima[r], cols, run_v[r], run_c[r], buf_v, buf_c, buf_u)


@kernel(nogil=True)
def _candidate_cap(k):
    """Candidates a row's buffer holds: the running k, then at least ``k + RANK_LIMIT`` new ones."""
    return 2 * k + RANK_LIMIT


@kernel(nogil=True)
def _attend_span(values, idx, v, out, first, stop):
    """``out[r] = softmax(values[r]) @ v[idx[r]]`` for rows ``first .. stop - 1`` (softmax less its maximum)."""
    k, width = values.shape[1], v.shape[1]
    acc = np.empty(width, np.float32)
    for r in range(first, stop):
        top = values[r, 0]
        for j in range(1, k):
            top = max(top, values[r, j])
        acc[:] = 0.0
        total = 0.0
        for j in range(k):
            w = np.float32(math.exp(values[r, j] - top))
            total += w
            value_row = v[idx[r, j]]
            for c in range(width):
                acc[c] += w * value_row[c]
        inverse = np.float32(1.0 / total)
        for c in range(width):
            out[r, c] = acc[c] * inverse


def threads_for(work: int) -> int:
    """Threads for ``work`` elements: torch's intra-op thread count (1 for small work)."""
    return 1 if work < PARALLEL_MIN else max(1, torch.get_num_threads())


def _split_rows(span_kernel, args: tuple, rows: int, threads: int) -> None:
    """Run ``span_kernel(*args, first, stop)`` over ``rows`` rows in ``threads`` contiguous spans.

    The kernels release the GIL (``nogil``), so spans on Python threads run
    in parallel. Plain threads rather than numba's ``parallel=True``: its
    OpenMP layer shares torch's OpenMP runtime and resets torch's thread
    count when it starts.
    """
    if threads <= 1:
        span_kernel(*args, 0, rows)
        return
    workers = [threading.Thread(target=span_kernel, args=(*args, s * rows // threads, (s + 1) * rows // threads))
               for s in range(1, threads)]
    for worker in workers:
        worker.start()
    span_kernel(*args, 0, rows // threads)
    for worker in workers:
        worker.join()


def groups_for(m: int, k: int) -> int:
    """Column groups of a row of ``m`` for a top ``k``: a power of two, at least k and at most m / MIN_GROUP_WIDTH, else 0."""
    groups = MAX_GROUPS
    while groups > 1 and groups * MIN_GROUP_WIDTH > m:
        groups //= 2
    return groups if groups >= k else 0


def candidate_elements(k: int) -> int:
    """Scratch of one candidate buffer in float32 elements (a float32 value and two int64 per candidate)."""
    return 5 * (2 * k + RANK_LIMIT)


def merge_topk(scores: torch.Tensor, cols: torch.Tensor, run_v: torch.Tensor, run_c: torch.Tensor) -> int:
    """Merge a chunk of scores into each row's running top k, in place.

    Parameters
    ----------
    scores : tensor of shape (T, m), float32
        ``-inf`` allowed (masked keys); NaN ranks above every value.
    cols : tensor of shape (m,), int64
        Key index of each column, below ``MAX_KEYS`` (distinct from the keys already in ``run_c``).
    run_v, run_c : tensors of shape (T, k), float32 and int64, C-contiguous
        Each row's best k so far, best first (value descending, then key
        ascending); empty slots ``(-inf, NO_KEY)``. Updated in place.

    Returns
    -------
    int
        Scratch elements held besides ``scores`` (the group maxima and the candidate buffers).
    """
    t, m = scores.shape
    k = run_v.shape[1]
    groups = groups_for(m, k)
    scores = scores.contiguous()
    if groups:
        maxima = scores[:, :m - m % groups].view(t, -1, groups).amax(dim=1)
    else:
        maxima = torch.empty(t, 0)
    threads = min(threads_for(t * m), t)
    merge_topk_arrays(scores.numpy(), maxima.numpy(), cols.contiguous().numpy(), run_v.numpy(), run_c.numpy(), threads)
    return t * groups + threads * candidate_elements(k)


def merge_topk_arrays(scores: np.ndarray, maxima: np.ndarray, cols: np.ndarray, run_v: np.ndarray, run_c: np.ndarray,
                      threads: int) -> None:
    """:func:`merge_topk` on C-contiguous numpy arrays with the group maxima (T, G) given, on ``threads`` threads.

    The entry for callers that keep their own buffers (a torch call costs
    microseconds; a tile of scores is selected in tens of them).
    """
    _split_rows(_merge_span, (scores, maxima, cols, run_v, run_c), scores.shape[0], threads)


def attend(values: torch.Tensor, idx: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Sparse attention output: ``softmax(values[r]) @ v[idx[r]]`` for every row.

    values : (n_q, k) float32, idx : (n_q, k) int64 (indices into v), v : (n, d_v) float32 -> (n_q, d_v) float32.
    """
    values, idx, v = values.contiguous(), idx.contiguous(), v.contiguous()
    if idx.numel() and not 0 <= int(idx.min()) <= int(idx.max()) < v.shape[0]:
        raise ValueError(f"key indices must be within 0..{v.shape[0] - 1}, got {int(idx.min())}..{int(idx.max())}")
    out = np.empty((values.shape[0], v.shape[1]), np.float32)
    args = (values.numpy(), idx.numpy(), v.numpy(), out)
    threads = min(threads_for(values.numel() * v.shape[1]), max(values.shape[0], 1))
    _split_rows(_attend_span, args, values.shape[0], threads)
    return torch.from_numpy(out)


def warm_up() -> float:
    """Compile (or load from numba's cache) every kernel on tiny inputs; returns the seconds it took."""
    start = time.perf_counter()
    scores = torch.arange(64 * 2, dtype=torch.float32).view(2, 64)
    run_v, run_c = torch.full((2, 2), -math.inf), torch.full((2, 2), NO_KEY, dtype=torch.int64)
    merge_topk(scores, torch.arange(64), run_v, run_c)
    attend(run_v, run_c, torch.ones(64, 3))
    return time.perf_counter() - start
