"""Plotly figures of an attention plan: pure functions, plan dict in, Figure out.

No Streamlit here, so every figure is tested on a real plan without an app.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ui.charts import LAYOUT as _LAYOUT

__all__ = ["attention_map_figure", "error_vs_k_figure", "loss_curve_figure", "qpe_accuracy_figure", "singular_values_figure"]

COLORS = {"topk": "#1f5fbf", "random_k": "#b0b0b0", "dense": "#444444", "threshold": "#c0392b", "pruned": "#e8a33d"}


def attention_map_figure(plan: dict[str, Any]) -> go.Figure:
    """Dense and sparse attention weights side by side (first queries x first keys, same colour scale)."""
    amap = plan["result"]["attention_map"]
    k = plan["config"]["top_k"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("dense (SDPA)", f"sparse top-{k}"), horizontal_spacing=0.08)
    zmax = max(max(max(row) for row in amap["dense"]), max(max(row) for row in amap["sparse"]))
    for col, name in ((1, "dense"), (2, "sparse")):
        fig.add_trace(go.Heatmap(z=amap[name], zmin=0, zmax=zmax, colorscale="Blues", showscale=col == 2,
                                 colorbar={"title": "weight"}, name=name,
                                 hovertemplate="query %{y}, key %{x}: %{z:.4f}<extra></extra>"), row=1, col=col)
        fig.update_yaxes(autorange="reversed", title_text="query" if col == 1 else None, row=1, col=col)
        fig.update_xaxes(title_text="key", row=1, col=col)
    fig.update_layout(title=f"Attention map, first {amap['queries']} queries x {amap['keys']} keys",
                      margin={"l": 60, "r": 20, "t": 80, "b": 50})
    return fig


def error_vs_k_figure(plan: dict[str, Any]) -> go.Figure:
    """Relative error against dense attention as k grows: exact top-k vs random-k (log y), the plan's k marked."""
    rows = plan["result"]["error_vs_k"]
    ks = [r["k"] for r in rows]
    fig = go.Figure()
    fig.add_scatter(x=ks, y=[max(r["topk_relative_error"], 1e-12) for r in rows], name="top-k", mode="lines+markers",
                    line={"color": COLORS["topk"]})
    fig.add_scatter(x=ks, y=[max(r["random_k_relative_error"], 1e-12) for r in rows], name="random-k",
                    mode="lines+markers", line={"color": COLORS["random_k"]})
    fig.add_vline(x=plan["config"]["top_k"], line_dash="dot", line_color="#555")
    fig.update_layout(title="Relative error vs dense attention", xaxis_title="k (keys per query)",
                      yaxis_title="relative L2 error", xaxis_type="log", yaxis_type="log", **_LAYOUT)
    return fig


def singular_values_figure(plan: dict[str, Any]) -> go.Figure | None:
    """Singular values of each head's output circuit (log y), the prune threshold as a dashed line; None without weights."""
    heads = plan["result"].get("heads")
    if heads is None:
        return None
    fig = go.Figure()
    pruned = set(heads["pruned"])
    for h, values in enumerate(heads["singular_values"]):
        fig.add_scatter(x=list(range(1, len(values) + 1)), y=[max(v, 1e-9) for v in values], mode="lines+markers",
                        name=f"head {h}" + (" (pruned)" if h in pruned else ""),
                        line={"dash": "dot" if h in pruned else "solid"})
    fig.add_hline(y=max(heads["threshold"], 1e-9), line_dash="dash", line_color=COLORS["threshold"],
                  annotation_text=f"threshold {heads['threshold']:g}")
    fig.update_layout(title="Singular values per head (W_O W_V with bias)", xaxis_title="index",
                      yaxis_title="singular value", yaxis_type="log", **_LAYOUT)
    return fig


def loss_curve_figure(plan: dict[str, Any]) -> go.Figure | None:
    """InfoNCE loss per Adam step (log y); None when the trainer was off or its projections were loaded (no steps)."""
    training = plan["result"].get("training")
    if training is None or "loss_curve" not in training:
        return None
    curve = training["loss_curve"]
    fig = go.Figure()
    fig.add_scatter(x=list(range(len(curve))), y=[max(v, 1e-12) for v in curve], mode="lines", name="InfoNCE",
                    line={"color": COLORS["topk"]})
    fig.update_layout(title="Contrastive training loss", xaxis_title="Adam step", yaxis_title="InfoNCE (sum over pairs)",
                      yaxis_type="log", **_LAYOUT)
    return fig


def qpe_accuracy_figure(plan: dict[str, Any]) -> go.Figure | None:
    """Share of positions QPE recovers exactly, by counting-qubit count; None when QPE was off or fell back."""
    qpe = plan["result"].get("qpe")
    if not qpe or not qpe["accuracy_by_qubits"]:
        return None
    rows = qpe["accuracy_by_qubits"]
    fig = go.Figure()
    fig.add_bar(x=[r["counting_qubits"] for r in rows], y=[r["accuracy"] for r in rows], name="exact recovery",
                marker_color=COLORS["topk"])
    fig.add_vline(x=qpe["counting_qubits_needed"], line_dash="dot", line_color=COLORS["threshold"],
                  annotation_text=f"2^t >= {qpe['positions']}")
    fig.update_layout(title=f"QPE position recovery ({qpe['positions']} positions)", xaxis_title="counting qubits",
                      yaxis_title="share recovered exactly", yaxis_range=[0, 1.05], **_LAYOUT)
    return fig
