"""The advisor: describe an input, match each module's rules, measure the candidates, recommend a config.

``plan_advice(module, files, config, goal, budget_s)`` returns a
``qflow.plan/v1`` Plan whose ``result.recommended`` is a full config;
:func:`rank_candidates` is the one ranking of measured rows by goal, :func:`rank_plans` the same on
finished plans (the console's Compare batch runs).
"""

from qflow.advisor._engine import plan_advice
from qflow.advisor._rank import GOALS, rank_candidates, rank_plans
from qflow.advisor._rules import PRIMARY_METRICS, PROTECTED_FIELDS, RULES, check_rules, primary_metric
from qflow.advisor._uploads import advise_on_uploads

__all__ = ["GOALS", "advise_on_uploads", "PRIMARY_METRICS", "PROTECTED_FIELDS", "RULES", "check_rules", "plan_advice", "primary_metric",
           "rank_candidates", "rank_plans"]
