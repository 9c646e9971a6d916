"""Small fabrics and jobs for the nvlink tests (built by the sample module, so they match the bundled files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from qflow.nvlink import parse_fabric
from qflow.nvlink._classifier import FEATURES
from qflow.nvlink._sample import dgx_h100_fabric, dgx_h100_pair_fabric, nvl72_fabric, skewed_traffic

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_data" / "nvlink"

#: Settings that keep a plan fast: no classifier, a short RL run.
FAST = {"classifier": False, "rl_planner": False}


def pair_fabric():
    """Two DGX H100 on InfiniBand (16 GPUs): placement matters here."""
    return parse_fabric(dgx_h100_pair_fabric(), "dgx_h100_x2_ib.json")


def node_fabric():
    return parse_fabric(dgx_h100_fabric(), "dgx_h100.json")


def rack_fabric():
    return parse_fabric(nvl72_fabric(), "gb200_nvl72.json")


def skewed_job(ranks: int = 16, group: int = 4, seed: int = 0) -> dict:
    return {"id": "skewed", "ranks": ranks, "traffic": skewed_traffic(ranks, group, seed)}


def brute_force_chromatic_index(ports: np.ndarray, n_ports: int, start: int) -> int:
    """Smallest k >= start with a proper k-colouring of the transfers (backtracking; small graphs only)."""
    m = len(ports)
    for k in range(start, m + 1):
        colour = [-1] * m

        def place(e: int, k: int = k, colour: list[int] = colour) -> bool:
            if e == m:
                return True
            for c in range(k):
                if all(colour[w] != c or not set(ports[w]) & set(ports[e]) for w in range(e)):
                    colour[e] = c
                    if place(e + 1):
                        return True
            colour[e] = -1
            return False

        if place(0):
            return k
    return m


JOBS = {"jobs": [{"id": "a2a", "ranks": 4, "pattern": "all_to_all", "bytes": 1e8},
                 {"id": "ring", "ranks": 4, "pattern": "all_reduce", "bytes": 1e8}]}


def contention_logs(informative: bool, n: int = 120, seed: int = 0) -> pd.DataFrame:
    """Uploaded-style logs: labels follow one feature (informative, about half congested) or are noise (10 % congested)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.random((n, len(FEATURES))), columns=list(FEATURES))
    if informative:
        frame["congested"] = (frame["injection_imbalance"] > 0.5).astype(int)
    else:
        frame["congested"] = (rng.random(n) < 0.1).astype(int)
        frame.loc[:3, "congested"] = 1  # at least a few of each class
    return frame
