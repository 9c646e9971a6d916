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

Budget objective: random DAGs (``--sizes`` jobs, ``--dag-seeds`` seeds; 4
nodes x 8 GPUs; budget half the ASAP peak, so it binds) scheduled by the old
min_peak search (auto horizon 1.5 x ASAP) and by the min_makespan search;
makespans against the certified lower bound; small instances (``--milp-sizes``)
also solved exactly by the time-indexed MILP on HiGHS. The bundled sample is
planned with both objectives. Prediction quality per node (MAE, MAPE on the
held-out tail) is printed for both sample formats (qflow CSV, dcgm-exporter
Prometheus JSON).

With ``--levels`` only the window comparison runs: one defer bit per job
against two qubits per job choosing one of four clock levels, on the same
DAGs (peak and energy relative to the schedule before the windows).

Usage: python bench/energy.py [--seeds 5] [--qaoa] [--max-qubits 10] [--sizes 30 60 120 240] [--dag-seeds 3]
       python bench/energy.py --levels [--seeds 3] [--max-qubits 8] [--max-slowdown 1.3] [--slot-scale 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from qflow.energy import EnergyInputs, load_energy_inputs, parse_jobs, parse_telemetry, parse_topology, plan_energy
from qflow.energy._makespan import exact_makespan, flatten_within, shortest_schedule
from qflow.energy._meta import WindowController
from qflow.energy._predict import build_node_series, evaluate_predictors, make_features, train_gnn
from qflow.energy._sample import make_jobs, make_telemetry, make_topology
from qflow.energy._schedule import Problem, asap_schedule, check_schedule, list_schedule, power_profile

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


def random_dag(seed: int, n: int, nodes: int = 4, gpus: int = 8) -> Problem:
    """A random DAG: each job depends on up to 2 earlier ones; 1-4 slots, 150-900 W, 1/2/4/8 GPUs."""
    rng = np.random.default_rng([seed, n])
    deps = [sorted(set(rng.choice(i, size=min(i, int(rng.integers(0, 3))), replace=False).tolist())) if i else [] for i in range(n)]
    return Problem(rng.integers(1, 5, n), rng.uniform(150, 900, n).round(0), rng.choice([1, 2, 4, 8], n, p=[0.4, 0.3, 0.2, 0.1]),
                   -np.ones(n, int), deps, np.full(nodes, gpus))


def compare_objectives(problem: Problem, budget: float, iterations: int = 24) -> dict[str, float]:
    """Old min_peak (auto horizon) vs new min_makespan on one instance: makespans, peaks, bound, seconds."""
    asap = asap_schedule(problem)
    start = time.perf_counter()
    old = list_schedule(problem, int(np.ceil(1.5 * asap.makespan(problem))), budget, True)
    old_s = time.perf_counter() - start
    start = time.perf_counter()
    found = shortest_schedule(problem, budget, iterations, 0)
    flat, _ = flatten_within(problem, found.schedule, budget)
    new_s = time.perf_counter() - start
    return {"asap": asap.makespan(problem), "asap_peak": float(power_profile(problem, asap).max()), "old": old.schedule.makespan(problem),
            "old_peak": float(power_profile(problem, old.schedule).max()), "new": flat.makespan(problem),
            "new_peak": float(power_profile(problem, flat).max()), "bound": found.lower_bound["bound"],
            "energy_bound": found.lower_bound["energy_unrounded"], "critical": found.lower_bound["critical_path"],
            "old_s": old_s, "new_s": new_s, "valid": not check_schedule(problem, flat)}


def objective_section(sizes: list[int], seeds: int, milp_sizes: list[int], milp_seeds: int) -> None:
    print("== budget objective: random DAGs, 4 nodes x 8 GPUs, budget = 0.5 x ASAP peak; min_peak (old default) vs min_makespan ==")
    print(f"  {'jobs':>5}{'seed':>5}{'budget W':>10}{'ASAP':>6}{'old':>6}{'old peak':>10}{'new':>6}{'new peak':>10}{'LB':>5}"
          f"{'gap':>8}{'old s':>7}{'new s':>7}")
    gaps, speedups = [], []
    for n in sizes:
        for seed in range(seeds):
            p = random_dag(seed, n)
            budget = float(max(0.5 * power_profile(p, asap_schedule(p)).max(), p.power_w.max()))
            r = compare_objectives(p, budget)
            gap = r["new"] / r["bound"] - 1
            gaps.append(gap)
            speedups.append(r["old"] / r["new"])
            print(f"  {n:>5}{seed:>5}{budget:>10.0f}{r['asap']:>6}{r['old']:>6}{r['old_peak']:>10.0f}{r['new']:>6}{r['new_peak']:>10.0f}"
                  f"{r['bound']:>5}{100 * gap:>7.1f}%{r['old_s']:>7.2f}{r['new_s']:>7.2f}" + ("" if r["valid"] else "  INVALID"))
    print(f"  gap to the makespan lower bound: median {100 * np.median(gaps):.1f} %, worst {100 * max(gaps):.1f} % "
          f"({sum(g <= 0.10 for g in gaps)}/{len(gaps)} within 10 %, {sum(g == 0 for g in gaps)} proven optimal); "
          f"old/new makespan median {np.median(speedups):.2f}x")
    p = random_dag(0, 60)
    r = compare_objectives(p, 4000.0)
    print(f"  60 jobs, 4 kW budget (the issue's shape): old ends at slot {r['old']} peaking {r['old_peak']:.0f} W; new ends at "
          f"{r['new']} peaking {r['new_peak']:.0f} W; bound {r['bound']} (critical path {r['critical']}, energy/budget {r['energy_bound']:.1f})")
    print("== exact optimum (time-indexed MILP, HiGHS via scipy.optimize.milp, 60 s limit) on small instances, 2 nodes x 8 GPUs ==")
    print(f"  {'jobs':>5}{'seed':>5}{'LB':>5}{'MILP':>6}{'heuristic':>11}{'old':>6}{'MILP s':>8}  status")
    hits = total = 0
    for n in milp_sizes:
        for seed in range(milp_seeds):
            p = random_dag(seed, n, nodes=2)
            budget = float(max(0.5 * power_profile(p, asap_schedule(p)).max(), p.power_w.max()))
            r = compare_objectives(p, budget)
            exact = exact_makespan(p, budget, r["new"], time_limit_s=60)
            total += 1
            hits += exact["optimal"] and exact["makespan"] == r["new"]
            print(f"  {n:>5}{seed:>5}{r['bound']:>5}{exact['makespan'] if exact['makespan'] is not None else '-':>6}{r['new']:>11}{r['old']:>6}"
                  f"{exact['seconds']:>8.2f}  {'optimal' if exact['optimal'] else exact['status']}")
    print(f"  heuristic = proven optimum on {hits}/{total} instances")


def sample_objectives(inputs) -> None:
    print("== sample: min_makespan (new default) vs min_peak (old behaviour), topology budget ==")
    for objective in ("min_makespan", "min_peak"):
        plan = plan_energy(inputs, {"objective": objective, "gnn_steps": 10})
        m = plan.metrics
        print(f"  {objective:<13} makespan {m['makespan_slots']:>3} slots (bound {m['makespan_lower_bound_slots']}, gap "
              f"{100 * m['makespan_gap_to_lower_bound']:.1f} %), peak {m['peak_power_w']:.0f} W, budget {m['power_budget_w']:.0f} W, "
              f"over budget {m['budget_exceeded_slots']} slots, schedule stage {plan.timings_s['schedule']:.2f} s")


def prediction_by_format(seed_steps: int = 300) -> None:
    print("== prediction quality per node on the held-out tail (MAE W, MAPE), both sample formats ==")
    for name in ("telemetry.csv", "telemetry_dcgm.json"):
        inputs, _ = load_energy_inputs(SAMPLES / name, SAMPLES / "topology.json", SAMPLES / "jobs.json")
        series = build_node_series(inputs.telemetry, inputs.topology)
        report = evaluate_predictors(series, inputs.topology, window=4, test_fraction=0.2, use_gnn=True, hidden=16, steps=seed_steps, seed=0)
        print(f"  {name} ({inputs.telemetry_info['format']}): overall " + ", ".join(
            f"{k} MAE {report.mae_w[k]:.1f} W / MAPE {100 * report.mape[k]:.1f} %" for k in report.methods))
        for node, row in report.per_node().items():
            print(f"    {node}: " + ", ".join(f"{k} {v['mae_w']:.0f} W {100 * v['mape']:.1f} %" for k, v in row.items()))


def levels_section(seeds: int, max_qubits: int, max_slowdown: float, slot_scale: int = 1) -> None:
    """One-bit (run now / defer) windows against four-level clock windows on the generator's DAGs, same plan otherwise.

    ``slot_scale`` multiplies every duration (finer slots: a slowdown then rounds to fewer extra slots).
    """
    topo = parse_topology(make_topology())
    telemetry = parse_telemetry(make_telemetry(0), topo)
    base = {"qaoa_scheduling": True, "max_qubits": max_qubits, "gnn_steps": 10, "qaoa_windows": 4, "max_slowdown": max_slowdown}
    rows: dict[int, list[dict]] = {2: [], 4: []}
    for seed in range(1, seeds + 1):
        raw = make_jobs(seed)
        for job in raw["jobs"]:
            job["duration"] *= slot_scale
        jobs = parse_jobs(raw, topo)
        for levels in (2, 4):
            start = time.perf_counter()
            p = plan_energy(EnergyInputs(telemetry, topo, jobs), {**base, "power_levels": levels, "seed": seed})
            ws = p.result["windows"]
            before = p.baselines["list_before_windows"]
            rows[levels].append({"peak": p.metrics["peak_power_w"] / before["peak_power_w"],
                                 "energy": p.metrics["energy_kwh"] / before["energy_kwh"],
                                 "makespan": p.metrics["makespan_slots"] - before["makespan_slots"],
                                 "windows": len(ws), "applied": sum(w["applied"] for w in ws),
                                 "qaoa_optimal": sum(w["qaoa_ratio"] is not None and w["qaoa_ratio"] >= 1 - 1e-9 for w in ws),
                                 "greedy_optimal": sum(w["greedy_ratio"] >= 1 - 1e-9 for w in ws),
                                 "qubits": max((w["qubits"] for w in ws), default=0), "seconds": time.perf_counter() - start,
                                 "reasons": [w["not_applied_reason"] for w in ws if not w["applied"]]})
    print(f"== windows: one defer bit vs four clock levels (2 qubits per job, max_slowdown {max_slowdown}, durations x{slot_scale}); "
          f"{seeds} generator DAGs, max {max_qubits} qubits, 4 windows each ==")
    print(f"  {'windows':<14}{'peak/before':>12}{'energy/before':>15}{'+makespan':>11}{'applied':>9}{'QAOA opt':>10}"
          f"{'greedy opt':>12}{'s/plan':>8}")
    for levels, rs in rows.items():
        total = sum(r["windows"] for r in rs)
        print(f"  {('one bit' if levels == 2 else 'four levels'):<14}{np.mean([r['peak'] for r in rs]):>12.4f}"
              f"{np.mean([r['energy'] for r in rs]):>15.4f}{np.mean([r['makespan'] for r in rs]):>11.2f}"
              f"{sum(r['applied'] for r in rs):>5}/{total:<3}{sum(r['qaoa_optimal'] for r in rs):>6}/{total:<3}"
              f"{sum(r['greedy_optimal'] for r in rs):>8}/{total:<3}{np.mean([r['seconds'] for r in rs]):>8.1f}")
        reasons = [x for r in rs for x in r["reasons"]]
        if reasons:
            counts = {k: reasons.count(k) for k in sorted(set(reasons))}
            print("    not applied: " + "; ".join(f"{v}x {k}" for k, v in counts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--qaoa", action="store_true", help="also run the QAOA peak-slot windows")
    parser.add_argument("--max-qubits", type=int, default=10)
    parser.add_argument("--sizes", type=int, nargs="+", default=[30, 60, 120, 240], help="jobs per random DAG (budget objective)")
    parser.add_argument("--dag-seeds", type=int, default=3)
    parser.add_argument("--milp-sizes", type=int, nargs="+", default=[8, 12])
    parser.add_argument("--milp-seeds", type=int, default=3)
    parser.add_argument("--levels", action="store_true", help="only: one-bit vs four-level QAOA windows (--seeds DAGs)")
    parser.add_argument("--max-slowdown", type=float, default=1.3, help="with --levels: the slowest clock level")
    parser.add_argument("--slot-scale", type=int, default=1, help="with --levels: multiply every duration (finer slots)")
    args = parser.parse_args()
    if args.levels:
        levels_section(args.seeds, args.max_qubits, args.max_slowdown, args.slot_scale)
        return
    toggles = {"qaoa_scheduling": True, "max_qubits": args.max_qubits} if args.qaoa else {}
    objective_section(args.sizes, args.dag_seeds, args.milp_sizes, args.milp_seeds)

    inputs, digests = load_energy_inputs(SAMPLES / "telemetry.csv", SAMPLES / "topology.json", SAMPLES / "jobs.json")
    sample_objectives(inputs)
    prediction_by_format()
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
