"""Attention page: files and toggles -> AttentionConfig -> run_attention (cached) -> charts and downloads.

Inputs default to the sample files. Tests and automation can inject bytes
through ``st.session_state["attention_embeddings_bytes"]`` and
``st.session_state["attention_weights_bytes"]`` (optional ``..._name``, whose
suffix picks the format); see :mod:`ui.inputs`. The last run is kept in
``st.session_state["attention_run"]``.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from qflow.attention import TENSOR_SUFFIXES, AttentionConfig
from ui import attention_charts as charts
from ui.attention_run import AttentionPageRun, run_attention_page
from ui.inputs import REPO_ROOT, InputFile, file_input
from ui.navigation import leave_legacy_pages_mode
from ui.plan_view import finished_run, run_in_status, show_plan_json, show_solver
from ui.store import save_run
from ui.summary import metrics_table
from ui.widgets import config_form

SAMPLES = REPO_ROOT / "sample_data" / "attention"
RUN_KEY = "attention_run"
METRICS = ("relative_error", "attention_memory_bytes", "memory_ratio_vs_dense")


def show_inputs_and_settings() -> tuple[InputFile, InputFile | None, dict[str, Any]]:
    """Uploaders and the config form; returns (embeddings, weights or None, settings)."""
    left, right = st.columns(2)
    with left:
        embeddings = file_input("embeddings (.npy, .npz, .pt, .safetensors)", "attention_embeddings", TENSOR_SUFFIXES,
                                SAMPLES / "embeddings.npy",
                                help="one (seq, d) array used as Q = K = V, or arrays named q, k, v")
    with right:
        use_weights = st.checkbox("use an attention layer's weights", value=True, key="attention_use_weights",
                                  help="Needed by svd_pruner; also the contrastive trainer's starting projections.")
        weights = file_input("weights (.npz, .pt, .safetensors)", "attention_weights", TENSOR_SUFFIXES,
                             SAMPLES / "attention_weights.safetensors",
                             help="{q,k,v,o}_proj.weight (d, d), optional biases, n_heads") if use_weights else None
    with st.container(border=True):
        settings = config_form(AttentionConfig, key_prefix="attention")
    return embeddings, weights, settings


def run_with_progress(embeddings: InputFile, weights: InputFile | None, settings: dict[str, Any]) -> AttentionPageRun:
    """Call the engine with a live progress bar inside a status box."""
    return run_in_status(lambda progress: run_attention_page(embeddings, weights, settings, on_progress=progress),
                         working="Running attention...")


def show_summary(plan: dict[str, Any]) -> None:
    """Key figures, the path taken, and top-k against dense and random-k."""
    m, t = plan["metrics"], plan["timings_s"]
    cols = st.columns(5)
    cols[0].metric("relative error vs dense", f"{m['relative_error']:.2e}")
    cols[1].metric("attention memory", f"{m['attention_memory_bytes'] / 2**10:.0f} KiB",
                   help=f"{m['memory_ratio_vs_dense']:.1%} of dense")
    cols[2].metric("sparse time", f"{t['sparse_attention'] * 1e3:.1f} ms", help=f"dense SDPA {t['dense_attention'] * 1e3:.1f} ms")
    cols[3].metric("softmax mass kept", f"{m['attention_mass_kept']:.3f}")
    heads = plan["result"].get("heads")
    cols[4].metric("heads pruned", "-" if heads is None else f"{len(heads['pruned'])} of {heads['n_heads']}")
    show_solver(plan)
    st.dataframe(metrics_table(plan, METRICS), hide_index=True)


def show_charts(plan: dict[str, Any]) -> None:
    """Attention maps, error vs k, and the figures of each enabled stage."""
    st.plotly_chart(charts.attention_map_figure(plan), key="attention_map_chart")
    st.plotly_chart(charts.error_vs_k_figure(plan), key="attention_error_chart")
    optional = [("attention_sv_chart", charts.singular_values_figure(plan)),
                ("attention_loss_chart", charts.loss_curve_figure(plan)),
                ("attention_qpe_chart", charts.qpe_accuracy_figure(plan))]
    for key, fig in optional:
        if fig is not None:
            st.plotly_chart(fig, key=key)
    if "qaoa_topk" in plan["result"]:
        st.subheader("QAOA top-k windows")
        st.dataframe([{k: v for k, v in row.items() if k not in ("window",)} for row in plan["result"]["qaoa_topk"]],
                     hide_index=True)


leave_legacy_pages_mode()
st.title("Attention")
st.caption("Sparse top-k attention against dense attention, QAOA top-k, QPE position encoding, a contrastive "
           "trainer and SVD head pruning.")
embeddings, weights, settings = show_inputs_and_settings()
if st.button("Run", type="primary", key="attention_run_button"):
    st.session_state[RUN_KEY] = run_with_progress(embeddings, weights, settings)
    if not st.session_state[RUN_KEY].error:
        save_run(st.session_state[RUN_KEY].plan)  # run history for the Compare page

last: AttentionPageRun | None = finished_run(RUN_KEY, settings, "Press **Run** to run attention on the inputs above.")
if last is not None:
    show_summary(last.plan)
    show_charts(last.plan)
    st.download_button("Download updated embeddings (.npy)", data=last.embeddings_npy, file_name="attention_embeddings.npy",
                       mime="application/octet-stream", key="attention_embeddings_download", on_click="ignore",
                       icon=":material/download:")
    show_plan_json(last.plan, last.plan_json, file_name="attention_plan.json", key="attention_download")
