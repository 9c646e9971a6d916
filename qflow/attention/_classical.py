"""Classical attention pieces in torch: sparse top-k, dense SDPA, random-k,
sinusoidal positions, the InfoNCE trainer and the SVD head pruner.

Every function takes already validated float32 arrays/tensors (see
``_schemas.build_inputs``) and is deterministic for a given seed.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from qflow.attention._blocksparse import (
    ATTENTION_MIN_BLOCKS,
    BLOCK,
    PRUNE_LIMIT,
    SMALL_PROBLEM,
    SelectionStats,
    Tick,
    blocksparse_topk,
)
from qflow.attention._checkpoint import PROJECTIONS, AttentionWeights
from qflow.attention._kernels import attend
from qflow.core.threads import one_torch_thread

__all__ = [
    "QUERY_CHUNK",
    "HeadReport",
    "attention_memory_bytes",
    "dense_attention",
    "error_vs_k",
    "head_report",
    "info_nce_loss",
    "layer_forward",
    "params_saved",
    "random_k_attention",
    "relative_error",
    "sinusoidal_encoding",
    "sparse_attention",
    "topk_attention",
    "train_contrastive",
]

#: Queries whose selected values are gathered at once (random-k also scores this many at a time).
QUERY_CHUNK = 512
#: Elements of gathered keys/values held at once (16 MiB of float32).
GATHER_ELEMENTS = 1 << 22
#: Queries per SDPA call of the dense baseline (a progress report after each).
DENSE_CHUNK = 2048
#: Queries the error-vs-k sweep measures (the first ones): it bounds that sweep's cost on long sequences.
ERROR_VS_K_QUERIES = 512


def _t(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def dense_attention(q, k, v, tick: Tick | None = None, chunk: int = DENSE_CHUNK) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` by ``torch.nn.functional.scaled_dot_product_attention``.

    q : (n_q, d), k : (n, d), v : (n, d_v) -> (n_q, d_v). Queries go in
    chunks of ``chunk`` with ``tick(fraction_done)`` after each, so a cancel
    stops a long sequence between chunks.
    """
    q, k, v = _t(q), _t(k), _t(v)
    outs = []
    for start in range(0, q.shape[0], chunk):
        outs.append(F.scaled_dot_product_attention(q[None, start:start + chunk], k[None], v[None])[0])
        if tick is not None:
            tick(min(1.0, (start + chunk) / q.shape[0]))
    return torch.cat(outs)


def _gathered(weights: torch.Tensor, idx: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``sum_j weights[i, j] v[idx[i, j]]``: (c, k), (c, k), (n, d_v) -> (c, d_v).

    Gathers the k value rows per query, or, when that is more than a row of
    n weights (k d_v > n), scatters the weights into a (c, n) row and uses
    one matmul: the same sum with less memory and a BLAS kernel.
    """
    if idx.shape[1] * v.shape[1] > v.shape[0]:
        dense = torch.zeros(idx.shape[0], v.shape[0], dtype=weights.dtype).scatter_(1, idx, weights)
        return dense @ v
    return torch.einsum("ck,ckd->cd", weights, v[idx])


def topk_attention(q, k, v, top_k: int, *, use_bounds: bool = True, block: int = BLOCK, prune_limit: float = PRUNE_LIMIT,
                   tick: Tick | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k sparse attention: per query, softmax over its ``top_k`` highest-scoring keys only.

    Scores are ``q k^T / sqrt(d)`` (as SDPA). Keys are found by
    :func:`~qflow.attention._blocksparse.blocksparse_topk` (blocks whose score
    bound cannot reach a query's top k are never scored); with ``top_k = n``
    this is dense attention.

    Returns
    -------
    out : tensor of shape (n_q, d_v)
    idx : tensor of shape (n_q, top_k), int64
        Selected key indices per query, highest score first.

    >>> x = torch.eye(3)
    >>> out, idx = topk_attention(x, x, x, 1)
    >>> idx.flatten().tolist(), bool(torch.allclose(out, x))
    ([0, 1, 2], True)
    """
    out, idx, _ = sparse_attention(q, k, v, top_k, use_bounds=use_bounds, block=block, prune_limit=prune_limit, tick=tick)
    return out, idx


def sparse_attention(q, k, v, top_k: int, *, use_bounds: bool = True, block: int = BLOCK, prune_limit: float = PRUNE_LIMIT,
                     tick: Tick | None = None) -> tuple[torch.Tensor, torch.Tensor, SelectionStats]:
    """:func:`topk_attention`, also returning what the selection computed (:class:`SelectionStats`).

    Under ``ATTENTION_MIN_BLOCKS`` key blocks every key is scored (the dense
    path, recorded in the stats' reason). The softmax over each query's k
    scores and the weighted sum of its k value rows run in one compiled pass
    (:func:`~qflow.attention._kernels.attend`).
    """
    q, k, v = _t(q), _t(k), _t(v)
    scale = 1.0 / math.sqrt(q.shape[1])
    values, idx, stats = blocksparse_topk(q * scale, k, top_k, block=block, use_bounds=use_bounds, prune_limit=prune_limit,
                                          min_blocks=ATTENTION_MIN_BLOCKS, tick=tick)
    with one_torch_thread() if q.shape[0] * k.shape[0] <= SMALL_PROBLEM else nullcontext():
        return attend(values, idx, v), idx, stats


def _gather_rows(top_k: int, width: int) -> int:
    """Queries per chunk so ``top_k * width`` elements per query stay within GATHER_ELEMENTS at once."""
    return max(1, min(QUERY_CHUNK, GATHER_ELEMENTS // (top_k * width)))


def random_k_attention(q, k, v, top_k: int, seed: int = 0, chunk: int = QUERY_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Baseline: softmax over ``top_k`` keys drawn uniformly without replacement per query (seeded)."""
    q, k, v = _t(q), _t(k), _t(v)
    gen = torch.Generator().manual_seed(int(seed))
    scale = 1.0 / math.sqrt(q.shape[1])
    outs, idxs = [], []
    chunk = min(chunk, _gather_rows(min(top_k * max(k.shape[1], v.shape[1]), k.shape[0]), 1))
    for start in range(0, q.shape[0], chunk):
        rows = q[start:start + chunk]
        idx = torch.rand(rows.shape[0], k.shape[0], generator=gen).topk(top_k, dim=1).indices
        if top_k * k.shape[1] > k.shape[0]:  # fewer multiply-adds as one matmul than as a gather of k rows
            scores = (rows @ k.T).gather(1, idx) * scale
        else:
            scores = torch.einsum("cd,ckd->ck", rows, k[idx]) * scale
        outs.append(_gathered(torch.softmax(scores, dim=1), idx, v))
        idxs.append(idx)
    return torch.cat(outs), torch.cat(idxs)


def relative_error(approx, reference) -> float:
    """Relative L2 (Frobenius) error ``||approx - reference|| / ||reference||``.

    >>> relative_error(np.array([1.0, 1.0]), np.array([1.0, 0.0]))
    1.0
    """
    a = torch.as_tensor(np.asarray(approx) if not isinstance(approx, torch.Tensor) else approx, dtype=torch.float64)
    r = torch.as_tensor(np.asarray(reference) if not isinstance(reference, torch.Tensor) else reference, dtype=torch.float64)
    denom = float(torch.linalg.norm(r))
    return float(torch.linalg.norm(a - r)) / max(denom, 1e-30)


def attention_memory_bytes(n_queries: int, n_keys: int, top_k: int | None) -> int:
    """Bytes of the attention pattern kept per layer call.

    Dense (``top_k=None``): an (n_q, n) float32 matrix. Sparse: an (n_q, k)
    float32 weight and an (n_q, k) int64 index.

    >>> attention_memory_bytes(4, 8, None), attention_memory_bytes(4, 8, 2)
    (128, 96)
    """
    if top_k is None:
        return 4 * n_queries * n_keys
    return (4 + 8) * n_queries * top_k


def error_vs_k(q, k, v, ks: list[int], seed: int = 0, queries: int = ERROR_VS_K_QUERIES,
               tick: Tick | None = None) -> list[dict[str, float]]:
    """Relative error against dense attention of top-k and random-k at each ``k`` in ``ks``, on the first ``queries`` queries."""
    q = _t(q)[:queries]
    dense = dense_attention(q, k, v)
    rows = []
    for i, kk in enumerate(ks):
        rows.append({
            "k": int(kk),
            "topk_relative_error": relative_error(topk_attention(q, k, v, kk, use_bounds=False)[0], dense),
            "random_k_relative_error": relative_error(random_k_attention(q, k, v, kk, seed)[0], dense),
        })
        if tick is not None:
            tick((i + 1) / len(ks))
    return rows


def k_grid(n: int, top_k: int) -> list[int]:
    """Powers of two up to ``n``, plus ``top_k`` and ``n`` (the error-vs-k chart's x values)."""
    ks = {1 << p for p in range(int(math.log2(n)) + 1)} | {top_k, n}
    return sorted(kk for kk in ks if 1 <= kk <= n)


def sinusoidal_encoding(positions: np.ndarray, d: int) -> np.ndarray:
    """Transformer position encoding (Vaswani et al. 2017) of possibly fractional positions.

    ``PE[p, 2j] = sin(p / 10000**(2j/d))``, ``PE[p, 2j+1] = cos(p / 10000**(2j/d))``.

    Returns
    -------
    ndarray of shape (len(positions), d), float32

    >>> sinusoidal_encoding(np.array([0.0]), 4).tolist()
    [[0.0, 1.0, 0.0, 1.0]]
    """
    pos = np.asarray(positions, dtype=np.float64)[:, None]
    freq = 1.0 / (10000.0 ** (np.arange(0, d, 2, dtype=np.float64) / d))
    pe = np.zeros((pos.shape[0], d))
    pe[:, 0::2] = np.sin(pos * freq)
    pe[:, 1::2] = np.cos(pos * freq)[:, : d // 2]
    return pe.astype(np.float32)


def info_nce_loss(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """InfoNCE ``L = sum_i -log(exp(q_i . k_i) / sum_j exp(q_i . k_j))``.

    q, k : (n, d); row ``i`` of ``k`` is the positive of row ``i`` of ``q``,
    every other row a negative. Computed as a summed cross entropy over the
    logits ``q k^T`` (log-sum-exp, so large dot products do not overflow).
    """
    logits = q @ k.T
    return F.cross_entropy(logits, torch.arange(q.shape[0]), reduction="sum")


def train_contrastive(
    x_q: np.ndarray, x_k: np.ndarray, w_q: np.ndarray, w_k: np.ndarray, steps: int, lr: float, seed: int = 0,
    tick: Tick | None = None,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Fit projections ``W_q, W_k`` (d x d, ``y = x W^T``) with Adam on :func:`info_nce_loss`.

    Parameters
    ----------
    x_q, x_k : ndarray of shape (n, d)
        Inputs of the query and key projections (the same array for Q = K).
    w_q, w_k : ndarray of shape (d, d)
        Initial projections (the layer's, or the identity).
    steps : int
    lr : float

    Returns
    -------
    w_q, w_k : ndarray of shape (d, d)
    losses : list of float
        Loss before each step, then the final loss (``steps + 1`` values).
    tick : callable, optional
        ``tick(fraction_done)`` before every step (a cancel raised there stops training).
    """
    with one_torch_thread():
        return _train(x_q, x_k, w_q, w_k, steps, lr, seed, tick)


def _train(x_q, x_k, w_q, w_k, steps: int, lr: float, seed: int, tick=None) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """:func:`train_contrastive` on already valid inputs, single-threaded by the caller."""
    torch.manual_seed(int(seed))
    xq, xk = _t(x_q), _t(x_k)
    wq = torch.nn.Parameter(_t(w_q).clone())
    wk = torch.nn.Parameter(_t(w_k).clone())
    opt = torch.optim.Adam([wq, wk], lr=lr)
    losses = []
    for step in range(steps):
        if tick is not None:
            tick(step / steps)
        opt.zero_grad()
        loss = info_nce_loss(xq @ wq.T, xk @ wk.T)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    with torch.no_grad():
        losses.append(float(info_nce_loss(xq @ wq.T, xk @ wk.T)))
    return wq.detach().numpy().copy(), wk.detach().numpy().copy(), losses


@dataclass(frozen=True)
class HeadReport:
    """SVD of each head's output circuit.

    Attributes
    ----------
    singular_values : ndarray of shape (H, d_h + 1)
        Of ``[W_O,h W_V,h | W_O,h b_V,h]`` (d x (d+1)), largest first.
    qk_leading : ndarray of shape (H,)
        Leading singular value of ``W_Q,h^T W_K,h`` (how sharp the head's pattern can be).
    keep : ndarray of shape (H,), bool
    """

    singular_values: np.ndarray
    qk_leading: np.ndarray
    keep: np.ndarray


def _head_rows(head: int, dh: int) -> slice:
    return slice(head * dh, (head + 1) * dh)


def head_report(weights: AttentionWeights, threshold: float) -> HeadReport:
    """Per query head, the singular values of its output circuit; prune where the leading one is under ``threshold``.

    Why the OV circuit: head ``h`` adds ``W_O,h (A_h (X W_V,g^T + b_V,g))``
    to the output (``g`` its key/value head), and every row of ``A_h`` is a
    convex combination, so the head's contribution to a token is at most
    ``sigma_1 * ||[x; 1]||`` for the augmented matrix ``[W_O,h W_V,g |
    W_O,h b_V,g]``. A head under the threshold can move no output by more
    than that, whatever it attends to.
    """
    H, dh, group = weights.n_heads, weights.d_head, weights.group
    w, b = weights.w, weights.b
    sv = np.zeros((H, dh + 1))
    qk = np.zeros(H)
    for h in range(H):
        rows, kv_rows = _head_rows(h, dh), _head_rows(h // group, dh)
        # W_O,h [W_V,g | b_V,g] is d x (d+1) of rank <= dh: with W_O,h = Q R (Q orthonormal columns) its
        # singular values are those of the dh x (d+1) matrix R [W_V,g | b_V,g], a much smaller SVD.
        _, r_o = np.linalg.qr(w["o_proj"][:, rows].astype(np.float64))
        v_aug = np.concatenate([w["v_proj"][kv_rows].astype(np.float64), b["v_proj"][kv_rows, None]], axis=1)
        values = np.linalg.svd(r_o @ v_aug, compute_uv=False)
        sv[h, : min(dh + 1, values.size)] = values[: dh + 1]
        # Likewise W_Q,h^T W_K,g = (Q_q R_q)(Q_k R_k)^T has the singular values of R_q R_k^T (dh x dh).
        _, r_q = np.linalg.qr(w["q_proj"][rows].T.astype(np.float64))
        _, r_k = np.linalg.qr(w["k_proj"][kv_rows].T.astype(np.float64))
        qk[h] = np.linalg.svd(r_q @ r_k.T, compute_uv=False)[0]
    return HeadReport(singular_values=sv, qk_leading=qk, keep=sv[:, 0] >= threshold)


def layer_forward(x: np.ndarray, weights: AttentionWeights, keep: np.ndarray | None = None) -> torch.Tensor:
    """The layer's attention output on ``x`` (n, d) with only the query heads in ``keep`` (all by default).

    Pruned heads are removed from the matrices (rows of q, columns of o; a
    key/value head once no query head uses it), as the pruned checkpoint
    stores them, not masked. Grouped-query attention repeats each key/value
    head for its query heads. No rotary position embedding is applied (the
    layer is measured on the embeddings as given).

    Returns
    -------
    tensor of shape (n, d)
    """
    H, dh, group = weights.n_heads, weights.d_head, weights.group
    keep = np.ones(H, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    xs = _t(x)
    out = torch.from_numpy(weights.b["o_proj"]).expand(xs.shape[0], -1).clone()
    heads = np.flatnonzero(keep)
    if heads.size == 0:
        return out
    q_rows = np.concatenate([np.arange(h * dh, (h + 1) * dh) for h in heads])
    kv_rows = np.concatenate([np.arange((h // group) * dh, (h // group + 1) * dh) for h in heads])
    n = xs.shape[0]

    def project(name: str, rows: np.ndarray) -> torch.Tensor:
        return F.linear(xs, torch.from_numpy(weights.w[name][rows]), torch.from_numpy(weights.b[name][rows])) \
            .view(n, heads.size, dh).transpose(0, 1)

    q, k, v = project("q_proj", q_rows), project("k_proj", kv_rows), project("v_proj", kv_rows)
    mixed = F.scaled_dot_product_attention(q, k, v).transpose(0, 1).reshape(n, heads.size * dh)
    return out + mixed @ torch.from_numpy(weights.w["o_proj"][:, q_rows]).T


def params_saved(weights: AttentionWeights, keep: np.ndarray) -> int:
    """Parameters removed with the heads not in ``keep``.

    A query head owns d_h rows of q (and their biases) and d_h columns of o;
    a key/value head (d_h rows of k and v, and biases) goes once every query
    head of its group is pruned. Biases count where the checkpoint stores them.
    """
    d, dh, group = weights.d_model, weights.d_head, weights.group
    stored = {p: weights.names is None or f"{p}.bias" in weights.names for p in PROJECTIONS}
    pruned = np.flatnonzero(~np.asarray(keep, dtype=bool))
    kv_gone = [g for g in range(weights.n_kv_heads) if not np.asarray(keep)[g * group:(g + 1) * group].any()]
    per_query = 2 * d * dh + dh * stored["q_proj"]
    per_kv = 2 * d * dh + dh * (stored["k_proj"] + stored["v_proj"])
    return int(pruned.size * per_query + len(kv_gone) * per_kv)


def params_per_head(weights: AttentionWeights) -> int:
    """Parameters one head of a multi-head (not grouped) layer owns: d_h rows of q/k/v (+ biases) and d_h columns of o."""
    d, dh = weights.d_model, weights.d_head
    return 4 * d * dh + 3 * dh
