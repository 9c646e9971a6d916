"""What every module's figures share: one palette, the layouts, :func:`styled`. The figures live in
``ui/hooks/<module>.py``, as pure functions (plan dict in, Plotly Figure out) tested on real plans.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

__all__ = ["COLORS", "FLOOR", "LAYOUT", "SUBPLOTS", "log_floor", "styled"]

#: One colour per method or series on every chart: the plan strong, baselines muted, limits red.
COLORS = {
    "plan": "#1f5fbf", "hash": "#b0b0b0", "top1_gating": "#e8a33d", "greedy_balanced": "#7fb77e", "capacity": "#c0392b",
    "eplb": "#e8a33d", "asap": "#e8a33d", "per_node": "#7fb77e", "plan_capped": "#6a3d9a", "budget": "#c0392b",
    "lower_bound": "#555555", "measured": "#222222", "persistence": "#b0b0b0", "ridge": "#e8a33d", "gnn": "#1f5fbf",
    "current": "#b0b0b0", "recommended": "#1f5fbf", "greedy": "#e8a33d", "qaoa": "#1f5fbf", "random_search": "#b0b0b0",
    "optuna_tpe": "#e8a33d", "history": "#7f7f7f", "topk": "#1f5fbf", "random_k": "#b0b0b0", "threshold": "#c0392b",
    "fp16_cast": "#e8a33d", "zstd_raw": "#7fb77e", "int8_plain": "#b0b0b0", "plain": "#b0b0b0", "final": "#1f5fbf",
}
#: Legend in one row above the plot, right-aligned under the title, clear of the axis titles.
LAYOUT = {
    "margin": {"l": 60, "r": 20, "t": 80, "b": 50},
    "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "right", "x": 1},
}
#: For side-by-side subplots: legend under the plots, where it cannot cover a subplot title.
SUBPLOTS = {
    "margin": {"l": 60, "r": 20, "t": 80, "b": 100},
    "legend": {"orientation": "h", "yanchor": "top", "y": -0.25, "xanchor": "left", "x": 0},
}

#: Where a value of exactly zero is drawn on a log axis (a lossless error).
FLOOR = 1e-9


def log_floor(value: float | None) -> float:
    """``value`` for a log axis: zero or ``None`` is drawn at :data:`FLOOR`."""
    return max(value or 0.0, FLOOR)


def styled(fig: go.Figure, title: str, x: str | None = None, y: str | None = None, layout: dict[str, Any] = LAYOUT,
           **options: Any) -> go.Figure:
    """``fig`` with its title, axis titles (where given) and a shared ``layout``; ``options`` are more layout settings.

    >>> styled(go.Figure(), "load", x="expert").layout.xaxis.title.text
    'expert'
    """
    titles = {key: text for key, text in (("xaxis_title", x), ("yaxis_title", y)) if text is not None}
    fig.update_layout(title=title, **titles, **{**layout, **options})
    return fig
