"""Plotly figures of compress and decompress plans: pure functions, plan dict in, Figure out.

No Streamlit here, so every figure is tested on a real plan without an app.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from ui.charts import LAYOUT as _LAYOUT

__all__ = ["error_heatmap_figure", "ratio_vs_error_figure", "restored_error_figure", "value_histogram_figure"]

COLORS = {"plan": "#1f5fbf", "fp16_cast": "#e8a33d", "zstd_raw": "#7fb77e", "int8_plain": "#b0b0b0",
          "plain": "#b0b0b0", "final": "#1f5fbf"}
_SYMBOLS = {"plan": "circle", "fp16_cast": "diamond", "zstd_raw": "square", "int8_plain": "triangle-up"}
#: Errors of exactly zero are drawn here on the log axis (lossless points).
_FLOOR = 1e-9


def _err(value: float | None) -> float:
    return max(value or 0.0, _FLOOR)


def ratio_vs_error_figure(plan: dict[str, Any]) -> go.Figure:
    """Per tensor: compression ratio against relative L2 error, for the plan and each baseline (log error axis)."""
    rows = plan["result"]["tensors"]
    fig = go.Figure()
    methods = ["plan", *plan.get("baselines", {})]
    for method in methods:
        figures = [row if method == "plan" else row["baselines"][method] for row in rows]
        label = f"plan ({plan['solver']['ran']})" if method == "plan" else method
        fig.add_scatter(x=[_err(f["relative_l2_error"]) for f in figures], y=[f["compression_ratio"] for f in figures],
                        mode="markers", name=label, text=[row["name"] for row in rows],
                        marker={"color": COLORS.get(method, "#444"), "symbol": _SYMBOLS.get(method, "circle"), "size": 10},
                        hovertemplate="%{text}: ratio %{y:.2f}, error %{x:.3g}<extra>" + label + "</extra>")
    fig.update_layout(title="Compression ratio vs relative error per tensor (lossless at 1e-9)",
                      xaxis_title="relative L2 error", yaxis_title="compression ratio (original / stored)",
                      xaxis_type="log", **_LAYOUT)
    return fig


def value_histogram_figure(plan: dict[str, Any]) -> go.Figure | None:
    """Original and reconstructed values of the largest float tensor, overlaid; None without a float tensor."""
    preview = plan["result"].get("preview")
    if not preview:
        return None
    fig = go.Figure()
    fig.add_histogram(x=preview["original"], name="original", opacity=0.6, nbinsx=80, marker_color="#444444")
    fig.add_histogram(x=preview["reconstructed"], name="reconstructed", opacity=0.6, nbinsx=80,
                      marker_color=COLORS["plan"])
    fig.update_layout(barmode="overlay", title=f"Values of {preview['tensor']}: original vs reconstructed",
                      xaxis_title="value", yaxis_title="count", **_LAYOUT)
    return fig


def error_heatmap_figure(plan: dict[str, Any]) -> go.Figure | None:
    """|reconstructed - original| on a grid of channels x positions of the largest float tensor."""
    preview = plan["result"].get("preview")
    if not preview:
        return None
    fig = go.Figure(go.Heatmap(z=preview["error_map"], x=preview["error_map_cols"], y=preview["error_map_rows"],
                               colorscale="Reds", colorbar={"title": "|error|"},
                               hovertemplate="channel %{y}, position %{x}: %{z:.3g}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="channel (first axis)")
    fig.update_xaxes(title_text="position within channel")
    fig.update_layout(title=f"Absolute error map of {preview['tensor']} (sampled grid)", **_LAYOUT)
    return fig


def restored_error_figure(plan: dict[str, Any]) -> go.Figure:
    """Decompress plan: per tensor relative error vs the reference (plain path and final), or stored sizes without one."""
    rows = plan["result"]["tensors"]
    names = [row["name"] for row in rows]
    fig = go.Figure()
    if plan["result"].get("reference_given"):
        fig.add_bar(x=names, y=[_err(row["plain"]["relative_l2_error"]) for row in rows], name="plain inverse",
                    marker_color=COLORS["plain"])
        fig.add_bar(x=names, y=[_err(row["relative_l2_error"]) for row in rows], name=f"final ({plan['solver']['ran']})",
                    marker_color=COLORS["final"])
        fig.update_layout(title="Relative error vs the reference per tensor", yaxis_title="relative L2 error",
                          yaxis_type="log", barmode="group", **_LAYOUT)
    else:
        sizes = [1 for _ in rows]
        for row in rows:
            for n in row["shape"]:
                sizes[names.index(row["name"])] *= n
        fig.add_bar(x=names, y=sizes, name="values", marker_color=COLORS["final"])
        fig.update_layout(title="Restored tensors (values per tensor; no reference to measure errors)",
                          yaxis_title="values", **_LAYOUT)
    fig.update_xaxes(title_text="tensor")
    return fig
