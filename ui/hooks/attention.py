"""Attention page hooks: error and memory against dense, attention maps, error vs k and each stage's figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from qflow.core.plan import Plan
from ui.charts import COLORS, styled
from ui.plan_view import key_figures, show_charts

METRICS = ("relative_error", "attention_memory_bytes", "memory_ratio_vs_dense")


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
    return styled(fig, f"Attention map, first {amap['queries']} queries x {amap['keys']} keys", legend=None)


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
    return styled(fig, "Relative error vs dense attention", "k (keys per query)", "relative L2 error", xaxis_type="log",
                  yaxis_type="log")


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
    return styled(fig, "Singular values per head (W_O W_V with bias)", "index", "singular value", yaxis_type="log")


def loss_curve_figure(plan: dict[str, Any]) -> go.Figure | None:
    """InfoNCE loss per Adam step (log y); None when the trainer was off or its projections were loaded (no steps)."""
    training = plan["result"].get("training")
    if training is None or "loss_curve" not in training:
        return None
    curve = training["loss_curve"]
    fig = go.Figure()
    fig.add_scatter(x=list(range(len(curve))), y=[max(v, 1e-12) for v in curve], mode="lines", name="InfoNCE",
                    line={"color": COLORS["topk"]})
    return styled(fig, "Contrastive training loss", "Adam step", "InfoNCE (sum over pairs)", yaxis_type="log")


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
    return styled(fig, f"QPE position recovery ({qpe['positions']} positions)", "counting qubits", "share recovered exactly",
                  yaxis_range=[0, 1.05])


def artifacts(plan: Plan, files: list[Path]) -> list[tuple[str, bytes]]:
    """The written files, and the pruned checkpoint and its config.json when the head pruner ran.

    The command writes the pruned model into a folder beside the plan (``<out>.pruned/``, as a model hub stores it),
    which a page's plain file list leaves out; its two files are offered as ``pruned_<name>``.
    """
    written = [(f.name, f.read_bytes()) for f in files]
    pruned = plan.result.get("pruned_checkpoint")
    if pruned is None or not files:
        return written
    folders = [p for p in files[0].parent.iterdir() if p.is_dir() and (p / pruned["file"]).is_file()]
    return written + [(f"pruned_{name}", (folder / name).read_bytes())
                      for folder in folders[:1] for name in (pruned["file"], pruned["config_file"])]


def summary(plan: dict[str, Any]) -> None:
    """Relative error, attention memory, sparse time, softmax mass kept, heads pruned."""
    m, t = plan["metrics"], plan["timings_s"]
    heads = plan["result"].get("heads")
    key_figures(("relative error vs dense", f"{m['relative_error']:.2e}"),
                ("attention memory", f"{m['attention_memory_bytes'] / 2**10:.0f} KiB", f"{m['memory_ratio_vs_dense']:.1%} of dense"),
                ("sparse time", f"{t['sparse_attention'] * 1e3:.1f} ms", f"dense SDPA {t['dense_attention'] * 1e3:.1f} ms"),
                ("softmax mass kept", f"{m['attention_mass_kept']:.3f}"),
                ("heads pruned", "-" if heads is None else f"{len(heads['pruned'])} of {heads['n_heads']}"))


def charts(run: Any) -> None:
    """Attention maps, error vs k, and the figures of each enabled stage."""
    plan = run.plan
    show_charts("attention", {"map": attention_map_figure(plan), "error": error_vs_k_figure(plan), "sv": singular_values_figure(plan),
                              "loss": loss_curve_figure(plan), "qpe": qpe_accuracy_figure(plan)})
    if "qaoa_topk" in plan["result"]:
        st.subheader("QAOA top-k windows")
        st.dataframe([{k: v for k, v in row.items() if k != "window"} for row in plan["result"]["qaoa_topk"]],
                     hide_index=True)
