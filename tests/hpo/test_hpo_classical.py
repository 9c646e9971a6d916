"""GP expected improvement: the EI formula, suggestions in bounds and typed, batches distinct, warm start, Branin."""

from __future__ import annotations

import numpy as np
import pytest
from hpo_helpers import MIXED_SPACE, loss, mixed_history
from scipy.stats import norm

from qflow.hpo import HpoConfig, parse_space, plan_hpo
from qflow.hpo._classical import expected_improvement, fit_gp, propose_gp
from qflow.hpo._objectives import BRANIN_MIN, benchmark_space, make_objective
from qflow.hpo._plan import random_search


class TestExpectedImprovement:
    def test_zero_where_certain_and_worse(self):
        ei = expected_improvement(np.array([1.5, 3.0]), np.array([0.0, 1e-15]), best=1.0)
        assert ei.tolist() == [0.0, 0.0]

    def test_matches_the_closed_form(self):
        mu, sd, best = np.array([0.2, 1.0, 2.0]), np.array([0.5, 0.3, 1.0]), 1.0
        z = (best - mu) / sd
        assert expected_improvement(mu, sd, best) == pytest.approx((best - mu) * norm.cdf(z) + sd * norm.pdf(z))

    def test_zero_on_a_point_the_fitted_gp_knows_is_worse(self):
        space = parse_space({"x": {"kind": "float", "low": 0.0, "high": 1.0}})
        U = np.linspace(0, 1, 9)[:, None]
        y = (U[:, 0] - 0.3) ** 2
        gp = fit_gp(space.features(U), y)
        mu, sd = gp.predict(space.features(U[-1:]), return_std=True)  # x = 1, far worse than the best (x = 0.25)
        assert sd[0] < 1e-2 and expected_improvement(mu, sd, float(y.min()))[0] < 1e-8
        mid_mu, mid_sd = gp.predict(space.features(np.array([[0.3]])), return_std=True)
        assert expected_improvement(mid_mu, mid_sd, float(y.min()))[0] > expected_improvement(mu, sd, float(y.min()))[0]


class TestSuggestions:
    @pytest.mark.parametrize("strategy", ["kriging_believer", "constant_liar"])
    def test_in_bounds_typed_and_distinct(self, strategy):
        plan = plan_hpo(MIXED_SPACE, mixed_history(8), {"suggest": 6, "batch_strategy": strategy, "seed": 1})
        suggestions = plan.result["suggestions"]
        assert len(suggestions) == 6 and plan.result["suggestion_method"] == "gp-ei"
        for s in suggestions:
            assert 1e-4 <= s["lr"] <= 1e-1 and isinstance(s["lr"], float)
            assert 2 <= s["depth"] <= 9 and isinstance(s["depth"], int)
            assert s["act"] in ("relu", "tanh", "gelu")
            assert 0.0 <= s["dropout"] <= 0.5
        keys = {tuple(sorted(s.items())) for s in suggestions}
        assert len(keys) == 6  # never two identical suggestions in one batch
        assert plan.metrics["all_proposals_distinct"] is True

    def test_pending_trials_are_never_suggested_again(self):
        space = parse_space({"k": {"kind": "int", "low": 0, "high": 5}})
        U = space.to_unit([{"k": 0}, {"k": 5}])
        y = np.array([1.0, 2.0])
        pending = space.to_unit([{"k": 1}, {"k": 2}])
        out = space.from_unit(propose_gp(space, U, y, pending, 2, np.random.default_rng(0), n_candidates=32))
        assert {c["k"] for c in out} == {3, 4}  # the only points neither observed nor pending

    def test_warm_start_uses_the_history(self):
        frame = mixed_history(10)
        warm = plan_hpo(MIXED_SPACE, frame, {"suggest": 2, "warm_start": True})
        cold = plan_hpo(MIXED_SPACE, frame, {"suggest": 2, "warm_start": False})
        assert warm.metrics["n_history_used"] == 10 and cold.metrics["n_history_used"] == 0
        assert warm.result["suggestion_method"] == "gp-ei" and cold.result["suggestion_method"] == "initial"
        assert warm.metrics["best_value"] == pytest.approx(frame["objective"].min())
        # Informed suggestions beat the history's median; random initial points need not.
        assert np.mean([loss(s) for s in warm.result["suggestions"]]) < frame["objective"].median()

    def test_warm_start_in_optimize_mode_counts_history_as_observations(self):
        space = {"x1": {"kind": "float", "low": -5, "high": 10}, "x2": {"kind": "float", "low": 0, "high": 15}}
        import pandas as pd

        history = pd.DataFrame({"x1": [3.0, -3.0, 9.5], "x2": [2.0, 12.0, 2.5], "objective": [0.5, 0.6, 0.9]})
        plan = plan_hpo(space, history, {"objective": "branin", "n_trials": 3, "baselines": False, "n_initial": 3})
        methods = [t["method"] for t in plan.result["trials"]]
        assert methods == ["history"] * 3 + ["gp-ei"] * 3  # n_initial already met by the history: no random start
        assert plan.result["best_so_far"][0] <= 0.5


def test_gp_ei_finds_the_branin_minimum_within_budget():
    """On fixed seeds, 30 evaluations get within 0.01 of Branin's global minimum; random search with the same budget does not."""
    space = {"x1": {"kind": "float", "low": -5, "high": 10}, "x2": {"kind": "float", "low": 0, "high": 15}}
    for seed in (0, 1):
        config = HpoConfig(objective="branin", n_trials=30, seed=seed, suggest=1, ei_candidates=512, baselines=False)
        plan = plan_hpo(space, None, config)
        assert plan.metrics["regret"] < 1e-2, (seed, plan.metrics["regret"])
        assert plan.metrics["best_value"] == pytest.approx(BRANIN_MIN + plan.metrics["regret"])
        assert plan.metrics["trials_by_method"] == {"initial": 5, "gp-ei": 25}
        curve = plan.result["best_so_far"]
        assert len(curve) == 30 and all(b <= a for a, b in zip(curve, curve[1:], strict=False))
        objective = make_objective("branin", config, benchmark_space("branin"))
        assert random_search(benchmark_space("branin"), objective, config)["regret"] > 10 * plan.metrics["regret"]
