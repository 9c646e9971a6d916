"""Attention page hooks: error and memory against dense, attention maps, error vs k and each stage's figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from qflow.core.plan import Plan
from ui import attention_charts as figures

METRICS = ("relative_error", "attention_memory_bytes", "memory_ratio_vs_dense")


def artifacts(plan: Plan, files: list[Path]) -> list[tuple[str, bytes]]:
    """The written files, and the pruned checkpoint and its config.json when the head pruner ran.

    The command writes the pruned model into a folder beside the plan
    (``<out>.pruned/``, as a model hub stores it), which a page's plain file
    list leaves out; its two files are offered as ``pruned_<name>``.
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
    cols = st.columns(5)
    cols[0].metric("relative error vs dense", f"{m['relative_error']:.2e}")
    cols[1].metric("attention memory", f"{m['attention_memory_bytes'] / 2**10:.0f} KiB",
                   help=f"{m['memory_ratio_vs_dense']:.1%} of dense")
    cols[2].metric("sparse time", f"{t['sparse_attention'] * 1e3:.1f} ms", help=f"dense SDPA {t['dense_attention'] * 1e3:.1f} ms")
    cols[3].metric("softmax mass kept", f"{m['attention_mass_kept']:.3f}")
    heads = plan["result"].get("heads")
    cols[4].metric("heads pruned", "-" if heads is None else f"{len(heads['pruned'])} of {heads['n_heads']}")


def charts(run: Any) -> None:
    """Attention maps, error vs k, and the figures of each enabled stage."""
    plan = run.plan
    st.plotly_chart(figures.attention_map_figure(plan), key="attention_map_chart")
    st.plotly_chart(figures.error_vs_k_figure(plan), key="attention_error_chart")
    for key, fig in (("attention_sv_chart", figures.singular_values_figure(plan)),
                     ("attention_loss_chart", figures.loss_curve_figure(plan)),
                     ("attention_qpe_chart", figures.qpe_accuracy_figure(plan))):
        if fig is not None:
            st.plotly_chart(fig, key=key)
    if "qaoa_topk" in plan["result"]:
        st.subheader("QAOA top-k windows")
        st.dataframe([{k: v for k, v in row.items() if k != "window"} for row in plan["result"]["qaoa_topk"]],
                     hide_index=True)
