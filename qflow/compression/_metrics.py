"""Reconstruction quality and the baselines an operator would otherwise use.

Error figures compare a reconstruction ``y`` with the original ``x`` (both
read as float64 in chunks, so large tensors cost no extra copies):

* ``relative_l2_error`` = ||y - x|| / ||x||
* ``max_abs_error`` = max |y - x|
* ``snr_db`` = 10 log10(||x||^2 / ||y - x||^2) (``inf`` shown as None when exact)
* ``cosine_similarity`` = <x, y> / (||x|| ||y||)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard

from qflow.compression._dtypes import is_float, work_dtype

__all__ = ["ZSTD_STREAM_BYTES", "ErrorSums", "baseline_fp16", "baseline_int8", "baseline_zstd", "error_sums", "exact_sums"]

#: Values per step of the sums and baselines (float64 temporaries of 16 MB each, whatever the tensor's size; smaller
#: steps cost more than they save: each ``@`` is an OpenBLAS call, ~8 ms of thread hand-off on a busy machine).
_CHUNK = 1 << 21


@dataclass
class ErrorSums:
    """Sums that make the error figures of one tensor, and of several added together."""

    xx: float = 0.0
    yy: float = 0.0
    xy: float = 0.0
    dd: float = 0.0
    max_abs: float = 0.0

    def __add__(self, other: ErrorSums) -> ErrorSums:
        return ErrorSums(self.xx + other.xx, self.yy + other.yy, self.xy + other.xy, self.dd + other.dd,
                         max(self.max_abs, other.max_abs))

    def figures(self) -> dict[str, float | None]:
        """``relative_l2_error``, ``max_abs_error``, ``snr_db`` (None when exact), ``cosine_similarity``."""
        rel = math.sqrt(self.dd / self.xx) if self.xx > 0 else (0.0 if self.dd == 0 else math.inf)
        snr = None if self.dd == 0 else (10 * math.log10(self.xx / self.dd) if self.xx > 0 else -math.inf)
        denom = math.sqrt(self.xx * self.yy)
        cos = self.xy / denom if denom > 0 else (1.0 if self.dd == 0 else 0.0)
        return {"relative_l2_error": _finite(rel), "max_abs_error": self.max_abs, "snr_db": _finite(snr),
                "cosine_similarity": min(1.0, cos)}


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def _f64(values: np.ndarray) -> np.ndarray:
    """``values`` as float64; bf16/fp8/fp16 through float32 (ml_dtypes' direct cast to float64 is ~15x slower)."""
    if is_float(values.dtype) and values.dtype.itemsize <= 2:
        values = values.astype(np.float32)
    return values.astype(np.float64)


def exact_sums(x: np.ndarray) -> ErrorSums:
    """The sums of a bit-exact reconstruction of ``x`` (no second pass over a copy)."""
    xf = x.reshape(-1)
    xx = sum(float(np.square(_f64(xf[i: i + _CHUNK])).sum()) for i in range(0, xf.size, _CHUNK))
    return ErrorSums(xx, xx, xx, 0.0, 0.0)


def error_sums(x: np.ndarray, y: np.ndarray) -> ErrorSums:
    """Error sums of reconstruction ``y`` against original ``x`` (same shape)."""
    xf, yf = x.reshape(-1), y.reshape(-1)
    sums = ErrorSums()
    for i in range(0, xf.size, _CHUNK):
        a = _f64(xf[i: i + _CHUNK])
        b = _f64(yf[i: i + _CHUNK])
        d = b - a
        sums = sums + ErrorSums(float(a @ a), float(b @ b), float(a @ b), float(d @ d),
                                float(np.abs(d).max()) if d.size else 0.0)
    return sums


def _total(sums: Iterable[ErrorSums]) -> ErrorSums:
    out = ErrorSums()
    for s in sums:
        out = out + s
    return out


def _mb_per_s(nbytes: int, seconds: float) -> float | None:
    return round(nbytes / 2**20 / seconds, 1) if seconds > 0 else None


Figures = dict[str, float | None]
#: One baseline codec on one tensor: ``(error sums of its restore, stored bytes, seconds spent encoding)``.
Codec = Callable[[Any], tuple[ErrorSums, int, float]]


def _steps(x: Any) -> Iterator[np.ndarray]:
    """``x``'s values, flat, :data:`_CHUNK` at a time: an array's slices, or (a tensor left in its file, with
    ``dtype``, ``shape``, ``size``, ``nbytes`` and ``steps(n)``) its values read a step at a time."""
    if isinstance(x, np.ndarray):
        flat = x.reshape(-1)
        for i in range(0, flat.size, _CHUNK):
            yield flat[i: i + _CHUNK]
    else:
        yield from x.steps(_CHUNK)


def _unchanged(x: Any) -> ErrorSums:
    """:func:`error_sums` of ``x`` against itself (the same figures), a step at a time, with one product per
    step instead of three and no difference array."""
    sums = ErrorSums()
    for step in _steps(x):
        a = _f64(step)
        xx = float(a @ a)
        sums = sums + ErrorSums(xx, xx, xx, 0.0, 0.0)
    return sums


def _baseline(arrays: Mapping[str, Any], codec: Codec) -> tuple[Figures, dict[str, Figures]]:
    """Run ``codec`` on every tensor: overall figures (ratio, errors, encode MB/s) and per-tensor (ratio, errors).
    Codecs go through each tensor a step at a time: no restored copy is held, and a tensor left in its file
    (see :func:`_steps`) is never loaded whole."""
    per, sums, stored, original, elapsed = {}, [], 0, 0, 0.0
    for name, x in arrays.items():
        s, size, seconds = codec(x)
        sums.append(s)
        stored += size
        original += x.nbytes
        elapsed += seconds
        per[name] = {"compression_ratio": x.nbytes / max(size, 1), **s.figures()}
    return {"compression_ratio": original / max(stored, 1), **_total(sums).figures(),
            "compress_mb_per_s": _mb_per_s(original, elapsed)}, per


def _fp16_cast(x: Any) -> tuple[ErrorSums, int, float]:
    if not is_float(x.dtype) or x.dtype.itemsize <= 2:  # bf16 and fp8 are no larger than fp16
        return _unchanged(x), x.nbytes, 0.0
    sums, seconds = ErrorSums(), 0.0
    for step in _steps(x):
        start = time.perf_counter()
        half = step.astype(np.float16)
        seconds += time.perf_counter() - start
        sums = sums + error_sums(step, half.astype(x.dtype))
    return sums, x.size * 2, seconds


#: Tensors above this many bytes are fed to the zstd baseline a step at a time (its output is counted, not kept).
ZSTD_STREAM_BYTES = 4 << 20


def _zstd_raw(x: Any, level: int = 3) -> tuple[ErrorSums, int, float]:
    seconds = 0.0
    if isinstance(x, np.ndarray) and x.nbytes <= ZSTD_STREAM_BYTES:
        raw = memoryview(np.ascontiguousarray(x).reshape(-1).view(np.uint8))  # the tensor's bytes, not a copy
        start = time.perf_counter()
        size = len(zstandard.ZstdCompressor(level=level).compress(raw))
        seconds = time.perf_counter() - start
    else:  # one thread: zstd's worker threads hold ~60-90 MB of job buffers on a 64 MB tensor
        counter = _Counter()
        with zstandard.ZstdCompressor(level=level).stream_writer(counter, size=x.nbytes, closefd=False) as writer:
            for step in _steps(x):
                start = time.perf_counter()
                writer.write(memoryview(np.ascontiguousarray(step).view(np.uint8)))
                seconds += time.perf_counter() - start
            start = time.perf_counter()
        seconds += time.perf_counter() - start  # the frame's end, flushed on leaving the block
        size = counter.size
    return _unchanged(x), size, seconds  # lossless: restored is the input


class _Counter:
    """A write-only sink that counts the bytes written to it."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)


def _int8_per_tensor(x: Any) -> tuple[ErrorSums, int, float]:
    """Per-tensor int8 (two passes: the largest magnitude, then the codes and their error)."""
    if not is_float(x.dtype) or not x.size or x.dtype.itemsize == 1:
        return _unchanged(x), x.nbytes, 0.0
    work = work_dtype(x.dtype)
    start = time.perf_counter()
    peak = max(float(np.abs(step.astype(work)).max()) for step in _steps(x))
    scale = work(peak / 127 if peak > 0 else 1.0)
    sums, seconds = ErrorSums(), time.perf_counter() - start
    for step in _steps(x):
        start = time.perf_counter()
        codes = np.clip(np.rint(step.astype(work) / scale), -127, 127).astype(np.int8)
        seconds += time.perf_counter() - start
        sums = sums + error_sums(step, (codes.astype(work) * scale).astype(x.dtype))
    return sums, x.size + 4, seconds  # codes + one float32 scale


def baseline_fp16(arrays: Mapping[str, Any]) -> tuple[Figures, dict[str, Figures]]:
    """Cast float tensors to float16 (others unchanged): overall figures and per-tensor (ratio, error)."""
    return _baseline(arrays, _fp16_cast)


def baseline_zstd(arrays: Mapping[str, Any]) -> tuple[Figures, dict[str, Figures]]:
    """zstd (level 3) on each tensor's raw bytes (lossless): ratio and throughput."""
    return _baseline(arrays, _zstd_raw)


def baseline_int8(arrays: Mapping[str, Any]) -> tuple[Figures, dict[str, Figures]]:
    """Plain symmetric per-tensor int8 (scale = max|x| / 127), no packing, no extras; non-floats unchanged."""
    return _baseline(arrays, _int8_per_tensor)
