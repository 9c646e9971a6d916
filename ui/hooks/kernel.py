"""Quantum kernel page hooks: alignment against the RBF kernel, and the kernel matrix as a heatmap."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import streamlit as st

from qflow.core.commands import format_value
from ui.plan_view import key_figures

METRICS = ("kernel_target_alignment", "mean_off_diagonal", "min_eigenvalue")


def summary(plan: dict[str, Any]) -> None:
    """Alignment of the returned kernel and of the RBF kernel, rows, qubits and the feature map."""
    result, metrics, rbf = plan["result"], plan["metrics"], plan["baselines"].get("rbf", {})
    key_figures((f"alignment ({result['kernel']})", format_value(metrics["kernel_target_alignment"])),
                ("alignment (RBF)", format_value(rbf.get("kernel_target_alignment"))),
                ("rows", result["rows"]), ("qubits", result["qubits"]))
    st.caption(f"Feature map: {result['feature_map']}; {result['angles']}.")


def charts(run: Any) -> None:
    """The kernel matrix as a heatmap (rows ordered by label when there are labels), or where it was written when it
    was too large for the plan."""
    result = run.plan["result"]
    if result["matrix"] is None:
        st.info("The matrix is over inline_rows: it is in the downloads as a .npy file.")
        return
    fig = go.Figure(go.Heatmap(z=result["matrix"], zmin=0, zmax=1, colorscale="Viridis"))
    fig.update_layout(title=f"{result['kernel'].capitalize()} kernel matrix", yaxis={"autorange": "reversed"})
    st.plotly_chart(fig, key="kernel_matrix_chart")
