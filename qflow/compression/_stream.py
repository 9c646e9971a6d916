"""Tensors through worker threads in order, and restored tensors out to files as they are decoded.

Encoding and decoding a tensor is numpy, zstd and sha256 work, all of which
release the GIL, so threads use every core without copying tensors between
processes. :func:`ordered_map` keeps at most ``window`` results in flight
and yields them in input order, so the container is written as tensors
finish and peak memory is bounded by the window, not by the checkpoint.

Restores: a checkpoint read from safetensors files is written back as the
same files -- each file's header as it was stored, the tensors at the
offsets it names, and the sharded index as it was -- so a lossless restore
is byte-identical; ``--out file.safetensors`` merges everything into one
file. :func:`sized_files` creates the files at their full length and
:func:`tensor_offsets` says where each tensor goes, so worker threads (or a
cluster's workers) write each tensor at its offset with :func:`pwrite_all`
as it is decoded, in any order; :func:`write_safetensors_files` writes
tensors already in memory in file order.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from qflow.compression._dtypes import dtype_info
from qflow.core.errors import InputError

__all__ = ["merged_safetensors_header", "ordered_map", "pwrite_all", "release_memory", "restored_bytes",
           "safetensors_outputs", "sized_files", "tensor_offsets", "write_index", "write_safetensors_files"]

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(func: Callable[[T], R], items: Iterable[T], workers: int, window: int | None = None) -> Iterator[R]:
    """``func`` over ``items`` on ``workers`` threads, results in input order, at most ``window`` in flight.

    ``workers == 1`` runs in the calling thread (no pool). An exception in
    ``func`` is raised here and the tasks not yet started are cancelled.
    """
    if workers <= 1:
        for item in items:
            yield func(item)
        return
    window = window or workers + 1
    pool = ThreadPoolExecutor(workers, thread_name_prefix="qflow-compress")
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(func, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _libc() -> Any:
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


def release_memory() -> None:
    """Hand freed heap memory back to the OS (glibc's ``malloc_trim``; nothing elsewhere).

    Tensors of a few MB to tens of MB, freed by several threads, otherwise
    stay in glibc's per-thread arenas and the process's resident memory
    creeps up with the checkpoint's size instead of staying at its largest
    tensors.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def restored_bytes(arrays: Mapping[str, np.ndarray], suffix: str, source: str = "--out") -> bytes:
    """Restored tensors as the bytes of a ``.safetensors`` (every dtype) or ``.npz`` (numpy's own dtypes) file."""
    kind = suffix.lower().lstrip(".")
    if kind == "safetensors":
        records = [{"name": n, "dtype": a.dtype.name, "shape": list(a.shape)} for n, a in arrays.items()]
        head = merged_safetensors_header(records, None)
        parts = [len(head).to_bytes(8, "little"), head]
        parts += [np.ascontiguousarray(a).reshape(-1).view(np.uint8).tobytes() for a in arrays.values()]
        return b"".join(parts)
    if kind == "npz":
        numpy_own = ("bool", "float16", "float32", "float64")
        odd = next((n for n, a in arrays.items()
                    if a.dtype.kind not in "biuf" or (a.dtype.kind == "f" and a.dtype.name not in numpy_own)), None)
        if odd is not None:
            raise InputError(source, odd, f"dtype .npz cannot hold ({arrays[odd].dtype.name})",
                             "a .safetensors output for bf16 and float8 tensors", ".npz")
        from qflow.core.tensors import npz_bytes

        return npz_bytes(arrays)
    raise InputError(source, "suffix", "unsupported output format", ".safetensors, .npz or a folder",
                     suffix or "no suffix")


def _aligned(text: bytes) -> bytes:
    """A safetensors header padded with spaces to a multiple of 8 bytes (as the format's writer does)."""
    return text + b" " * (-len(text) % 8)


def merged_safetensors_header(records: list[dict[str, Any]], metadata: Mapping[str, str] | None) -> bytes:
    """A new safetensors header for ``records`` (in their order), data back to back."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for record in records:
        info = dtype_info(record["dtype"])
        nbytes = math.prod(record["shape"]) * info.numpy.itemsize
        header[record["name"]] = {"dtype": info.safetensors, "shape": record["shape"],
                                  "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    return _aligned(json.dumps(header, separators=(",", ":")).encode())


def _stored_order(text: str, records: Mapping[str, dict[str, Any]], file_name: str, source: str) -> list[str]:
    """Tensor names of a stored header in offset order, each checked against the container's record and its
    data range (back to back, as long as its shape): the header is written to the restored file as it is."""
    header = json.loads(text)
    names = [n for n in header if n != "__metadata__"]
    position = 0
    for name in sorted(names, key=lambda n: header[n]["data_offsets"][0]):
        record = records.get(name)
        info = dtype_info(record["dtype"]) if record else None
        if record is None or info is None or info.safetensors != header[name]["dtype"] \
                or list(header[name]["shape"]) != list(record["shape"]):
            raise InputError(source, f"layout {file_name}: {name}", "layout does not match the tensor records",
                             "the same name, dtype and shape", None if record is None else record["dtype"])
        begin, end = header[name]["data_offsets"]
        if begin != position or end - begin != math.prod(record["shape"]) * info.numpy.itemsize:
            raise InputError(source, f"layout {file_name}: {name}", "data offsets do not fit the tensor",
                             f"[{position}, {position + math.prod(record['shape']) * info.numpy.itemsize}]",
                             header[name]["data_offsets"])
        position = end
    return sorted(names, key=lambda n: header[n]["data_offsets"][0])


def safetensors_outputs(layout: Mapping[str, Any] | None, records: list[dict[str, Any]], out: Path, source: str
                        ) -> list[tuple[Path, bytes, list[str]]]:
    """See :func:`_outputs`; a malformed recorded layout (the container's header is input) is an
    :class:`InputError`, and every tensor must be written exactly once."""
    try:
        outputs = _outputs(layout, records, out, source)
    except InputError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise InputError(source, "layout", "malformed layout record", "the layout qflow records",
                         f"{type(exc).__name__}: {exc}"[:200]) from None
    written = [n for _, _, names in outputs for n in names]
    if sorted(written) != sorted(r["name"] for r in records):
        raise InputError(source, "layout", "layout does not list every tensor exactly once",
                         f"{len(records)} tensors", f"{len(written)} entries")
    return outputs


def _outputs(layout: Mapping[str, Any] | None, records: list[dict[str, Any]], out: Path, source: str
             ) -> list[tuple[Path, bytes, list[str]]]:
    """``(path, header bytes incl. the 8-byte length, tensor names in write order)`` for each file to write.

    ``out`` a folder: the recorded safetensors files (headers as stored),
    or ``model.safetensors`` when the checkpoint had none. ``out`` a
    ``.safetensors`` file: one merged file (a single stored file is written
    as it was).
    """
    by_name = {r["name"]: r for r in records}
    files = [f for f in (layout or {}).get("files", []) if f.get("header") is not None]
    stored = bool(files) and (layout or {}).get("kind") in ("safetensors", "sharded")
    if out.suffix.lower() == ".safetensors" and not (stored and len(files) == 1):
        metadata = files[0].get("metadata") if stored and len(files) == 1 else None
        text = merged_safetensors_header(records, metadata)
        return [(out, len(text).to_bytes(8, "little") + text, [r["name"] for r in records])]
    if not stored:
        text = merged_safetensors_header(records, None)
        target = out if out.suffix.lower() == ".safetensors" else out / "model.safetensors"
        return [(target, len(text).to_bytes(8, "little") + text, [r["name"] for r in records])]
    outputs = []
    for entry in files:
        text = entry["header"].encode()
        target = out if out.suffix.lower() == ".safetensors" else out / Path(entry["name"]).name
        outputs.append((target, len(text).to_bytes(8, "little") + text,
                        _stored_order(entry["header"], by_name, entry["name"], source)))
    return outputs


def write_safetensors_files(outputs: list[tuple[Path, bytes, list[str]]], tensors: Iterator[tuple[str, np.ndarray]],
                            layout: Mapping[str, Any] | None, folder: Path | None) -> list[str]:
    """Write each output file as ``tensors`` arrive (in the concatenated write order); returns the paths written.

    The sharded index is written beside the shards as it was stored when
    ``folder`` is given and the layout had one. When a tensor fails (a
    damaged block), the files written so far are removed before the error
    propagates: no half-restored checkpoint is left behind.
    """
    written: list[str] = []
    try:
        for path, head, names in outputs:
            path.parent.mkdir(parents=True, exist_ok=True)
            written.append(str(path))
            with path.open("wb") as handle:
                handle.write(head)
                for expected in names:
                    name, array = next(tensors)
                    if name != expected:  # the caller decodes in the same order: a mismatch is a bug
                        raise RuntimeError(f"restore order: {name!r} arrived where {expected!r} was due")
                    handle.write(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    except BaseException:
        for done in written:
            Path(done).unlink(missing_ok=True)
        raise
    write_index(folder, layout, written)
    return written


def write_index(folder: Path | None, layout: Mapping[str, Any] | None, written: list[str]) -> None:
    """Write a sharded checkpoint's ``model.safetensors.index.json`` as recorded, into ``folder``; append its path."""
    if folder is not None and layout and layout.get("index_text") is not None:
        index_path = folder / Path(layout["index_name"]).name
        index_path.write_text(layout["index_text"])
        written.append(str(index_path))


def tensor_offsets(outputs: list[tuple[Path, bytes, list[str]]], sizes: Mapping[str, int]
                   ) -> list[tuple[Path, str, int]]:
    """``(file, tensor, byte offset)`` of every tensor of ``outputs``: each file's tensors back to back after its
    header."""
    placed = []
    for path, head, names in outputs:
        offset = len(head)
        for name in names:
            placed.append((path, name, offset))
            offset += sizes[name]
    return placed


def sized_files(outputs: list[tuple[Path, bytes, list[str]]], sizes: dict[str, int], written: list[str]) -> None:
    """Create each output file with its header, at its full length (the workers fill in the tensors); each path
    goes into ``written`` before the file is created."""
    for path, head, names in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        written.append(str(path))
        with path.open("wb") as handle:
            handle.write(head)
            handle.truncate(len(head) + sum(sizes[n] for n in names))


def pwrite_all(fd: int, data: np.ndarray, offset: int) -> None:
    """Write all of ``data`` (any contiguous array) at byte ``offset`` of the open file ``fd`` (threads may write
    different ranges of one file at once)."""
    view, done = memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8)), 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)
