"""Compress page: checkpoint and toggles -> CompressConfig -> compress_tensors (cached) -> charts and downloads.

The input defaults to the sample checkpoint. Tests and automation can inject
bytes through ``st.session_state["compress_input_bytes"]`` (optional
``compress_input_name``, whose suffix picks the format); see
:mod:`ui.inputs`. The last run is kept in ``st.session_state["compress_run"]``.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from qflow.compression import INPUT_SUFFIXES, CompressConfig
from ui import compression_charts as charts
from ui.compression_run import CompressPageRun, run_compress_page
from ui.inputs import REPO_ROOT, InputFile, file_input
from ui.navigation import leave_legacy_pages_mode
from ui.plan_view import finished_run, run_in_status, show_plan_json, show_solver
from ui.store import save_run
from ui.summary import metrics_table
from ui.widgets import config_form

SAMPLES = REPO_ROOT / "sample_data" / "compression"
RUN_KEY = "compress_run"
METRICS = ("compression_ratio", "relative_l2_error", "max_abs_error", "snr_db", "cosine_similarity", "compress_mb_per_s")


def show_inputs_and_settings() -> tuple[InputFile, dict[str, Any]]:
    """The uploader and the config form; returns (checkpoint, settings)."""
    checkpoint = file_input("checkpoint or tensors (.safetensors, .npz, .npy, .pt, .csv)", "compress_input",
                            INPUT_SUFFIXES, SAMPLES / "checkpoint.safetensors",
                            help=".pt files are read with torch.load(weights_only=True); pickles are refused")
    with st.container(border=True):
        settings = config_form(CompressConfig, key_prefix="compress")
    return checkpoint, settings


def run_with_progress(checkpoint: InputFile, settings: dict[str, Any]) -> CompressPageRun:
    """Call the engine with a live progress bar inside a status box."""
    return run_in_status(lambda progress: run_compress_page(checkpoint, settings, on_progress=progress),
                         working="Compressing...", first_step="loading the checkpoint", done="Container ready")


def show_summary(plan: dict[str, Any]) -> None:
    """Key figures, the path taken, and the plan against the baselines."""
    m = plan["metrics"]
    cols = st.columns(5)
    cols[0].metric("compression ratio", f"{m['compression_ratio']:.2f}x",
                   help=f"{m['original_bytes']} -> {m['container_bytes']} bytes")
    cols[1].metric("relative L2 error", f"{m['relative_l2_error']:.2e}")
    cols[2].metric("SNR", "exact" if m["snr_db"] is None else f"{m['snr_db']:.1f} dB")
    cols[3].metric("cosine similarity", f"{m['cosine_similarity']:.6f}")
    cols[4].metric("compress", f"{m['compress_mb_per_s']:.3g} MB/s", help=f"decompress {m['decompress_mb_per_s']:.3g} MB/s")
    show_solver(plan)
    st.dataframe(metrics_table(plan, METRICS), hide_index=True)


def show_charts(plan: dict[str, Any]) -> None:
    """Ratio vs error per tensor, value histogram, error heatmap, then the per-tensor table."""
    st.plotly_chart(charts.ratio_vs_error_figure(plan), key="compress_ratio_chart")
    for key, fig in (("compress_histogram_chart", charts.value_histogram_figure(plan)),
                     ("compress_heatmap_chart", charts.error_heatmap_figure(plan))):
        if fig is not None:
            st.plotly_chart(fig, key=key)
    st.subheader("Per tensor")
    st.dataframe([{k: v for k, v in row.items() if k not in ("baselines", "notes")} for row in plan["result"]["tensors"]],
                 hide_index=True)
    for section in ("autoencoder", "denoiser", "dropout_simulator"):
        if plan["result"].get(section):
            with st.expander(f"{section} details"):
                st.dataframe(plan["result"][section], hide_index=True)


leave_legacy_pages_mode()
st.title("Compress")
st.caption("Shrink a checkpoint into a checksummed .qfz container: per-channel 8/4-bit quantization, pruning, zstd "
           "packing or bit-exact lossless mode, with optional dropout simulator, denoiser and VQC autoencoder.")
checkpoint, settings = show_inputs_and_settings()
if st.button("Run", type="primary", key="compress_run_button"):
    st.session_state[RUN_KEY] = run_with_progress(checkpoint, settings)
    if not st.session_state[RUN_KEY].error:
        save_run(st.session_state[RUN_KEY].plan)  # run history for the Compare page

last: CompressPageRun | None = finished_run(RUN_KEY, settings, "Press **Run** to compress the checkpoint above.")
if last is not None:
    show_summary(last.plan)
    show_charts(last.plan)
    st.download_button("Download container (.qfz)", data=last.container, file_name="checkpoint.qfz",
                       mime="application/octet-stream", key="compress_container_download", on_click="ignore",
                       icon=":material/download:")
    show_plan_json(last.plan, last.plan_json, file_name="compress_plan.json", key="compress_download")
