"""Tensor files in, plain ``float``/``int`` numpy arrays out, nothing unpickled.

Formats, picked by suffix: ``.npy`` (one array), ``.npz`` (named arrays),
both read with ``numpy.load(allow_pickle=False)``; ``.pt``/``.pth`` read with
``torch.load(weights_only=True)`` (a tensor or a flat/nested state dict);
``.safetensors``. The file's size is checked by
:func:`qflow.core.io.read_input` before anything is parsed; every size the
file *declares* (an .npy header's shape, an archive's member count and each
member's uncompressed size in the zip directory, a safetensors header's
shapes) is checked against the limits of :mod:`qflow.core.limits`
(``decoded_bytes``, ``archive_members``) before it is read or allocated. Writers (:func:`npz_bytes`,
:func:`safetensors_bytes`, :func:`tensor_file_bytes`) produce the same
formats, never pickles.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from qflow.core.errors import InputError
from qflow.core.io import RawInput, Source, parse_json_text, read_input
from qflow.core.limits import check_limit

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
    check_limit(needed, "decoded_bytes", source, field)
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


#: Archive members up to this size unpacked are not held to the ``archive_ratio`` limit (a small
#: all-zero array packs far better than 200:1 and costs nothing to unpack).
RATIO_EXEMPT_BYTES = 2**20


def _zip_directory(raw: RawInput) -> list[zipfile.ZipInfo]:
    """The members of a zip archive (``.npz``, a ``.pt`` written by ``torch.save``), checked against the limits.

    The member count and the sum of the uncompressed sizes the central
    directory declares are checked before any member is read: a 1 MB archive
    may declare (and deflate to) gigabytes. Each member over
    :data:`RATIO_EXEMPT_BYTES` must also unpack to at most ``archive_ratio``
    times its packed size: real weights pack 1-3:1 (zeros pack 1000:1). Reading a member later yields at
    most its declared size (``zipfile`` stops there), so the check holds.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw.data))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise InputError(raw.name, "(file)", "not a zip archive", f"a {raw.suffix} file as numpy/torch write it", str(exc)) from None
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
    check_limit(len(members), "archive_members", raw.name, "(members)")
    check_limit(sum(info.file_size for info in members), "decoded_bytes", raw.name, "(members' unpacked size)")
    for info in members:
        if info.file_size > RATIO_EXEMPT_BYTES:
            check_limit(info.file_size / max(info.compress_size, 1), "archive_ratio", raw.name, info.filename)
    return members


def _npz(raw: RawInput) -> dict[str, np.ndarray]:
    """Each ``.npy`` member of the archive, its header checked before its data is parsed."""
    members = _zip_directory(raw)
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(raw.data)) as archive:
            for info in members:
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with archive.open(info) as member:
                    data = member.read(info.file_size + 1)
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

    if raw.data[:2] != b"PK":
        # The legacy (pre-1.6) format declares each storage's element count in
        # the stream and allocates it before reading: refused, not trusted.
        raise InputError(raw.name, "(file)", "not a zip-format torch file",
                         "tensors saved with torch.save (zip format, the default since torch 1.6)")
    _zip_directory(raw)
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

    _check_safetensors_header(raw)
    try:
        loaded = load(raw.data)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise InputError(raw.name, "(file)", "not a .safetensors file", "a file written by safetensors", str(exc)) from None
    return dict(sorted(loaded.items()))  # safetensors' own order varies between runs; names are stable


#: Bytes per element of safetensors' dtype names (unknown names are sized as 8 bytes for the check).
_SAFETENSORS_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
                         "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}


def _check_safetensors_header(raw: RawInput) -> None:
    """Check the sizes a safetensors header declares before the library reads the file.

    Layout: an 8-byte little-endian header length, a JSON header
    ``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {...}}``,
    then the data. The header must fit in the file, and the shapes times
    their dtypes' sizes must stay within ``decoded_bytes``.
    """
    if len(raw.data) < 8:
        raise InputError(raw.name, "(file)", "not a .safetensors file", "an 8-byte header length, a JSON header, data",
                         f"{len(raw.data)} bytes")
    (header_len,) = struct.unpack("<Q", raw.data[:8])
    if header_len > len(raw.data) - 8:
        raise InputError(raw.name, "(header)", "header longer than the file", f"at most {len(raw.data) - 8} bytes",
                         f"{header_len} bytes")
    try:
        text = raw.data[8 : 8 + header_len].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(raw.name, "(header)", "not a .safetensors file", "a UTF-8 JSON header", f"byte {exc.start}") from None
    header = parse_json_text(text, raw.name, "(header)")
    if not isinstance(header, dict):
        raise InputError(raw.name, "(header)", "not a .safetensors file", "a JSON object header", type(header).__name__)
    entries = {key: value for key, value in header.items() if key != "__metadata__"}
    check_limit(len(entries), "archive_members", raw.name, "(tensors)")
    total = 0
    for key, entry in entries.items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise InputError(raw.name, f"{key}.shape", "not a shape", "a list of non-negative integers", shape)
        total += math.prod(shape) * _SAFETENSORS_ITEMSIZE.get(str(entry.get("dtype")), 8)
        check_limit(total, "decoded_bytes", raw.name, key)


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
