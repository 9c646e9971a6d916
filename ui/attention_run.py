"""The cached attention runner: input bytes + config JSON -> plan and the .npy download, with progress.

Same shape as :mod:`ui.run` (the cached function never touches Streamlit;
progress goes through :func:`ui.run.call_with_progress`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import streamlit as st

from qflow.attention import AttentionConfig, load_attention_inputs, npy_bytes, run_attention
from qflow.core import QflowError
from ui.inputs import InputFile
from ui.run import Progress, call_with_progress

__all__ = ["AttentionPageRun", "run_attention_page"]


@dataclass(frozen=True)
class AttentionPageRun:
    """One Run: the plan (dict and JSON), the updated embeddings as .npy bytes, or an error message."""

    plan: dict[str, Any] | None = None
    plan_json: str | None = None
    embeddings_npy: bytes | None = None
    error: str | None = None


def _ignore(fraction: float, message: str) -> None:
    """Progress sink for cache-filling calls nobody watches."""


@st.cache_data(show_spinner=False, max_entries=8)
def _attention_cached(
    embeddings: bytes, embeddings_name: str, weights: bytes | None, weights_name: str | None, config_json: str,
    _progress: Progress = _ignore,
) -> AttentionPageRun:
    """Load and plan; keyed on the bytes, file names and config JSON. Input errors are cached results too."""
    try:
        emb, w, digests = load_attention_inputs(embeddings, weights, embeddings_name=embeddings_name, weights_name=weights_name)
        config = AttentionConfig.model_validate_json(config_json)
        run = run_attention(emb, w, config, digests=digests, progress=_progress)
    except QflowError as exc:
        return AttentionPageRun(error=exc.message)
    return AttentionPageRun(plan=run.plan.to_dict(), plan_json=run.plan.to_json(), embeddings_npy=npy_bytes(run.embeddings))


def run_attention_page(embeddings: InputFile, weights: InputFile | None, settings: Mapping[str, Any],
                       on_progress: Progress) -> AttentionPageRun:
    """Validate the page's settings as an :class:`AttentionConfig`, then plan (cached); errors become messages."""
    try:
        config = AttentionConfig.from_mapping(dict(settings), source="settings")
    except QflowError as exc:
        return AttentionPageRun(error=exc.message)
    return call_with_progress(
        _attention_cached, embeddings.data, embeddings.name, None if weights is None else weights.data,
        None if weights is None else weights.name, config.model_dump_json(), on_progress=on_progress,
    )
