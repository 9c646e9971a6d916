"""The SVM contention classifier (accuracy floor on held-out simulated logs) and the Q-learning path planner."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from nvlink_helpers import pair_fabric, rack_fabric

from qflow.core.errors import InputError
from qflow.nvlink import pattern_traffic
from qflow.nvlink._classifier import FEATURES, parse_logs, simulate_logs, train_classifier
from qflow.nvlink._rl import learn_paths
from qflow.nvlink._simulator import FlowSet, PathTable

#: Held-out accuracy the classifier must reach on simulated logs (it reaches 0.95-1.0 on the bundled fabrics).
ACCURACY_FLOOR = 0.85


@pytest.mark.parametrize("fabric", [pair_fabric, rack_fabric], ids=["2xdgx", "nvl72"])
def test_classifier_accuracy_above_the_floor(fabric):
    table = PathTable(fabric())
    logs = simulate_logs(table, 160, seed=0, jobs=[pattern_traffic("all_to_all", 8, 1e9)])
    assert set(FEATURES) <= set(logs.columns) and logs["congested"].nunique() == 2
    model = train_classifier(logs, seed=0)
    assert model is not None
    report = model.report
    assert report["n_test"] == 40 and np.sum(report["confusion_matrix"]) == 40
    assert report["held_out_accuracy"] >= ACCURACY_FLOOR
    assert report["held_out_accuracy"] >= report["majority_class_accuracy"]


def test_labels_follow_the_simulated_slowdown():
    logs = simulate_logs(PathTable(pair_fabric()), 60, seed=1)
    assert ((logs["slowdown"] > 1.5) == logs["congested"].astype(bool)).all()
    assert (logs["slowdown"] >= 1 - 1e-9).all()  # nothing beats the injection bound


def test_one_class_logs_are_refused_quietly():
    logs = pd.DataFrame({**{f: np.arange(30.0) for f in FEATURES}, "congested": 0})
    assert train_classifier(logs, 0) is None


def test_uploaded_logs_are_validated():
    good = pd.DataFrame({**{f: np.linspace(0, 1, 30) for f in FEATURES}, "congested": ["true", "false"] * 15})
    assert parse_logs(good, "logs.csv")["congested"].tolist()[:2] == [1, 0]
    with pytest.raises(InputError, match="logs.csv: mean_hops: missing column"):
        parse_logs(good.drop(columns="mean_hops"), "logs.csv")
    bad = good.copy()
    bad.loc[3, "congested"] = "maybe"
    with pytest.raises(InputError, match=r"logs.csv: congested\[row 3\]: not a label"):
        parse_logs(bad, "logs.csv")


def test_q_learning_beats_shortest_path_and_learns():
    table = PathTable(rack_fabric())
    flows = FlowSet.from_traffic(pattern_traffic("all_to_all", 16, 1e9), np.arange(16))
    result = learn_paths(table, flows, episodes=120, seed=0)
    assert len(result.reward_curve) == len(result.time_curve_s) == 120 and result.agents == 16
    assert result.final_time_s < result.shortest_path_time_s / 4
    assert result.final_reward > 2 * result.shortest_path_reward
    assert np.mean(result.reward_curve[-10:]) > np.mean(result.reward_curve[:10])


def test_rounds_remove_the_contention_the_planner_learns_around():
    """Within transfer rounds every GPU has one flow, so on the NVL72 any single path runs at full speed."""
    from qflow.nvlink._rounds import colour_transfers, transfers_of

    table = PathTable(rack_fabric())
    t = transfers_of(pattern_traffic("all_to_all", 8, 1e9), full_duplex=False)
    colour, _ = colour_transfers(t)
    result = learn_paths(table, FlowSet(t.src, t.dst, t.nbytes), episodes=10, seed=0, groups=colour)
    assert result.final_reward == pytest.approx(1.0) and result.shortest_path_reward == pytest.approx(1.0)
    assert result.final_time_s == pytest.approx(result.shortest_path_time_s)
