"""Compiled row kernels of the top-k router (numba): selection, choice and the dual bound's terms.

Each kernel makes one pass over a token's row and keeps its ``m`` best
values in a small sorted buffer (a value enters only if it beats the
buffer's worst, so a row of 256 experts costs about 256 comparisons).
``torch.topk`` sorts a copy of the whole ``u - w * price`` table instead,
which at a million tokens x 256 experts dominated the router and the bound.
Rows are independent, so they run in parallel (``prange``) on numba's
threads. Values are computed in float64 from the float32 utilities, ties go
to the lower column.

Compiled on first use and cached on disk (``cache=True``); see README
(routing) for the one-off compile time.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["dense_topk", "choose_rows", "bound_terms"]


@njit(cache=True, inline="always")
def _insert(values: np.ndarray, index: np.ndarray, m: int, v: float, e: int) -> None:
    """Put ``v`` (column ``e``) into the descending buffer of ``m`` values, dropping its last; caller checks ``v > values[m-1]``."""
    s = m - 1
    while s > 0 and values[s - 1] < v:
        values[s] = values[s - 1]
        index[s] = index[s - 1]
        s -= 1
    values[s] = v
    index[s] = e


@njit(parallel=True, cache=True)
def dense_topk(u, w, prices, rows, m, out_values, out_index):  # pragma: no cover - compiled
    """For each ``t = rows[j]``: the ``m`` largest ``u[t, e] - w[t] * prices[e]``, descending, into ``out_*[j]``.

    u (n, E) float32; w (n,) float; prices (E,) float64; rows (r,) int64;
    out_values (r, m) float64 and out_index (r, m) int64 (written).
    """
    E = u.shape[1]
    for j in prange(rows.shape[0]):
        t = rows[j]
        wt = np.float64(w[t])
        values = out_values[j]
        index = out_index[j]
        for s in range(m):
            values[s] = -np.inf
            index[s] = -1
        for e in range(E):
            v = np.float64(u[t, e]) - wt * prices[e]
            if v > values[m - 1]:
                _insert(values, index, m, v, e)


@njit(parallel=True, cache=True)
def choose_rows(cand_e, cand_u, w, prices, drop_value, rows, k, drop_expert, chosen, margin, top, kth):  # pragma: no cover
    """Each token's k best candidates at ``prices`` (see ``_topk._choose``), written in place for ``rows``.

    cand_e (n, c) int64, cand_u (n, c) float32, w (n,), prices (E + 1,)
    float64, drop_value (n,) float64, rows (r,) int64. Writes chosen (n, k)
    int64 (``drop_expert`` where dropping the slot is worth more), margin
    (n, k) float64 (a choice's value over the best unchosen option), top
    (n, k + 1) int64 (the experts of the k + 1 best values) at those rows,
    and kth (r,) float64 (each row's k-th best value).
    """
    c = cand_e.shape[1]
    m = k + 1
    r = rows.shape[0]
    blocks = min(r, 64)
    for b in prange(blocks):
        values = np.empty(m)
        index = np.empty(m, dtype=np.int64)
        for j in range(b * r // blocks, (b + 1) * r // blocks):
            t = rows[j]
            wt = np.float64(w[t])
            for s in range(m):
                values[s] = -np.inf
                index[s] = 0
            for s in range(c):
                v = np.float64(cand_u[t, s]) - wt * prices[cand_e[t, s]]
                if v > values[m - 1]:
                    _insert(values, index, m, v, s)
            runner_up = max(values[k], drop_value[t])
            for s in range(m):
                top[t, s] = cand_e[t, index[s]]
            for s in range(k):
                gap = values[s] - runner_up
                chosen[t, s] = top[t, s] if gap >= 0 else drop_expert
                margin[t, s] = abs(gap)
            kth[j] = values[k - 1]


@njit(parallel=True, cache=True)
def bound_terms(u, w, prices, penalty, k, chunks):  # pragma: no cover - compiled
    """The dual function's token terms at ``prices``: ``(sum, sum of |terms|, load (E,))``.

    Each token contributes its k best ``max(u[t, e] - w[t] * prices[e],
    -penalty * w[t])``; ``load`` is the complexity those choices put on each
    expert (slots worth no more than dropping are dropped, not loaded).
    ``chunks`` row blocks run in parallel, each with its own load row.
    """
    n, E = u.shape
    sums = np.zeros(chunks)
    magnitude = np.zeros(chunks)
    loads = np.zeros((chunks, E))
    for c in prange(chunks):
        values = np.empty(k)
        index = np.empty(k, dtype=np.int64)
        for t in range(c * n // chunks, (c + 1) * n // chunks):
            wt = np.float64(w[t])
            for s in range(k):
                values[s] = -np.inf
                index[s] = -1
            for e in range(E):
                v = np.float64(u[t, e]) - wt * prices[e]
                if v > values[k - 1]:
                    _insert(values, index, k, v, e)
            drop = -penalty * wt
            for s in range(k):
                if values[s] >= drop:
                    sums[c] += values[s]
                    magnitude[c] += abs(values[s])
                    loads[c, index[s]] += wt
                else:
                    sums[c] += drop
                    magnitude[c] += abs(drop)
    return sums.sum(), magnitude.sum(), loads.sum(axis=0)
