"""Lossless packing: byte planes and zstd; for floats, the exponent split from sign and mantissa.

Float weights barely compress as they are: the exponent carries about 2.6
bits of information in its 8 (bf16/fp32), but it straddles two bytes, next
to near-random mantissa bits. :func:`float_planes` rotates each value's bits
left by one (the sign moves to the lowest bit, as ZipNN does), so the top
byte holds the exponent alone (bf16, fp32; the top 8 exponent bits of
fp64; exponent and top mantissa bits of fp16), then splits byte planes. The
exponent plane is entropy-coded by zstd with parameters that make it almost
pure Huffman (:data:`ENTROPY_PARAMS`: long minimum match, fast strategy),
close to the plane's entropy and faster than zstd's default levels; the
mantissa planes are compressed where a sample says zstd shrinks them, else
stored as they are. Each plane is its own block, so each gets its own
decision and checksum. The decoder is plain zstd, so no new codec is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zstandard

__all__ = ["ENTROPY_PARAMS", "TRIAL_LEVELS", "Packed", "choose_level", "float_planes", "join_float_planes",
           "join_planes", "pack", "pack_entropy", "pack_plane", "split_planes", "unpack"]

#: zstd levels tried on a sample; the highest one that still pays is used.
TRIAL_LEVELS = (1, 3, 9)
#: Sample size of the level trial, bytes.
TRIAL_BYTES = 1 << 20
#: A higher level must shrink the sample by at least this much more to be chosen.
LEVEL_GAIN = 0.01
#: Output at or above this share of the input is "incompressible": stored as is.
INCOMPRESSIBLE = 0.98
#: zstd parameters for an exponent plane: matches of 7+ bytes only, looked up in a 64-entry table (matches are
#: rare in exponents), so the plane is coded almost entirely by zstd's literal Huffman coder. Measured on
#: all-MiniLM-L6-v2's weights in bf16: 2.65 bits per exponent (its entropy: 2.66) at ~740 MB/s of exponents
#: per core, where level 1 gives 2.91 bits at ~330 MB/s and level 3 3.29 bits.
ENTROPY_PARAMS = zstandard.ZstdCompressionParameters(window_log=17, min_match=7, strategy=zstandard.STRATEGY_FAST,
                                                     hash_log=6, chain_log=6, search_log=1)
#: Sample of a mantissa plane zstd is tried on before the whole plane is compressed, bytes.
PLANE_TRIAL_BYTES = 256 << 10


@dataclass(frozen=True)
class Packed:
    """One packed block: its codec (``zstd`` or ``raw``), payload, the length before packing, and the payload's
    sha256 when already computed (by the worker that packed it, so the writer need not)."""

    codec: str
    payload: bytes | memoryview
    raw_length: int
    level: int | None
    sha256: str | None = None


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
    # no zstd worker threads: tensors are compressed in parallel by the caller's own threads
    payload = zstandard.ZstdCompressor(level=level).compress(data)
    if len(payload) >= INCOMPRESSIBLE * raw_length:
        return Packed("raw", bytes(data), raw_length, None)
    return Packed("zstd", payload, raw_length, level)


def pack_entropy(data: bytes | memoryview) -> Packed:
    """zstd with :data:`ENTROPY_PARAMS` (an exponent plane, fp8 bytes); stored raw when it would not shrink."""
    raw_length = len(memoryview(data))
    if raw_length == 0:
        return Packed("raw", b"", 0, None)
    payload = zstandard.ZstdCompressor(compression_params=ENTROPY_PARAMS).compress(data)
    if len(payload) >= INCOMPRESSIBLE * raw_length:
        return Packed("raw", bytes(data), raw_length, None)
    return Packed("zstd", payload, raw_length, 1)


def pack_plane(data: bytes | memoryview) -> Packed:
    """A mantissa plane: entropy-coded like the exponent where a :data:`PLANE_TRIAL_BYTES` sample shrinks, else raw.

    Mantissa planes are near random; what they give (the top mantissa bits
    are not uniform) is the literal coder's, so the same fast parameters
    apply, and the sample keeps the cost of finding out small.
    """
    view = memoryview(data)
    if len(view) == 0:
        return Packed("raw", b"", 0, None)
    sample = bytes(view[: PLANE_TRIAL_BYTES])
    compressor = zstandard.ZstdCompressor(compression_params=ENTROPY_PARAMS)
    if len(compressor.compress(sample)) >= INCOMPRESSIBLE * len(sample):
        return Packed("raw", view.toreadonly(), len(view), None)  # the plane's own buffer: no copy
    return pack_entropy(view)


def unpack(codec: str, payload: bytes, raw_length: int) -> bytes:
    """Inverse of :func:`pack`."""
    if codec == "raw":
        return bytes(payload)
    return zstandard.ZstdDecompressor().decompress(payload, max_output_size=raw_length)


def split_planes(x: np.ndarray) -> list[bytes]:
    """Byte planes of ``x`` (little endian): plane ``i`` holds byte ``i`` of every element, in element order."""
    flat = np.ascontiguousarray(x).ravel()
    if flat.dtype.byteorder == ">":
        flat = flat.astype(flat.dtype.newbyteorder("<"))
    width = flat.dtype.itemsize
    if width == 1:
        return [flat.view(np.uint8).tobytes()]
    planes = flat.view(np.uint8).reshape(-1, width).T.copy()  # one transposed copy: much faster than per column
    return [plane.tobytes() for plane in planes]


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


def _unsigned(itemsize: int) -> type:
    return {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[itemsize]


#: Values rotated per step by :func:`float_planes` / :func:`join_float_planes` (their temporaries stay this small).
ROTATE_CHUNK = 1 << 22


def float_planes(x: np.ndarray) -> np.ndarray:
    """Byte planes of ``x``'s bits rotated left by one, shape ``(itemsize, size)`` uint8; the last plane is the top byte.

    The rotation moves the sign to the lowest bit, so the top byte is the
    exponent's top 8 bits (all of it for bf16 and fp32). Done in chunks of
    :data:`ROTATE_CHUNK` values: besides ``x`` only the planes are tensor-sized.
    """
    width = x.dtype.itemsize
    u = np.ascontiguousarray(x).reshape(-1).view(_unsigned(width))
    planes = np.empty((width, u.size), dtype=np.uint8)
    for lo in range(0, u.size, ROTATE_CHUNK):
        part = u[lo: lo + ROTATE_CHUNK]
        rotated = part << 1
        rotated |= part >> (8 * width - 1)
        planes[:, lo: lo + part.size] = rotated.view(np.uint8).reshape(-1, width).T
    return planes


def join_float_planes(planes: list[bytes], dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`float_planes` (``planes`` in the same order), in chunks of :data:`ROTATE_CHUNK` values."""
    dt = np.dtype(dtype)
    width = dt.itemsize
    count = int(np.prod(shape, dtype=np.int64))
    sources = [np.frombuffer(plane, dtype=np.uint8, count=count) for plane in planes]
    out = np.empty(count, dtype=_unsigned(width))
    for lo in range(0, count, ROTATE_CHUNK):
        hi = min(count, lo + ROTATE_CHUNK)
        stacked = np.empty((hi - lo, width), dtype=np.uint8)
        for i, source in enumerate(sources):
            stacked[:, i] = source[lo:hi]
        rotated = stacked.view(_unsigned(width)).reshape(-1)
        np.right_shift(rotated, 1, out=out[lo:hi])
        np.left_shift(rotated, 8 * width - 1, out=rotated)
        out[lo:hi] |= rotated
    return out.view(dt).reshape(shape)
