"""HPO benchmark: median final regret of GP-EI, VQC, hybrid, random search and Optuna TPE.

Over ``--seeds`` seeds (default 10) with ``--trials`` evaluations each
(default 50) on Branin and Hartmann6, all run in this process through
``plan_hpo`` with the default config (5 random initial points; the
baselines come from the GP run's plan, same objective and budget).
Regret = best value found - known global minimum.

Usage: python bench/hpo.py [--seeds 10] [--trials 50] [--functions branin hartmann6]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from qflow.hpo import plan_hpo

SPACE = {"x": {"kind": "float", "low": 0.0, "high": 1.0}}  # validated, then replaced by the benchmark's own domain
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
            plan = plan_hpo(SPACE, None, config)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--functions", nargs="+", default=["branin", "hartmann6"])
    args = parser.parse_args()
    for function in args.functions:
        run(function, args.seeds, args.trials)


if __name__ == "__main__":
    main()
