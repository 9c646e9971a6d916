"""Scale-out benchmark: HPO trials on 1, 2 and 4 Dask workers against joblib processes, same budget and seed.

Three measurements, all in this process (run with ``PYTHONPATH=.``):

1. Start-up: a joblib (loky) pool of 2 processes evaluating one trial, against
   a ``LocalCluster`` of 2 workers started and closed (what ``dask_scheduler:
   local`` costs every plan).
2. Speed: ``objective: train`` (random forest, 3-fold CV on breast_cancer) for
   ``--trials`` trials: the optimize stage's wall time with joblib
   (``n_jobs = batch_size = k``) and on a cluster of ``k`` single-threaded
   workers (``dask scheduler`` + ``dask worker`` processes, started before the
   clock runs), for k = 1, 2, 4; speed-up against k = 1 of the same runner.
3. Quality: Branin, ``--seeds`` seeds x ``--quality-trials`` trials, GP-EI with
   kriging believer: local batches of 2 against the asynchronous refill on
   2 workers; best value per seed.

Usage: PYTHONPATH=. python bench/scale_out.py [--trials 12] [--workers 1 2 4] [--seeds 3] [--quality-trials 15]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from qflow.core.cluster import dask_client
from qflow.hpo import plan_hpo
from tests.dask_cluster import start_cluster

SPACE = {"n_estimators": {"kind": "int", "low": 50, "high": 200},
         "max_depth": {"kind": "int", "low": 2, "high": 12},
         "min_samples_leaf": {"kind": "int", "low": 1, "high": 8}}
TRAIN = {"objective": "train", "model": "random_forest", "builtin_dataset": "breast_cancer", "baselines": False,
         "n_initial": 4, "suggest": 1}


def startup() -> None:
    from joblib.externals.loky import ProcessPoolExecutor

    start = time.perf_counter()
    pool = ProcessPoolExecutor(max_workers=2)  # what Evaluator starts at a plan's first parallel batch
    pool.submit(abs, -1).result()
    pool.shutdown(wait=True)
    loky = time.perf_counter() - start
    start = time.perf_counter()
    with dask_client("local", 2) as client:
        client.submit(abs, -1).result()
    local = time.perf_counter() - start
    print("== start-up, 2 workers ==")
    print(f"  joblib (loky) pool, first task, shut down: {loky:.2f} s")
    print(f"  dask LocalCluster, first task, closed:     {local:.2f} s  ({local / loky:.1f}x)")


def speed(trials: int, workers: list[int]) -> None:
    print(f"== train objective (random forest, 3-fold CV, breast_cancer): {trials} trials, optimize stage wall time ==")
    print(f"  {'workers':<9}{'joblib s':>10}{'speed-up':>10}{'dask s':>10}{'speed-up':>10}{'dask best':>11}{'joblib best':>12}")
    base: dict[str, float] = {}
    for k in workers:
        config = {**TRAIN, "n_trials": trials, "n_jobs": k, "batch_size": k, "seed": 0}
        local = plan_hpo(SPACE, None, config)
        with tempfile.TemporaryDirectory() as tmp:
            cluster = start_cluster(Path(tmp), k)
            try:
                remote = plan_hpo(SPACE, None, {**config, "batch_size": 1, "dask_scheduler": cluster.address})
            finally:
                cluster.close()
        assert len(remote.result["distributed"]["workers_used"]) <= k
        times = {"joblib": local.timings_s["optimize"], "dask": remote.timings_s["optimize"]}
        base = base or times
        capped = " (joblib capped at the cores)" if any("capped" in d for d in local.diagnostics) else ""
        print(f"  {k:<9}{times['joblib']:>10.1f}{base['joblib'] / times['joblib']:>9.2f}x{times['dask']:>10.1f}"
              f"{base['dask'] / times['dask']:>9.2f}x{remote.metrics['best_value']:>11.4f}{local.metrics['best_value']:>12.4f}{capped}")


def quality(seeds: int, trials: int) -> None:
    print(f"== branin, GP-EI kriging believer, {trials} trials: best value per seed (lower is better; minimum 0.397887) ==")
    local_best, dask_best = [], []
    with tempfile.TemporaryDirectory() as tmp:
        cluster = start_cluster(Path(tmp), 2)
        try:
            for seed in range(seeds):
                config = {"objective": "branin", "n_trials": trials, "baselines": False, "suggest": 1, "seed": seed}
                local_best.append(plan_hpo(None, None, {**config, "batch_size": 2}).metrics["best_value"])
                dask_best.append(plan_hpo(None, None, {**config, "dask_scheduler": cluster.address}).metrics["best_value"])
        finally:
            cluster.close()
    print("  local batches of 2: " + " ".join(f"{v:.4f}" for v in local_best) + f"   median {np.median(local_best):.4f}")
    print("  dask, 2 workers:    " + " ".join(f"{v:.4f}" for v in dask_best) + f"   median {np.median(dask_best):.4f}")
    wins = sum(d <= loc for d, loc in zip(dask_best, local_best, strict=True))
    print(f"  dask at least as good on {wins}/{seeds} seeds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quality-trials", type=int, default=15)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores (os.cpu_count), load average {os.getloadavg()[0]:.2f} at start")
    startup()
    speed(args.trials, args.workers)
    quality(args.seeds, args.quality_trials)


if __name__ == "__main__":
    main()
