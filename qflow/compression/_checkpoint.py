"""Checkpoints as operators have them, read lazily: one ``.safetensors``, a sharded folder, ``.pt``/``.bin``, ``.npz``.

:func:`open_checkpoint` returns a :class:`Checkpoint`: the list of tensors
(name, dtype, shape, the file holding it) whose values are read only when
:meth:`TensorRef.load` is called, and the layout to restore (which tensor
in which file, each ``.safetensors`` header as written, the sharded index's
metadata). safetensors files are parsed here, not through ``safetensors``'
numpy loader (which has no bf16/fp8 and reads the whole file): the header is
checked (dtype known, shape matching its byte range, ranges inside the file,
back to back) and each tensor is a read-only view of a memory map, so a
checkpoint of any size is read one tensor at a time.

Layouts:

* ``model.safetensors``;
* ``model.safetensors.index.json`` (Hugging Face's sharded layout:
  ``{"metadata": {...}, "weight_map": {tensor: shard file}}``) or the folder
  holding it; a folder with a single ``.safetensors`` file and no index is
  that file;
* ``.pt``/``.pth``/``.bin`` state dicts (``torch.load(weights_only=True,
  mmap=True)``; a pickle that would run code is refused);
* ``.npz`` (``numpy.load(allow_pickle=False)``, each member's declared size
  checked before it is read).

Errors name the file and the tensor in one line: a shard the index names
but the folder lacks, a tensor named twice, an index pointing outside its
folder, an unknown dtype.
"""

from __future__ import annotations

import io
import json
import math
import mmap
import os
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qflow.compression._dtypes import DTYPES, from_safetensors, torch_to_numpy
from qflow.compression._lossless import step_buffer, unsigned_dtype
from qflow.core.errors import InputError
from qflow.core.limits import check_limit

__all__ = ["INDEX_SUFFIX", "TORCH_SUFFIXES", "Checkpoint", "FileValues", "TensorRef", "open_checkpoint",
           "parse_safetensors_header", "safetensors_from_buffer", "torch_checkpoint"]

INDEX_SUFFIX = ".safetensors.index.json"
#: Largest safetensors JSON header accepted, bytes (the format's own reader caps it at 100 MB).
MAX_SAFETENSORS_HEADER = 100_000_000
#: Largest sharded index accepted, bytes.
MAX_INDEX_BYTES = 64 << 20
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


@dataclass(frozen=True)
class TensorRef:
    """One tensor of a checkpoint; :meth:`load` reads its values (a memory-mapped view where the file allows)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: str
    loader: Callable[[], np.ndarray] = field(repr=False, compare=False)
    #: ``(path, byte offset)`` of the tensor's bytes when it lies in a file as is (safetensors): it can then
    #: be read a step at a time (:meth:`values`) instead of loaded whole.
    span: tuple[Path, int] | None = field(default=None, repr=False, compare=False)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPES[self.dtype].numpy.itemsize

    def load(self) -> np.ndarray:
        return self.loader()

    def values(self) -> FileValues | None:
        """A reader of the tensor's values from its file (close it after use), or None when it has no span."""
        if self.span is None:
            return None
        return FileValues(self.span[0], self.span[1], math.prod(self.shape), DTYPES[self.dtype].numpy.itemsize,
                          self.name)


class FileValues:
    """Values of a tensor stored as is in a file, read a step at a time into this thread's step buffer.

    ``read(first, n)`` (the object is a :data:`~qflow.compression._lossless.ValueReader`) returns values
    ``first:first + n`` as unsigned integers of the dtype's width, little endian as stored, valid until the
    next call; memory is one step whatever the tensor's size, and nothing of the file stays mapped.
    """

    def __init__(self, path: Path, offset: int, count: int, width: int, name: str) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self._path, self._offset, self._width, self._name = path, offset, width, name
        self.count = count

    def __call__(self, first: int, n: int) -> np.ndarray:
        out = step_buffer("file", n, unsigned_dtype(self._width))
        view, done = memoryview(out).cast("B"), 0
        while done < len(view):
            got = os.preadv(self._fd, [view[done:]], self._offset + first * self._width + done)
            if not got:
                raise InputError(self._path.name, self._name, "file shorter than its header says",
                                 f"{len(view)} bytes at {self._offset + first * self._width}", f"{done} bytes")
            done += got
        return out

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> FileValues:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Checkpoint:
    """A checkpoint's tensors (in file order) and its layout (what a restore reproduces).

    ``layout``: ``kind`` (``safetensors``, ``sharded``, ``torch``, ``npz``),
    ``files`` (per file: ``name``, and for safetensors ``header``, the JSON
    header text as stored, and ``metadata``), ``index`` (the sharded index's
    ``metadata``, or None), ``index_name`` (its file name, or None).
    """

    source: str
    tensors: list[TensorRef]
    layout: dict[str, Any]
    #: The absolute path it was opened from (None for uploaded bytes): cluster workers reopen it there.
    path: Path | None = None

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every tensor in memory ``{name: ndarray}`` (small checkpoints, tests)."""
        return {t.name: t.load() for t in self.tensors}


def _bad(source: str, field_: str, problem: str, expected: str | None = None, received: object = None) -> InputError:
    return InputError(source, field_, problem, expected, received)


def parse_safetensors_header(buffer: Any, source: str) -> tuple[dict[str, Any], str, int]:
    """``(entries, header text, data start)`` of a safetensors buffer, every entry checked against the file.

    ``entries``: ``{name: (DtypeInfo, shape, begin, end)}`` with byte ranges
    relative to the data start, in file order. Raises :class:`InputError`
    naming the file and tensor for a truncated file, bad JSON, an unknown
    dtype, a shape that does not match its byte range, a range outside the
    file, or ranges that overlap or leave gaps.
    """
    view = memoryview(buffer)
    if len(view) < 8:
        raise _bad(source, "(header)", "not a .safetensors file", "an 8-byte header length", f"{len(view)} bytes")
    (length,) = struct.unpack_from("<Q", view)
    if length > min(MAX_SAFETENSORS_HEADER, len(view) - 8):
        raise _bad(source, "(header)", "header length past the end of the file or over 100 MB",
                   f"at most {min(MAX_SAFETENSORS_HEADER, len(view) - 8)} bytes", length)
    text = bytes(view[8: 8 + length]).decode("utf-8", errors="replace")
    try:
        header = json.loads(text)
    except ValueError as exc:
        raise _bad(source, "(header)", "not a .safetensors file", "a JSON header", str(exc)) from None
    if not isinstance(header, dict):
        raise _bad(source, "(header)", "not a .safetensors file", "a JSON object header", type(header).__name__)
    data_size = len(view) - 8 - length
    entries: dict[str, Any] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        entries[name] = _entry(spec, name, source, data_size)
    position = 0
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda item: item[1][2]):
        if begin != position:
            raise _bad(source, name, "tensor data overlaps or leaves a gap", f"data starting at byte {position}", begin)
        position = end
    if position != data_size:
        raise _bad(source, "(data)", "bytes after the last tensor", f"{position} bytes of tensor data",
                   f"{data_size} bytes")
    ordered = dict(sorted(entries.items(), key=lambda item: item[1][2]))
    return ordered, text, 8 + length


def _entry(spec: Any, name: str, source: str, data_size: int) -> tuple[Any, tuple[int, ...], int, int]:
    if not isinstance(spec, dict) or not isinstance(spec.get("shape"), list) \
            or not isinstance(spec.get("data_offsets"), list) or len(spec["data_offsets"]) != 2:
        raise _bad(source, name, "malformed tensor entry", "dtype, shape and data_offsets [begin, end]", str(spec)[:80])
    info = from_safetensors(str(spec.get("dtype")))
    if info is None:
        raise _bad(source, name, "unknown dtype", "one of " + ", ".join(d.safetensors for d in DTYPES.values()),
                   spec.get("dtype"))
    shape, offsets = spec["shape"], spec["data_offsets"]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in [*shape, *offsets]):
        raise _bad(source, name, "malformed shape or offsets", "non-negative integers", f"{shape} {offsets}")
    begin, end = offsets
    nbytes = math.prod(shape) * info.numpy.itemsize
    if end - begin != nbytes:
        raise _bad(source, name, "shape does not match its data", f"{nbytes} bytes for shape {shape} {info.name}",
                   f"{end - begin} bytes")
    if end > data_size or begin > end:
        raise _bad(source, name, "data outside the file", f"offsets within {data_size} bytes", offsets)
    return info, tuple(shape), begin, end


def _metadata(text: str) -> dict[str, Any] | None:
    meta = json.loads(text).get("__metadata__")
    return meta if isinstance(meta, dict) else None


def safetensors_from_buffer(buffer: Any, file_name: str, source: str, path: Path | None = None
                            ) -> tuple[list[TensorRef], dict[str, Any]]:
    """The tensors of one safetensors buffer and the file's layout entry.

    With ``path`` (``buffer`` then being its memory map, used for the header
    only) each tensor is read from the file into its own array when loaded:
    pages of a memory map would stay resident and count against the
    process for the whole run. Without it tensors are views of ``buffer``.
    """
    entries, text, start = parse_safetensors_header(buffer, source)
    refs = []
    for name, (info, shape, begin, end) in entries.items():
        def load(info: Any = info, shape: tuple[int, ...] = shape, begin: int = begin, end: int = end) -> np.ndarray:
            if path is None:
                return np.frombuffer(buffer, dtype=info.numpy, count=math.prod(shape), offset=start + begin).reshape(shape)
            return _read_range(path, start + begin, end - begin).view(info.numpy).reshape(shape)
        refs.append(TensorRef(name, info.name, shape, file_name, load,
                              None if path is None else (path, start + begin)))
    return refs, {"name": file_name, "header": text, "metadata": _metadata(text)}


def _read_range(path: Path, offset: int, length: int) -> np.ndarray:
    """``length`` bytes of ``path`` from ``offset`` into a new uint8 array."""
    out = np.empty(length, dtype=np.uint8)
    with path.open("rb", buffering=0) as handle:
        handle.seek(offset)
        view, done = memoryview(out), 0
        while done < length:
            got = handle.readinto(view[done:])
            if not got:
                raise InputError(path.name, "(data)", "file shorter than its header says", f"{length} bytes at {offset}",
                                 f"{done} bytes")
            done += got
    return out


def _map_file(path: Path, label: str) -> Any:
    """A read-only memory map of ``path`` (an empty file gives empty bytes)."""
    if not path.is_file():
        raise _bad(label, "(file)", "file not found", "an existing file", str(path))
    if path.stat().st_size == 0:
        return b""
    with path.open("rb") as handle:
        return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)


def _inside(folder: Path, name: Any, index_name: str) -> Path:
    """``folder / name``, refused when ``name`` is not a plain relative path staying inside ``folder``."""
    if not isinstance(name, str) or not name or os.path.isabs(name) or ".." in Path(name).parts:
        raise _bad(index_name, "weight_map", "shard path leaves the checkpoint folder", "a file name inside the folder",
                   name)
    path = folder / name
    resolved_folder = folder.resolve()
    if resolved_folder not in path.resolve().parents:
        raise _bad(index_name, "weight_map", "shard path leaves the checkpoint folder (symlink)",
                   "a file inside the folder", name)
    return path


def _sharded(index_path: Path) -> Checkpoint:
    label = index_path.name
    if index_path.stat().st_size > MAX_INDEX_BYTES:
        raise _bad(label, "(file)", "index too large", f"at most {MAX_INDEX_BYTES} bytes", index_path.stat().st_size)
    try:
        index = json.loads(index_path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(label, "(file)", "not a sharded index", "JSON with a weight_map", str(exc)) from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise _bad(label, "weight_map", "missing or empty", "a mapping of tensor name to shard file")
    folder = index_path.parent
    shards = list(dict.fromkeys(weight_map.values()))
    refs: list[TensorRef] = []
    files = []
    seen: dict[str, str] = {}
    for shard in shards:
        path = _inside(folder, shard, label)
        if not path.is_file():
            raise _bad(label, f"weight_map -> {shard}", "shard missing", "a shard file beside the index", str(path.name))
        shard_refs, entry = safetensors_from_buffer(_map_file(path, shard), shard, shard, path)
        for ref in shard_refs:
            if ref.name in seen:
                raise _bad(shard, ref.name, "tensor named twice", "each tensor in one shard", f"also in {seen[ref.name]}")
            seen[ref.name] = shard
            if weight_map.get(ref.name) != shard:
                raise _bad(shard, ref.name, "tensor not in the index under this shard", f"weight_map entry -> {shard}",
                           weight_map.get(ref.name))
        refs += shard_refs
        files.append(entry)
    missing = [name for name in weight_map if name not in seen]
    if missing:
        raise _bad(str(weight_map[missing[0]]), missing[0], "tensor in the index missing from its shard",
                   f"a tensor {missing[0]!r} in {weight_map[missing[0]]}")
    meta = index.get("metadata")
    return Checkpoint(label, refs, {"kind": "sharded", "files": files, "index": meta if isinstance(meta, dict) else None,
                                    "index_name": label, "index_text": index_path.read_text()})


def _folder(path: Path) -> Checkpoint:
    indexes = sorted(path.glob("*" + INDEX_SUFFIX))
    if len(indexes) == 1:
        return _sharded(indexes[0])
    if len(indexes) > 1:
        raise _bad(path.name, "(folder)", "several sharded indexes", "one *.safetensors.index.json",
                   ", ".join(p.name for p in indexes))
    files = sorted(path.glob("*.safetensors"))
    if len(files) != 1:
        raise _bad(path.name, "(folder)", "no checkpoint", "a *.safetensors.index.json or a single .safetensors file",
                   f"{len(files)} .safetensors files and no index")
    return _single(files[0])


def _single(path: Path) -> Checkpoint:
    refs, entry = safetensors_from_buffer(_map_file(path, path.name), path.name, path.name, path)
    return Checkpoint(path.name, refs, {"kind": "safetensors", "files": [entry], "index": None, "index_name": None})


def _flatten(value: Any, prefix: str, out: dict[str, Any], source: str) -> None:
    import torch

    if isinstance(value, torch.Tensor):
        out[prefix or "array"] = value
    elif isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out, source)
    elif isinstance(value, bool | int | float):
        out[prefix or "array"] = torch.tensor(value)
    else:
        raise _bad(source, prefix or "(top level)", "unsupported value", "tensors, numbers or dicts of them",
                   type(value).__name__)


def torch_checkpoint(source: Path | io.BytesIO, label: str) -> Checkpoint:
    """A ``torch.save`` state dict (a path, memory-mapped; or uploaded bytes) loaded with ``weights_only=True``."""
    import pickle

    import torch

    try:
        if isinstance(source, Path):
            value = torch.load(str(source), map_location="cpu", weights_only=True, mmap=True)
        else:
            value = torch.load(source, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _bad(label, "(file)", "not a weights-only torch file",
                   "tensors saved with torch.save (loaded with weights_only=True)", first) from None
    tensors: dict[str, Any] = {}
    _flatten(value, "", tensors, label)
    refs = []
    for name, tensor in tensors.items():
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype not in DTYPES:
            raise _bad(label, name, "unknown dtype", ", ".join(DTYPES), dtype)
        refs.append(TensorRef(name, dtype, tuple(tensor.shape), label, lambda t=tensor: torch_to_numpy(t)))
    return Checkpoint(label, refs, {"kind": "torch", "files": [{"name": label}], "index": None, "index_name": None})


def _npz(path: Path) -> Checkpoint:
    try:
        archive = zipfile.ZipFile(path)
        infos = [i for i in archive.infolist() if not i.is_dir()]
    except (OSError, zipfile.BadZipFile) as exc:
        raise _bad(path.name, "(file)", "not a plain .npz archive", "a file written by numpy.savez", str(exc)) from None
    check_limit(len(infos), "archive_members", path.name, "(members)")
    check_limit(sum(i.file_size for i in infos), "decoded_bytes", path.name, "(members unpacked)")
    npz = np.load(path, allow_pickle=False)
    refs = []
    for info in infos:
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        check_limit(info.file_size, "decoded_bytes", path.name, key)
        with archive.open(info) as member:
            try:
                version = np.lib.format.read_magic(member)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    raise ValueError(f"unsupported .npy format version {version}")
                shape, _, dtype = read_header(member)
            except (ValueError, OSError, SyntaxError) as exc:
                raise _bad(path.name, key, "not a .npy member", "an array written by numpy.savez", str(exc)) from None
        if dtype.name not in DTYPES:
            raise _bad(path.name, key, "unknown dtype", ", ".join(DTYPES), str(dtype))
        if math.prod(shape) * dtype.itemsize > info.file_size:
            raise _bad(path.name, key, "truncated array data", f"{math.prod(shape) * dtype.itemsize} bytes",
                       f"{info.file_size} bytes in the archive member")
        refs.append(TensorRef(key, dtype.name, tuple(shape), path.name, lambda k=key: npz[k]))
    return Checkpoint(path.name, refs, {"kind": "npz", "files": [{"name": path.name}], "index": None,
                                        "index_name": None})


def open_checkpoint(path: str | os.PathLike[str]) -> Checkpoint | None:
    """See :func:`_open_checkpoint`; the checkpoint records the absolute path it was opened from."""
    checkpoint = _open_checkpoint(Path(path))
    if checkpoint is not None:
        checkpoint.path = Path(path).resolve()
    return checkpoint


def _open_checkpoint(path: Path) -> Checkpoint | None:
    """Open ``path`` lazily when it is a layout this module reads; None for others (``.npy``, CSV: read whole).

    Raises
    ------
    InputError
        One line naming the file and tensor (see the module docstring).
    """
    if path.is_dir():
        return _folder(path)
    name = path.name.lower()
    if name.endswith(INDEX_SUFFIX) or name.endswith(".index.json"):
        if not path.is_file():
            raise _bad(path.name, "(file)", "file not found", "an existing file", str(path))
        return _sharded(path)
    if name.endswith(".safetensors"):
        return _single(path)
    if path.suffix.lower() in TORCH_SUFFIXES:
        if not path.is_file():
            raise _bad(path.name, "(file)", "file not found", "an existing file", str(path))
        return torch_checkpoint(path, path.name)
    if name.endswith(".npz"):
        if not path.is_file():
            raise _bad(path.name, "(file)", "file not found", "an existing file", str(path))
        return _npz(path)
    return None
