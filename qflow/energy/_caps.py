"""Per-node clock caps from a fitted power-vs-clock model.

Per GPU, power is modelled as ``P = P_idle + k f^3`` (f in GHz) or, when
utilization is logged and it fits better, ``P = P_idle + k u f^3``; both are
fitted by non-negative least squares (scipy ``nnls``) on the node's telemetry
rows and the one with the lower mean absolute error is kept.

A job measured at the current clock ``f0`` with power ``p`` on ``g`` GPUs is
assumed compute-bound under a cap ``f = r f0``: its idle part ``g P_idle``
stays, its dynamic part scales by ``r^3`` and it runs ``1/r`` times longer,
so its energy is ``g P_idle d / r + (p - g P_idle) d r^2``. Caps are chosen
per node on a clock grid within ``[min_clock, f0]``:

1. the energy-optimal clock with slowdown ``1/r <= max_slowdown``;
2. lowered (least slowdown first) until the node's capped peak is within its
   power limit;
3. lowered node by node, most watts saved at the cluster peak per unit of
   slowdown first, until the cluster's capped peak is within the budget.

The recommended per-GPU power limit is ``P_idle + k f^3`` at the cap plus
:data:`POWER_LIMIT_HEADROOM` (so the limit does not throttle before the clock
cap does), clamped to the device's ``[gpu_min_power_w, gpu_power_limit_w]``;
so both settings always stay inside the device's ranges.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from qflow.energy._schemas import Topology

__all__ = ["PowerFit", "choose_caps", "current_clocks", "fit_power_models"]

#: Clock grid step, MHz (NVIDIA exposes SM clocks in 15 MHz steps).
CLOCK_STEP_MHZ = 15.0
#: The power limit sits this fraction above the model's busy power at the capped clock.
POWER_LIMIT_HEADROOM = 0.10


@dataclass(frozen=True)
class PowerFit:
    """Per-GPU power model of one node: ``P = p_idle_w + k_w_per_ghz3 * [u *] f^3``."""

    p_idle_w: float
    k_w_per_ghz3: float
    model: str
    mae_w: float | None
    r2: float | None
    rows: int
    alternative_mae_w: float | None = None

    def gpu_power_w(self, clock_mhz: float) -> float:
        """Power of a fully busy GPU at ``clock_mhz``."""
        return self.p_idle_w + self.k_w_per_ghz3 * (clock_mhz / 1000.0) ** 3

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "p_idle_w": round(self.p_idle_w, 3), "k_w_per_ghz3": round(self.k_w_per_ghz3, 4),
                "mae_w": None if self.mae_w is None else round(self.mae_w, 3), "r2": None if self.r2 is None else round(self.r2, 4),
                "rows": self.rows, "alternative_mae_w": None if self.alternative_mae_w is None else round(self.alternative_mae_w, 3)}


def _fit(design: np.ndarray, power: np.ndarray) -> tuple[np.ndarray, float, float]:
    coef, _ = nnls(design, power)
    resid = power - design @ coef
    ss = float(((power - power.mean()) ** 2).sum())
    return coef, float(np.abs(resid).mean()), (1.0 - float((resid**2).sum()) / ss) if ss > 0 else 1.0


def fit_power_models(telemetry: pd.DataFrame, topology: Topology) -> list[PowerFit]:
    """One :class:`PowerFit` per node (``topology.node_ids`` order).

    Without an ``sm_clock_mhz`` column the model cannot be fitted: ``P_idle``
    is the 5th percentile of per-GPU power, ``k`` puts the 95th percentile at
    the node's max clock, and ``mae_w`` is None.

    >>> import pandas as pd
    >>> topo = Topology(["a"], np.array([1]), np.array([500.0]), np.array([2000.0]), np.array([np.nan]), np.array([700.0]),
    ...                 np.array([100.0]), np.array([700.0]), np.array([np.nan]), None, [])
    >>> f = np.linspace(0.8, 2.0, 20)
    >>> tel = pd.DataFrame({"node": "a", "power_w": 60 + 80 * f**3, "sm_clock_mhz": 1000 * f})
    >>> fit = fit_power_models(tel, topo)[0]
    >>> round(fit.p_idle_w, 6), round(fit.k_w_per_ghz3, 6), fit.model
    (60.0, 80.0, 'P = P_idle + k f^3')
    """
    fits = []
    for i, node in enumerate(topology.node_ids):
        rows = telemetry[telemetry["node"] == node]
        if "sm_clock_mhz" in rows:  # missing clock readings (blank, "not supported") are left out of the fit
            rows = rows[np.isfinite(rows["sm_clock_mhz"].to_numpy(float))]
        power = rows["power_w"].to_numpy(float)
        if "sm_clock_mhz" not in rows or len(rows) < 3:
            source = rows if len(rows) else telemetry
            idle = float(np.percentile(source["power_w"], 5))
            top = float(np.percentile(source["power_w"], 95))
            k = max(top - idle, 0.0) / (topology.max_clock_mhz[i] / 1000.0) ** 3
            fits.append(PowerFit(idle, k, "assumed (no sm_clock_mhz column): P_idle = p5, P(max clock) = p95", None, None, len(rows)))
            continue
        f3 = (rows["sm_clock_mhz"].to_numpy(float) / 1000.0) ** 3
        coef, mae, r2 = _fit(np.column_stack([np.ones_like(f3), f3]), power)
        best = PowerFit(float(coef[0]), float(coef[1]), "P = P_idle + k f^3", mae, r2, len(rows))
        if "utilization" in rows and np.isfinite(rows["utilization"].to_numpy(float)).all():
            u = rows["utilization"].to_numpy(float)
            coef_u, mae_u, r2_u = _fit(np.column_stack([np.ones_like(f3), u * f3]), power)
            if mae_u < mae:
                best = PowerFit(float(coef_u[0]), float(coef_u[1]), "P = P_idle + k u f^3", mae_u, r2_u, len(rows), alternative_mae_w=mae)
            else:
                best = PowerFit(best.p_idle_w, best.k_w_per_ghz3, best.model, mae, r2, len(rows), alternative_mae_w=mae_u)
        fits.append(best)
    return fits


def current_clocks(telemetry: pd.DataFrame, topology: Topology) -> tuple[np.ndarray, list[str]]:
    """The clock each node runs jobs at now, MHz (m,), and where it came from.

    The topology's ``current_clock_mhz`` when given; else the median SM clock
    of busy GPUs (utilization >= 0.5, or all rows) in the last tenth of the
    log; else the max clock. Always clamped to ``[min_clock, max_clock]``.
    """
    clocks, sources = [], []
    last = telemetry[telemetry["timestamp"] >= telemetry["timestamp"].quantile(0.9)] if len(telemetry) else telemetry
    for i, node in enumerate(topology.node_ids):
        lo, hi = topology.min_clock_mhz[i], topology.max_clock_mhz[i]
        if np.isfinite(topology.current_clock_mhz[i]):
            clocks.append(float(topology.current_clock_mhz[i]))
            sources.append("topology current_clock_mhz")
            continue
        rows = last[last["node"] == node]
        if "utilization" in rows:
            busy = rows[rows["utilization"] >= 0.5]
            rows = busy if len(busy) else rows
        if "sm_clock_mhz" in rows and len(rows):
            clocks.append(float(np.clip(rows["sm_clock_mhz"].median(), lo, hi)))
            sources.append("median busy SM clock, last tenth of the telemetry")
        else:
            clocks.append(float(hi))
            sources.append("max_clock_mhz (no clock telemetry)")
    return np.asarray(clocks), sources


def _grid(lo: float, hi: float) -> np.ndarray:
    """Clocks from ``lo`` to ``hi`` in :data:`CLOCK_STEP_MHZ` steps, both ends included, descending."""
    steps = np.arange(hi, lo, -CLOCK_STEP_MHZ)
    return np.unique(np.clip(np.append(steps, lo), lo, hi))[::-1]


def _lower_to_budget(pick: np.ndarray, binding: list[str], grids: list[np.ndarray], capped: Callable[[int, float], np.ndarray],
                     current_mhz: np.ndarray, budget_w: float) -> None:
    """Step clocks down (``pick`` indexes each node's descending grid), in place, until the summed profile fits ``budget_w``.

    Each step lowers the node that saves the most watts in the peak slot per
    unit of added slowdown; it stops when every node is at its lowest clock.
    """
    m = len(grids)
    while True:
        total = sum(capped(i, grids[i][pick[i]]) for i in range(m))
        if total.size == 0 or total.max() <= budget_w * (1 + 1e-9):
            return
        t = int(np.argmax(total))
        gains = np.full(m, -np.inf)
        for i in range(m):
            if pick[i] < len(grids[i]) - 1:
                now, lower = grids[i][pick[i]], grids[i][pick[i] + 1]
                saved = capped(i, now)[t] - capped(i, lower)[t]
                gains[i] = saved / (current_mhz[i] / lower - current_mhz[i] / now)
        if not np.isfinite(gains).any():
            return
        i = int(np.argmax(gains))
        pick[i] += 1
        binding[i] = "cluster budget"


def choose_caps(
    node_profile_w: np.ndarray,
    node_gpus_busy: np.ndarray,
    node_energy_parts: np.ndarray,
    fits: list[PowerFit],
    topology: Topology,
    current_mhz: np.ndarray,
    budget_w: float | None,
    max_slowdown: float,
) -> dict[str, Any]:
    """Clock caps per node for a schedule.

    Parameters
    ----------
    node_profile_w : ndarray of shape (m, M)
        Jobs' power per node and slot at the current clocks, W.
    node_gpus_busy : ndarray of shape (m, M)
        GPUs running jobs per node and slot.
    node_energy_parts : ndarray of shape (m, 2)
        Per node ``(sum g d P_idle, sum (p - g P_idle) d)`` in W x slots: the
        idle and dynamic parts of its jobs' energy at the current clock.
    fits, topology, current_mhz, budget_w, max_slowdown
        See the module docstring.

    Returns
    -------
    dict
        ``clock_mhz`` (m,), ``power_limit_w`` (m,), ``ratio`` (m,), ``binding``
        (m,), the capped profiles (m, M) and energies (m,) in W x slots.
    """
    m = len(fits)
    idle = np.array([f.p_idle_w for f in fits])
    grids = [_grid(topology.min_clock_mhz[i], current_mhz[i]) for i in range(m)]
    static = node_gpus_busy * idle[:, None]
    dynamic = np.maximum(node_profile_w - static, 0.0)

    def capped(i: int, clock: float) -> np.ndarray:
        return static[i] + dynamic[i] * (clock / current_mhz[i]) ** 3

    def energy(i: int, clock: float) -> float:
        r = clock / current_mhz[i]
        return float(node_energy_parts[i, 0] / r + node_energy_parts[i, 1] * r**2)

    pick = np.zeros(m, dtype=int)
    binding = ["none"] * m
    for i in range(m):
        ratios = grids[i] / current_mhz[i]
        allowed = np.flatnonzero(1.0 / ratios <= max_slowdown * (1 + 1e-12))
        energies = np.array([energy(i, c) for c in grids[i][allowed]])
        pick[i] = int(allowed[np.argmin(energies)]) if energies.size and node_energy_parts[i].sum() > 0 else 0
        if pick[i] > 0:
            binding[i] = "energy"
        while capped(i, grids[i][pick[i]]).max(initial=0.0) > topology.node_power_limit_w[i] and pick[i] < len(grids[i]) - 1:
            pick[i] += 1
            binding[i] = "node power limit"
    if budget_w is not None:
        _lower_to_budget(pick, binding, grids, capped, current_mhz, budget_w)
    clock = np.array([grids[i][pick[i]] for i in range(m)])
    power_limit = np.array([
        float(np.clip((1 + POWER_LIMIT_HEADROOM) * fits[i].gpu_power_w(clock[i]), topology.gpu_min_power_w[i],
                      topology.gpu_power_limit_w[i])) for i in range(m)
    ])
    profiles = np.array([capped(i, clock[i]) for i in range(m)]) if m else np.zeros((0, 0))
    return {"clock_mhz": clock, "power_limit_w": power_limit, "ratio": clock / current_mhz, "binding": binding,
            "capped_profile_w": profiles, "energy_w_slots": np.array([energy(i, clock[i]) for i in range(m)]),
            "uncapped_energy_w_slots": node_energy_parts.sum(axis=1)}
