"""Shared fixtures for the console tests: real plans on the sample data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_data" / "routing"

#: QAOA settings small enough for a test (one 6-qubit block, 5 optimizer steps).
SMALL_QAOA = {"qaoa": True, "hqc": True, "max_qubits": 6, "qaoa_blocks": 1, "qaoa_steps": 5}


@pytest.fixture
def small_qaoa() -> dict[str, Any]:
    """:data:`SMALL_QAOA`, a fresh copy per test."""
    return dict(SMALL_QAOA)


def _plan(settings: dict[str, Any]) -> dict[str, Any]:
    from qflow.routing import RoutingConfig, load_routing_inputs, plan_routing

    frame, graph, digests = load_routing_inputs(SAMPLES / "tokens.csv", SAMPLES / "model_graph.json")
    return plan_routing(frame, graph, RoutingConfig(**settings), digests=digests).to_dict()


@pytest.fixture(scope="session")
def classical_plan() -> dict[str, Any]:
    """The default plan on the sample data, as ``Plan.to_dict()``."""
    return _plan({})


@pytest.fixture(scope="session")
def qaoa_plan() -> dict[str, Any]:
    """A qaoa+hqc plan on the sample data with :data:`SMALL_QAOA` settings."""
    return _plan(SMALL_QAOA)


@pytest.fixture(scope="session")
def sweep_rows() -> list[dict[str, Any]]:
    """``capacity_sweep`` on the sample data at the page's factors."""
    from qflow.routing import capacity_sweep, load_routing_inputs
    from ui.hooks.routing import SWEEP_FACTORS

    frame, graph, _ = load_routing_inputs(SAMPLES / "tokens.csv", SAMPLES / "model_graph.json")
    return capacity_sweep(frame, graph, {}, factors=SWEEP_FACTORS)
