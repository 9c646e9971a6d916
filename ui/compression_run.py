"""Cached runners of the compress and decompress pages: input bytes + config JSON -> plan and artifacts, with progress.

Same shape as :mod:`ui.run` (the cached functions never touch Streamlit;
progress goes through :func:`ui.run.call_with_progress`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import streamlit as st

from qflow.compression import (
    CompressConfig,
    DecompressConfig,
    compress_tensors,
    decompress_container,
    load_container,
    load_tensors_input,
)
from qflow.core import QflowError
from qflow.core.tensors import tensor_file_bytes
from ui.inputs import InputFile
from ui.run import Progress, call_with_progress

__all__ = ["CompressPageRun", "DecompressPageRun", "run_compress_page", "run_decompress_page"]


@dataclass(frozen=True)
class CompressPageRun:
    """One Run of the compress page: the plan (dict and JSON), the container bytes, or an error message."""

    plan: dict[str, Any] | None = None
    plan_json: str | None = None
    container: bytes | None = None
    error: str | None = None


@dataclass(frozen=True)
class DecompressPageRun:
    """One Run of the decompress page: the plan, the restored tensors as file bytes, or an error message."""

    plan: dict[str, Any] | None = None
    plan_json: str | None = None
    restored: bytes | None = None
    restored_name: str | None = None
    error: str | None = None


def _ignore(fraction: float, message: str) -> None:
    """Progress sink for cache-filling calls nobody watches."""


@st.cache_data(show_spinner=False, max_entries=4)
def _compress_cached(data: bytes, name: str, config_json: str, _progress: Progress = _ignore) -> CompressPageRun:
    """Load and compress; keyed on the bytes, the file name and the config JSON. Input errors are cached too."""
    try:
        arrays, digest = load_tensors_input(data, name)
        config = CompressConfig.model_validate_json(config_json)
        run = compress_tensors(arrays, config, source=name, digests=[digest], progress=_progress)
    except QflowError as exc:
        return CompressPageRun(error=exc.message)
    return CompressPageRun(plan=run.plan.to_dict(), plan_json=run.plan.to_json(), container=run.container)


@st.cache_data(show_spinner=False, max_entries=4)
def _decompress_cached(data: bytes, name: str, reference: bytes | None, reference_name: str | None, fmt: str,
                       config_json: str, _progress: Progress = _ignore) -> DecompressPageRun:
    """Verify, restore and (optionally) measure against the reference."""
    try:
        container, source, digest = load_container(data, name)
        ref_arrays, digests = None, [digest]
        if reference is not None:
            ref_arrays, ref_digest = load_tensors_input(reference, reference_name)
            digests.append(ref_digest.model_copy(update={"name": "reference"}))
        config = DecompressConfig.model_validate_json(config_json)
        run = decompress_container(container, config, source=source, reference=ref_arrays, digests=digests,
                                   progress=_progress)
        restored = tensor_file_bytes(run.arrays, fmt)
    except QflowError as exc:
        return DecompressPageRun(error=exc.message)
    stem = name.rsplit(".", 1)[0] or "restored"
    return DecompressPageRun(plan=run.plan.to_dict(), plan_json=run.plan.to_json(), restored=restored,
                             restored_name=f"{stem}_restored.{fmt}")


def run_compress_page(checkpoint: InputFile, settings: Mapping[str, Any], on_progress: Progress) -> CompressPageRun:
    """Validate the settings as a :class:`CompressConfig`, then compress (cached); errors become messages."""
    try:
        config = CompressConfig.from_mapping(dict(settings), source="settings")
    except QflowError as exc:
        return CompressPageRun(error=exc.message)
    return call_with_progress(_compress_cached, checkpoint.data, checkpoint.name, config.model_dump_json(),
                              on_progress=on_progress)


def run_decompress_page(container: InputFile, reference: InputFile | None, fmt: str, settings: Mapping[str, Any],
                        on_progress: Progress) -> DecompressPageRun:
    """Validate the settings as a :class:`DecompressConfig`, then restore (cached); errors become messages."""
    try:
        config = DecompressConfig.from_mapping(dict(settings), source="settings")
    except QflowError as exc:
        return DecompressPageRun(error=exc.message)
    return call_with_progress(
        _decompress_cached, container.data, container.name, None if reference is None else reference.data,
        None if reference is None else reference.name, fmt, config.model_dump_json(), on_progress=on_progress,
    )
