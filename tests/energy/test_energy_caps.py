"""Clock caps: never outside a device's clock range or power-limit range; fits recover a known model; limits met."""

from __future__ import annotations

import numpy as np
import pytest
from energy_helpers import telemetry_frame, topology_dict
from hypothesis import given, settings
from hypothesis import strategies as st

from qflow.energy import parse_telemetry, parse_topology
from qflow.energy._caps import PowerFit, choose_caps, current_clocks, fit_power_models


@st.composite
def cap_problems(draw):
    m = draw(st.integers(1, 4))
    slots = draw(st.integers(1, 8))
    nodes = []
    for i in range(m):
        lo = draw(st.floats(200, 1500))
        hi = lo + draw(st.floats(15, 1500))
        plim = draw(st.floats(100, 1000))
        nodes.append({"id": f"n{i}", "gpus": draw(st.integers(1, 8)), "min_clock_mhz": lo, "max_clock_mhz": hi,
                      "gpu_power_limit_w": plim, "gpu_min_power_w": draw(st.floats(0, 1)) * plim,
                      "power_limit_w": draw(st.floats(50, 8000)), "current_clock_mhz": draw(st.floats(lo, hi))})
    topo = parse_topology({"nodes": nodes})
    busy = np.array([[draw(st.integers(0, n["gpus"])) for _ in range(slots)] for n in nodes])
    fits = [PowerFit(draw(st.floats(0, 150)), draw(st.floats(0, 300)), "P = P_idle + k f^3", None, None, 0) for _ in nodes]
    profile = busy * np.array([[f.p_idle_w] for f in fits]) + busy * np.array([[draw(st.floats(0, 900))] for _ in nodes])
    parts = np.array([[draw(st.floats(0, 1e5)), draw(st.floats(0, 1e5))] for _ in nodes])
    budget = draw(st.one_of(st.none(), st.floats(1, 30_000)))
    return topo, profile, busy, parts, fits, budget, draw(st.floats(1.0, 3.0))


@settings(max_examples=150, deadline=None)
@given(case=cap_problems())
def test_caps_never_leave_the_clock_range_or_the_power_limit_range(case) -> None:
    topo, profile, busy, parts, fits, budget, slowdown = case
    caps = choose_caps(profile, busy, parts, fits, topo, topo.current_clock_mhz, budget, slowdown)
    assert np.all(caps["clock_mhz"] >= topo.min_clock_mhz - 1e-9) and np.all(caps["clock_mhz"] <= topo.max_clock_mhz + 1e-9)
    assert np.all(caps["clock_mhz"] <= topo.current_clock_mhz + 1e-9)  # a cap never raises a clock
    assert np.all(caps["power_limit_w"] >= topo.gpu_min_power_w - 1e-9)
    assert np.all(caps["power_limit_w"] <= topo.gpu_power_limit_w + 1e-9)
    # the node power limit holds whenever the lowest clock can meet it
    for i in range(topo.n_nodes):
        floor = busy[i] * fits[i].p_idle_w + np.maximum(profile[i] - busy[i] * fits[i].p_idle_w, 0) * (
            topo.min_clock_mhz[i] / topo.current_clock_mhz[i]) ** 3
        if floor.max(initial=0) <= topo.node_power_limit_w[i]:
            assert caps["capped_profile_w"][i].max(initial=0) <= topo.node_power_limit_w[i] * (1 + 1e-9)


def test_an_energy_cap_stays_within_max_slowdown_and_saves_energy() -> None:
    topo = parse_topology(topology_dict(nodes=1, gpus=4))
    fits = [PowerFit(60.0, 70.0, "P = P_idle + k f^3", None, None, 0)]
    busy = np.array([[4, 4]])
    profile = busy * (60 + 70 * 1.8**3)
    parts = np.array([[4 * 60 * 2, 4 * 70 * 1.8**3 * 2]])
    caps = choose_caps(profile, busy, parts, fits, topo, np.array([1800.0]), None, 1.2)
    assert 1800 / caps["clock_mhz"][0] <= 1.2 + 1e-9 and caps["binding"] == ["energy"]
    assert caps["energy_w_slots"][0] < parts.sum()
    assert caps["power_limit_w"][0] == pytest.approx(max(150.0, min(500.0, 1.1 * (60 + 70 * (caps["clock_mhz"][0] / 1000) ** 3))))


def test_a_cluster_budget_lowers_clocks_until_the_capped_peak_fits() -> None:
    topo = parse_topology(topology_dict(nodes=2, gpus=4))
    fits = [PowerFit(60.0, 70.0, "P = P_idle + k f^3", None, None, 0)] * 2
    busy = np.array([[4], [4]])
    profile = busy * (60 + 70 * 1.8**3.0)
    parts = np.array([[240.0, 1600.0], [240.0, 1600.0]])
    caps = choose_caps(profile, busy, parts, fits, topo, np.array([1800.0, 1800.0]), 2000.0, 1.0)
    assert caps["capped_profile_w"].sum(axis=0).max() <= 2000.0 + 1e-6
    assert "cluster budget" in caps["binding"]


def test_the_fit_recovers_the_telemetry_model_and_prefers_the_utilization_form() -> None:
    topo = parse_topology(topology_dict(nodes=2, gpus=4))
    telemetry = parse_telemetry(telemetry_frame(steps=30), topo)
    for fit in fit_power_models(telemetry, topo):
        assert fit.model == "P = P_idle + k u f^3"
        assert fit.p_idle_w == pytest.approx(60, abs=2) and fit.k_w_per_ghz3 == pytest.approx(70, rel=0.05)
        assert fit.mae_w < 3 and fit.alternative_mae_w > fit.mae_w
    clocks, sources = current_clocks(telemetry, topo)
    assert np.all((clocks >= 600) & (clocks <= 1800)) and sources[0].startswith("median busy SM clock")
