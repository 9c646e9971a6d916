"""Small energy inputs for the engine tests: a topology, jobs and telemetry built in code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qflow.energy import EnergyInputs, parse_jobs, parse_telemetry, parse_topology
from qflow.energy._schedule import Problem

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_data" / "energy"


def topology_dict(nodes: int = 2, gpus: int = 4, budget: float | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "nodes": [{"id": f"n{i}", "gpus": gpus, "min_clock_mhz": 600, "max_clock_mhz": 1800, "gpu_power_limit_w": 500,
                   "gpu_min_power_w": 150} for i in range(nodes)],
        "links": [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(nodes - 1)],
    }
    if budget is not None:
        data["power_budget_w"] = budget
    return data


def telemetry_frame(nodes: int = 2, gpus: int = 4, steps: int = 40, seed: int = 0) -> pd.DataFrame:
    """Per-GPU rows every 30 minutes: P = 60 + 70 u f^3 (f in GHz) plus small noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(steps):
        stamp = pd.Timestamp("2026-01-01T00:00:00Z") + pd.Timedelta(minutes=30 * t)
        for n in range(nodes):
            for g in range(gpus):
                u = float(rng.uniform(0, 1))
                f = float(rng.uniform(800, 1800))
                rows.append({"timestamp": stamp.isoformat(), "node": f"n{n}", "gpu": f"g{g}",
                             "power_w": 60 + 70 * u * (f / 1000) ** 3 + rng.normal(0, 2), "utilization": u, "sm_clock_mhz": f})
    return pd.DataFrame(rows)


def small_inputs(jobs: list[dict[str, Any]], nodes: int = 2, gpus: int = 4, budget: float | None = None, steps: int = 40) -> EnergyInputs:
    topo = parse_topology(topology_dict(nodes, gpus, budget))
    return EnergyInputs(parse_telemetry(telemetry_frame(nodes, gpus, steps), topo), topo, parse_jobs({"jobs": jobs}, topo))


def chain_jobs() -> list[dict[str, Any]]:
    """Two chains and free jobs: 8 jobs, all with power."""
    return [
        {"id": "a", "duration": 2, "power_w": 800, "gpus": 2},
        {"id": "b", "duration": 1, "power_w": 600, "gpus": 2, "deps": ["a"]},
        {"id": "c", "duration": 2, "power_w": 900, "gpus": 4},
        {"id": "d", "duration": 1, "power_w": 300, "gpus": 1, "deps": ["c"]},
        {"id": "e", "duration": 3, "power_w": 500, "gpus": 1},
        {"id": "f", "duration": 1, "power_w": 700, "gpus": 2, "deps": ["b", "d"]},
        {"id": "g", "duration": 2, "power_w": 400, "gpus": 1, "node": "n1"},
        {"id": "h", "duration": 1, "power_w": 350, "gpus": 1, "deps": ["g"]},
    ]


def random_problem(rng: np.random.Generator, n_jobs: int, n_nodes: int = 2, gpus: int = 4) -> Problem:
    """A random DAG (edges only from lower to higher index), random sizes; some jobs pinned to a node."""
    deps = [sorted(set(rng.choice(i, size=min(i, int(rng.integers(0, 3))), replace=False).tolist())) if i else [] for i in range(n_jobs)]
    node = np.where(rng.random(n_jobs) < 0.2, rng.integers(0, n_nodes, n_jobs), -1)
    return Problem(rng.integers(1, 4, n_jobs), rng.uniform(100, 1000, n_jobs), rng.integers(1, gpus + 1, n_jobs), node, deps,
                   np.full(n_nodes, gpus))
