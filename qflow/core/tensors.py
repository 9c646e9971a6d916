"""Tensor files in, plain ``float``/``int`` numpy arrays out, nothing unpickled.

Formats, picked by suffix: ``.npy`` (one array), ``.npz`` (named arrays),
both read with ``numpy.load(allow_pickle=False)``; ``.pt``/``.pth`` read with
``torch.load(weights_only=True)`` (a tensor or a flat/nested state dict);
``.safetensors``. Sizes are checked by :func:`qflow.core.io.read_input`
before anything is parsed.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from qflow.core.errors import InputError
from qflow.core.io import RawInput, Source, read_input

__all__ = ["TENSOR_SUFFIXES", "load_tensors", "parse_tensors"]

#: Accepted file suffixes (the page's uploader types, without dots).
TENSOR_SUFFIXES = ("npy", "npz", "pt", "pth", "safetensors")

#: Name given to the array of a single-array file (``.npy`` or a bare tensor in ``.pt``).
SINGLE = "array"


def load_tensors(source: Source, name: str | None = None) -> tuple[dict[str, np.ndarray], RawInput]:
    """Read a tensor file into ``{name: ndarray}``.

    Returns
    -------
    arrays : dict of str to ndarray
        ``{"array": a}`` for a single-array file; state-dict keys otherwise
        (nested dicts flattened with dots: ``{"attn": {"q": t}}`` ->
        ``"attn.q"``).
    raw : RawInput
        The file's bytes, for the plan's input digest.

    Raises
    ------
    InputError
        Unknown suffix, unreadable file, pickled objects, non-numeric arrays.
    """
    raw = read_input(source, name)
    return parse_tensors(raw), raw


def parse_tensors(raw: RawInput) -> dict[str, np.ndarray]:
    """Parse already-read bytes (see :func:`load_tensors`)."""
    suffix = raw.suffix.lstrip(".")
    if suffix == "npy":
        arrays = {SINGLE: _numpy_load(raw)}
    elif suffix == "npz":
        arrays = _npz(raw)
    elif suffix in ("pt", "pth"):
        arrays = _torch(raw)
    elif suffix == "safetensors":
        arrays = _safetensors(raw)
    else:
        raise InputError(raw.name, "(file)", "unsupported file type", "one of ." + ", .".join(TENSOR_SUFFIXES),
                         raw.suffix or "no suffix")
    if not arrays:
        raise InputError(raw.name, "(file)", "no arrays in file", "at least one array")
    for key, array in arrays.items():
        if array.dtype.kind not in "biuf":
            raise InputError(raw.name, key, "not a numeric array", "float or integer values", str(array.dtype))
    return arrays


def _numpy_load(raw: RawInput) -> np.ndarray:
    try:
        value = np.load(io.BytesIO(raw.data), allow_pickle=False)
    except ValueError as exc:  # pickled object arrays are refused here
        raise InputError(raw.name, "(file)", "not a plain .npy array", "a numeric .npy array (no pickled objects)",
                         str(exc)) from None
    except (OSError, EOFError) as exc:
        raise InputError(raw.name, "(file)", "not a .npy file", "a file written by numpy.save", str(exc)) from None
    if not isinstance(value, np.ndarray):
        raise InputError(raw.name, "(file)", "not a single array", "one array (.npz holds several)", type(value).__name__)
    return value


def _npz(raw: RawInput) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(raw.data), allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(raw.name, "(file)", "not a plain .npz archive", "a file written by numpy.savez", str(exc)) from None


def _flatten(value: Any, prefix: str, out: dict[str, np.ndarray], source: str) -> None:
    import torch

    if isinstance(value, torch.Tensor):
        out[prefix or SINGLE] = value.detach().cpu().numpy()
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out, source)
    elif isinstance(value, bool | int | float):
        out[prefix or SINGLE] = np.asarray(value)
    else:
        raise InputError(source, prefix or "(top level)", "unsupported value", "tensors, numbers or dicts of them",
                         type(value).__name__)


def _torch(raw: RawInput) -> dict[str, np.ndarray]:
    import pickle

    import torch

    try:
        value = torch.load(io.BytesIO(raw.data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(raw.name, "(file)", "not a weights-only torch file",
                         "tensors saved with torch.save (loaded with weights_only=True)", first) from None
    out: dict[str, np.ndarray] = {}
    _flatten(value, "", out, raw.name)
    return out


def _safetensors(raw: RawInput) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        return dict(load(raw.data))
    except (SafetensorError, ValueError, TypeError) as exc:
        raise InputError(raw.name, "(file)", "not a .safetensors file", "a file written by safetensors", str(exc)) from None
