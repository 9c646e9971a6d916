"""Quantum kernel page hooks: alignment against the RBF kernel, and the kernel matrix as a heatmap."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import streamlit as st

from qflow.core.commands import format_value

METRICS = ("kernel_target_alignment", "mean_off_diagonal", "min_eigenvalue")


def summary(plan: dict[str, Any]) -> None:
    """Alignment of the returned kernel and of the RBF kernel, rows, qubits and the feature map."""
    result, metrics, rbf = plan["result"], plan["metrics"], plan["baselines"].get("rbf", {})
    cols = st.columns(4)
    cols[0].metric(f"alignment ({result['kernel']})", format_value(metrics["kernel_target_alignment"]))
    cols[1].metric("alignment (RBF)", format_value(rbf.get("kernel_target_alignment")))
    cols[2].metric("rows", result["rows"])
    cols[3].metric("qubits", result["qubits"])
    st.caption(f"Feature map: {result['feature_map']}; {result['angles']}.")


def _heatmap_figure(plan: dict[str, Any]) -> go.Figure | None:
    """The kernel matrix, rows ordered by label when there are labels; None when it is not in the plan."""
    matrix = plan["result"]["matrix"]
    if matrix is None:
        return None
    fig = go.Figure(go.Heatmap(z=matrix, zmin=0, zmax=1, colorscale="Viridis"))
    fig.update_layout(title=f"{plan['result']['kernel'].capitalize()} kernel matrix", yaxis={"autorange": "reversed"})
    return fig


def charts(run: Any) -> None:
    """The matrix as a heatmap, or where it was written when it was too large for the plan."""
    fig = _heatmap_figure(run.plan)
    if fig is not None:
        st.plotly_chart(fig, key="kernel_matrix_chart")
    else:
        st.info("The matrix is over inline_rows: it is in the downloads as a .npy file.")
