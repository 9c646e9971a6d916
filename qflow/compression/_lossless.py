"""Lossless packing: byte-plane split and zstd, with the level picked by a quick trial.

Float weights barely compress as they are: the sign/exponent bytes are
highly repetitive but sit interleaved with near-random mantissa bytes. Split
into byte planes (all first bytes, then all second bytes, ...), the exponent
planes compress well and the low mantissa planes are stored as they are.
Each plane is its own block, so each gets its own decision and checksum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zstandard

__all__ = ["TRIAL_LEVELS", "Packed", "choose_level", "pack", "split_planes", "join_planes", "unpack"]

#: zstd levels tried on a sample; the highest one that still pays is used.
TRIAL_LEVELS = (1, 3, 9)
#: Sample size of the level trial, bytes.
TRIAL_BYTES = 1 << 20
#: A higher level must shrink the sample by at least this much more to be chosen.
LEVEL_GAIN = 0.01
#: Output at or above this share of the input is "incompressible": stored as is.
INCOMPRESSIBLE = 0.98
#: Inputs at least this big use zstd's worker threads.
THREADED_BYTES = 4 << 20


@dataclass(frozen=True)
class Packed:
    """One packed block: its codec (``zstd`` or ``raw``), payload and the length before packing."""

    codec: str
    payload: bytes
    raw_length: int
    level: int | None


def _sample(data: bytes | memoryview) -> bytes:
    view = memoryview(data)
    if len(view) <= TRIAL_BYTES:
        return bytes(view)
    step = len(view) // 4  # four pieces across the input, not just its start
    piece = TRIAL_BYTES // 4
    return b"".join(bytes(view[i * step: i * step + piece]) for i in range(4))


def choose_level(data: bytes | memoryview) -> tuple[int, dict[int, float]]:
    """The zstd level for ``data``, from compressing a <= 1 MiB sample at :data:`TRIAL_LEVELS`.

    Returns the level and the sample's compressed/raw ratio at each level tried.
    A level is taken only when it shrinks the sample by :data:`LEVEL_GAIN` more
    than the level below it.
    """
    sample = _sample(data)
    if not sample:
        return TRIAL_LEVELS[0], {}
    ratios = {lv: len(zstandard.ZstdCompressor(level=lv).compress(sample)) / len(sample) for lv in TRIAL_LEVELS}
    best = TRIAL_LEVELS[0]
    for lv in TRIAL_LEVELS[1:]:
        if ratios[lv] < ratios[best] - LEVEL_GAIN:
            best = lv
    return best, ratios


def pack(data: bytes | memoryview, level: int | None = None) -> Packed:
    """zstd-compress ``data`` (level by :func:`choose_level` when not given); stored raw when it would not shrink."""
    raw_length = len(memoryview(data))
    if raw_length == 0:
        return Packed("raw", b"", 0, None)
    if level is None:
        level, ratios = choose_level(data)
        if ratios and ratios[level] >= INCOMPRESSIBLE:
            return Packed("raw", bytes(data), raw_length, None)
    threads = 2 if raw_length >= THREADED_BYTES else 0
    payload = zstandard.ZstdCompressor(level=level, threads=threads).compress(data)
    if len(payload) >= INCOMPRESSIBLE * raw_length:
        return Packed("raw", bytes(data), raw_length, None)
    return Packed("zstd", payload, raw_length, level)


def unpack(codec: str, payload: bytes, raw_length: int) -> bytes:
    """Inverse of :func:`pack`."""
    if codec == "raw":
        return payload
    return zstandard.ZstdDecompressor().decompress(payload, max_output_size=raw_length)


def split_planes(x: np.ndarray) -> list[bytes]:
    """Byte planes of ``x`` (little endian): plane ``i`` holds byte ``i`` of every element, in element order."""
    flat = np.ascontiguousarray(x).ravel()
    if flat.dtype.byteorder == ">":
        flat = flat.astype(flat.dtype.newbyteorder("<"))
    width = flat.dtype.itemsize
    if width == 1:
        return [flat.view(np.uint8).tobytes()]
    as_bytes = flat.view(np.uint8).reshape(-1, width)
    return [np.ascontiguousarray(as_bytes[:, i]).tobytes() for i in range(width)]


def join_planes(planes: list[bytes], dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`split_planes`."""
    dt = np.dtype(dtype).newbyteorder("<")
    count = int(np.prod(shape, dtype=np.int64))
    if dt.itemsize == 1:
        return np.frombuffer(planes[0], dtype=dt, count=count).reshape(shape).copy()
    stacked = np.empty((count, dt.itemsize), dtype=np.uint8)
    for i, plane in enumerate(planes):
        stacked[:, i] = np.frombuffer(plane, dtype=np.uint8, count=count)
    return stacked.view(dt).reshape(shape).astype(np.dtype(dtype).newbyteorder("="), copy=False)
