"""NVLink benchmark: rounds vs the lower bound, cut cost vs the baselines (and METIS), time on the NVL72.

Sections (every ratio is against a baseline measured in the same run):

1. GB200 NVL72, one 72-rank all-to-all (512 MB per rank): rounds vs the
   max-degree lower bound and greedy first-fit, half and full duplex; the
   engine call's wall time and stages; collective time with weighted ECMP,
   the Q-learning planner and static shortest paths.
2. GB200 NVL72, the mixed multi-job load of ``sample_data/nvlink/jobs.json``
   (4 jobs, 71 ranks), classical and with QAOA recolouring blocks.
3. Cut cost (sum of bytes x pair cost, s) of skewed jobs (tensor-parallel
   groups scattered over the rank numbers) over ``--seeds`` seeds:
   Kernighan-Lin, spectral and METIS recursive bisection (each with swap
   refinement), METIS without refinement, round-robin and random.
4. Contention classifier, quantum kernel against the RBF SVC on the same
   split of the same simulated logs (DGX H100, 2 x DGX H100 + IB, the
   DGX topo text, GB200 NVL72): held-out accuracy, balanced accuracy,
   kernel-target alignment, fit time (states + SVC, against the RBF fit).
5. Size limits: the plan's wall time on an n-GPU ``nvidia-smi topo -m``
   matrix (every pair NV2) against n, up to the default fabric_gpus limit.

Usage: python bench/nvlink.py [--seeds 5] [--sections 1,2,3,4,5]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np

from qflow.core.limits import LimitExceededError
from qflow.nvlink import load_nvlink_inputs, parse_fabric, parse_jobs, parse_topo_text, plan_nvlink
from qflow.nvlink._placement import HOST_TIE_BREAK, cut_cost, place_jobs, random_placement, round_robin_placement
from qflow.nvlink._rounds import (
    colour_transfers,
    empty_last_rounds,
    first_fit,
    lower_bound,
    n_colours,
    solve_block_exactly,
    transfers_of,
)
from qflow.nvlink._sample import dgx_h100_cluster_fabric, nvl72_fabric, skewed_traffic
from qflow.nvlink._simulator import PathTable

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_data" / "nvlink"


def _stages(plan) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in plan.timings_s.items())


def all_to_all_section() -> None:
    fabric = parse_fabric(nvl72_fabric(), "gb200_nvl72.json")
    jobs = {"jobs": [{"id": "a2a72", "ranks": 72, "pattern": "all_to_all", "bytes": 512e6}]}
    [job] = parse_jobs(jobs, n_gpus=72)
    print("== GB200 NVL72: one 72-rank all-to-all, 512 MB per rank ==")
    for duplex in (False, True):
        t = transfers_of(job.traffic, duplex)
        start = time.perf_counter()
        colour, method = colour_transfers(t)
        colour, stats = empty_last_rounds(t, colour, solve_block_exactly, 16)
        seconds = time.perf_counter() - start
        greedy = first_fit(t, np.arange(t.m))
        print(f"  {'full' if duplex else 'half'} duplex: {t.m} transfers; rounds {n_colours(colour)} vs lower bound {lower_bound(t)} "
              f"({method}, {stats['blocks']} recolouring blocks, {seconds:.2f} s); greedy first-fit {n_colours(greedy)}")
    start = time.perf_counter()
    plan = plan_nvlink(fabric, jobs, {})
    wall = time.perf_counter() - start
    m, b = plan.metrics, plan.baselines
    print(f"  engine call plan_nvlink (defaults: classifier, RL on): {wall:.2f} s; stages: {_stages(plan)}")
    rl = plan.result["rl"]
    print(f"  collective time: {m['routing_policy']} {m['estimated_collective_time_s'] * 1e3:.2f} ms, static shortest path "
          f"{b['shortest_path']['estimated_collective_time_s'] * 1e3:.2f} ms "
          f"({b['shortest_path']['estimated_collective_time_s'] / m['estimated_collective_time_s']:.1f}x); ideal "
          f"{m['ideal_time_s'] * 1e3:.2f} ms; max link utilisation {m['max_link_utilisation']:.3f} vs "
          f"{b['shortest_path']['max_link_utilisation']:.2f}")
    print(f"  all flows at once: weighted ECMP {m['concurrent_time_s'] * 1e3:.2f} ms, Q-learning "
          f"{rl['final_concurrent_time_s'] * 1e3:.2f} ms (reward {rl['reward_curve'][0]:.3f} -> {rl['final_reward']:.3f}), "
          f"shortest path {rl['shortest_path_concurrent_time_s'] * 1e3:.2f} ms (reward {rl['shortest_path_reward']:.3f})")
    c = plan.result["classifier"]
    print(f"  classifier: held-out accuracy {c['held_out_accuracy']:.3f} on {c['n_test']} runs (majority class "
          f"{c['majority_class_accuracy']:.3f})")


def mixed_section() -> None:
    fabric = parse_fabric(json.loads((SAMPLES / "gb200_nvl72.json").read_text()), "gb200_nvl72.json")
    jobs = json.loads((SAMPLES / "jobs.json").read_text())
    print("== GB200 NVL72: mixed load of sample_data/nvlink/jobs.json (4 jobs, 71 ranks) ==")
    for label, config in (("classical", {}), ("qaoa", {"qaoa_optimizer": True})):
        start = time.perf_counter()
        plan = plan_nvlink(fabric, jobs, config)
        wall = time.perf_counter() - start
        m, b = plan.metrics, plan.baselines
        print(f"  [{label}] engine call {wall:.2f} s; stages: {_stages(plan)}")
        if label == "classical":
            print(f"  rounds per job {m['rounds_per_job']} vs lower bounds {m['rounds_lower_bound_per_job']}; "
                  f"greedy first-fit {b['greedy_colouring']['rounds_per_job']}")
            print(f"  {'placement':<12}{'cut_cost_s':>12}{'cross_node_GB':>15}{'time_ms':>10}")
            for name, v in (("plan", m), ("round_robin", b["round_robin"]), ("random", b["random"])):
                print(f"  {name:<12}{v['cut_cost_s']:>12.4f}{v['cross_node_bytes'] / 1e9:>15.2f}{v['estimated_collective_time_s'] * 1e3:>10.3f}")
            print(f"  collective time {m['estimated_collective_time_s'] * 1e3:.3f} ms ({m['routing_policy']}) vs shortest path "
                  f"{b['shortest_path']['estimated_collective_time_s'] * 1e3:.3f} ms, greedy colouring "
                  f"{b['greedy_colouring']['estimated_collective_time_s'] * 1e3:.3f} ms")
        else:
            q = plan.solver.quantum
            if q is None:
                print(f"  QAOA: none ran ({'; '.join(f.reason for f in plan.solver.fallbacks)})")
            else:
                optimal = sum(1 for blk in q.blocks if blk.get("optimal"))
                print(f"  QAOA on {q.device}: {len(q.qubits_per_circuit)} blocks, qubits {q.qubits_per_circuit}, {optimal} reached the "
                      f"brute-force optimum, ratios {[round(r, 3) for r in q.block_ratios]}; rounds {m['rounds_per_job']} "
                      f"(the same as the classical exact blocks)")


def _mean_cost(fabric_data: dict, ranks: int, group: int, seeds: int) -> dict[str, float]:
    fabric = parse_fabric(fabric_data)
    table = PathTable(fabric)
    cost = table.cost_matrix(np.arange(fabric.n_gpus))
    hosts = table.hosts
    tie = cost * (1.0 + HOST_TIE_BREAK * (hosts[:, None] != hosts[None, :]))
    methods = ["kernighan_lin", "spectral"] + (["metis"] if importlib.util.find_spec("pymetis") else [])
    totals: dict[str, list[float]] = {}
    times: dict[str, float] = {}
    for seed in range(seeds):
        jobs = parse_jobs({"jobs": [{"id": "skewed", "ranks": ranks, "traffic": skewed_traffic(ranks, group, seed)}]},
                          n_gpus=fabric.n_gpus)
        t = jobs[0].traffic
        for method in methods:
            start = time.perf_counter()
            [p] = place_jobs(jobs, tie, hosts, method, seed)
            times[method] = times.get(method, 0.0) + time.perf_counter() - start
            totals.setdefault(method, []).append(cut_cost(t, p, cost))
        if "metis" in methods:
            [p] = place_jobs(jobs, tie, hosts, "metis", seed, refine_passes=0)
            totals.setdefault("metis (no refine)", []).append(cut_cost(t, p, cost))
        [p] = round_robin_placement(jobs, hosts)
        totals.setdefault("round_robin", []).append(cut_cost(t, p, cost))
        [p] = random_placement(jobs, fabric.n_gpus, seed)
        totals.setdefault("random", []).append(cut_cost(t, p, cost))
    out = {k: float(np.mean(v)) for k, v in totals.items()}
    out.update({f"time_{k}": v / seeds for k, v in times.items()})
    return out


def cut_cost_section(seeds: int) -> None:
    print(f"== Cut cost of skewed jobs (mean over {seeds} seeds; s = bytes x pair cost; ratio to Kernighan-Lin) ==")
    cases = [("2 x DGX H100 + IB", dgx_h100_cluster_fabric(2), 16, 4), ("4 x DGX H100 + IB", dgx_h100_cluster_fabric(4), 32, 4),
             ("4 x DGX H100 + IB", dgx_h100_cluster_fabric(4), 32, 8), ("GB200 NVL72 (flat)", nvl72_fabric(), 64, 8)]
    for name, data, ranks, group in cases:
        result = _mean_cost(data, ranks, group, seeds)
        base = result["kernighan_lin"]
        methods = [k for k in result if not k.startswith("time_")]
        print(f"  {name}, {ranks} ranks in groups of {group}: " + ", ".join(
            f"{k} {result[k]:.4f} ({result[k] / base:.2f}x)" for k in methods))
        print("    placement time per job (s): " + ", ".join(f"{k[5:]} {v:.3f}" for k, v in result.items() if k.startswith("time_")))


def kernel_section() -> None:
    """Quantum kernel vs RBF SVC on each sample fabric's simulated logs (the plan's own comparison)."""
    print("== Contention classifier: quantum kernel vs RBF SVC, same split (default 240 simulated runs) ==")
    print(f"  {'fabric':<22}{'model':<8}{'acc':>7}{'bal_acc':>9}{'KTA':>7}{'fit_s':>8}   majority")
    for fabric_file, jobs_file in (("dgx_h100.json", "jobs_node.json"), ("dgx_h100_x2_ib.json", "jobs_2node.json"),
                                   ("dgx_h100_topo.txt", "jobs_node.json"), ("gb200_nvl72.json", "jobs.json")):
        fabric, jobs, _, digests = load_nvlink_inputs(SAMPLES / fabric_file, SAMPLES / jobs_file)
        plan = plan_nvlink(fabric, jobs, {"quantum_kernel": True, "rl_planner": False}, digests=digests)
        c = plan.result["classifier"]
        k = c["quantum_kernel"]
        for label, figures, fit in (("rbf", k["rbf"], plan.timings_s["classifier_rbf_fit"]),
                                    ("quantum", k["quantum"], plan.timings_s["quantum_kernel_fit"])):
            print(f"  {fabric_file:<22}{label:<8}{figures['held_out_accuracy']:>7.3f}{figures['held_out_balanced_accuracy']:>9.3f}"
                  f"{figures['kernel_target_alignment']:>7.3f}{fit:>8.2f}   {c['majority_class_accuracy']:.3f}")
        print(f"  {'':<22}adopted: {k['adopted']}; plan ran {plan.solver.ran}; classifier acted on: {c['acted_on']}")


def _topo_text(n: int) -> str:
    names = [f"GPU{i}" for i in range(n)]
    rows = [name + "\t" + "\t".join("X" if i == j else "NV2" for j in range(n)) + "\t0-7" for i, name in enumerate(names)]
    return "\t" + "\t".join(names) + "\tCPU Affinity\n" + "\n".join(rows) + "\n"


def limits_section() -> None:
    """Wall time of a plan (classifier and RL off) on n-GPU topo matrices: why fabric_gpus defaults to 256."""
    print("== Plan time on an n-GPU nvidia-smi topo -m matrix (classifier and RL off) ==")
    for n in (16, 32, 64, 128):
        fabric = parse_topo_text(_topo_text(n), f"topo{n}.txt")
        start = time.perf_counter()
        plan = plan_nvlink(fabric, {"jobs": [{"id": "ring", "ranks": n, "pattern": "all_reduce", "bytes": 1e8}]},
                           {"classifier": False, "rl_planner": False})
        print(f"  {n:>4} GPUs: {time.perf_counter() - start:7.2f} s (paths {plan.timings_s['paths']:.2f} s)")
    start = time.perf_counter()
    try:
        parse_topo_text(_topo_text(1000), "topo1000.txt")
    except LimitExceededError as exc:
        print(f"  1000 GPUs: refused in {time.perf_counter() - start:.2f} s: {exc.message}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sections", default="1,2,3,4,5", help="comma-separated section numbers to run")
    args = parser.parse_args()
    sections = {int(x) for x in args.sections.split(",")}
    if 1 in sections:
        all_to_all_section()
    if 2 in sections:
        mixed_section()
    if 3 in sections:
        cut_cost_section(args.seeds)
    if 4 in sections:
        kernel_section()
    if 5 in sections:
        limits_section()


if __name__ == "__main__":
    main()
