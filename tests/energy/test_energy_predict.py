"""Prediction: the GNN trains, its walk-forward MAE is compared honestly with ridge and persistence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from energy_helpers import topology_dict

from qflow.energy import parse_topology
from qflow.energy._predict import NodeSeries, evaluate_predictors, make_features, train_gnn


def series_from(power: np.ndarray) -> NodeSeries:
    stamps = pd.date_range("2026-01-01", periods=power.shape[0], freq="30min", tz="UTC")
    return NodeSeries(stamps, power, np.zeros_like(power), 0.5)


def lead_follower_series(steps: int = 240, seed: int = 0) -> np.ndarray:
    """Node 1 repeats node 0's power one interval later; node 0 is a random walk (nothing in its own past predicts it)."""
    rng = np.random.default_rng(seed)
    lead = np.clip(1000 + np.cumsum(rng.normal(0, 250, steps)), 100, 1900)
    follower = np.concatenate([[lead[0]], lead[:-1]])
    return np.stack([lead, follower], axis=1)


def test_features_are_what_is_known_at_the_origin() -> None:
    power = np.arange(20, dtype=float).reshape(10, 2) * 100
    X, y, origins = make_features(series_from(power), np.array([1000.0, 1000.0]), window=3)
    assert X.shape == (7, 2, 6) and origins.tolist() == list(range(2, 9))
    np.testing.assert_allclose(X[0, :, :3], power[[2, 1, 0]].T / 1000)  # most recent first
    np.testing.assert_allclose(y, (power[origins + 1] - power[origins]) / 1000)


def test_the_gnn_trains_and_uses_the_neighbour_that_leads() -> None:
    """The follower's next power is its neighbour's power now: only a model that sees the graph can know it."""
    topo = parse_topology(topology_dict(nodes=2, gpus=4))
    report = evaluate_predictors(series_from(lead_follower_series()), topo, window=3, test_fraction=0.25, use_gnn=True,
                                 hidden=16, steps=600, seed=0)
    assert report.gnn_losses[-1] < 0.5 * report.gnn_losses[0]  # it trained
    follower = {k: v[1] for k, v in report.mae_by_node_w.items()}
    assert follower["gnn"] < 0.5 * follower["ridge"] and follower["gnn"] < 0.5 * follower["persistence"]
    assert report.best == "gnn"


def test_mae_is_the_mean_absolute_error_of_each_method_and_best_is_the_lowest() -> None:
    topo = parse_topology(topology_dict(nodes=2, gpus=4))
    power = lead_follower_series(seed=3)
    report = evaluate_predictors(series_from(power), topo, window=2, test_fraction=0.2, use_gnn=True, hidden=8, steps=50, seed=0)
    assert report.methods == ["persistence", "ridge", "gnn"]
    n_test = report.test_samples
    truth = power[-n_test:]
    np.testing.assert_allclose(report.tail_measured_w, truth)
    np.testing.assert_allclose(report.tail_predicted_w["persistence"], power[-n_test - 1:-1])
    for name, predicted in report.tail_predicted_w.items():
        assert report.mae_w[name] == pytest.approx(np.mean(np.abs(predicted - truth)))
    assert report.best == min(report.mae_w, key=report.mae_w.get)
    assert report.summary()["best_method"] == report.best


def test_without_a_signal_the_report_does_not_claim_a_gnn_win_it_did_not_get() -> None:
    """Pure noise: whichever method wins is the one reported, and the GNN is named best only if its MAE is lowest."""
    topo = parse_topology(topology_dict(nodes=2, gpus=4))
    power = 1000 + np.random.default_rng(5).normal(0, 200, size=(120, 2))
    report = evaluate_predictors(series_from(power), topo, window=3, test_fraction=0.25, use_gnn=True, hidden=16, steps=100, seed=0)
    assert (report.best == "gnn") == (report.mae_w["gnn"] == min(report.mae_w.values()))


def test_training_is_deterministic_for_a_seed_and_leaves_torch_state_alone() -> None:
    import torch

    X = np.random.default_rng(0).normal(size=(30, 2, 4)).astype(np.float32)
    y = X[..., 0] * 0.5
    state = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    a = train_gnn(X, y, np.array([[0, 1.0], [1.0, 0]]), 8, 20, seed=1)[1]
    b = train_gnn(X, y, np.array([[0, 1.0], [1.0, 0]]), 8, 20, seed=1)[1]
    assert a == b
    assert torch.equal(state, torch.random.get_rng_state()) and torch.get_num_threads() == threads


def test_mae_and_mape_per_node_are_computed_on_the_held_out_tail() -> None:
    topo = parse_topology(topology_dict(nodes=2, gpus=4))
    power = lead_follower_series(60)
    report = evaluate_predictors(series_from(power), topo, window=3, test_fraction=0.25, use_gnn=False, hidden=8, steps=10, seed=0)
    tail = report.tail_measured_w
    persistence = report.tail_predicted_w["persistence"]
    for i, node in enumerate(topo.node_ids):
        row = report.per_node()[node]["persistence"]
        assert row["mae_w"] == pytest.approx(np.mean(np.abs(persistence[:, i] - tail[:, i])), abs=1e-3)
        assert row["mape"] == pytest.approx(np.mean(np.abs(persistence[:, i] - tail[:, i]) / tail[:, i]), abs=1e-6)
    assert report.mape["ridge"] == pytest.approx(np.mean(np.abs(report.tail_predicted_w["ridge"] - tail) / tail))
    assert set(report.summary()["per_node"]) == {"n0", "n1"}
