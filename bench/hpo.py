"""HPO benchmark: median final regret of GP-EI, VQC, hybrid, random search and Optuna TPE.

Over ``--seeds`` seeds (default 10) with ``--trials`` evaluations each
(default 50) on Branin and Hartmann6, all run in this process through
``plan_hpo`` with the default config (5 random initial points; the
baselines come from the GP run's plan, same objective and budget).
Regret = best value found - known global minimum.

With ``--warm-start``: instead, the VQC optimizer started cold and warm
(``vqc_warm_start``: circuit weights seeded from the encodings of the best
history trials) on the same history of ``--history`` uniform random points
per seed: median final regret, how often the warm start was kept, and the
first fit's training MSE averaged over its steps, warm against cold.

Usage: python bench/hpo.py [--seeds 10] [--trials 50] [--functions branin hartmann6] [--warm-start --history 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from qflow.hpo import HpoConfig, plan_hpo
from qflow.hpo._objectives import benchmark_space, evaluate_one, make_objective

METHODS = ("gp-ei", "vqc", "hybrid", "random_search", "optuna_tpe")
TOGGLES = {"gp-ei": {}, "vqc": {"vqc_optimizer": True}, "hybrid": {"hybrid": True}}


def run(function: str, seeds: int, trials: int) -> dict[str, list[float]]:
    regrets: dict[str, list[float]] = {m: [] for m in METHODS}
    seconds: dict[str, float] = dict.fromkeys(TOGGLES, 0.0)
    for seed in range(seeds):
        for name, toggles in TOGGLES.items():
            config = {"objective": function, "n_trials": trials, "seed": seed, "baselines": name == "gp-ei",
                      "suggest": 1, **toggles}
            start = time.perf_counter()
            plan = plan_hpo(None, None, config)  # a built-in objective searches its own domain
            seconds[name] += time.perf_counter() - start
            assert plan.solver.ran == name, (plan.solver.ran, plan.solver.fallbacks)
            regrets[name].append(plan.metrics["regret"])
            if name == "gp-ei":
                for base in ("random_search", "optuna_tpe"):
                    regrets[base].append(plan.baselines[base]["regret"])
    print(f"== {function}: {seeds} seeds x {trials} evaluations; median final regret (lower is better) ==")
    print(f"  {'method':<14}{'median':>12}{'p25':>12}{'p75':>12}{'best':>12}{'worst':>12}")
    for m in METHODS:
        r = np.array(regrets[m])
        print(f"  {m:<14}{np.median(r):>12.4g}{np.percentile(r, 25):>12.4g}{np.percentile(r, 75):>12.4g}{r.min():>12.4g}{r.max():>12.4g}")
    print("  wall time per run (s): " + ", ".join(f"{k} {v / seeds:.1f}" for k, v in seconds.items())
          + " (the gp-ei run includes both baselines)")
    gp, tpe = np.median(regrets["gp-ei"]), np.median(regrets["optuna_tpe"])
    print(f"  target GP-EI median regret <= TPE's: {'met' if gp <= tpe else 'NOT met'} ({gp:.4g} vs {tpe:.4g})")
    wins = sum(a <= b for a, b in zip(regrets["gp-ei"], regrets["optuna_tpe"], strict=True))
    print(f"  seeds where GP-EI <= TPE: {wins}/{seeds}; VQC median vs GP-EI: {np.median(regrets['vqc']):.4g} vs {gp:.4g}")
    return regrets


def _history(function: str, n: int, seed: int) -> pd.DataFrame:
    """``n`` uniform random points of the benchmark's domain with their objective values (seeded by ``(seed, 99)``)."""
    space = benchmark_space(function)
    configs = space.from_unit(space.sample_unit(np.random.default_rng([seed, 99]), n))
    objective = make_objective(function, HpoConfig(seed=seed), space)
    return pd.DataFrame([{**c, "objective": evaluate_one(objective, c, i + 1)} for i, c in enumerate(configs)])


def warm_start_run(function: str, seeds: int, trials: int, history: int) -> None:
    regrets: dict[str, list[float]] = {"cold": [], "warm": []}
    kept, mse_warm, mse_cold = 0, [], []
    for seed in range(seeds):
        frame = _history(function, history, seed)
        for label in ("cold", "warm"):
            config = {"objective": function, "n_trials": trials, "seed": seed, "baselines": False, "suggest": 1,
                      "vqc_optimizer": True, "vqc_warm_start": label == "warm"}
            plan = plan_hpo(None, frame, config)
            regrets[label].append(plan.metrics["regret"])
            if label == "warm":
                w = plan.result["vqc_warm_start"]
                kept += w["adopted"]
                mse_warm.append(w["mean_training_mse_warm"])
                mse_cold.append(w["mean_training_mse_cold"])
    print(f"== {function}: VQC cold vs warm start, {seeds} seeds, {history} history points + {trials} evaluations ==")
    for label in ("cold", "warm"):
        r = np.array(regrets[label])
        print(f"  {label:<6} median regret {np.median(r):.4g} (p25 {np.percentile(r, 25):.4g}, p75 {np.percentile(r, 75):.4g})")
    wins = sum(w < c for w, c in zip(regrets["warm"], regrets["cold"], strict=True))
    print(f"  warm start kept on {kept}/{seeds} seeds; warm regret below cold on {wins}/{seeds}; first-fit training MSE "
          f"(mean over steps, median over seeds) warm {np.median(mse_warm):.4g} vs cold {np.median(mse_cold):.4g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--functions", nargs="+", default=["branin", "hartmann6"])
    parser.add_argument("--warm-start", action="store_true", help="compare the VQC's warm and cold starts instead")
    parser.add_argument("--history", type=int, default=10)
    args = parser.parse_args()
    for function in args.functions:
        if args.warm_start:
            warm_start_run(function, args.seeds, args.trials, args.history)
        else:
            run(function, args.seeds, args.trials)


if __name__ == "__main__":
    main()
