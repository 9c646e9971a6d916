"""Small fabrics and jobs for the nvlink tests (built by the sample module, so they match the bundled files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qflow.nvlink import parse_fabric
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
