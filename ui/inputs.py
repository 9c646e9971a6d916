"""Input files for a page: an upload, injected bytes, or the bundled sample.

Test and automation hook
------------------------
A page's input named ``NAME`` on module ``MODULE`` reads
``st.session_state[f"{MODULE}_{NAME}_bytes"]`` (and optionally
``f"{MODULE}_{NAME}_name"`` for the file name used in messages and to pick
the format by suffix) when nothing is uploaded. ``AppTest`` and scripts set
these to feed a page without a browser upload. Order: upload, then injected
bytes, then the sample file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import streamlit as st

__all__ = ["REPO_ROOT", "InputFile", "choose_input", "file_input", "optional_file_input"]

#: The checkout holding app.py, pages/ and sample_data/.
REPO_ROOT = Path(__file__).resolve().parent.parent

Origin = Literal["upload", "injected", "sample"]


@dataclass(frozen=True)
class InputFile:
    """The bytes of one input, its file name, and where it came from."""

    name: str
    data: bytes
    origin: Origin


def choose_input(uploaded: Any, state: Mapping[str, Any], hook: str, sample: Path) -> InputFile:
    """Pick the upload, else the injected bytes ``state[hook + "_bytes"]``, else the sample file.

    ``uploaded`` is what ``st.file_uploader`` returned (``None`` or an object
    with ``name`` and ``getvalue()``).
    """
    if uploaded is not None:
        return InputFile(uploaded.name, uploaded.getvalue(), "upload")
    injected = state.get(f"{hook}_bytes")
    if injected is not None:
        data = injected.encode() if isinstance(injected, str) else bytes(injected)
        default_name = f"injected_{hook.split('_', 1)[-1]}{sample.suffix}"
        return InputFile(str(state.get(f"{hook}_name", default_name)), data, "injected")
    return InputFile(sample.name, sample.read_bytes(), "sample")


def file_input(label: str, hook: str, types: Sequence[str], sample: Path, help: str | None = None) -> InputFile:
    """A file uploader that falls back to injected bytes or the sample, and says which is used."""
    uploaded = st.file_uploader(label, type=list(types), key=f"{hook}_upload", help=help)
    chosen = choose_input(uploaded, st.session_state, hook, sample)
    if chosen.origin == "sample":
        st.caption(f"Nothing uploaded: using the sample `{sample.relative_to(REPO_ROOT)}`.")
    elif chosen.origin == "injected":
        st.caption(f"Using injected bytes from `st.session_state['{hook}_bytes']` as `{chosen.name}`.")
    return chosen


def optional_file_input(label: str, hook: str, types: Sequence[str], absent: str, help: str | None = None) -> InputFile | None:
    """An optional input: the upload, else injected bytes, else ``None`` with the caption ``absent``."""
    uploaded = st.file_uploader(label, type=list(types), key=f"{hook}_upload", help=help)
    if uploaded is not None:
        return InputFile(uploaded.name, uploaded.getvalue(), "upload")
    injected = st.session_state.get(f"{hook}_bytes")
    if injected is not None:
        data = injected.encode() if isinstance(injected, str) else bytes(injected)
        suffix = f".{types[0]}" if types else ""
        return InputFile(str(st.session_state.get(f"{hook}_name", f"injected_{hook.split('_', 1)[-1]}{suffix}")), data, "injected")
    st.caption(absent)
    return None
