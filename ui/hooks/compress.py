"""Compress page hooks: ratio and errors, ratio vs error per tensor, histogram, heatmap, the per-tensor table."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import streamlit as st

from qflow.compression import INPUT_SUFFIXES
from qflow.core.commands import ModuleCommand, Progress
from qflow.core.config import QflowConfig
from qflow.core.datadir import data_dir, list_data_files, resolve_data_file
from qflow.core.errors import QflowError
from qflow.core.plan import Plan
from qflow.core.uploads import Upload, run_command
from ui.charts import COLORS, log_floor, styled
from ui.plan_view import key_figures, show_charts

METRICS = ("compression_ratio", "relative_l2_error", "max_abs_error", "snr_db", "cosine_similarity", "compress_mb_per_s")
_SYMBOLS = {"plan": "circle", "fp16_cast": "diamond", "zstd_raw": "square", "int8_plain": "triangle-up"}

#: The data-folder choice that means "use the upload (or the sample)".
NO_DATA_FILE = "(the upload or the sample above)"


def options() -> dict[str, Any]:
    """With ``QFLOW_DATA_DIR`` set: a checkpoint picked from that server-side folder instead of an upload."""
    try:
        root = data_dir()
    except QflowError as exc:
        st.warning(exc.message, icon=":material/folder_off:")
        return {}
    if root is None:
        return {}
    names = list_data_files(root, tuple(f".{s}" for s in INPUT_SUFFIXES))
    picked = st.selectbox("or a checkpoint from the server data folder (for files over the upload limit)",
                          [NO_DATA_FILE, *names], key="compress_data_file",
                          help="The container is written beside it in that folder, and offered for download below.")
    if picked == NO_DATA_FILE:
        return {}
    try:
        stat = resolve_data_file(root, picked).stat()  # size and time in the run's identity: a rewritten file is rerun
    except (QflowError, OSError) as exc:  # gone since the listing
        st.warning(getattr(exc, "message", str(exc)), icon=":material/folder_off:")
        return {}
    return {"data_file": picked, "version": [stat.st_size, stat.st_mtime_ns]}


def run_in_place(command: ModuleCommand, options: dict[str, Any], config: QflowConfig,
                 progress: Progress) -> tuple[Plan, list[tuple[str, bytes]]] | None:
    """Compress the data-folder file ``options["data_file"]`` into ``<stem>.qfz`` beside it; None without one."""
    name = options.get("data_file")
    root = data_dir()
    if not name or root is None:
        return None
    source = resolve_data_file(root, name)
    container = source.with_name(f"{source.stem}.qfz")
    plan = run_command(command, {"input": source}, config, container, progress)
    return plan, [(container.name, container.read_bytes())]


def out_name(options: dict[str, Any], uploads: dict[str, Upload | None]) -> str:
    """``checkpoint.json`` for ``checkpoint.safetensors``: the container is then ``checkpoint.qfz``."""
    upload = uploads.get("input")
    return f"{upload[0].rsplit('.', 1)[0] if upload else 'checkpoint'}.json"


def ratio_vs_error_figure(plan: dict[str, Any]) -> go.Figure:
    """Per tensor: compression ratio against relative L2 error, for the plan and each baseline (log error axis)."""
    rows = plan["result"]["tensors"]
    fig = go.Figure()
    methods = ["plan", *plan.get("baselines", {})]
    for method in methods:
        figures = [row if method == "plan" else row["baselines"][method] for row in rows]
        label = f"plan ({plan['solver']['ran']})" if method == "plan" else method
        fig.add_scatter(x=[log_floor(f["relative_l2_error"]) for f in figures], y=[f["compression_ratio"] for f in figures],
                        mode="markers", name=label, text=[row["name"] for row in rows],
                        marker={"color": COLORS.get(method, "#444"), "symbol": _SYMBOLS.get(method, "circle"), "size": 10},
                        hovertemplate="%{text}: ratio %{y:.2f}, error %{x:.3g}<extra>" + label + "</extra>")
    return styled(fig, "Compression ratio vs relative error per tensor (lossless at 1e-9)", "relative L2 error",
                  "compression ratio (original / stored)", xaxis_type="log")


def value_histogram_figure(plan: dict[str, Any]) -> go.Figure | None:
    """Original and reconstructed values of the largest float tensor, overlaid; None without a float tensor."""
    preview = plan["result"].get("preview")
    if not preview:
        return None
    fig = go.Figure()
    fig.add_histogram(x=preview["original"], name="original", opacity=0.6, nbinsx=80, marker_color="#444444")
    fig.add_histogram(x=preview["reconstructed"], name="reconstructed", opacity=0.6, nbinsx=80,
                      marker_color=COLORS["plan"])
    return styled(fig, f"Values of {preview['tensor']}: original vs reconstructed", "value", "count", barmode="overlay")


def error_heatmap_figure(plan: dict[str, Any]) -> go.Figure | None:
    """|reconstructed - original| on a grid of channels x positions of the largest float tensor."""
    preview = plan["result"].get("preview")
    if not preview:
        return None
    fig = go.Figure(go.Heatmap(z=preview["error_map"], x=preview["error_map_cols"], y=preview["error_map_rows"],
                               colorscale="Reds", colorbar={"title": "|error|"},
                               hovertemplate="channel %{y}, position %{x}: %{z:.3g}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="channel (first axis)")
    fig.update_xaxes(title_text="position within channel")
    return styled(fig, f"Absolute error map of {preview['tensor']} (sampled grid)")


def summary(plan: dict[str, Any]) -> None:
    """Ratio, relative L2 error, SNR, cosine similarity and throughput."""
    m = plan["metrics"]
    key_figures(("compression ratio", f"{m['compression_ratio']:.2f}x", f"{m['original_bytes']} -> {m['container_bytes']} bytes"),
                ("relative L2 error", f"{m['relative_l2_error']:.2e}"),
                ("SNR", "exact" if m["snr_db"] is None else f"{m['snr_db']:.1f} dB"),
                ("cosine similarity", f"{m['cosine_similarity']:.6f}"),
                ("compress", f"{m['compress_mb_per_s']:.3g} MB/s", f"decompress {m['decompress_mb_per_s']:.3g} MB/s"))


def charts(run: Any) -> None:
    """Ratio vs error per tensor, value histogram, error heatmap, then the per-tensor table and step details."""
    plan = run.plan
    show_charts("compress", {"ratio": ratio_vs_error_figure(plan), "histogram": value_histogram_figure(plan),
                             "heatmap": error_heatmap_figure(plan)})
    st.subheader("Per tensor")
    st.dataframe([{k: v for k, v in row.items() if k not in ("baselines", "notes")} for row in plan["result"]["tensors"]],
                 hide_index=True)
    for section in ("autoencoder", "denoiser", "dropout_simulator"):
        if plan["result"].get(section):
            with st.expander(f"{section} details"):
                st.dataframe(plan["result"][section], hide_index=True)
