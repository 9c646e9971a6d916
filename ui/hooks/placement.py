"""Placement page hooks: imbalance against EPLB and contiguous placement, the gap to the lower bound, load bars."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import streamlit as st

from ui.charts import COLORS, styled

#: Metrics compared between the plan and each baseline, in table order.
METRICS = ("max_gpu_imbalance", "mean_gpu_imbalance", "max_node_imbalance", "mean_node_imbalance", "cross_node_dispatch")
#: Key figures: (metric, label); each shows its change against both baselines.
KEY_FIGURES = (("max_gpu_imbalance", "max GPU imbalance"), ("mean_gpu_imbalance", "mean GPU imbalance"),
               ("max_node_imbalance", "max node imbalance"), ("mean_node_imbalance", "mean node imbalance"))


def load_figure(layer: dict[str, Any], ids: list[str], level: str) -> go.Figure:
    """Load per GPU or per node (``level``) of one of the plan's ``result.layers`` (``<level>_load`` and
    ``eplb_<level>_load``, expected tokens) against EPLB's; a dotted line marks the mean load, the floor every placement
    shares, so the tallest bar over it is the imbalance."""
    plan_load = layer[f"{level}_load"]
    fig = go.Figure()
    fig.add_bar(x=ids, y=plan_load, name="plan", marker_color=COLORS["plan"])
    fig.add_bar(x=ids, y=layer[f"eplb_{level}_load"], name="EPLB baseline", marker_color=COLORS["eplb"], opacity=0.8)
    fig.add_hline(y=sum(plan_load) / max(len(plan_load), 1), line_dash="dot", line_color="#555",
                  annotation_text="mean", annotation_position="top left")
    return styled(fig, f"Load per {level.upper() if level == 'gpu' else level}: plan vs EPLB", level, "load (tokens)",
                  barmode="group", bargap=0.2)


def summary(plan: dict[str, Any]) -> None:
    """Imbalance (max/mean load) against EPLB and contiguous, and the worst layer's gap to the lower bound."""
    metrics, eplb = plan["metrics"], plan["baselines"]["eplb"]
    cols = st.columns(len(KEY_FIGURES) + 1)
    for col, (metric, label) in zip(cols, KEY_FIGURES, strict=False):  # help: every baseline, e.g. "vs eplb 1.234, ..."
        col.metric(label, f"{metrics[metric]:.3f}", delta=f"{metrics[metric] - eplb[metric]:+.3f} vs EPLB", delta_color="inverse",
                   help="vs " + ", ".join(f"{name} {base[metric]:.3f}" for name, base in plan["baselines"].items()))
    cols[-1].metric("gap to lower bound", f"{metrics['max_gap_to_lower_bound']:.1%}",
                    help="Worst layer's max GPU load over its lower bound, minus 1 (0 = provably optimal max GPU load).")
    result = plan["result"]
    st.caption(f"{len(result['layer_ids'])} layers x {len(result['expert_ids'])} experts on {len(result['gpu_ids'])} GPUs "
               f"({len(result['node_ids'])} nodes), {result['slots_per_gpu']} slots per GPU.")


def charts(run: Any) -> None:
    """Per-GPU and per-node load of one layer, the plan against EPLB's placement."""
    result = run.plan["result"]
    index = st.selectbox("layer", range(len(result["layer_ids"])), format_func=lambda i: str(result["layer_ids"][i]),
                         key="placement_layer")
    for level in ("gpu", "node"):
        st.plotly_chart(load_figure(result["layers"][index], result[f"{level}_ids"], level), key=f"placement_{level}_chart")
