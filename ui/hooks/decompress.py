"""Decompress page hooks: the output format, errors against the reference, recorded steps, each enhancement."""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from qflow.core.uploads import Upload
from ui.charts import COLORS, log_floor, styled

FORMATS = ("safetensors", "npz")


def options() -> dict[str, Any]:
    """The restored tensors' file format."""
    return {"format": st.selectbox("output format", FORMATS, key="decompress_format")}


def out_name(options: dict[str, Any], uploads: dict[str, Upload | None]) -> str:
    """``checkpoint_restored.npz`` for ``checkpoint.qfz`` and format npz (the plan goes beside it)."""
    upload = uploads.get("input")
    stem = upload[0].rsplit(".", 1)[0] if upload else "restored"
    return f"{stem}_restored.{options.get('format', FORMATS[0])}"


def restored_error_figure(plan: dict[str, Any]) -> go.Figure:
    """Decompress plan: per tensor relative error vs the reference (plain path and final), or stored sizes without one."""
    rows = plan["result"]["tensors"]
    names = [row["name"] for row in rows]
    fig = go.Figure()
    if plan["result"].get("reference_given"):
        fig.add_bar(x=names, y=[log_floor(row["plain"]["relative_l2_error"]) for row in rows], name="plain inverse",
                    marker_color=COLORS["plain"])
        fig.add_bar(x=names, y=[log_floor(row["relative_l2_error"]) for row in rows], name=f"final ({plan['solver']['ran']})",
                    marker_color=COLORS["final"])
        return styled(fig, "Relative error vs the reference per tensor", "tensor", "relative L2 error", yaxis_type="log",
                      barmode="group")
    fig.add_bar(x=names, y=[math.prod(row["shape"]) for row in rows], name="values", marker_color=COLORS["final"])
    return styled(fig, "Restored tensors (values per tensor; no reference to measure errors)", "tensor", "values")


def summary(plan: dict[str, Any]) -> None:
    """Tensors, throughput and, when a reference was given, its errors."""
    m = plan["metrics"]
    cols = st.columns(4)
    cols[0].metric("tensors", m["tensors"], help=f"{m['restored_bytes']} bytes from {m['container_bytes']}")
    cols[1].metric("decompress", f"{m['decompress_mb_per_s']:.3g} MB/s")
    if plan["result"]["reference_given"]:
        cols[2].metric("relative L2 error", f"{m['relative_l2_error']:.2e}",
                       help=f"plain inverse {m['plain_relative_l2_error']:.2e}")
        cols[3].metric("cosine similarity", f"{m['cosine_similarity']:.6f}")


def charts(run: Any) -> None:
    """Per-tensor errors (plain vs final), the recorded steps, and each enhancement's report."""
    plan = run.plan
    st.plotly_chart(restored_error_figure(plan), key="decompress_error_chart")
    st.subheader("Recorded compression steps")
    st.dataframe(plan["result"]["steps"], hide_index=True)
    for step, info in plan["result"]["enhancements"].items():
        with st.expander(f"{step}: applied to {len(info.get('applied', []))} tensors"):
            st.json(info, expanded=1)
