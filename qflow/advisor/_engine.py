"""``plan_advice``: run the defaults and each matching rule's settings, measure, recommend."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qflow.advisor._describe import describe
from qflow.advisor._rank import GOALS, rank_candidates
from qflow.advisor._rules import PRIMARY_METRICS, RULES, Rule, check_rules, primary_metric
from qflow.core.commands import Progress, load_command
from qflow.core.config import QflowConfig
from qflow.core.errors import InputError, QflowError
from qflow.core.plan import Plan, SolverReport
from qflow.core.uploads import run_command

__all__ = ["plan_advice"]


def _measure(command: Any, files: Mapping[str, Path | None], config: QflowConfig, metric: str,
             progress: Progress | None) -> tuple[Plan | None, dict[str, Any]]:
    """Run once: ``(plan or None, {"metrics", "seconds", "quality", "error"})``."""
    start = time.perf_counter()
    try:
        plan = run_command(command, dict(files), config, None, progress)
    except QflowError as exc:
        return None, {"metrics": {}, "seconds": round(time.perf_counter() - start, 6), "quality": None,
                      "error": exc.message}
    seconds = round(time.perf_counter() - start, 6)
    scalars = {k: v for k, v in plan.metrics.items() if isinstance(v, int | float | str | bool) or v is None}
    return plan, {"metrics": scalars, "seconds": seconds, "quality": plan.metrics.get(metric), "error": None}


def _at(report: Progress, fraction: float) -> Progress:
    """The engine's progress reports passed on at the advisor's ``fraction`` (a cancel raised there stops the run)."""
    return lambda _inner, message: report(fraction, message)


def _agreed(expects: Mapping[str, Any], row: Mapping[str, Any], defaults: Mapping[str, Any]) -> bool | None:
    """Whether ``row`` moved ``expects['metric']`` the expected way against the defaults (``None``: not measurable)."""
    name = expects["metric"]
    ours = row["seconds"] if name == "seconds" else row["metrics"].get(name)
    base = defaults["seconds"] if name == "seconds" else defaults["metrics"].get(name)
    if row["error"] or not isinstance(ours, int | float) or not isinstance(base, int | float):
        return None
    return ours > base if expects["better"] == "higher" else ours < base


def _settings_differ(config: QflowConfig, settings: Mapping[str, Any]) -> bool:
    return any(getattr(config, key) != value for key, value in settings.items())


def plan_advice(command_name: str, files: Mapping[str, Path | None], config: QflowConfig, goal: str = "balanced",
                budget_s: float = 60.0, progress: Progress | None = None, rules: list[Rule] | None = None) -> Plan:
    """Advise settings for ``command_name`` on ``files`` by measuring them; returns a ``qflow.plan/v1`` Plan.

    The given ``config`` runs first (the defaults row), then each rule whose
    ``when`` matches the description and whose settings change something,
    until ``budget_s`` seconds of wall time are spent (the rest are listed
    as skipped). ``goal`` picks among the measured rows
    (:func:`~qflow.advisor._rank.rank_candidates`); it never changes the
    objective: rules cannot touch protected fields. ``rules`` replaces the
    module's rule table (tests).
    """
    if command_name not in PRIMARY_METRICS:
        raise InputError("advise", "module", "has no advisor", f"one of {', '.join(PRIMARY_METRICS)}", command_name)
    if goal not in GOALS:
        raise InputError("advise", "goal", "unknown goal", " | ".join(GOALS), goal)
    if not budget_s > 0:
        raise InputError("advise", "budget_s", "must be positive", "seconds > 0", budget_s)
    rules = RULES[command_name] if rules is None else rules
    check_rules(command_name, rules)
    command = load_command(command_name)
    metric, better = primary_metric(command_name, config.model_dump())
    started = time.perf_counter()
    report = progress or (lambda _f, _m: None)
    report(0.0, "running the given configuration")
    defaults_plan, defaults_row = _measure(command, files, config, metric, _at(report, 0.0))
    if defaults_plan is None:
        raise InputError("advise", "(given configuration)", "did not run", "inputs the module accepts",
                         defaults_row["error"])
    description = describe(command_name, files, defaults_plan)
    rows = [{"name": "given", "rule": None, "config": config.model_dump(), **defaults_row}]
    rule_reports, skipped = [], []
    for index, rule in enumerate(rules):
        matched = bool(rule["when"](description))
        entry = {"row": rule["row"], "matched": matched, "settings": dict(rule["settings"]),
                 "expects": dict(rule["expects"]), "agreed": None, "note": None}
        rule_reports.append(entry)
        if not matched:
            continue
        if not _settings_differ(config, rule["settings"]):
            entry["note"] = "the given configuration already has these settings"
            continue
        if time.perf_counter() - started >= budget_s:
            entry["note"] = "skipped: the budget was spent"
            skipped.append(rule["row"])
            continue
        fraction = min(0.95, (index + 1) / (len(rules) + 1))
        report(fraction, f"measuring: {rule['row']}")
        candidate = command.config_cls.from_mapping({**config.model_dump(), **rule["settings"]}, "advisor rule")
        _, row = _measure(command, files, candidate, metric, _at(report, fraction))
        rows.append({"name": f"rule {index + 1}", "rule": rule["row"], "config": candidate.model_dump(), **row})
        entry["agreed"] = _agreed(rule["expects"], row, defaults_row)
        if row["error"]:
            entry["note"] = f"the candidate failed: {row['error']}"
    order = rank_candidates(rows, better, goal)
    report(1.0, "done")
    return _advice_plan(command_name, defaults_plan, config, goal, budget_s, description, rows, order, rule_reports,
                        skipped, (metric, better), time.perf_counter() - started)


def _advice_plan(module: str, defaults: Plan, config: QflowConfig, goal: str, budget_s: float,
                 description: dict[str, Any], rows: list[dict[str, Any]], order: list[int],
                 rule_reports: list[dict[str, Any]], skipped: list[str], primary: tuple[str, str],
                 seconds: float) -> Plan:
    """The advice as a plan: the recommended config, every candidate measured, every rule's verdict."""
    chosen = rows[order[0]]
    qualities = [row["quality"] for row in rows if isinstance(row["quality"], int | float)]
    best = (max if primary[1] == "higher" else min)(qualities) if qualities else None
    result = {
        "goal": goal, "primary_metric": {"metric": primary[0], "better": primary[1]},
        "recommended": chosen["config"], "recommended_candidate": chosen["name"],
        "recommended_rule": chosen["rule"],
        "changes": {k: v for k, v in chosen["config"].items() if config.model_dump().get(k) != v},
        "candidates": [{**row, "rank": order.index(i) + 1} for i, row in enumerate(rows)],
        "rules": rule_reports, "skipped": skipped,
        "description": json.loads(json.dumps(description, default=str)),
    }
    metrics = {"best_quality": best, "recommended_quality": chosen["quality"],
               "recommended_seconds": chosen["seconds"], "given_quality": rows[0]["quality"],
               "given_seconds": rows[0]["seconds"], "candidates_run": len(rows), "candidates_skipped": len(skipped)}
    why = (f"goal {goal}: {chosen['name']} ranked first of {len(rows)} measured "
           f"({primary[0]} {primary[1]} is better)")
    diagnostics = [f"{len(skipped)} candidate(s) skipped: the budget of {budget_s:g} s was spent"] if skipped else []
    return Plan(module=module, inputs=defaults.inputs,
                config={"goal": goal, "budget_s": budget_s, **config.model_dump()},
                solver=SolverReport(requested=f"advisor:{goal}", ran=f"advisor:{goal}"), result=result,
                metrics=metrics, timings_s={"advise": round(seconds, 6)}, diagnostics=[why, *diagnostics])
