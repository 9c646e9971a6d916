"""Uniform affine quantization (per channel or per tensor), 4-bit packing, magnitude pruning.

A float tensor is viewed as a matrix of shape (channels, values_per_channel):
channels are the first axis when ``per_channel`` (and the tensor has two or
more axes), else the whole tensor is one channel. Each channel ``c`` stores

    code = round((x - zero_point_c) / scale_c),   zero_point_c = min_c x,
    scale_c = (max_c x - min_c x) / (2**bits - 1),

so ``|x - (zero_point_c + code * scale_c)| <= scale_c / 2`` for every value
(the zero point is the real value of code 0; no clipping ever happens).
Everything is vectorised over row chunks of about a million values, run on
two threads (numpy releases the GIL), so the cost is a few passes over memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = [
    "channel_matrix",
    "compact_params",
    "dequantize",
    "expand_params",
    "pack_codes",
    "per_tensor_relative_error",
    "prune_mask",
    "quantize",
    "unpack_codes",
]

#: Values per work chunk (fits in L2/L3 with its temporaries).
CHUNK = 1 << 20
#: Worker threads for the chunked passes (the target machine has 2 cores).
THREADS = 2
#: Values of the sample :func:`per_tensor_relative_error` uses on larger tensors.
ESTIMATE_SAMPLE = 1 << 20
#: The sample is this many evenly spaced contiguous pieces (cache-friendly, unlike a strided gather).
ESTIMATE_PIECES = 256


def channel_matrix(x: np.ndarray, per_channel: bool) -> np.ndarray:
    """View ``x`` as (channels, values per channel): first axis when ``per_channel`` and ``x.ndim >= 2``, else one row."""
    if per_channel and x.ndim >= 2 and x.shape[0] > 0:
        return x.reshape(x.shape[0], -1)
    return x.reshape(1, -1)


def _chunks(rows: int, cols: int) -> Iterator[tuple[slice, slice]]:
    if cols >= CHUNK:
        for r in range(rows):
            for j in range(0, cols, CHUNK):
                yield slice(r, r + 1), slice(j, j + CHUNK)
    else:
        step = max(1, CHUNK // max(cols, 1))
        for r in range(0, rows, step):
            yield slice(r, r + step), slice(None)


def _work_dtype(x: np.ndarray) -> type:
    return np.float64 if x.dtype == np.float64 else np.float32


def quantize(x2d: np.ndarray, bits: int,
             params: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantize each row of ``x2d`` to ``bits``-bit codes.

    Parameters
    ----------
    x2d : ndarray of shape (channels, n), float
    bits : int
        1..16.
    params : (scales, zero_points), optional
        Use these per-row steps and code-0 values (e.g. from
        :func:`compact_params`) instead of each row's min..max; they must
        cover the row (``zero_point <= min``, ``zero_point + levels * scale >= max``).

    Returns
    -------
    codes : ndarray of shape (channels, n), uint8 (bits <= 8) or uint16
    scales : ndarray of shape (channels,), same float kind as the work dtype
        Step per channel (0 where the channel is constant).
    zero_points : ndarray of shape (channels,)
        Real value of code 0 per channel (the channel minimum).
    """
    work = _work_dtype(x2d)
    levels = (1 << bits) - 1
    if params is None:
        lo = x2d.min(axis=1).astype(work)
        hi = x2d.max(axis=1).astype(work)
        scales = (hi - lo) / work(levels)
    else:
        scales, lo = params[0].astype(work), params[1].astype(work)
    inv = np.divide(work(1), scales, out=np.zeros_like(scales), where=scales > 0)
    codes = np.empty(x2d.shape, dtype=np.uint8 if bits <= 8 else np.uint16)

    def run(part: tuple[slice, slice]) -> None:
        rs, cs = part
        block = x2d[rs, cs].astype(work, copy=True)
        block -= lo[rs, None]
        block *= inv[rs, None]
        np.rint(block, out=block)
        np.clip(block, 0, levels, out=block)
        codes[rs, cs] = block

    _parallel(run, x2d.shape)
    return codes, scales, lo


def _pow2_exponent(values: np.ndarray) -> int:
    """``e`` such that ``max |values| * 2**e`` lies in [2**14, 2**15): the top of float16's normal range."""
    top = float(np.abs(values).max()) if values.size else 0.0
    if not np.isfinite(top) or top == 0.0:
        return 0
    return int(np.clip(14 - np.floor(np.log2(top)), -1000, 1000))


def expand_params(steps16: np.ndarray, zeros16: np.ndarray, exponents: tuple[int, int],
                  dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """The real steps and zero points of :func:`compact_params`' output: ``value16 * 2**-exponent``, as ``dtype``."""
    e_step, e_zero = exponents
    steps = np.ldexp(steps16.astype(np.float64), -e_step).astype(dtype)
    zeros = np.ldexp(zeros16.astype(np.float64), -e_zero).astype(dtype)
    return steps, zeros


def compact_params(x2d: np.ndarray, row_bits: np.ndarray, dtype: type, max_step_growth: float = 5e-3,
                   ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]] | None:
    """float16 steps and code-0 values per row of ``x2d`` (each array with a power-of-two exponent), or None.

    float16 keeps 11 significant bits over 29 binades; one power-of-two
    exponent per array (steps, zero points) moves its largest value to the top
    of that range, so rows whose steps differ by up to ~10**8 (dead units next
    to live ones) all stay normal. The zero point is the row minimum rounded
    down and the step ``(max - zero_point) / levels`` rounded up, so the row
    stays covered and the error bound stays half a (stored) step. Taken only
    when every row's step grows by at most ``max_step_growth`` over the exact
    ``(max - min) / levels`` (constant rows: only when the value is stored
    exactly); else None and the caller keeps full precision.

    Parameters
    ----------
    x2d : ndarray of shape (rows, n), float
    row_bits : ndarray of shape (rows,), int
        Bits of each row's codes.
    dtype : float type the quantizer works in (what :func:`expand_params` returns).

    Returns
    -------
    (steps16, zeros16, (step exponent, zero exponent)) or None.
    """
    lo = x2d.min(axis=1).astype(np.float64)
    hi = x2d.max(axis=1).astype(np.float64)
    levels = (np.left_shift(1, row_bits.astype(np.int64)) - 1).astype(np.float64)
    exact = (hi - lo) / levels
    e_zero, e_step = _pow2_exponent(lo), _pow2_exponent(exact * (1 + max_step_growth))
    with np.errstate(over="ignore", invalid="ignore"):
        zeros16 = np.ldexp(lo, e_zero).astype(np.float16)
        zeros = expand_params(np.zeros(1, np.float16), zeros16, (e_step, e_zero), np.float64)[1]
        zeros16 = np.where(zeros > lo, np.nextafter(zeros16, np.float16(-np.inf)), zeros16)
        zeros = expand_params(np.zeros(1, np.float16), zeros16, (e_step, e_zero), dtype)[1].astype(np.float64)
        needed = (hi - zeros) / levels
        steps16 = np.ldexp(needed, e_step).astype(np.float16)
        steps = expand_params(steps16, np.zeros(1, np.float16), (e_step, e_zero), dtype)[0].astype(np.float64)
        steps16 = np.where(steps < needed, np.nextafter(steps16, np.float16(np.inf)), steps16)
        steps = expand_params(steps16, np.zeros(1, np.float16), (e_step, e_zero), dtype)[0].astype(np.float64)
        ok = np.isfinite(steps) & np.isfinite(zeros) & (zeros <= lo) & (zeros + levels * steps >= hi)
        ok &= (steps <= exact * (1 + max_step_growth)) | ((exact == 0) & (zeros == lo))
    return (steps16, zeros16, (e_step, e_zero)) if bool(ok.all()) else None


def dequantize(codes: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`quantize`: ``zero_point_c + code * scale_c`` as an array of shape (channels, n) of ``dtype``."""
    work = np.float64 if np.dtype(dtype) == np.float64 else np.float32
    out = np.empty(codes.shape, dtype=work)
    s, z = scales.astype(work), zero_points.astype(work)

    def run(part: tuple[slice, slice]) -> None:
        rs, cs = part
        block = codes[rs, cs].astype(work)
        block *= s[rs, None]
        block += z[rs, None]
        out[rs, cs] = block

    _parallel(run, codes.shape)
    return out if out.dtype == dtype else out.astype(dtype)


def _parallel(run, shape: tuple[int, int]) -> None:
    parts = list(_chunks(*shape))
    if len(parts) <= 1:
        for part in parts:
            run(part)
        return
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(run, parts))


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Codes as bytes: one byte per 8-bit code, two 4-bit codes per byte (low nibble first), uint16 little endian."""
    flat = codes.ravel()
    if bits == 4:
        if flat.size % 2:
            flat = np.concatenate([flat, np.zeros(1, dtype=flat.dtype)])
        pairs = flat.reshape(-1, 2)
        return (pairs[:, 0] | (pairs[:, 1] << 4)).astype(np.uint8).tobytes()
    if bits <= 8:
        return flat.astype(np.uint8, copy=False).tobytes()
    return flat.astype("<u2", copy=False).tobytes()


def unpack_codes(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``count`` codes (uint8 or uint16)."""
    if bits == 4:
        packed = np.frombuffer(data, dtype=np.uint8)
        out = np.empty(packed.size * 2, dtype=np.uint8)
        out[0::2] = packed & 0x0F
        out[1::2] = packed >> 4
        return out[:count]
    if bits <= 8:
        return np.frombuffer(data, dtype=np.uint8, count=count)
    return np.frombuffer(data, dtype="<u2", count=count).astype(np.uint16)


def prune_mask(x2d: np.ndarray, sparsity: float, channel_weight: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Keep-mask of magnitude pruning: the ``sparsity`` share of values with the smallest score is dropped.

    The score is ``|x|``, times ``channel_weight[c]`` per row when given (the
    dropout simulator's sensitivity: sensitive channels lose fewer values).

    Returns
    -------
    keep : ndarray of shape x2d.shape, bool
    threshold : float
        Scores ``<= threshold`` were dropped.
    """
    score = np.abs(x2d).astype(np.float32)
    if channel_weight is not None:
        score *= channel_weight.astype(np.float32)[:, None]
    k = int(sparsity * score.size)
    if k <= 0:
        return np.ones(x2d.shape, dtype=bool), -1.0
    threshold = float(np.partition(score.ravel(), k - 1)[k - 1])
    keep = score > threshold
    return keep, threshold


def _relative_error_of_range(values: np.ndarray, lo: float, hi: float, bits: int) -> float:
    """Relative L2 error ||q(v) - v|| / ||v|| of quantizing float64 ``values`` over [lo, hi] as :func:`quantize` does."""
    levels = (1 << bits) - 1
    scale = (hi - lo) / levels
    # einsum, not np.dot: BLAS calls on small vectors can stall for ~10 ms when BLAS threads are parked
    norm = float(np.einsum("i,i->", values, values))
    if scale <= 0 or norm == 0:
        return 0.0
    codes = np.clip(np.rint((values - lo) * (1.0 / scale)), 0, levels)
    diff = lo + codes * scale - values
    return float(np.sqrt(np.einsum("i,i->", diff, diff) / norm))


def _sample_pieces(flat: np.ndarray) -> np.ndarray:
    """:data:`ESTIMATE_SAMPLE` values of 1-D ``flat`` as float64: :data:`ESTIMATE_PIECES` evenly spaced runs."""
    piece = max(1, ESTIMATE_SAMPLE // ESTIMATE_PIECES)
    starts = np.linspace(0, flat.size - piece, ESTIMATE_PIECES).astype(np.int64)
    return np.concatenate([flat[s: s + piece] for s in starts]).astype(np.float64)


def per_tensor_relative_error(x: np.ndarray, bits: int, stop_above: float = np.inf) -> tuple[float, str]:
    """Relative L2 error of quantizing the whole float tensor ``x`` (any shape) with one scale at ``bits``.

    Exact up to :data:`ESTIMATE_SAMPLE` values. Above it the error is measured
    on a sample of that many values (:data:`ESTIMATE_PIECES` evenly spaced
    runs): first over the sample's own range (cheap; the sample's range is
    narrower, so its finer steps give about a lower bound, and when that already
    exceeds ``stop_above`` it is returned without a pass over the whole
    tensor), then over the whole tensor's min..max.

    Returns
    -------
    error : float
        Relative L2 error (0 for a constant or all-zero tensor).
    how : str
        ``"exact"``, ``"sample, own range"`` or ``"sample estimate"``.
    """
    flat = x.reshape(-1)
    if flat.size <= ESTIMATE_SAMPLE:
        values = flat.astype(np.float64)
        return _relative_error_of_range(values, float(values.min()), float(values.max()), bits), "exact"
    values = _sample_pieces(flat)
    lower = _relative_error_of_range(values, float(values.min()), float(values.max()), bits)
    if lower > stop_above:
        return lower, "sample, own range"
    return _relative_error_of_range(values, float(flat.min()), float(flat.max()), bits), "sample estimate"
