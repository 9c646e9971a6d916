"""A module's input files on a page: your uploads, or the bundled samples, never a mix of both.

Each input of the registry entry (:attr:`ModuleCommand.input_specs`) gets an uploader. With nothing uploaded the page
runs on a sample set (an optional sample can be switched off); once any file is uploaded only uploads are used, so your
file is never planned with a sample made for another input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from qflow.core.commands import InputSpec, ModuleCommand
from qflow.core.uploads import Upload

__all__ = ["REPO_ROOT", "PageInputs", "choose_inputs"]

#: The checkout holding app.py, views/ and sample_data/.
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class PageInputs:
    """What the page will run on: ``{input name: (file name, bytes) or None}``, or why it cannot run."""

    uploads: dict[str, Upload | None]
    problem: str | None = None


def _sample_input(spec: InputSpec, sample: str | None, key: str) -> Upload | None:
    """The sample for ``spec`` (an optional one only while its checkbox is on), with a caption saying so."""
    path = REPO_ROOT / sample if sample else None
    if path is None or not path.is_file():
        st.caption("Not given: this input has no sample." if spec.optional else "No sample: upload this file.")
        return None
    if spec.optional and not st.checkbox(f"use the sample {path.name}", value=True, key=f"{key}_use_sample"):
        st.caption("Left out.")
        return None
    st.caption(f"Nothing uploaded: using the sample `{sample}`.")
    return path.name, path.read_bytes()


def choose_inputs(command: ModuleCommand, key: str) -> PageInputs:
    """Uploaders for every input (widget keys ``{key}_{input}_upload``); the uploads, else the samples.

    Returns the chosen files and, when a required input is missing, the one-line reason the page cannot run.
    """
    samples = command.samples
    chosen_set = (st.selectbox("bundled samples (used when nothing is uploaded)", list(samples), key=f"{key}_sample_set")
                  if len(samples) > 1 else next(iter(samples)))
    specs = command.input_specs
    columns = st.columns(len(specs))
    uploads: dict[str, Upload | None] = {}
    for column, spec in zip(columns, specs, strict=True):
        file = column.file_uploader(spec.label, type=list(spec.types) or None, key=f"{key}_{spec.name}_upload", help=spec.help)
        uploads[spec.name] = None if file is None else (file.name, file.getvalue())
    on_samples = not any(value for name, value in uploads.items() if name != "model")  # a trained model is not data
    for column, spec in zip(columns, specs, strict=True):
        if spec.name == "model" or uploads[spec.name] is not None:
            continue
        with column:
            if on_samples:
                uploads[spec.name] = _sample_input(spec, samples[chosen_set].get(spec.name), f"{key}_{spec.name}")
            else:
                st.caption("Not uploaded: left out." if spec.optional
                           else f"Upload `{spec.name}` too: samples are used only when nothing is uploaded.")
    _offer_trained_models(command, columns, specs, uploads, key)
    missing = ", ".join(spec.name for spec in specs if not spec.optional and uploads[spec.name] is None)
    if not missing:
        return PageInputs(uploads)
    return PageInputs(uploads, f"Upload {missing}: no sample for it." if on_samples
                      else f"Upload {missing} too, or remove your uploads to run on the samples.")


def _offer_trained_models(command: ModuleCommand, columns, specs, uploads: dict[str, Upload | None], key: str) -> None:
    """Under the ``model`` uploader: the trained models of this module in ``$QFLOW_HOME/models`` to pick from (none: nothing shown)."""
    from qflow.core.models import list_models

    if "model" not in uploads or uploads["model"] is not None:
        return
    rows = [r for r in list_models() if r["module"] == command.name and r["exists"]]
    column = columns[[spec.name for spec in specs].index("model")]
    with column:
        if not rows:
            st.caption("No trained model: the plan trains its own (`python -m qflow train` makes one).")
            return
        labels = {f"{Path(r['file']).name} ({r['created_at']})": r["file"] for r in rows}
        picked = st.selectbox("trained model", ["none: train in the plan", *labels], key=f"{key}_model_pick")
        if picked in labels:
            path = Path(labels[picked])
            uploads["model"] = (path.name, path.read_bytes())
