"""One ranking of measured candidates by goal (the advisor's and Compare's batch runs).

:func:`rank_candidates` is a pure function over rows ``{"quality": float or
None, "seconds": float}``; rows without a quality (failed or unmeasured) rank
last. :func:`rank_plans` applies it to finished plans (Compare's batch runs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from qflow.advisor._rules import PRIMARY_METRICS, PROTECTED_FIELDS, primary_metric
from qflow.core.errors import InputError

__all__ = ["GOALS", "SPEED_TOLERANCE", "rank_candidates", "rank_plans"]

Goal = Literal["quality", "speed", "balanced"]
#: The goals the advisor accepts.
GOALS: tuple[str, ...] = ("quality", "speed", "balanced")
#: ``speed``: a candidate within this share of the best quality counts as equally good.
SPEED_TOLERANCE = 0.01


def _score(quality: float, better: str) -> float:
    """Quality as "higher is better"."""
    return quality if better == "higher" else -quality


def rank_candidates(rows: Sequence[Mapping[str, Any]], better: str, goal: str) -> list[int]:
    """Indices of ``rows``, best first, for ``goal``.

    Parameters
    ----------
    rows : sequence of mappings
        Each with ``quality`` (the module's primary metric, or ``None``) and
        ``seconds`` (wall time of the run).
    better : ``"higher"`` or ``"lower"``
        Direction of the primary metric.
    goal : ``"quality"``, ``"speed"`` or ``"balanced"``
        ``quality``: best metric, then fastest. ``speed``: fastest among those
        within :data:`SPEED_TOLERANCE` of the best metric. ``balanced``: the
        knee of the (seconds, quality) front, taken as the row nearest the
        ideal point (fastest time, best quality) once both axes are scaled to
        [0, 1]; ties go to the better quality.

    >>> rows = [{"quality": 10.0, "seconds": 4.0}, {"quality": 10.0, "seconds": 1.0}, {"quality": 5.0, "seconds": 0.1}]
    >>> rank_candidates(rows, "higher", "quality"), rank_candidates(rows, "higher", "speed")
    ([1, 0, 2], [1, 0, 2])
    """
    if goal not in GOALS:
        raise ValueError(f"goal {goal!r} not one of {GOALS}")
    measured = [i for i, row in enumerate(rows) if _finite(row.get("quality"))]
    failed = [i for i in range(len(rows)) if i not in measured]
    if not measured:
        return failed
    score = {i: _score(float(rows[i]["quality"]), better) for i in measured}
    seconds = {i: float(rows[i].get("seconds") or 0.0) for i in measured}
    by_quality = sorted(measured, key=lambda i: (-score[i], seconds[i], i))
    if goal == "quality":
        return by_quality + failed
    best = score[by_quality[0]]
    if goal == "speed":
        slack = max(SPEED_TOLERANCE * abs(best), 1e-12)
        near = sorted((i for i in measured if score[i] >= best - slack), key=lambda i: (seconds[i], -score[i], i))
        return near + [i for i in by_quality if i not in near] + failed
    # a tie on the distance (two rows, each best on one axis) goes to the better quality: the safer change
    return sorted(measured, key=lambda i: (round(_distance_to_ideal(i, score, seconds), 12), -score[i], seconds[i], i)) \
        + failed


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _distance_to_ideal(index: int, score: Mapping[int, float], seconds: Mapping[int, float]) -> float:
    """Euclidean distance of ``index`` to (fastest, best) with both axes scaled to [0, 1]."""
    s_lo, s_hi = min(seconds.values()), max(seconds.values())
    q_lo, q_hi = min(score.values()), max(score.values())
    time_part = (seconds[index] - s_lo) / (s_hi - s_lo) if s_hi > s_lo else 0.0
    quality_part = (q_hi - score[index]) / (q_hi - q_lo) if q_hi > q_lo else 0.0
    return math.hypot(time_part, quality_part)


def rank_plans(module: str, plans: Sequence[Mapping[str, Any] | None], goal: str,
               names: Sequence[str] | None = None) -> dict[str, Any]:
    """Finished ``plans`` of ``module`` (``Plan.to_dict()``; ``None`` for a run that failed) ranked for ``goal``.

    The advisor's ranking (:func:`rank_candidates`) on the module's primary
    metric (:func:`~qflow.advisor.primary_metric` under the plans' config),
    returned in the shape of an advice plan's result: ``goal``,
    ``primary_metric`` (``metric``, ``better``), ``candidates`` (per plan, in
    the given order: ``name``, ``config``, ``quality``, ``seconds``,
    ``error``, ``rank`` from 1), ``recommended_candidate`` (a name) and
    ``protected_differ``: the fields defining the objective or its constraints
    (:data:`~qflow.advisor.PROTECTED_FIELDS`) whose values differ between the
    plans, where the ranking compares different problems. A
    plan's seconds are its engine time, the sum of its ``timings_s``, so a
    run counts as if it ran alone even where it shared the worker pool.

    Raises
    ------
    InputError
        The module has no primary metric, or the plans' configs rank on
        different metrics (energy's ``objective``, hpo's ``direction``).
    """
    if module not in PRIMARY_METRICS:
        raise InputError("ranking", "module", "has no primary metric", f"one of {', '.join(PRIMARY_METRICS)}", module)
    primaries = {primary_metric(module, plan.get("config") or {}) for plan in plans if plan is not None}
    if len(primaries) > 1:
        raise InputError("ranking", "config", "the runs optimise different metrics", "one objective for all runs",
                         ", ".join(f"{metric} ({better})" for metric, better in sorted(primaries)))
    metric, better = primaries.pop() if primaries else primary_metric(module, {})
    names = list(names) if names is not None else [f"run {index + 1}" for index in range(len(plans))]
    rows = [{"name": name, "rule": None, "config": dict(plan.get("config") or {}), "error": None,
             "quality": (plan.get("metrics") or {}).get(metric), "seconds": sum((plan.get("timings_s") or {}).values())}
            if plan is not None else {"name": name, "rule": None, "config": {}, "error": "no plan", "quality": None,
                                      "seconds": 0.0} for name, plan in zip(names, plans, strict=True)]
    order = rank_candidates(rows, better, goal)
    configs = [row["config"] for row in rows if row["error"] is None]
    protected = sorted(f for f in PROTECTED_FIELDS[module] if len({repr(c.get(f)) for c in configs}) > 1)
    return {"goal": goal, "primary_metric": {"metric": metric, "better": better}, "protected_differ": protected,
            "candidates": [{**row, "rank": order.index(index) + 1} for index, row in enumerate(rows)],
            "recommended_candidate": rows[order[0]]["name"] if rows else None}
