"""Routing benchmark: time and quality of the router against its baselines.

Prints, in one run on this machine:
1. 1M tokens x 64 experts x 8 nodes (skewed, Zipf-like router scores):
   the engine call's stages, the router's solve time next to top-1 capacity
   gating and hash routing measured on the same arrays, and quality
   (dropped tokens, affinity, imbalance, certified gap to the optimum).
2. A smaller instance where the exact optimum is computed (column-generation
   LP on HiGHS; integral for unit complexities): the router's gap to it.
3. CSV parsing cost, reported separately from the engine call.
4. QAOA refinement on the sample data: block ratios and circuit counts.
5. Skewed score distributions (Zipf-like expert popularity, gamma expert bias
   on normal logits, Dirichlet per token) at several sizes x 64 experts: the
   whole CLI call and its route stage against a pandas top-1 gating script
   (read CSV, argmax, capacity by arrival, write JSON), both run as fresh
   processes in the same run; and the digest's share of an in-process
   ``plan_routing(DataFrame)`` call (its ``digest`` stage) and of the
   routing command's own load + plan call on the same files (the wall time
   the sha256 of the input files' bytes adds to that call, and its CPU; see
   :func:`file_digest_share`). Above a million tokens the input is a ``.npy``
   logits tensor with a metadata CSV (ids, sources) instead of one CSV, for
   the CLI and the script alike (a 4M x 64 CSV is 2.3 GB of text).
6. Warm start: the router's plans with the warm-start sample's auction at
   ``WARM_START_ROUNDS`` price rounds and at the work-based default, on four
   score families (the three above and plain normal logits) x four configs:
   route time and certified gap of each.
7. Top-k: 256 experts on 8 nodes, top-8, node limit 4, on the same three
   distributions: engine time and certified gap.
8. Expert placement with replicas against DeepSeek's EPLB greedy and a
   contiguous placement, on loads of the same three families.

Usage: python bench/routing.py [--tokens 1000000] [--exact-tokens 20000] [--skip-qaoa]
       [--skew-tokens 50000,200000,1000000,4000000] [--skew-repeats 3] [--topk-tokens 1000000]
       [--warm-start-tokens 100000,400000] [--only skew,warmstart,topk,placement]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import qflow.core.io
from qflow.core.commands import load_command
from qflow.routing import RoutingConfig, load_routing_inputs, plan_routing
from qflow.routing._classical import (
    drop_penalty,
    dual_bound,
    exact_optimum,
    hash_experts,
    objective,
    route_balanced,
    route_metrics,
    top1_gating,
    utility_matrix,
)
from qflow.routing._placement_plan import plan_placement
from qflow.routing._sample import make_model_graph, make_tokens
from qflow.routing._schemas import build_problem


def timed(fn, *args, repeat: int = 1, **kwargs):
    """Best wall time of ``repeat`` calls (the machine is shared and noisy)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return out, best


def row(name: str, m: dict, seconds: float | None = None) -> str:
    t = f"{seconds:8.3f}" if seconds is not None else "       -"
    return (f"  {name:<16} {t} {m['dropped_tokens']:>9d} {m['total_affinity']:>14.1f} {m['objective']:>14.1f} "
            f"{m['load_imbalance']:>10.3f} {m['capacity_violations']:>6d} {m['cross_node_fraction']:>8.3f}")


def large(n: int) -> None:
    print(f"== {n:,} tokens x 64 experts x 8 nodes (2 racks), capacity_factor 1.25 ==")
    frame = make_tokens(n, 64, 8, seed=1, heavy_fraction=0.0)
    graph = make_model_graph(8, 8, racks=2)
    config = RoutingConfig(exact_max_tokens=0)
    plan, total = timed(plan_routing, frame, graph, config)
    print(f"  engine call plan_routing: {total:.3f} s; stages: " + ", ".join(f"{k} {v:.3f}" for k, v in plan.timings_s.items()))

    problem = build_problem(frame, graph, config)
    u = utility_matrix(problem, config.locality_weight)
    w, cap = problem.complexity, problem.capacity(config.capacity_factor)
    penalty = drop_penalty(u)
    routed, t_router = timed(route_balanced, u, w, cap, penalty=penalty, repeat=2)
    gated, t_top1 = timed(top1_gating, problem.affinity, w, cap, repeat=2)
    hashed, t_hash = timed(hash_experts, problem.token_ids, 64)
    bound = dual_bound(u, w, cap, routed.prices, penalty)
    value = objective(u, w, routed.expert, penalty)
    print(f"  {'method':<16} {'time s':>8} {'dropped':>9} {'affinity':>14} {'objective':>14} {'imbalance':>10} {'viol':>6} {'x-node':>8}")
    print(row("router", route_metrics(problem, routed.expert, u, cap, penalty), t_router))
    print(row("top1_gating", route_metrics(problem, gated, u, cap, penalty), t_top1))
    print(row("hash", route_metrics(problem, hashed, u, cap, penalty), t_hash))
    print(f"  router solve time / top-1 gating time: {t_router / t_top1:.1f}x; router rounds: {routed.iterations}")
    print(f"  certified gap to optimum (dual bound): {(bound - value) / abs(bound):.2e} (<= this far from optimal)")
    print(f"  top-1 gating drops {int((gated < 0).sum()):,} tokens ({(gated < 0).mean():.1%}); router drops {int((routed.expert < 0).sum())}")


def exact(n: int) -> None:
    print(f"== exact optimum on {n:,} tokens x 64 experts (unit complexity) ==")
    frame = make_tokens(n, 64, 8, seed=2)
    graph = make_model_graph(8, 8, racks=2)
    config = RoutingConfig()
    problem = build_problem(frame, graph, config)
    u = utility_matrix(problem, config.locality_weight)
    w, cap = problem.complexity, problem.capacity(config.capacity_factor)
    penalty = drop_penalty(u)
    routed, t_router = timed(route_balanced, u, w, cap, penalty=penalty)
    opt, t_exact = timed(exact_optimum, u, w, cap, penalty, prices=routed.prices)
    value = objective(u, w, routed.expert, penalty)
    print(f"  router {t_router:.3f} s, objective {value:.3f}; exact ({opt['kind']}) {t_exact:.2f} s, "
          f"objective {opt['value']:.3f}, {opt['rounds']} column-generation rounds, {opt['columns']:,} columns")
    print(f"  router gap to exact optimum: {(opt['value'] - value) / abs(opt['value']):.2e}")


def parsing(n: int) -> None:
    frame = make_tokens(n, 64, 8, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokens.csv"
        frame.to_csv(path, index=False)
        graph_path = Path(tmp) / "graph.json"
        graph_path.write_text(json.dumps(make_model_graph(8, 8, racks=2)))
        _, t_parse = timed(load_routing_inputs, path, graph_path)
        size = path.stat().st_size
    print(f"== CSV parsing (outside the engine call) ==\n  {n:,} tokens, {size / 2**20:.1f} MiB: {t_parse:.2f} s "
          f"({t_parse / n * 1e6:.1f} us/token; about {t_parse / n * 1e6:.0f} s per million)")


def qaoa() -> None:
    print("== QAOA refinement on the sample data (8192 tokens), p=2, 12-qubit blocks ==")
    root = Path(__file__).resolve().parent.parent / "sample_data" / "routing"
    frame, graph, digests = load_routing_inputs(root / "tokens.csv", root / "model_graph.json")
    for hqc in (False, True):
        cfg = RoutingConfig(qaoa=True, hqc=hqc, max_qubits=12, qaoa_blocks=4, exact_max_tokens=0, baselines=False)
        plan, seconds = timed(plan_routing, frame, graph, cfg, digests=digests)
        q = plan.solver.quantum
        if q is None:
            print(f"  hqc={hqc}: quantum path did not run: {[f.reason for f in plan.solver.fallbacks]}")
            continue
        print(f"  hqc={hqc}: {seconds:.1f} s on {q.device}; ratios {[round(r, 4) for r in q.block_ratios]}; "
              f"steps {q.optimizer_steps}; circuits {q.circuits_run}; tokens moved {plan.metrics['tokens_moved_by_qaoa']}")


DISTRIBUTIONS = ("zipf", "gamma", "dirichlet")

GATING_SCRIPT = """
import json, sys
import numpy as np, pandas as pd
frame = pd.read_csv(sys.argv[1])
cols = [c for c in frame.columns if c.startswith("score_")]
best = frame[cols].to_numpy().argmax(axis=1)
capacity = int(np.ceil(1.25 * len(frame) / len(cols)))
rank = pd.Series(best).groupby(best).cumcount().to_numpy()
expert = np.where(rank < capacity, best, -1)
json.dump(dict(zip(frame["token_id"].astype(str), expert.tolist())), open(sys.argv[2], "w"))
"""

#: The same gating on a logits tensor with a metadata CSV (the inputs above ``TENSOR_ABOVE`` tokens).
GATING_SCRIPT_TENSOR = """
import json, sys
import numpy as np, pandas as pd
logits = np.load(sys.argv[1])
ids = pd.read_csv(sys.argv[2], dtype=str)["token_id"]
best = logits.argmax(axis=1)
capacity = int(np.ceil(1.25 * len(best) / logits.shape[1]))
rank = pd.Series(best).groupby(best).cumcount().to_numpy()
expert = np.where(rank < capacity, best, -1)
json.dump(dict(zip(ids, expert.tolist())), open(sys.argv[3], "w"))
"""

#: Skew sizes above this many tokens are written as a .npy tensor plus metadata CSV instead of one CSV.
TENSOR_ABOVE = 1_000_000


def skewed_logits(kind: str, n: int, n_experts: int, seed: int = 0) -> np.ndarray:
    """Router logits (n, E), float32, of one skewed family.

    ``zipf``: expert popularity log(1 / rank^1.2) plus Gumbel noise per token;
    ``gamma``: a Gamma(0.5, 2) bias per expert on standard normal logits;
    ``dirichlet``: log of per-token Dirichlet probabilities with Gamma(0.3)
    concentrations (a few experts carry most of each token's mass).
    """
    rng = np.random.default_rng(seed)
    if kind == "zipf":
        popularity = np.log(1.0 / np.arange(1, n_experts + 1) ** 1.2)
        rng.shuffle(popularity)
        return (popularity[None, :] + rng.gumbel(size=(n, n_experts))).astype(np.float32)
    if kind == "gamma":
        return (rng.gamma(0.5, 2.0, size=n_experts)[None, :] + rng.normal(size=(n, n_experts))).astype(np.float32)
    alpha = rng.gamma(0.3, 1.0, size=n_experts) + 1e-3
    return np.log(rng.dirichlet(alpha, size=n) + 1e-9).astype(np.float32)


def skewed_frame(kind: str, n: int, n_experts: int, n_nodes: int = 8) -> pd.DataFrame:
    frame = pd.DataFrame(skewed_logits(kind, n, n_experts), columns=[f"score_{e}" for e in range(n_experts)])
    frame.insert(0, "token_id", np.arange(n).astype(str))
    frame.insert(1, "source", [f"node{i % n_nodes}" for i in range(n)])
    return frame


def run_process(args: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one child process.

    Both, because on a shared machine the wall time mostly measures the
    other processes; the CPU time is what the command itself cost.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def write_skew_input(kind: str, n: int, folder: Path) -> tuple[pd.DataFrame, list[Path]]:
    """The frame and its files: one CSV up to ``TENSOR_ABOVE`` tokens, else logits .npy + metadata CSV."""
    frame = skewed_frame(kind, n, 64)
    if n <= TENSOR_ABOVE:
        path = folder / f"{kind}-{n}.csv"
        frame.to_csv(path, index=False, float_format="%.6g")
        return frame, [path]
    logits, meta = folder / f"{kind}-{n}.npy", folder / f"{kind}-{n}-meta.csv"
    np.save(logits, np.ascontiguousarray(frame.iloc[:, 2:].to_numpy(dtype=np.float32)))
    frame[["token_id", "source"]].to_csv(meta, index=False)
    return frame, [logits, meta]


def skew_processes(files: list[Path], graph_path: Path, folder: Path, repeats: int) -> tuple[dict[str, float], dict]:
    """The gating script and the CLI on the same files, ``repeats`` times each, alternating; medians, and the CLI's plan.

    Alternating pairs, so that a slow minute of this shared machine lands on
    both; the median of each, because a single run of either varies by a
    third here. Returns ``({script, cli, script_cpu, cli_cpu, wall_x, cpu_x,
    wall_x_low, wall_x_high}, plan)``: seconds, the median ratios, and the
    lowest and highest ratio of one pair.
    """
    gated, out = folder / "gated.json", folder / "plan.json"
    if len(files) == 1:
        script = [sys.executable, "-c", GATING_SCRIPT, str(files[0]), str(gated)]
        inputs = ["--tokens", str(files[0])]
    else:
        script = [sys.executable, "-c", GATING_SCRIPT_TENSOR, str(files[0]), str(files[1]), str(gated)]
        inputs = ["--tokens", str(files[0]), "--token-metadata", str(files[1])]
    cli = [sys.executable, "-m", "qflow", "routing", *inputs, "--model-graph", str(graph_path), "--out", str(out)]
    pairs = np.array([[*run_process(script), *run_process(cli)] for _ in range(repeats)])  # (repeats, 4)
    t_script, c_script, t_cli, c_cli = np.median(pairs, axis=0)
    ratios = pairs[:, 2] / pairs[:, 0]
    times = {"script": t_script, "cli": t_cli, "script_cpu": c_script, "cli_cpu": c_cli, "wall_x": t_cli / t_script,
             "cpu_x": c_cli / c_script, "wall_x_low": ratios.min(), "wall_x_high": ratios.max()}
    return times, json.loads(out.read_text())


def file_digest_share(files: list[Path], graph_path: Path, repeats: int) -> tuple[float, float, float]:
    """The routing command's load + plan call on the files, in process, and what the input digest adds to it.

    Runs what ``qflow routing`` runs between parsing its arguments and writing
    the plan (parse each file while a second thread takes the sha256 of its
    bytes: a large CSV file streamed from its path, other inputs read once;
    validate, plan) ``repeats`` times with the digest functions (of bytes, of
    a file) wrapped to time their thread's CPU, alternating with as many
    calls where they return a constant instead of hashing. Returns ``(call
    wall s, added wall %, digest CPU %)``, medians: call wall with the
    digest; added wall = (with - without) / without; digest CPU = the hashing
    thread's CPU time over the whole process's CPU time during the call.
    """
    digests = {name: getattr(qflow.core.io, name) for name in ("digest_bytes", "digest_file")}  # bytes, or a file streamed
    inputs = {"tokens": files[0], "token_metadata": files[1] if len(files) > 1 else None, "model_graph": graph_path}
    command = load_command("routing")
    walls: dict[bool, list[float]] = {True: [], False: []}
    shares = []
    for _ in range(repeats):
        for hashing in (True, False):
            spent = [0.0]

            def timed(digest, hashing=hashing, spent=spent):
                def timed_digest(data):
                    cpu = time.thread_time()
                    try:
                        return digest(data) if hashing else "0" * 64
                    finally:
                        spent[0] += time.thread_time() - cpu
                return timed_digest

            for name, digest in digests.items():
                setattr(qflow.core.io, name, timed(digest))
            try:
                wall, cpu = time.perf_counter(), time.process_time()
                command.run(inputs, RoutingConfig(), None)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            finally:
                for name, digest in digests.items():
                    setattr(qflow.core.io, name, digest)
            walls[hashing].append(wall)
            if hashing:
                shares.append(100 * spent[0] / cpu)
    with_digest, without = float(np.median(walls[True])), float(np.median(walls[False]))
    return with_digest, 100 * (with_digest - without) / without, float(np.median(shares))


def frame_digest_share(frame: pd.DataFrame, graph: dict) -> tuple[Any, float, float, float]:
    """``plan_routing(frame)`` in process and its input digest's share: ``(plan, call wall s, wait %, digest CPU %)``.

    The frame's digest runs on a second thread while the frame is validated;
    ``wait %`` is the plan's ``digest`` stage (what the call still waited for
    it afterwards) over the call's wall, ``digest CPU %`` that thread's CPU
    time over the process's CPU during the call (both threads).
    """
    import qflow.routing._plan as plan_module

    spent = {"cpu": 0.0}
    digest = plan_module.digest_frame

    def timed_digest(*args, **kwargs):
        cpu = time.thread_time()
        try:
            return digest(*args, **kwargs)
        finally:
            spent["cpu"] += time.thread_time() - cpu

    plan_module.digest_frame = timed_digest
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        plan = plan_routing(frame, graph, RoutingConfig())
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        plan_module.digest_frame = digest
    return plan, wall, 100 * plan.timings_s["digest"] / wall, 100 * spent["cpu"] / cpu


def skew(sizes: list[int], repeats: int) -> None:
    print("== skewed distributions x 64 experts x 8 nodes, default config: CLI vs pandas top-1 gating script ==")
    print(f"  wall and CPU seconds of each fresh process, median of {repeats} alternating runs of each; wall x / cpu x = ratio of")
    print("  those medians; pairs x = the lowest-highest wall ratio of one pair; route = the CLI plan's route stage; engine =")
    print("  plan_routing(DataFrame) in process;")
    print("  digest % = plan_routing(DataFrame)'s digest stage (the wait for the digest thread after validation) / that call (wall);")
    print("  dgst cpu % = that digest thread's CPU / the process's CPU over the call; load+plan = the routing command's load + plan")
    print("  call on the files in process (sha256 on a second thread while pandas parses, validate, plan), wall s, median;")
    print("  file +wall % = what the sha256 adds to that call's wall (medians of calls with and without it, alternating);")
    print("  file cpu % = the hashing thread's CPU / the process's CPU during the call; above "
          f"{TENSOR_ABOVE:,} tokens the input is a .npy tensor + metadata CSV")
    print(f"  {'distribution':<10} {'tokens':>9} {'script s':>9} {'CLI s':>8} {'wall x':>7} {'script cpu':>10} {'CLI cpu':>8} "
          f"{'cpu x':>6} {'pairs x':>10} {'route s':>8} {'engine s':>9} {'digest %':>9} {'dgst cpu %':>10} {'load+plan s':>11} {'file +wall %':>12} "
          f"{'file cpu %':>10} {'gap':>9} {'top1 max/mean':>13}")
    graph = make_model_graph(8, 8, racks=2)
    print(f"  load average (1, 5, 15 min) at the start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        graph_path = Path(tmp) / "graph.json"
        graph_path.write_text(json.dumps(graph))
        for n in sizes:
            for kind in DISTRIBUTIONS:
                frame, files = write_skew_input(kind, n, Path(tmp))
                times, cli_plan = skew_processes(files, graph_path, Path(tmp), repeats)
                t_command, file_added, file_cpu = file_digest_share(files, graph_path, repeats)
                plan, t_engine, digest_wait, digest_cpu = frame_digest_share(frame, graph)
                top = np.bincount(frame.iloc[:, 2:].to_numpy().argmax(axis=1), minlength=64)
                del frame
                pair_range = f"{times['wall_x_low']:.2f}-{times['wall_x_high']:.2f}"
                print(f"  {kind:<10} {n:>9,} {times['script']:>9.2f} {times['cli']:>8.2f} {times['wall_x']:>7.2f} "
                      f"{times['script_cpu']:>10.2f} {times['cli_cpu']:>8.2f} {times['cpu_x']:>6.2f} {pair_range:>10} "
                      f"{cli_plan['timings_s']['route']:>8.2f} {t_engine:>9.2f} {digest_wait:>9.1f} {digest_cpu:>10.1f} "
                      f"{t_command:>11.2f} {file_added:>12.1f} {file_cpu:>10.1f} "
                      f"{plan.metrics['gap_to_upper_bound']:>9.2e} {top.max() / top.mean():>13.1f}", flush=True)
                del plan
                for f in files:
                    f.unlink()
    print(f"  load average (1, 5, 15 min) at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


def warm_start(sizes: list[int]) -> None:
    """The sample's auction at ``WARM_START_ROUNDS`` price rounds against the work-based default, on the same plans."""
    import qflow.routing._classical as classical

    rounds = classical.WARM_START_ROUNDS
    print(f"== warm start: the sample's auction at {rounds} rounds vs the work-based default (125-156 at 25k-20k sample tokens) ==")
    print("  route s = the plan's route stage, best of 2; gap = certified gap to the optimum; four score families x four configs")
    print(f"  {'tokens':>9} {'family':<10} {'config':<13} {'default s':>9} {f'{rounds} s':>7} {'default gap':>11} "
          f"{f'{rounds} gap':>9} {'affinity change':>15}")
    graph = make_model_graph(8, 8, racks=2)
    configs = {"default": {}, "capacity 0.9": {"capacity_factor": 0.9}, "locality 0.3": {"locality_weight": 0.3}}
    totals = {"faster": 0, "gap_not_worse": 0, "cases": 0}
    for n in sizes:
        for kind in (*DISTRIBUTIONS, "normal"):
            frame = skewed_frame("gamma" if kind == "normal" else kind, n, 64)
            if kind == "normal":  # no expert bias: every expert about as popular
                frame.iloc[:, 2:] = np.random.default_rng(1).normal(size=(n, 64)).astype(np.float32)
            weights = frame.assign(complexity=np.random.default_rng(2).integers(1, 5, n).astype(float))
            for label, frame_used, overrides in [*((k, frame, v) for k, v in configs.items()), ("complexity 1-4", weights, {})]:
                config = RoutingConfig(baselines=False, exact_max_tokens=0, **overrides)
                runs = {}
                for setting in (None, rounds):
                    classical.WARM_START_ROUNDS = setting
                    try:
                        plans = [plan_routing(frame_used, graph, config) for _ in range(2)]
                    finally:
                        classical.WARM_START_ROUNDS = rounds
                    runs[setting] = (min(p.timings_s["route"] for p in plans), plans[0].metrics)
                (t_default, m_default), (t_new, m_new) = runs[None], runs[rounds]
                change = m_new["total_affinity"] / m_default["total_affinity"] - 1
                totals["cases"] += 1
                totals["faster"] += t_new < t_default
                totals["gap_not_worse"] += m_new["gap_to_upper_bound"] <= m_default["gap_to_upper_bound"]
                print(f"  {n:>9,} {kind:<10} {label:<13} {t_default:>9.3f} {t_new:>7.3f} {m_default['gap_to_upper_bound']:>11.2e} "
                      f"{m_new['gap_to_upper_bound']:>9.2e} {change:>+15.2e}", flush=True)
    print(f"  {rounds} rounds faster in {totals['faster']} of {totals['cases']} cases; gap no larger in "
          f"{totals['gap_not_worse']} of {totals['cases']}")


def topk(n: int) -> None:
    import numba

    print(f"== top-8 of 256 experts on 8 nodes, node limit 4, {n:,} tokens (engine call, no baselines; "
          f"compiled kernels on {numba.get_num_threads()} threads, CPU = all threads) ==")
    graph = make_model_graph(8, 32, racks=2)
    config = RoutingConfig(top_k=8, node_limit=4, baselines=False, exact_max_tokens=0)
    # The kernels compile on first use (or load from numba's disk cache): outside the timed calls.
    _, warm = timed(plan_routing, skewed_frame("zipf", 2_000, 256), graph, config)
    print(f"  kernels compiled or loaded from the cache in a 2,000-token warm-up call: {warm:.2f} s")
    for kind in DISTRIBUTIONS:
        frame = skewed_frame(kind, n, 256)
        cpu = time.process_time()
        plan, seconds = timed(plan_routing, frame, graph, config)
        cpu = time.process_time() - cpu
        del frame
        m = plan.metrics
        stages = ", ".join(f"{name} {value:.2f}" for name, value in plan.timings_s.items())
        print(f"  {kind:<10} {seconds:7.2f} s wall, {cpu:6.2f} s CPU; stages: {stages}\n"
              f"  {'':<10} certified gap {m['gap_to_upper_bound']:.2e}; {m['router_iterations']} rounds; dropped slots {m['dropped_slots']}; "
              f"nodes/token max {m['nodes_per_token_max']}; imbalance {m['load_imbalance']:.3f}", flush=True)
        del plan


def placement() -> None:
    print("== expert placement: 64 experts x 4 layers on 8 nodes x 4 GPUs, loads of the three skewed families ==")
    print(f"  {'loads':<10} {'redundant':>9} {'time s':>7} {'plan max/mean GPU':>18} {'EPLB':>7} {'contiguous':>10} "
          f"{'gap to bound':>12} {'node max/mean':>13} {'EPLB node':>9} {'x-node':>7} {'EPLB x-node':>11}")
    graph = make_model_graph(8, 8, racks=2)
    rng = np.random.default_rng(0)
    for kind in DISTRIBUTIONS:
        rows = []
        for layer in range(4):
            if kind == "zipf":
                load = 1.0 / np.arange(1, 65) ** 1.2
                rng.shuffle(load)
            elif kind == "gamma":
                load = rng.gamma(0.5, 2.0, 64)
            else:
                load = rng.dirichlet(np.full(64, 0.3))
            rows += [{"layer": layer, "expert": f"expert{e}", "load": float(1e6 * load[e] / load.sum())} for e in range(64)]
        for redundant in (0, 32, 64):
            plan, seconds = timed(plan_placement, pd.DataFrame(rows), graph, {"redundant_experts": redundant})
            m, eplb = plan.metrics, plan.baselines["eplb"]
            flat = plan.baselines.get("contiguous", {}).get("max_gpu_imbalance", float("nan"))
            print(f"  {kind:<10} {redundant:>9} {seconds:>7.2f} {m['max_gpu_imbalance']:>18.3f} {eplb['max_gpu_imbalance']:>7.3f} "
                  f"{flat:>10.3f} {m['max_gap_to_lower_bound']:>12.3f} {m['max_node_imbalance']:>13.3f} "
                  f"{eplb['max_node_imbalance']:>9.3f} {m['cross_node_dispatch']:>7.3f} {eplb['cross_node_dispatch']:>11.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--exact-tokens", type=int, default=20_000)
    parser.add_argument("--parse-tokens", type=int, default=100_000)
    parser.add_argument("--skip-qaoa", action="store_true")
    parser.add_argument("--skew-tokens", default="50000,200000,1000000,4000000", help="comma-separated sizes for the skew section")
    parser.add_argument("--skew-repeats", type=int, default=3, help="alternating runs of the script and the CLI per skew row")
    parser.add_argument("--warm-start-tokens", default="100000,400000", help="comma-separated sizes for the warm-start section")
    parser.add_argument("--topk-tokens", type=int, default=1_000_000)
    parser.add_argument("--only", default="", help="comma-separated sections: large, exact, parse, qaoa, skew, warmstart, topk, placement")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    wanted = lambda name: not only or name in only  # noqa: E731
    print(f"torch threads: {torch.get_num_threads()} (plan_routing runs on 1); numpy {np.__version__}")
    if wanted("large"):
        large(args.tokens)
    if wanted("exact"):
        exact(args.exact_tokens)
    if wanted("parse"):
        parsing(args.parse_tokens)
    if wanted("qaoa") and not args.skip_qaoa:
        qaoa()
    if wanted("skew"):
        skew([int(x) for x in args.skew_tokens.split(",")], args.skew_repeats)
    if wanted("warmstart"):
        warm_start([int(x) for x in args.warm_start_tokens.split(",")])
    if wanted("topk"):
        topk(args.topk_tokens)
    if wanted("placement"):
        placement()


if __name__ == "__main__":
    main()
