"""One tensor in and out of the container: the recorded steps and their exact inverse.

Schemes (``record["scheme"]``):

* ``lossless`` -- layout ``float`` (bits rotated so the exponent is a byte
  plane of its own, entropy-coded; mantissa planes zstd or raw), ``planes``
  (plain byte planes) or ``whole`` (one buffer), each block zstd-packed or
  stored raw (:mod:`._lossless`); integer/bool tensors, tiny tensors,
  already-quantized floats and lossless mode. Floats get the ``float``
  layout unless plain byte planes do better on a sample of the tensor.
* ``quant`` -- uniform affine codes per channel (:mod:`._quantize`), optional
  high-precision rows (dropout simulator), optional pruning bitmask, optional
  denoiser weights; codes zstd-packed.
* ``latent`` -- blocks encoded by PCA (chosen by :mod:`._quantum`, decoded by :mod:`._latent`).

:func:`encode_tensor` returns the header record, its blocks and the
reconstruction the decompressor will produce (used for metrics and for
training the denoiser); :func:`decode_tensor` is the inverse and trusts a
container that :func:`~qflow.compression._container.read_container` verified.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qflow.compression._container import Block, Container
from qflow.compression._dtypes import is_float, numpy_dtype, work_dtype
from qflow.compression._latent import decode_latent
from qflow.compression._lossless import (
    CHUNK_BYTES,
    Packed,
    PlaneReader,
    ValueReader,
    float_plane_packs,
    float_plane_packs_from,
    join_float_chunks,
    join_planes,
    pack,
    pack_entropy,
    split_planes,
    unpack,
)
from qflow.compression._quantize import (
    channel_matrix,
    compact_params,
    dequantize,
    expand_params,
    pack_codes,
    prune_mask,
    quantize,
    unpack_codes,
)

__all__ = ["EncodedTensor", "QuantOptions", "decode_tensor", "encode_float_stream", "encode_lossless", "encode_quant",
           "lossless_round_trip", "original_sha256", "should_store_losslessly"]

#: Float tensors with fewer values than this are stored losslessly (scales would cost more than they save).
MIN_QUANT_SIZE = 64
#: Float tensors with at most this many distinct values are treated as already quantized.
MAX_DISTINCT_QUANTIZED = 256
#: Channels whose scales and zero points are written in the JSON header; more go to a binary block.
INLINE_SCALES = 16
#: Lossless tensors under this many bytes are packed as one block.
SMALL_LOSSLESS_BYTES = 16 << 10
#: Up to this many bytes both lossless layouts are tried and the smaller kept.
BOTH_LAYOUTS_LIMIT = 16 << 20
#: Approximate header cost of one block-table entry, bytes (name, offset, length, codec, sha256).
HEADER_BYTES_PER_BLOCK = 150
#: Largest tensor checked for distinct values (elements).
DISTINCT_CHECK_LIMIT = 1 << 24
#: Bytes of a float tensor on which the float layout is compared with plain byte planes (zstd level 1 each).
LAYOUT_SAMPLE_BYTES = 64 << 10
#: Plain byte planes are chosen only when the sample stores this much smaller: on a small sample the float
#: layout pays its entropy tables more (all-MiniLM-L6-v2's fp32 embeddings: planes 0.15 % smaller on the
#: sample, the float layout 1.1 % smaller on the tensor and twice as fast).
LAYOUT_MARGIN = 0.02
#: Float tensors smaller than this take the float layout without the trial (on all-MiniLM-L6-v2's 288 KB
#: bf16 matrices the trial cost a fifth of the encoding; what a wrong pick could lose there is small).
LAYOUT_TRIAL_MIN_BYTES = 1 << 20


@dataclass
class EncodedTensor:
    """A tensor's header record, its blocks, and its reconstruction (same shape and dtype as the input)."""

    record: dict[str, Any]
    blocks: list[Block]
    reconstruction: np.ndarray
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QuantOptions:
    """Quantization settings of one tensor (already validated).

    hi_rows : row indices (of the channel matrix) kept at ``2 * bits``.
    channel_weight : per-row pruning weight (sensitivity), or None.
    """

    bits: int
    per_channel: bool
    sparsity: float
    hi_rows: np.ndarray | None = None
    channel_weight: np.ndarray | None = None


def _little(x: np.ndarray) -> np.ndarray:
    """``x`` C-contiguous and little endian (a copy only where it is not already)."""
    flat = np.ascontiguousarray(x)
    if flat.dtype.byteorder == ">":
        flat = flat.astype(flat.dtype.newbyteorder("<"))
    return flat


def original_sha256(x: np.ndarray) -> str:
    """sha256 of the tensor's C-order little-endian bytes (what a bit-exact restore must reproduce)."""
    return hashlib.sha256(_little(x).reshape(-1).view(np.uint8)).hexdigest()


def _base_record(name: str, x: np.ndarray, sha: str) -> dict[str, Any]:
    return {"name": name, "dtype": x.dtype.name, "shape": list(x.shape), "sha256": sha, "notes": []}


def _lossless_record(base: dict[str, Any], layout: str, blocks: list[Block], trial: dict[str, int] | None,
                     note: str | None) -> dict[str, Any]:
    """``base`` (:func:`_base_record`) completed as a lossless record of ``layout`` stored in ``blocks``."""
    record = {**base, "scheme": "lossless"}
    codecs = [b.packed.codec if b.packed.level is None else f"{b.packed.codec}-{b.packed.level}" for b in blocks]
    record["lossless"] = {"layout": layout, "planes": len(blocks), "codecs": codecs, "blocks": [b.name for b in blocks]}
    if trial is not None:
        record["lossless"]["sample_stored_bytes"] = trial
    if note:
        record["notes"].append(note)
    if any(b.packed.raw_length for b in blocks) and all(b.packed.codec == "raw" for b in blocks):
        record["notes"].append("incompressible: every byte plane stored as is (zstd would not shrink it)")
    return record


def should_store_losslessly(x: np.ndarray) -> str | None:
    """Why ``x`` is stored losslessly even in lossy mode, or None when it should be quantized."""
    if not is_float(x.dtype):
        return f"{x.dtype.name} tensor stored losslessly (already integer-valued)"
    if x.dtype.itemsize == 1:
        return f"{x.dtype.name} tensor stored losslessly (8-bit floats: 8/4-bit codes would not be smaller)"
    if x.size < MIN_QUANT_SIZE:
        return f"small tensor ({x.size} values) stored losslessly"
    if x.size <= DISTINCT_CHECK_LIMIT:
        flat = x.reshape(-1)
        sample = flat[:: max(1, flat.size // 4096)]
        limit = min(MAX_DISTINCT_QUANTIZED, flat.size // 8)
        if np.unique(sample).size <= limit and np.unique(flat).size <= limit:
            return "already quantized (few distinct values): stored losslessly"
    return None


def _float_blocks(name: str, x: np.ndarray) -> list[Block]:
    """Blocks of the ``float`` layout: mantissa planes, then the exponent plane, each entropy-coded or raw."""
    return [Block(f"{name}/plane{i}", p) for i, p in enumerate(float_plane_packs(x))]


def _stored(blocks: list[Block]) -> int:
    return sum(len(b.packed.payload) + HEADER_BYTES_PER_BLOCK for b in blocks)


def _sample_values(x: np.ndarray) -> np.ndarray:
    """About :data:`LAYOUT_SAMPLE_BYTES` of ``x``'s values, in four pieces across it."""
    flat = x.reshape(-1)
    per_piece = LAYOUT_SAMPLE_BYTES // 4 // x.dtype.itemsize
    if flat.size <= 4 * per_piece:
        return flat
    step = flat.size // 4
    return np.concatenate([flat[i * step: i * step + per_piece] for i in range(4)])


def _sample_from(read: ValueReader, count: int, width: int) -> np.ndarray:
    """:func:`_sample_values` of a tensor read by ``read`` (the same values, as unsigned integers)."""
    per_piece = LAYOUT_SAMPLE_BYTES // 4 // width
    if count <= 4 * per_piece:
        return read(0, count).copy()
    step = count // 4
    return np.concatenate([read(i * step, per_piece).copy() for i in range(4)])


def _prefers_planes(name: str, sample: np.ndarray) -> tuple[bool, dict[str, int]]:
    """Whether plain byte planes store ``sample`` smaller than the float layout by :data:`LAYOUT_MARGIN`, and the
    sample's stored bytes under each."""
    trial = {"float": _stored(_float_blocks(name, sample)),
             "planes": _stored([Block(f"{name}/plane{i}", pack(p, 1)) for i, p in enumerate(split_planes(sample))])}
    return trial["planes"] < (1 - LAYOUT_MARGIN) * trial["float"], trial


def _lossless_blocks(name: str, x: np.ndarray) -> tuple[str, list[Block], dict[str, int] | None]:
    """``(layout, blocks, sample sizes)``: ``float``, ``planes`` or ``whole``, whichever stores ``x`` smaller.

    Floats of 2+ bytes: the ``float`` layout against plain byte planes on a
    sample of :data:`LAYOUT_SAMPLE_BYTES` (the sample's stored bytes under
    each are returned; planes must win by :data:`LAYOUT_MARGIN`); the winner
    encodes the whole tensor. Below :data:`LAYOUT_TRIAL_MIN_BYTES` the
    float layout, untried. Other dtypes:
    both plain layouts up to :data:`BOTH_LAYOUTS_LIMIT` bytes, above it byte
    planes for floats and the whole buffer otherwise. Tensors under
    :data:`SMALL_LOSSLESS_BYTES` use one block (each block costs a table
    entry in the header); 8-bit floats one entropy-coded block.
    """
    def whole() -> list[Block]:
        data = x.reshape(-1).view(np.uint8)
        return [Block(f"{name}/bytes", pack_entropy(data) if is_float(x.dtype) else pack(data))]

    def planes(values: np.ndarray, level: int | None = None) -> list[Block]:
        return [Block(f"{name}/plane{i}", pack(plane, level)) for i, plane in enumerate(split_planes(values))]

    if x.dtype.itemsize == 1 or x.nbytes < SMALL_LOSSLESS_BYTES:
        return "whole", whole(), None
    if is_float(x.dtype) and x.nbytes < LAYOUT_TRIAL_MIN_BYTES:
        return "float", _float_blocks(name, x), None
    if is_float(x.dtype):
        by_planes, trial = _prefers_planes(name, _sample_values(x))
        return ("planes", planes(x), trial) if by_planes else ("float", _float_blocks(name, x), trial)
    if x.nbytes > BOTH_LAYOUTS_LIMIT:
        return "whole", whole(), None
    by_plane, by_whole = planes(x), whole()
    return ("planes", by_plane, None) if _stored(by_plane) < _stored(by_whole) else ("whole", by_whole, None)


def encode_lossless(name: str, x: np.ndarray, sha: str, note: str | None = None) -> EncodedTensor:
    """Byte planes or the whole buffer (whichever is smaller), packed by :func:`~qflow.compression._lossless.pack`; bit-exact."""
    layout, blocks, trial = _lossless_blocks(name, _little(x))
    return EncodedTensor(_lossless_record(_base_record(name, x, sha), layout, blocks, trial, note), blocks, x)


def encode_float_stream(name: str, dtype: np.dtype, shape: tuple[int, ...], read: ValueReader,
                        visit: Callable[[np.ndarray], None]) -> EncodedTensor | None:
    """:func:`encode_lossless` of a float tensor read a step at a time by ``read``, never whole in memory.

    The same blocks and record as :func:`encode_lossless` gives the tensor
    (``sha256`` left empty, ``reconstruction`` None), or None where that
    would not use the ``float`` layout (narrow or small tensors, or a sample
    that prefers plain byte planes): the caller then loads the tensor.
    ``visit`` receives each step's values (unsigned integers of the
    dtype's width, in order, once each) as they are encoded.
    """
    width, count = dtype.itemsize, math.prod(shape)
    if not is_float(dtype) or width == 1 or count * width < SMALL_LOSSLESS_BYTES:
        return None
    trial = None
    if count * width >= LAYOUT_TRIAL_MIN_BYTES:
        by_planes, trial = _prefers_planes(name, _sample_from(read, count, width))
        if by_planes:
            return None

    def visited(first: int, n: int) -> np.ndarray:
        values = read(first, n)
        visit(values)
        return values

    blocks = [Block(f"{name}/plane{i}", p) for i, p in enumerate(float_plane_packs_from(visited, count, width))]
    base = {"name": name, "dtype": dtype.name, "shape": list(shape), "sha256": "", "notes": []}
    return EncodedTensor(_lossless_record(base, "float", blocks, trial, None), blocks, None)  # type: ignore[arg-type]


def encode_quant(name: str, x: np.ndarray, sha: str, options: QuantOptions, reconstruct: bool = True) -> EncodedTensor:
    """Quantize ``x`` (float) per :class:`QuantOptions`; see the module docstring of :mod:`._quantize`.

    ``reconstruct=False`` skips the dequantized copy (``reconstruction`` is
    then None): the fast path when nothing downstream needs it before the
    container is read back.
    """
    original_dtype = x.dtype
    work = work_dtype(x.dtype)
    if x.dtype != work:  # bf16, fp16: quantized in float32
        x = x.astype(work)
    x2d = channel_matrix(x, options.per_channel)
    rows = x2d.shape[0]
    hi = np.zeros(rows, dtype=bool)
    if options.hi_rows is not None and len(options.hi_rows):
        hi[np.asarray(options.hi_rows, dtype=np.int64)] = True
    keep, threshold = (None, None)
    if options.sparsity > 0:
        keep, threshold = prune_mask(x2d, options.sparsity, options.channel_weight)
    recon2d = np.empty(x2d.shape, dtype=work) if reconstruct else None
    scales = np.zeros(rows, dtype=work)
    zero_points = np.zeros(rows, dtype=work)
    blocks: list[Block] = []
    counts: dict[str, int] = {}
    # many channels: scales go to a binary block, as float16 where that is exact enough (halves the block)
    compact = compact_params(x2d, np.where(hi, 2 * options.bits, options.bits), work) if rows > INLINE_SCALES else None
    real = None if compact is None else expand_params(*compact, work)
    for part, part_bits, selector in (("codes", options.bits, ~hi), ("codes_hi", 2 * options.bits, hi)):
        if not selector.any():
            continue
        sub = x2d if selector.all() else x2d[selector]
        params = None if real is None else (real[0][selector], real[1][selector])
        codes, s, z = quantize(sub, part_bits, params)
        scales[selector], zero_points[selector] = s, z
        sub_keep = None if keep is None else (keep if selector.all() else keep[selector])
        if recon2d is not None:
            values = dequantize(codes, s, z, work)
            if sub_keep is not None:
                values *= sub_keep
            if selector.all():
                recon2d = values
            else:
                recon2d[selector] = values
        if sub_keep is not None:
            codes = codes[sub_keep]
        counts[part] = int(codes.size)
        blocks.append(Block(f"{name}/{part}", pack(pack_codes(codes, part_bits))))
    record = {**_base_record(name, x, sha), "dtype": original_dtype.name}
    record["scheme"] = "quant"
    record["quant"] = {
        "bits": options.bits, "hi_bits": 2 * options.bits, "per_channel": rows > 1,
        "channels": rows, "hi_rows": np.flatnonzero(hi).tolist(), "counts": counts,
        "reconstruction": "zero_point[c] + code * scale[c]",
    }
    if rows <= INLINE_SCALES:
        record["quant"]["scales"], record["quant"]["zero_points"] = scales.tolist(), zero_points.tolist()
    else:  # many channels: binary block (scales then zero points, little endian) instead of JSON text
        both = np.concatenate([scales, zero_points]) if compact is None else np.concatenate(compact[:2])
        block = Block(f"{name}/scales", pack(both.astype(both.dtype.newbyteorder("<")).tobytes(), level=3))
        blocks.insert(0, block)
        record["quant"]["scales"] = record["quant"]["zero_points"] = f"block {block.name}"
        record["quant"]["scale_dtype"] = both.dtype.name
        if compact is not None:  # value = float16 * 2**-exponent
            record["quant"]["scale_exponents"] = list(compact[2])
    record["sparse"] = None
    if keep is not None:
        blocks.append(Block(f"{name}/mask", pack(np.packbits(keep.reshape(-1)).tobytes())))
        record["sparse"] = {"encoding": "bitmask (np.packbits, C order) of retained values", "retained": int(keep.sum()),
                            "total": int(keep.size), "threshold": threshold,
                            "weighted_by_sensitivity": options.channel_weight is not None}
    record["blocks"] = [b.name for b in blocks]
    reconstruction = None if recon2d is None else recon2d.reshape(x.shape).astype(original_dtype, copy=False)
    return EncodedTensor(record, blocks, reconstruction, {"recon2d": recon2d, "scales": scales,
                                                           "zero_points": zero_points, "keep": keep, "hi": hi})


def quant_parts(record: dict[str, Any], container: Container) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                                         np.ndarray | None]:
    """Decode a ``quant`` record to (recon2d, scales, zero_points, levels per row, keep-mask or None)."""
    q = record["quant"]
    name = record["name"]
    work = np.float64 if record["dtype"] == "float64" else np.float32
    rows = int(q["channels"])
    total = int(np.prod(record["shape"], dtype=np.int64))
    cols = total // rows if rows else 0
    if isinstance(q["scales"], str):
        stored = np.dtype(q.get("scale_dtype", np.dtype(work).name))  # absent before float16 scales: the work dtype
        if stored.name not in ("float16", "float32", "float64"):
            raise ValueError(f"unknown scale dtype {stored.name!r}")
        both = np.frombuffer(container.block(f"{name}/scales"), dtype=stored.newbyteorder("<"))
        if stored == np.float16:
            e_step, e_zero = (int(e) for e in q["scale_exponents"])
            scales, zero_points = expand_params(both[:rows], both[rows:], (e_step, e_zero), work)
        else:
            scales, zero_points = both[:rows].astype(work), both[rows:].astype(work)
    else:
        scales = np.asarray(q["scales"], dtype=work)
        zero_points = np.asarray(q["zero_points"], dtype=work)
    hi = np.zeros(rows, dtype=bool)
    hi[np.asarray(q["hi_rows"], dtype=np.int64)] = True
    keep = None
    if record.get("sparse"):
        bits = np.unpackbits(np.frombuffer(container.block(f"{name}/mask"), dtype=np.uint8), count=total)
        keep = bits.astype(bool).reshape(rows, cols)
    recon2d = np.empty((rows, cols), dtype=work)
    levels = np.where(hi, (1 << q["hi_bits"]) - 1, (1 << q["bits"]) - 1).astype(work)
    for part, part_bits, selector in (("codes", q["bits"], ~hi), ("codes_hi", q["hi_bits"], hi)):
        if not selector.any():
            continue
        n_rows = int(selector.sum())
        codes = unpack_codes(container.block(f"{name}/{part}"), part_bits, int(q["counts"][part]))
        if keep is not None:
            sub_keep = keep if selector.all() else keep[selector]
            full = np.zeros((n_rows, cols), dtype=codes.dtype)
            full[sub_keep] = codes
            codes = full
        else:
            codes = codes.reshape(n_rows, cols)
        values = dequantize(codes, scales[selector], zero_points[selector], work)
        if keep is not None:
            values *= sub_keep
        recon2d[selector] = values
    return recon2d, scales, zero_points, levels, keep


def decode_tensor(record: dict[str, Any], container: Container) -> np.ndarray:
    """The exact inverse of the recorded steps for one tensor (denoiser included when recorded)."""
    shape = tuple(record["shape"])
    dtype = numpy_dtype(record["dtype"])
    scheme = record["scheme"]
    if scheme == "lossless":
        names = record["lossless"]["blocks"]
        layout = record["lossless"].get("layout")
        count = int(np.prod(shape, dtype=np.int64))
        if layout == "float":
            out = np.empty(count, dtype=np.dtype(f"u{dtype.itemsize}"))
            readers = _plane_readers(container, names)
            for _ in join_float_chunks(readers, dtype, count, out):
                pass
            for reader in readers:
                reader.close()
            return out.view(dtype).reshape(shape)
        parts = [container.block(name) for name in names]
        if layout == "whole":
            return np.frombuffer(parts[0], dtype=dtype.newbyteorder("<"), count=count).reshape(shape).astype(dtype)
        return join_planes(parts, dtype, shape)
    if scheme == "quant":
        recon2d, scales, zero_points, levels, keep = quant_parts(record, container)
        if record.get("denoiser"):
            from qflow.compression._denoise import apply_denoiser

            weights = container.block(record["denoiser"]["block"])
            recon2d = apply_denoiser(weights, recon2d, scales, zero_points, levels, keep)
        return recon2d.reshape(shape).astype(dtype, copy=False)
    if scheme == "latent":
        return decode_latent(record, container).reshape(shape).astype(dtype, copy=False)
    raise ValueError(f"unknown scheme {scheme!r}")


def _plane_readers(container: Any, names: list[str]) -> list[PlaneReader]:
    """Streaming readers of blocks ``names``: the container's own (checked, a step at a time) when it has them,
    else readers over each block unpacked whole."""
    opener = getattr(container, "reader", None)
    if opener is not None:
        return [opener(name, CHUNK_BYTES, slot) for slot, name in enumerate(names)]
    readers = []
    for name in names:
        data = container.block(name)
        readers.append(PlaneReader("raw", data, len(memoryview(data)), 0))
    return readers


class _PackedBlocks:
    """Blocks just packed, readable like a container (unpacked whole, or streamed for the float layout)."""

    def __init__(self, blocks: list[Block]) -> None:
        self._packed: dict[str, Packed] = {b.name: b.packed for b in blocks}

    def block(self, name: str) -> bytes | memoryview:
        p = self._packed[name]
        return p.payload if p.codec == "raw" else unpack(p.codec, p.payload, p.raw_length)

    def reader(self, name: str, buffer_bytes: int, slot: int) -> PlaneReader:
        p = self._packed[name]
        return PlaneReader(p.codec, p.payload, p.raw_length, buffer_bytes, slot=slot)


def _same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical flat byte views, compared a step at a time (no tensor-sized boolean temporary)."""
    a, b = _little(a).reshape(-1).view(np.uint8), _little(b).reshape(-1).view(np.uint8)
    if a.size != b.size:
        return False
    return all(np.array_equal(a[i: i + CHUNK_BYTES], b[i: i + CHUNK_BYTES]) for i in range(0, a.size, CHUNK_BYTES))


def lossless_round_trip(record: dict[str, Any], blocks: list[Block], x: np.ndarray | ValueReader) -> bool:
    """Whether the lossless ``record`` and its packed ``blocks`` decode to ``x`` bit for bit.

    ``x``: the tensor, or (float layout only) a reader of its values. The
    float layout is decoded and compared a step at a time (memory: a few
    steps, not a second tensor); other layouts decode whole.
    """
    source = _PackedBlocks(blocks)
    if record["lossless"].get("layout") != "float":
        return _same_bytes(decode_tensor(record, source), x)  # type: ignore[arg-type]
    width = numpy_dtype(record["dtype"]).itemsize
    count = math.prod(record["shape"])
    if isinstance(x, np.ndarray):
        values = _little(x).reshape(-1).view(np.dtype(f"u{width}"))
        read: ValueReader = lambda lo, n: values[lo: lo + n]  # noqa: E731
    else:
        read = x
    readers = _plane_readers(source, record["lossless"]["blocks"])
    for first, chunk in join_float_chunks(readers, np.dtype(f"u{width}"), count):
        if not np.array_equal(chunk, read(first, chunk.size)):
            return False
    for reader in readers:
        reader.close()
    return True
