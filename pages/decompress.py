"""Decompress page: container (+ optional reference) and toggles -> decompress_container (cached) -> charts, downloads.

The container defaults to the sample ``checkpoint.qfz`` and the reference to
the sample checkpoint it was made from. Tests and automation can inject bytes
through ``st.session_state["decompress_input_bytes"]`` and
``st.session_state["decompress_reference_bytes"]``; see :mod:`ui.inputs`.
The last run is kept in ``st.session_state["decompress_run"]``.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from qflow.compression import INPUT_SUFFIXES, DecompressConfig
from ui import compression_charts as charts
from ui.compression_run import DecompressPageRun, run_decompress_page
from ui.inputs import REPO_ROOT, InputFile, file_input
from ui.navigation import leave_legacy_pages_mode
from ui.plan_view import finished_run, run_in_status, show_plan_json, show_solver
from ui.store import save_run
from ui.widgets import config_form

SAMPLES = REPO_ROOT / "sample_data" / "compression"
RUN_KEY = "decompress_run"
FORMATS = ("safetensors", "npz")


def show_inputs_and_settings() -> tuple[InputFile, InputFile | None, str, dict[str, Any]]:
    """Uploaders, output format and the config form; returns (container, reference or None, format, settings)."""
    left, right = st.columns(2)
    with left:
        container = file_input("container (.qfz)", "decompress_input", ("qfz",), SAMPLES / "checkpoint.qfz",
                               help="every block's checksum is verified before anything is decoded")
        fmt = st.selectbox("output format", FORMATS, key="decompress_format")
    with right:
        use_reference = st.checkbox("measure against the original checkpoint", value=True, key="decompress_use_reference",
                                    help="errors of the plain inverse and of every enabled step")
        reference = file_input("reference checkpoint", "decompress_reference", INPUT_SUFFIXES,
                               SAMPLES / "checkpoint.safetensors") if use_reference else None
    with st.container(border=True):
        settings = config_form(DecompressConfig, key_prefix="decompress")
    return container, reference, fmt, settings


def run_with_progress(container: InputFile, reference: InputFile | None, fmt: str,
                      settings: dict[str, Any]) -> DecompressPageRun:
    """Call the engine with a live progress bar inside a status box."""
    return run_in_status(lambda progress: run_decompress_page(container, reference, fmt, settings,
                                                              on_progress=progress),
                         working="Decompressing...", first_step="reading the container", done="Tensors restored",
                         rejected="Container rejected")


def show_summary(plan: dict[str, Any]) -> None:
    """Key figures and the path taken; errors when a reference was given."""
    m = plan["metrics"]
    cols = st.columns(4)
    cols[0].metric("tensors", m["tensors"], help=f"{m['restored_bytes']} bytes from {m['container_bytes']}")
    cols[1].metric("decompress", f"{m['decompress_mb_per_s']:.3g} MB/s")
    if plan["result"]["reference_given"]:
        cols[2].metric("relative L2 error", f"{m['relative_l2_error']:.2e}",
                       help=f"plain inverse {m['plain_relative_l2_error']:.2e}")
        cols[3].metric("cosine similarity", f"{m['cosine_similarity']:.6f}")
    show_solver(plan)


def show_charts(plan: dict[str, Any]) -> None:
    """Per-tensor errors (plain vs final), the recorded steps, and each enhancement's report."""
    st.plotly_chart(charts.restored_error_figure(plan), key="decompress_error_chart")
    st.subheader("Recorded compression steps")
    st.dataframe(plan["result"]["steps"], hide_index=True)
    for step, info in plan["result"]["enhancements"].items():
        with st.expander(f"{step}: applied to {len(info.get('applied', []))} tensors"):
            st.json(info, expanded=1)


leave_legacy_pages_mode()
st.title("Decompress")
st.caption("Verify a .qfz container block by block and restore its tensors as .safetensors or .npz; HHL, QSVT and "
           "the LSTM enhancer are measured against the plain inverse.")
container, reference, fmt, settings = show_inputs_and_settings()
if st.button("Run", type="primary", key="decompress_run_button"):
    st.session_state[RUN_KEY] = run_with_progress(container, reference, fmt, settings)
    if not st.session_state[RUN_KEY].error:
        save_run(st.session_state[RUN_KEY].plan)  # run history for the Compare page

last: DecompressPageRun | None = finished_run(RUN_KEY, settings, "Press **Run** to restore the container above.")
if last is not None:
    show_summary(last.plan)
    show_charts(last.plan)
    st.download_button(f"Download restored tensors (.{last.restored_name.rsplit('.', 1)[-1]})", data=last.restored,
                       file_name=last.restored_name, mime="application/octet-stream",
                       key="decompress_restored_download", on_click="ignore", icon=":material/download:")
    show_plan_json(last.plan, last.plan_json, file_name="decompress_plan.json", key="decompress_download")
