"""Energy benchmark: peak power and gap to the lower bound, scheduler vs ASAP and the per-node scheduler; prediction MAE.

Scheduling: the bundled sample (250 jobs, 8 nodes x 8 GPUs, budget from the
topology) and ``--seeds`` more job DAGs from the sample generator (no budget:
minimise the peak within the auto horizon), each through ``plan_energy``;
the baselines come from the same plan. With ``--qaoa`` the peak-slot QAOA
windows run too (``--max-qubits``, default 10).

Prediction: walk-forward MAE (W per node and 30-minute interval) of
persistence, ridge and the GNN on the sample telemetry generated with
``--seeds`` generator seeds (5 days each, last 20 % held out), plus two
ablations: a robust (Huber) linear model, and the GNN with its edges cut --
is a gain the loss's or the graph's?

Usage: python bench/energy.py [--seeds 5] [--qaoa] [--max-qubits 10]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from qflow.energy import EnergyInputs, load_energy_inputs, parse_jobs, parse_telemetry, parse_topology, plan_energy
from qflow.energy._meta import WindowController
from qflow.energy._predict import build_node_series, evaluate_predictors, make_features, train_gnn
from qflow.energy._sample import make_jobs, make_telemetry, make_topology

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data" / "energy"


def schedule_rows(label: str, plan) -> list[str]:
    m = plan.metrics
    rows = [(f"plan ({plan.solver.ran})", m), *plan.baselines.items()]
    budget = "none" if m["power_budget_w"] is None else f"{m['power_budget_w']:.0f} W"
    out = [f"== {label}: {len(plan.result['schedule'])} jobs, horizon {m['horizon_slots']} slots, budget {budget}, "
           f"lower bound {m['lower_bound_w']:.1f} W =="]
    out.append(f"  {'method':<24}{'peak W':>11}{'gap to LB':>11}{'makespan':>10}{'over budget':>13}")
    for name, v in rows:
        out.append(f"  {name:<24}{v['peak_power_w']:>11.1f}{v['gap_to_lower_bound']:>11.4f}{v['makespan_slots']:>10}{v['budget_exceeded_slots']:>13}")
    out.append(f"  peak vs ASAP: {m['peak_power_w'] / plan.baselines['asap']['peak_power_w']:.3f}x; "
               f"vs per-node: {m['peak_power_w'] / plan.baselines['per_node']['peak_power_w']:.3f}x; "
               f"engine {sum(plan.timings_s.values()):.2f} s ({', '.join(f'{k} {v:.2f}' for k, v in plan.timings_s.items())})")
    if "windows" in plan.result:
        ws = plan.result["windows"]
        out.append(f"  QAOA windows: {len(ws)} ({sum(w['applied'] for w in ws)} applied); ratios "
                   f"{[w['qaoa_ratio'] for w in ws]}; greedy ratios {[w['greedy_ratio'] for w in ws]}")
    return out


def ablations(series, topo, window: int = 4, test_fraction: float = 0.2) -> dict[str, float]:
    """Walk-forward MAE of a robust linear model and of the GNN without edges, on the plan's split."""
    from sklearn.linear_model import HuberRegressor

    scale = np.maximum(topo.gpus * topo.gpu_power_limit_w, 1.0)
    X, y, origins = make_features(series, scale, window)
    n_test = min(max(1, round(test_fraction * len(origins))), len(origins) - 1)
    n_train = len(origins) - n_test
    last, truth = series.power_w[origins][n_train:], series.power_w[origins + 1][n_train:]
    huber = HuberRegressor(alpha=1e-4, max_iter=500).fit(X[:n_train].reshape(-1, X.shape[-1]), y[:n_train].reshape(-1))
    linear = last + huber.predict(X[n_train:].reshape(-1, X.shape[-1])).reshape(n_test, -1) * scale
    model, _ = train_gnn(X[:n_train], y[:n_train], np.zeros((topo.n_nodes, topo.n_nodes)), 16, 300, 0)
    with torch.no_grad():
        alone = last + model(torch.as_tensor(X[n_train:], dtype=torch.float32)).numpy() * scale
    return {name: float(np.mean(np.abs(np.maximum(pred, 0) - truth))) for name, pred in (("huber_linear", linear), ("gnn_no_edges", alone))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--qaoa", action="store_true", help="also run the QAOA peak-slot windows")
    parser.add_argument("--max-qubits", type=int, default=10)
    args = parser.parse_args()
    toggles = {"qaoa_scheduling": True, "max_qubits": args.max_qubits} if args.qaoa else {}

    inputs, digests = load_energy_inputs(SAMPLES / "telemetry.csv", SAMPLES / "topology.json", SAMPLES / "jobs.json")
    plan = plan_energy(inputs, toggles, digests=digests)
    print("\n".join(schedule_rows("sample (topology budget)", plan)))
    ratios = {"asap": [], "per_node": []}
    gaps = {"plan": [], "asap": [], "per_node": []}
    topo = parse_topology(make_topology())
    telemetry = inputs.telemetry
    for seed in range(1, args.seeds + 1):
        jobs = parse_jobs(make_jobs(seed), topo)
        p = plan_energy(EnergyInputs(telemetry, topo, jobs), {**toggles, "gnn_steps": 10, "seed": seed})
        for name in ratios:
            ratios[name].append(p.metrics["peak_power_w"] / p.baselines[name]["peak_power_w"])
        gaps["plan"].append(p.metrics["gap_to_lower_bound"])
        for name in ("asap", "per_node"):
            gaps[name].append(p.baselines[name]["gap_to_lower_bound"])
    windows: list[dict] = []
    for seed in range(1, args.seeds + 1) if args.qaoa else ():
        jobs = parse_jobs(make_jobs(seed), topo)
        p = plan_energy(EnergyInputs(telemetry, topo, jobs), {**toggles, "gnn_steps": 10, "seed": seed, "qaoa_windows": 6})
        windows += p.result["windows"]
    print(f"== {args.seeds} more job DAGs (generator seeds 1..{args.seeds}, no budget): median gap to the lower bound ==")
    print("  " + ", ".join(f"{k} {np.median(v):.4f} (worst {max(v):.4f})" for k, v in gaps.items()))
    print("  median peak ratio plan/ASAP " f"{np.median(ratios['asap']):.3f}, plan/per-node {np.median(ratios['per_node']):.3f}")

    if windows:
        controller = WindowController()
        regret, qaoa_runs = [], 0
        for w in windows:  # replay: what the meta-controller would have chosen, knowing both answers afterwards
            greedy_gap, qaoa_gap = 1 - w["greedy_ratio"], 1 - w["qaoa_ratio"]
            choice, _ = controller.choose(greedy_gap)
            if choice == "qaoa":
                qaoa_runs += 1
                controller.observe_qaoa(qaoa_gap)
            regret.append((qaoa_gap if choice == "qaoa" else greedy_gap) - min(greedy_gap, qaoa_gap))
        q = np.array([w["qaoa_ratio"] for w in windows])
        g = np.array([w["greedy_ratio"] for w in windows])
        print(f"== QAOA windows (max {args.max_qubits} qubits, 6 per DAG): {len(windows)} windows, "
              f"{sum(w['applied'] for w in windows)} applied ==")
        print(f"  QAOA ratio mean {q.mean():.4f}, min {q.min():.4f}, optimal on {int((q >= 1 - 1e-9).sum())}; "
              f"greedy ratio mean {g.mean():.4f}, min {g.min():.4f}, optimal on {int((g >= 1 - 1e-9).sum())}")
        print(f"  meta-controller replay: {qaoa_runs} QAOA runs chosen, total regret {sum(regret):.4f} "
              f"(always-QAOA regret {sum(max(0.0, (1 - w['qaoa_ratio']) - (1 - w['greedy_ratio'])) for w in windows):.4f})")
    print(f"== prediction: walk-forward MAE, W per node and interval ({args.seeds} telemetry seeds, 5 days each) ==")
    print("  (ablations, not in the plan: huber_linear = scikit-learn HuberRegressor on the same features;"
          " gnn_no_edges = the same GNN with its neighbour terms cut)")
    maes: dict[str, list[float]] = {}
    seconds = 0.0
    for seed in range(args.seeds):
        series = build_node_series(parse_telemetry(make_telemetry(seed), topo), topo)
        start = time.perf_counter()
        report = evaluate_predictors(series, topo, window=4, test_fraction=0.2, use_gnn=True, hidden=16, steps=300, seed=0)
        seconds += time.perf_counter() - start
        row = {**report.mae_w, **ablations(series, topo)}
        for k, v in row.items():
            maes.setdefault(k, []).append(v)
        print(f"  seed {seed}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()) + f"; best of the plan's three {report.best}")
    print("  mean: " + ", ".join(f"{k} {np.mean(v):.1f} (sd {np.std(v):.1f})" for k, v in maes.items()))
    wins = sum(g < min(r, p) for g, r, p in zip(maes["gnn"], maes["ridge"], maes["persistence"], strict=True))
    print(f"  GNN best on {wins}/{args.seeds} seeds; GNN vs ridge mean MAE ratio {np.mean(maes['gnn']) / np.mean(maes['ridge']):.3f}; "
          f"fit + evaluation {seconds / args.seeds:.2f} s per seed")


if __name__ == "__main__":
    main()
