"""Tensor files in, plain ``float``/``int`` numpy arrays out, nothing unpickled.

Formats, picked by suffix: ``.npy`` (one array), ``.npz`` (named arrays),
both read with ``numpy.load(allow_pickle=False)``; ``.pt``/``.pth`` read with
``torch.load(weights_only=True)`` (a tensor or a flat/nested state dict);
``.safetensors``. Sizes are checked by :func:`qflow.core.io.read_input`
before anything is parsed. Writers (:func:`npz_bytes`,
:func:`safetensors_bytes`, :func:`tensor_file_bytes`) produce the same
formats, never pickles.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from qflow.core.errors import InputError
from qflow.core.io import MAX_INPUT_BYTES, RawInput, Source, read_input

__all__ = ["TENSOR_SUFFIXES", "load_tensors", "npz_bytes", "parse_tensors", "safetensors_bytes", "tensor_file_bytes"]

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


def _check_npy_header(stream: io.BytesIO, source: str, field: str) -> None:
    """Read an .npy header from ``stream`` and refuse object dtypes and data the file does not hold.

    numpy's own reader allocates the whole declared shape before reading, so a
    few bytes declaring ``shape (10**15,)`` would ask for petabytes; checked
    here first. numpy's header parser raises many types on garbage
    (``ValueError``, ``SyntaxError``, ``tokenize.TokenError``...): the bytes
    are untrusted, so any failure there is the file's, reported as an InputError.
    """
    size = len(stream.getbuffer())
    try:
        version = np.lib.format.read_magic(stream)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, _, dtype = read_header(stream)
    except Exception as exc:  # noqa: BLE001 -- see the docstring
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(source, field, "not a .npy array", "an array written by numpy.save", first) from None
    if dtype.hasobject:
        raise InputError(source, field, "not a plain .npy array", "a numeric .npy array (no pickled objects)", str(dtype))
    needed = math.prod(int(n) for n in shape) * dtype.itemsize
    if needed > size - stream.tell():
        raise InputError(source, field, "truncated array data", f"{needed} bytes for shape {tuple(shape)} {dtype}",
                         f"{size - stream.tell()} bytes")
    stream.seek(0)


def _numpy_load(raw: RawInput) -> np.ndarray:
    stream = io.BytesIO(raw.data)
    if raw.data[:2] != b"PK":  # an .npz under an .npy name is reported below
        _check_npy_header(stream, raw.name, "(file)")
    try:
        value = np.load(stream, allow_pickle=False)
    except ValueError as exc:  # pickled object arrays are refused here
        raise InputError(raw.name, "(file)", "not a plain .npy array", "a numeric .npy array (no pickled objects)",
                         str(exc)) from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(raw.name, "(file)", "not a .npy file", "a file written by numpy.save", str(exc)) from None
    if not isinstance(value, np.ndarray):
        if hasattr(value, "close"):
            value.close()
        raise InputError(raw.name, "(file)", "not a single array", "one array (.npz holds several)", type(value).__name__)
    return value


def _npz(raw: RawInput) -> dict[str, np.ndarray]:
    """Each ``.npy`` member of the archive, its header checked first; the members' total size is bounded too
    (a small archive may expand to far more than its own size)."""
    limit = MAX_INPUT_BYTES
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(raw.data)) as archive:
            total = 0
            for info in archive.infolist():
                if info.is_dir():
                    continue
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with archive.open(info) as member:
                    data = member.read(limit - total + 1)
                total += len(data)
                if total > limit:
                    raise InputError(raw.name, key, "archive expands too far", f"at most {limit} bytes unpacked",
                                     f"more than {limit} bytes")
                stream = io.BytesIO(data)
                _check_npy_header(stream, raw.name, key)
                arrays[key] = np.load(stream, allow_pickle=False)
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
        # zipfile reports bad members as BadZipFile, unsupported compression as NotImplementedError,
        # encrypted members as RuntimeError.
        raise InputError(raw.name, "(file)", "not a plain .npz archive", "a file written by numpy.savez", str(exc)) from None
    return arrays


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
        loaded = load(raw.data)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise InputError(raw.name, "(file)", "not a .safetensors file", "a file written by safetensors", str(exc)) from None
    return dict(sorted(loaded.items()))  # safetensors' own order varies between runs; names are stable


def npz_bytes(arrays: Mapping[str, np.ndarray], compressed: bool = False) -> bytes:
    """``{name: array}`` as the bytes of an .npz archive (``numpy.savez``; no pickled objects)."""
    buffer = io.BytesIO()
    plain = {key: np.asarray(value) for key, value in arrays.items()}
    for key, value in plain.items():
        if value.dtype.kind not in "biuf":
            raise ValueError(f"npz_bytes: array {key!r} has non-numeric dtype {value.dtype}")
    (np.savez_compressed if compressed else np.savez)(buffer, allow_pickle=False, **plain)
    return buffer.getvalue()


def safetensors_bytes(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """``{name: array}`` as the bytes of a .safetensors file (arrays made C-contiguous)."""
    from safetensors.numpy import save

    return save({key: np.ascontiguousarray(value) for key, value in arrays.items()},
                metadata=None if metadata is None else dict(metadata))


def tensor_file_bytes(arrays: Mapping[str, np.ndarray], suffix: str) -> bytes:
    """Write ``arrays`` in the format named by ``suffix`` (``.npz`` or ``.safetensors``)."""
    kind = suffix.lower().lstrip(".")
    if kind == "npz":
        return npz_bytes(arrays)
    if kind == "safetensors":
        return safetensors_bytes(arrays)
    raise InputError("--out", "suffix", "unsupported output format", ".npz or .safetensors", suffix or "no suffix")
