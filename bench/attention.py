"""Attention benchmark: sparse top-k attention against dense SDPA on this CPU.

For seq 1024 and 4096 (d = 64, one head, Q/K/V float32), measured in one run
on the same arrays:
  dense    torch.nn.functional.scaled_dot_product_attention (the reference)
  top-k    qflow's exact top-k attention (scores in 512-query chunks, topk, softmax over k)
  random-k softmax over k uniformly drawn keys (the naive sparse baseline)
Columns: best-of-N wall time, time / dense time, relative L2 error against
dense, attention-pattern memory and its ratio to dense.

Two kinds of input: "peaked" (each query near a few keys, as trained heads
are; the sample model's lag-copy head is this kind) and "flat" (i.i.d.
Gaussian Q and K, nearly uniform attention: the worst case for any top-k).

Usage: python bench/attention.py [--seqs 1024 4096] [--k 32 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from qflow.attention._classical import (
    attention_memory_bytes,
    dense_attention,
    random_k_attention,
    relative_error,
    topk_attention,
)

D = 64


def timed(fn, *args, repeat: int = 3):
    """Best wall time of ``repeat`` calls (the machine is shared and noisy)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return out, best


def make_inputs(n: int, kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q, K, V of shape (n, D). ``peaked``: keys in n/8 clusters, each query a noisy copy of a random key, scaled."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, D))
    if kind == "flat":
        q, k = rng.normal(size=(n, D)), rng.normal(size=(n, D))
    else:
        centres = rng.normal(size=(max(n // 8, 1), D))
        k = centres[rng.integers(0, len(centres), n)] + 0.3 * rng.normal(size=(n, D))
        q = 1.5 * (k[rng.integers(0, n, n)] + 0.3 * rng.normal(size=(n, D)))
    return tuple(torch.from_numpy(a.astype(np.float32)) for a in (q, k, v))


def bench(n: int, ks: list[int], kind: str, repeat: int) -> None:
    q, k, v = make_inputs(n, kind)
    dense, t_dense = timed(dense_attention, q, k, v, repeat=repeat)
    mem_dense = attention_memory_bytes(n, n, None)
    print(f"  {'dense SDPA':<14}{t_dense * 1e3:>10.1f}{1.0:>10.2f}{0.0:>12.2e}{mem_dense / 2**20:>11.2f}{1.0:>9.3f}")
    for kk in ks:
        (out, _), t_top = timed(topk_attention, q, k, v, kk, repeat=repeat)
        (rout, _), t_rand = timed(random_k_attention, q, k, v, kk, 0, repeat=repeat)
        mem = attention_memory_bytes(n, n, kk)
        for name, o, t in ((f"top-{kk}", out, t_top), (f"random-{kk}", rout, t_rand)):
            print(f"  {name:<14}{t * 1e3:>10.1f}{t / t_dense:>10.2f}{relative_error(o, dense):>12.2e}"
                  f"{mem / 2**20:>11.2f}{mem / mem_dense:>9.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seqs", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--k", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, d = {D}, float32, best of {args.repeat}")
    for n in args.seqs:
        for kind in ("peaked", "flat"):
            print(f"== seq {n}, {kind} attention ==")
            print(f"  {'method':<14}{'time_ms':>10}{'x dense':>10}{'rel_error':>12}{'mem_MiB':>11}{'x dense':>9}")
            bench(n, args.k, kind, args.repeat)


if __name__ == "__main__":
    main()
