"""``compress_tensors`` / ``decompress_container``: the compression module's two entry points.

Compress, per tensor::

    lossless mode, integers, tiny or already-quantized floats -> byte planes + zstd (bit-exact)
    floats -> [dropout simulator: channel sensitivity -> high-precision rows, pruning weights]
           -> [magnitude pruning, bitmask] -> uniform 8/4-bit codes per channel -> zstd
           -> [denoiser trained on this tensor's pairs, kept only where it lowers the error]
           -> [VQC autoencoder vs PCA on the tensor's blocks; a latent encoding replaces the codes
               only where it beats PCA and the codes]
    -> one .qfz container (checksummed header and blocks); the container is then read back and
       decoded to measure the error and the decompress throughput honestly.

Decompress: verify every checksum, apply the exact inverse of the recorded
steps (plain path), then the optional HHL / QSVT / LSTM steps, each measured
against the plain path (error against a reference checkpoint when one is
given, else the self-check the step used to decide).
"""

from __future__ import annotations

import hashlib
import io
import math
import mmap
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from qflow.compression._checkpoint import (
    TORCH_SUFFIXES,
    Checkpoint,
    TensorRef,
    open_checkpoint,
    safetensors_from_buffer,
    torch_checkpoint,
)
from qflow.compression._codec import (
    EncodedTensor,
    QuantOptions,
    decode_tensor,
    encode_float_stream,
    encode_lossless,
    encode_quant,
    lossless_round_trip,
    original_sha256,
    should_store_losslessly,
)
from qflow.compression._container import VERSION, Block, ContainerWriter, read_container, tensor_nbytes
from qflow.compression._dtypes import is_float, numpy_dtype
from qflow.compression._lossless import CHUNK_BYTES, Packed, join_float_chunks, unpack
from qflow.compression._metrics import (
    ZSTD_STREAM_BYTES,
    ErrorSums,
    baseline_fp16,
    baseline_int8,
    baseline_zstd,
    error_sums,
    exact_sums,
)
from qflow.compression._quantize import channel_matrix, per_tensor_relative_error
from qflow.compression._schemas import (
    CompressConfig,
    DecompressConfig,
    as_arrays,
    check_finite_step,
    check_tensors,
    load_tensor_file,
)
from qflow.compression._stream import (
    ordered_map,
    pwrite_all,
    release_memory,
    safetensors_outputs,
    sized_files,
    tensor_offsets,
    write_index,
    write_safetensors_files,
)
from qflow.core.cluster import scheduler_address
from qflow.core.errors import InputError, QuantumUnavailableError
from qflow.core.io import Source, read_input
from qflow.core.limits import check_limit, max_workers
from qflow.core.plan import InputDigest, Plan, QuantumReport, SolverReport, StageTimer
from qflow.core.quantum import QuantumBudget, QuantumDevice
from qflow.core.skeleton import PlanRun, quantum_budget, quantum_step

__all__ = ["CompressRun", "DecompressRun", "compress_tensors", "decompress_container", "decompress_to_files",
           "decoded_tensors", "load_checkpoint_input", "load_container", "load_tensors_input", "plan_compress",
           "plan_decompress", "write_restored"]

Progress = Callable[[float, str], None]
#: Values of the largest tensor carried in the plan for the histogram (original and reconstructed).
PREVIEW_VALUES = 4000
#: Side of the error heatmap carried in the plan.
HEATMAP_SIDE = 48
#: Bytes of tensors the baselines (fp16 cast, zstd, int8) run on; a larger checkpoint uses a stated sample.
BASELINE_SAMPLE_BYTES = 64 << 20
#: Bytes hashed per read when digesting checkpoint files.
HASH_CHUNK = 4 << 20


@dataclass(frozen=True)
class CompressRun:
    """The plan and the container bytes (too large for the plan JSON); None when written to a sink."""

    plan: Plan
    container: bytes | None
    denoisers: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class DecompressRun:
    """The plan and the restored tensors ``{name: ndarray}`` (original names, shapes and dtypes)."""

    plan: Plan
    arrays: dict[str, np.ndarray]


def load_tensors_input(source: Source, name: str | None = None) -> tuple[dict[str, np.ndarray], InputDigest]:
    """Read a tensor file (path, bytes or upload) into memory ``{name: ndarray}``; see :func:`load_checkpoint_input`."""
    checkpoint, digest = load_checkpoint_input(source, name)
    if isinstance(checkpoint, Checkpoint):
        return check_tensors(checkpoint.arrays(), digest.source or "input"), digest
    return checkpoint, digest


def _hash_files(paths: list[Path]) -> str:
    """sha256 of the files' bytes, one after another (a single file: the sha256 of that file)."""
    h = hashlib.sha256()
    buffer = memoryview(bytearray(HASH_CHUNK))  # one buffer read into: no chunk-sized allocation per read
    for path in paths:
        with path.open("rb", buffering=0) as handle:
            while got := handle.readinto(buffer):
                h.update(buffer[:got])
    return h.hexdigest()


def load_checkpoint_input(source: Source, name: str | None = None) -> tuple[Checkpoint | dict[str, np.ndarray],
                                                                             InputDigest]:
    """A checkpoint for :func:`compress_tensors`: lazily read where the format allows, else in memory.

    A path to a ``.safetensors`` file, a sharded index or its folder, a
    ``.pt``/``.pth``/``.bin`` or an ``.npz`` is opened lazily with no size
    cap (:func:`qflow.compression._checkpoint.open_checkpoint`); its digest is
    the sha256 of its files (the index, then the shards). Uploaded bytes go
    through :func:`qflow.core.io.read_input` (and its size limit): a
    ``.safetensors`` upload is parsed here (every dtype), other formats by
    the shared loaders; ``.csv`` is a matrix.
    """
    if isinstance(source, str | Path) and not isinstance(source, bytes):
        path = Path(source)
        checkpoint = open_checkpoint(path)
        if checkpoint is not None:
            files = [path] if path.is_file() else []
            if checkpoint.layout["kind"] == "sharded":
                folder = path if path.is_dir() else path.parent
                files = [folder / checkpoint.layout["index_name"]] + [folder / f["name"] for f in checkpoint.layout["files"]]
            elif path.is_dir():
                files = [path / checkpoint.layout["files"][0]["name"]]
            digest = InputDigest(name="input", sha256=_hash_files(files), rows=len(checkpoint.tensors),
                                 source=name or checkpoint.source)
            return checkpoint, digest
    raw = read_input(source, name)
    if raw.suffix == ".safetensors":
        refs, entry = safetensors_from_buffer(raw.data, raw.name, raw.name)
        layout = {"kind": "safetensors", "files": [entry], "index": None, "index_name": None}
        return Checkpoint(raw.name, refs, layout), raw.digest("input", rows=len(refs))
    if raw.suffix in TORCH_SUFFIXES:  # bf16/fp8 tensors need the ml_dtypes view, not tensor.numpy()
        checkpoint = torch_checkpoint(io.BytesIO(raw.data), raw.name)
        return checkpoint, raw.digest("input", rows=len(checkpoint.tensors))
    arrays, raw = load_tensor_file(raw.data, raw.name)
    return arrays, raw.digest("input", rows=len(arrays))


def load_container(source: Source, name: str | None = None) -> tuple[Any, str, InputDigest]:
    """A container's bytes for :func:`decompress_container`: a read-only memory map for a path (no size cap),
    else the upload's bytes (size-limited); verification happens on decompression."""
    if isinstance(source, str | Path):
        path = Path(source)
        label = name or path.name
        if not path.is_file():
            raise InputError(label, "(file)", "file not found", "an existing file", str(path))
        if path.stat().st_size == 0:
            raise InputError(label, "(file)", "file is empty", "a non-empty file")
        with path.open("rb") as handle:
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        return data, label, InputDigest(name="input", sha256=_hash_files([path]), source=label)
    raw = read_input(source, name)
    return raw.data, raw.name, raw.digest("input")


def _requested_compress(config: CompressConfig) -> str:
    if config.lossless:
        return "lossless"
    parts = [f"quant{config.bits}"]
    parts += [name for name, on in (("prune", config.target_sparsity > 0), ("dropout", config.dropout_simulator),
                                    ("denoiser", config.denoiser), ("vqc", config.vqc_autoencoder)) if on]
    return "+".join(parts)


def _sensitivity_options(x2d: np.ndarray, config: CompressConfig, seed: int) -> tuple[QuantOptions, dict[str, Any]]:
    from qflow.compression._dropout import channel_sensitivity

    sens = channel_sensitivity(x2d, config.dropout_trials, seed)
    n_hi = int(np.ceil(config.sensitive_fraction * x2d.shape[0])) if config.sensitive_fraction > 0 else 0
    order = np.argsort(-sens, kind="stable")
    hi_rows = np.sort(order[:n_hi])
    positive = np.clip(sens, 0, None)
    mean = positive.mean()
    weight = np.sqrt(positive / mean) + 0.1 if mean > 0 else None
    info = {"channels": int(x2d.shape[0]), "trials": config.dropout_trials, "high_precision_rows": hi_rows.tolist(),
            "sensitivity": [round(float(s), 6) for s in sens[:256]],
            "least_sensitive": order[::-1][:8].tolist(), "most_sensitive": order[:8].tolist()}
    options = QuantOptions(config.bits, config.per_channel, config.target_sparsity, hi_rows,
                           weight if config.target_sparsity > 0 else None)
    return options, info


def _granularity(x: np.ndarray, config: CompressConfig) -> tuple[bool, dict[str, Any]]:
    """Per channel or per tensor for float tensor ``x``: per tensor where one scale keeps the error in budget.

    Returns ``per_channel`` and the record of the choice (kept in the tensor's
    header record and the plan): ``chosen``, ``reason`` and, when measured,
    ``per_tensor_relative_error`` (quantization only; pruning adds its own),
    ``measured`` (exact or a sample estimate) and ``budget``.
    """
    def chosen(per_channel: bool, reason: str, **extra: Any) -> tuple[bool, dict[str, Any]]:
        return per_channel, {"chosen": "per channel" if per_channel else "per tensor", "reason": reason, **extra}

    if not config.per_channel:
        return chosen(False, "per_channel off")
    if x.ndim < 2 or x.shape[0] <= 1:
        return chosen(False, "a single channel")
    if config.dropout_simulator:
        return chosen(True, "the dropout simulator ranks channels")
    if config.max_relative_error <= 0:
        return chosen(True, "max_relative_error 0: per channel as set")
    budget = config.max_relative_error
    error, how = per_tensor_relative_error(x, config.bits, stop_above=budget)
    # 6 significant digits: the sum's last bits vary with memory alignment, and the header must not
    error = float(f"{error:.6g}")
    figures = {"per_tensor_relative_error": error, "measured": how, "budget": budget}
    if error <= budget:
        return chosen(False, "one scale for the tensor keeps the error within max_relative_error", **figures)
    return chosen(True, "one scale for the tensor would exceed max_relative_error", **figures)


def _granularity_columns(record: dict[str, Any]) -> dict[str, Any]:
    """The plan's flat per-tensor columns of the granularity choice (None for tensors that were not quantized)."""
    choice = record.get("quant", {}).get("granularity") or {}
    return {"granularity": choice.get("chosen"), "granularity_reason": choice.get("reason"),
            "per_tensor_relative_error": choice.get("per_tensor_relative_error"),
            "max_relative_error": choice.get("budget")}


def _denoise(name: str, x: np.ndarray, enc: EncodedTensor, config: CompressConfig, seed: int,
             per_channel: bool, loaded: Mapping[str, bytes] | None = None) -> tuple[dict[str, Any], bytes | None]:
    """Train the denoiser on this tensor (or take it from a loaded model); keep it (block + record) only when it lowers the error.

    Returns the record and the weights (None when the tensor is too large).
    """
    from qflow.compression._denoise import MAX_DENOISE_VALUES, apply_denoiser, train_denoiser
    from qflow.compression._lossless import pack

    if x.size > MAX_DENOISE_VALUES:
        return {"tensor": name, "used": False, "reason": f"over {MAX_DENOISE_VALUES} values"}, None
    ex = enc.extras
    levels = np.where(ex["hi"], (1 << (2 * config.bits)) - 1, (1 << config.bits) - 1).astype(ex["recon2d"].dtype)
    x2d = channel_matrix(x, per_channel)
    if loaded is not None and name in loaded:
        weights = loaded[name]
        denoised = apply_denoiser(weights, ex["recon2d"], ex["scales"], ex["zero_points"], levels, ex["keep"])
        fit: dict[str, Any] = {"trained": "no, loaded"}
    else:
        weights, denoised, losses = train_denoiser(x2d, ex["recon2d"], ex["scales"], ex["zero_points"], levels,
                                                   ex["keep"], config.denoiser_steps, seed)
        fit = {"steps": config.denoiser_steps, "loss_first": losses[0], "loss_last": losses[-1]}
        if loaded is not None:
            fit["trained"] = "yes: the loaded model has no denoiser for this tensor"
    before = error_sums(x2d, ex["recon2d"]).figures()["relative_l2_error"]
    after = error_sums(x2d, denoised).figures()["relative_l2_error"]
    info = {"tensor": name, "relative_l2_before": before, "relative_l2_after": after, **fit, "used": bool(after < before)}
    if after < before:
        block = Block(f"{name}/denoiser", pack(weights, level=3))
        enc.blocks.append(block)
        enc.record["blocks"].append(block.name)
        enc.record["denoiser"] = {"block": block.name, "arch": "residual conv1d k5 x16, 0.5 tanh output (steps)",
                                  "relative_l2_before": before, "relative_l2_after": after}
        enc.reconstruction = denoised.reshape(x.shape).astype(x.dtype, copy=False)
    else:
        info["reason"] = "did not lower the error on this tensor"
    return info, weights


def _preview_points(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices of the previewed values, and the heatmap's rows and columns (of :func:`channel_matrix`
    with ``per_channel``)."""
    size = math.prod(shape)
    rows_total = shape[0] if len(shape) >= 2 and shape[0] > 0 else 1
    cols_total = size // rows_total
    idx = np.linspace(0, size - 1, min(PREVIEW_VALUES, size)).astype(np.int64)
    rows = np.linspace(0, rows_total - 1, min(HEATMAP_SIDE, rows_total)).astype(np.int64)
    cols = np.linspace(0, cols_total - 1, min(HEATMAP_SIDE, cols_total)).astype(np.int64)
    return idx, rows, cols


def _preview(arrays: Mapping[str, np.ndarray], restored: Mapping[str, np.ndarray]) -> dict[str, Any] | None:
    """Values and an error map of the largest float tensor, for the page's histogram and heatmap."""
    floats = [n for n, a in arrays.items() if is_float(a.dtype) and a.size]  # bf16 and float8 too
    if not floats:
        return None
    name = max(floats, key=lambda n: arrays[n].size)
    x, y = arrays[name].reshape(-1), restored[name].reshape(-1)
    idx, rows, cols = _preview_points(arrays[name].shape)
    # the heatmap's points only: a float64 copy of the whole tensor would be 4-8x its size
    x2d = channel_matrix(arrays[name], True)[np.ix_(rows, cols)].astype(np.float64)
    y2d = channel_matrix(restored[name], True)[np.ix_(rows, cols)].astype(np.float64)
    err = np.abs(y2d - x2d)
    return {"tensor": name, "original": x[idx].astype(float).tolist(), "reconstructed": y[idx].astype(float).tolist(),
            "error_map": err.tolist(), "error_map_rows": rows.tolist(), "error_map_cols": cols.tolist()}


def _exact_preview(ref: TensorRef, read: Callable[[int, int], np.ndarray]) -> dict[str, Any]:
    """:func:`_preview` of a bit-exact restore of ``ref``, its values read one at a time from its file."""
    idx, rows, cols = _preview_points(ref.shape)
    dtype = numpy_dtype(ref.dtype)
    values = [float(read(int(i), 1).view(dtype)[0]) for i in idx]
    return {"tensor": ref.name, "original": values, "reconstructed": list(values),
            "error_map": np.zeros((rows.size, cols.size)).tolist(), "error_map_rows": rows.tolist(),
            "error_map_cols": cols.tolist()}


@dataclass
class _Encoded:
    """One tensor after encoding and the read-back check (the values themselves are not kept)."""

    enc: EncodedTensor
    row: dict[str, Any]
    sums: ErrorSums
    seconds: dict[str, float]
    cpu: dict[str, float] = field(default_factory=dict)
    dropout: dict[str, Any] | None = None
    denoise: dict[str, Any] | None = None
    latent: dict[str, Any] | None = None
    latent_error: str | None = None
    preview: dict[str, Any] | None = None
    denoiser_weights: bytes | None = None


class _MemoryBlocks:
    """The blocks of encoded tensors, readable like a container (for the read-back check before writing)."""

    def __init__(self, blocks: list[Block]) -> None:
        self._blocks = {b.name: b.packed for b in blocks}

    def block(self, name: str) -> bytes | memoryview:
        packed = self._blocks[name]
        if packed.codec == "raw":
            return packed.payload  # read only: no copy of a tensor-sized plane
        return unpack(packed.codec, packed.payload, packed.raw_length)


def _tensor_refs(tensors: Any, source: str) -> tuple[list[TensorRef], dict[str, Any] | None]:
    """The tensors to compress as lazy references, and the checkpoint layout (None for in-memory tensors)."""
    if isinstance(tensors, Checkpoint):
        if not tensors.tensors:
            raise InputError(source, "(file)", "no tensors", "at least one tensor")
        return tensors.tensors, tensors.layout
    arrays = check_tensors(as_arrays(tensors), source)
    return [TensorRef(name, a.dtype.name, tuple(a.shape), "", lambda a=a: a) for name, a in arrays.items()], None


@dataclass(frozen=True)
class _Context:
    """What every tensor's encoding shares (read-only in the workers)."""

    config: CompressConfig
    quantum: tuple[Any, Any, QuantumReport] | None
    source: str
    preview_tensor: str | None
    denoisers: Mapping[str, bytes] | None = None  # from a loaded model: tensor name -> denoiser weights


def _encode_steps(name: str, x: np.ndarray, i: int, ctx: _Context, timer: StageTimer, out: _Encoded) -> EncodedTensor:
    """Quantization and the optional learned/quantum steps of one float tensor."""
    config = ctx.config
    seed = (config.seed * 1_000_003 + i) % 2**32
    with timer.stage("compress"):
        per_channel, granularity = _granularity(x, config)
        x2d = channel_matrix(x, per_channel)
        options = QuantOptions(config.bits, per_channel, config.target_sparsity)
    if config.dropout_simulator and x2d.shape[0] >= 4:
        with timer.stage("dropout_simulator"):
            options, info = _sensitivity_options(x2d, config, seed)
            out.dropout = {"tensor": name, **info}
    with timer.stage("compress"):
        enc = encode_quant(name, x, "", options, reconstruct=config.denoiser or ctx.quantum is not None)
        enc.record["quant"]["granularity"] = granularity
    if config.denoiser:
        with timer.stage("denoiser"):
            out.denoise, out.denoiser_weights = _denoise(name, x, enc, config, seed, per_channel, ctx.denoisers)
    if ctx.quantum is not None:
        from qflow.compression._quantum import autoencoder_candidate

        with timer.stage("vqc_autoencoder"):
            try:
                info, latent = autoencoder_candidate(name, x, enc, config, ctx.quantum, seed)
                out.latent = info
                if latent is not None:
                    enc = latent
            except QuantumUnavailableError as exc:
                out.latent_error = f"{name}: {exc}"
    return enc


def _encode_one(item: tuple[int, TensorRef], ctx: _Context) -> _Encoded:
    """Load, check, encode, then decode the blocks again and measure: one tensor, start to end, in a worker."""
    i, ref = item
    streamed = _encode_streamed(ref, ctx)
    if streamed is not None:
        return streamed
    timer = StageTimer()
    cpu = time.thread_time()
    with timer.stage("compress"):
        x = ref.load()
        check_tensors({ref.name: x}, ctx.source)
        sha = original_sha256(x)
        reason = "lossless mode" if ctx.config.lossless else should_store_losslessly(x)
    out = _Encoded(None, {}, ErrorSums(), {})  # type: ignore[arg-type]
    if reason is not None:
        with timer.stage("compress"):
            enc = encode_lossless(ref.name, x, "", reason if not ctx.config.lossless else None)
    else:
        enc = _encode_steps(ref.name, x, i, ctx, timer, out)
    enc.record["sha256"] = sha
    if reason is None and ctx.config.error_probe and enc.record["scheme"] == "quant":
        from qflow.compression._probe import attach_probe

        attach_probe(enc, x, ctx.config.error_probe)
    out.cpu["encode"] = time.thread_time() - cpu  # the blocks' checksums were computed as they were packed
    cpu = time.thread_time()
    with timer.stage("decompress"):
        exact = enc.record["scheme"] == "lossless"
        if exact and not lossless_round_trip(enc.record, enc.blocks, x):  # compared a step at a time
            raise RuntimeError(f"lossless round trip of {ref.name} is not bit-exact")  # a bug, never input
        restored = x if exact else decode_tensor(enc.record, _MemoryBlocks(enc.blocks))
    out.cpu["decode"] = time.thread_time() - cpu
    with timer.stage("evaluate"):
        out.sums = exact_sums(x) if exact else error_sums(x, restored)
        if ref.name == ctx.preview_tensor:
            out.preview = _preview({ref.name: x}, {ref.name: restored})
    _finish_encoded(out, ref, enc, timer)
    return out


def _finish_encoded(out: _Encoded, ref: TensorRef, enc: EncodedTensor, timer: StageTimer) -> None:
    """Fill ``out`` with ``enc`` (its values dropped) and the tensor's row of the plan."""
    if ref.file:
        enc.record["file"] = ref.file
    stored = sum(len(b.packed.payload) for b in enc.blocks)
    rec = enc.record
    out.enc, out.seconds = enc, timer.timings_s
    nbytes = tensor_nbytes(rec)
    out.row = {"name": ref.name, "shape": list(rec["shape"]), "dtype": rec["dtype"], "scheme": rec["scheme"],
               "bits": rec.get("quant", {}).get("bits"), **_granularity_columns(rec), "original_bytes": nbytes,
               "stored_bytes": stored, "compression_ratio": nbytes / max(stored, 1), **out.sums.figures(),
               "notes": rec["notes"]}
    if rec["scheme"] == "lossless":
        out.row["layout"] = rec["lossless"]["layout"]
    enc.extras = {}
    enc.reconstruction = None  # type: ignore[assignment]


def _encode_streamed(ref: TensorRef, ctx: _Context) -> _Encoded | None:
    """Lossless mode, a float tensor lying as is in a file: checked, hashed, encoded and read back a step at a
    time from the file, so memory holds its stored planes and a few step buffers, never the tensor. None where
    this does not apply (no file span, a layout other than ``float``): the caller loads the tensor."""
    if not ctx.config.lossless or ref.span is None:
        return None
    dtype, timer, cpu = numpy_dtype(ref.dtype), StageTimer(), time.thread_time()
    sha, sums, position = hashlib.sha256(), [ErrorSums(0.0, 0.0, 0.0, 0.0, 0.0)], [0]
    measuring = [0.0, 0.0]  # wall and CPU seconds of the sums: measurement, timed apart as the loaded path does

    def visit(values: np.ndarray) -> None:  # each step once, in order
        check_finite_step(values.view(dtype), position[0], ref.shape, ref.name, ctx.source)
        sha.update(values)
        wall, start = time.perf_counter(), time.thread_time()
        sums[0] = sums[0] + exact_sums(values.view(dtype))
        measuring[0] += time.perf_counter() - wall
        measuring[1] += time.thread_time() - start
        position[0] += values.size

    with timer.stage("compress"), ref.values() as read:  # type: ignore[union-attr]
        enc = encode_float_stream(ref.name, dtype, ref.shape, read, visit)
    if enc is None:
        return None
    enc.record["sha256"] = sha.hexdigest()
    timer.timings_s["compress"] = round(timer.timings_s["compress"] - measuring[0], 6)
    timer.timings_s["evaluate"] = round(measuring[0], 6)
    out = _Encoded(enc, {}, sums[0], {}, {"encode": time.thread_time() - cpu - measuring[1]})
    cpu = time.thread_time()
    with timer.stage("decompress"), ref.values() as read:  # type: ignore[union-attr]
        if not lossless_round_trip(enc.record, enc.blocks, read):
            raise RuntimeError(f"lossless round trip of {ref.name} is not bit-exact")  # a bug, never input
    out.cpu["decode"] = time.thread_time() - cpu
    if ref.name == ctx.preview_tensor:
        with timer.stage("evaluate"), ref.values() as read:  # type: ignore[union-attr]
            out.preview = _exact_preview(ref, read)
    _finish_encoded(out, ref, enc, timer)
    return out


def _workers(config: CompressConfig | DecompressConfig, learned: bool) -> int:
    """Worker threads: ``n_workers`` (0 = every core) capped by :func:`qflow.core.limits.max_workers`; 1 with
    learned or quantum steps (torch and PennyLane training keep their own threads and seeds)."""
    return 1 if learned else max_workers(config.n_workers or None)


def _baseline_sample(refs: list[TensorRef]) -> tuple[list[TensorRef], dict[str, Any]]:
    """Tensors the baselines run on: all up to :data:`BASELINE_SAMPLE_BYTES`, else every k-th one within it."""
    total = sum(r.nbytes for r in refs)
    if total <= BASELINE_SAMPLE_BYTES:
        return refs, {"tensors": len(refs), "of": len(refs), "bytes": total, "rule": "every tensor"}
    step = math.ceil(total / BASELINE_SAMPLE_BYTES)
    picked, size = [], 0
    for ref in refs[::step]:
        if size + ref.nbytes <= BASELINE_SAMPLE_BYTES:
            picked.append(ref)
            size += ref.nbytes
    rule = (f"every {step}th tensor, skipping any that would pass {BASELINE_SAMPLE_BYTES >> 20} MiB in all "
            "(the baselines then cover that sample only)")
    return picked, {"tensors": len(picked), "of": len(refs), "bytes": size, "rule": rule}


class _FileTensor:
    """A tensor left in its file, for the baselines: ``dtype``, ``shape``, ``size``, ``nbytes``, and its values
    read a step at a time by :meth:`steps` (a large sampled tensor is then never loaded whole)."""

    def __init__(self, ref: TensorRef) -> None:
        self._ref = ref
        self.dtype, self.shape = numpy_dtype(ref.dtype), ref.shape
        self.size, self.nbytes = math.prod(ref.shape), ref.nbytes

    def steps(self, n: int) -> Iterator[np.ndarray]:
        """The values, flat, ``n`` at a time (each valid until the next)."""
        with self._ref.values() as read:  # type: ignore[union-attr]
            for first in range(0, self.size, n):
                yield read(first, min(n, self.size - first)).view(self.dtype)


def _baselines(refs: list[TensorRef], rows: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    sample, info = _baseline_sample(refs)
    arrays = {r.name: _FileTensor(r) if r.span is not None and r.nbytes > ZSTD_STREAM_BYTES else r.load()
              for r in sample}
    baselines, per_tensor = {}, {}
    for key, func in (("fp16_cast", baseline_fp16), ("zstd_raw", baseline_zstd), ("int8_plain", baseline_int8)):
        baselines[key], per = func(arrays)
        for name, figures in per.items():
            per_tensor.setdefault(name, {})[key] = figures
    for row in rows:
        row["baselines"] = per_tensor.get(row["name"])
    return baselines, info


def _compress_steps(config: CompressConfig, encoded: list[_Encoded]) -> list[dict[str, str]]:
    if config.lossless:
        return [{"step": "lossless", "detail": "floats: exponent split from sign and mantissa and entropy-coded "
                 "(plain byte planes where a sample says they store smaller); others byte planes + zstd"}]
    steps = []
    if config.dropout_simulator:
        steps.append({"step": "dropout_simulator", "detail": "sensitive channels at twice the bits"})
    if config.target_sparsity > 0:
        steps.append({"step": "prune", "detail": f"magnitude pruning to {config.target_sparsity:g} sparsity"})
    granularity = "per tensor"
    if config.per_channel:
        granularity = ("per channel" if config.max_relative_error <= 0 or config.dropout_simulator else
                       f"per tensor where that keeps the relative error <= {config.max_relative_error:g}, "
                       "else per channel")
    steps.append({"step": "quantize", "detail": f"uniform {config.bits}-bit, {granularity}"})
    steps.append({"step": "zstd", "detail": "codes packed with zstd (level by a quick trial)"})
    if any(e.denoise and e.denoise["used"] for e in encoded):
        steps.append({"step": "denoiser", "detail": "residual conv net applied on decompression"})
    kinds = {e.enc.record["latent"].get("kind", "pca") for e in encoded if e.enc.record["scheme"] == "latent"}
    if kinds:
        steps.append({"step": "latent", "detail": " and ".join(
            {"pca": "PCA latents", "vqc": "pruned VQC latents"}[k] for k in sorted(kinds)) + " for some tensors"})
    return steps


def _ran_compress(config: CompressConfig, encoded: list[_Encoded], solver: SolverReport) -> None:
    """Make ``solver.ran`` name only the steps whose result is in the container; the others become fallbacks
    with their reason and measured effect."""
    if config.lossless:
        return
    if config.denoiser and not any(e.denoise and e.denoise["used"] for e in encoded):
        tried = [e.denoise for e in encoded if e.denoise]
        effect = "; ".join(f"{d['tensor']}: {d.get('relative_l2_before', 0):.4g} -> {d.get('relative_l2_after', 0):.4g}"
                           for d in tried[:4] if "relative_l2_before" in d)
        solver.fall_back("denoiser", _without(solver.ran, "denoiser"), "denoiser kept on no tensor: it did not lower "
                         "the relative L2 error" + (f" ({effect})" if effect else ""))
    if not config.vqc_autoencoder or "vqc" not in solver.ran.split("+"):
        return
    if any(e.enc.record["scheme"] == "latent" and e.enc.record["latent"].get("kind") == "vqc" for e in encoded):
        return  # a pruned VQC latent is in the container
    infos = [e.latent for e in encoded if e.latent]
    won = [i for i in infos if i.get("winner") == "vqc"]
    effect = "; ".join(f"{i['tensor']}: held-out error VQC {i['vqc_relative_error']:.4g} vs PCA "
                       f"{i['pca_relative_error']:.4g}" for i in infos[:4] if "vqc_relative_error" in i)
    pca_used = any(e.enc.record["scheme"] == "latent" and e.enc.record["latent"].get("kind", "pca") == "pca"
                   for e in encoded)
    to = _without(solver.ran, "vqc") + ("+pca_latent" if pca_used else "")
    if pca_used:
        reason = "no VQC latent stored: PCA won on held-out blocks and its latent replaced the codes"
    elif won:
        reason = "no VQC latent stored: the VQC beat PCA on held-out blocks but its latent is not smaller than the codes"
    else:
        reason = "no latent stored: " + (infos[0].get("reason", "") if infos else "no tensor eligible")
    solver.fall_back("vqc", to, reason + (f" ({effect})" if effect else ""))


def _vqc_device(config: CompressConfig, solver: SolverReport) -> tuple[Any, Any, QuantumReport] | None:
    """Device, budget and report of the VQC autoencoder, or None (off, lossless, or unavailable: a fallback)."""
    if not config.vqc_autoencoder or config.lossless:
        return None
    return quantum_step(solver, lambda device, budget: (device, budget, QuantumReport(
        device=device.name, device_reason=device.reason, layers=config.vqc_layers)), quantum_budget(config),
        fallback_from="vqc", fallback_to=_without(solver.ran, "vqc"))


#: Freed tensor bytes after which the heap is handed back to the OS during compress.
_TRIM_BYTES = 64 * 2**20


def _encode_all(refs: list[TensorRef], ctx: _Context, workers: int, writer: ContainerWriter, timer: StageTimer,
                solver: SolverReport, report: Progress, outs: Iterator[_Encoded] | None = None) -> list[_Encoded]:
    """Encode every tensor on ``workers`` threads (or take them from ``outs``, the cluster's) and write its blocks
    as it finishes, in order."""
    encoded: list[_Encoded] = []
    done_bytes, total_bytes, untrimmed = 0, sum(r.nbytes for r in refs) or 1, 0
    if outs is None:
        outs = ordered_map(lambda item: _encode_one(item, ctx), enumerate(refs), workers)
    for out in outs:
        for block in out.enc.blocks:
            writer.add(block)
        out.enc.blocks = [Block(b.name, Packed(b.packed.codec, b"", b.packed.raw_length, b.packed.level))
                          for b in out.enc.blocks]  # written: drop the payloads, keep what the plan reports
        untrimmed += out.row["original_bytes"]
        # Trimming after every small tensor costs more than it returns (the next one pages its buffers in again).
        if untrimmed >= _TRIM_BYTES:
            release_memory()
            untrimmed = 0
        for stage, seconds in out.seconds.items():
            timer.timings_s[stage] = round(timer.timings_s.get(stage, 0.0) + seconds, 6)
        if out.latent_error and "vqc" in solver.ran.split("+"):
            solver.fall_back("vqc", _without(solver.ran, "vqc"), out.latent_error)
        encoded.append(out)
        done_bytes += out.row["original_bytes"]
        report(0.85 * done_bytes / total_bytes, f"compressed {out.row['name']} {tuple(out.row['shape'])}")
    return encoded


def compress_tensors(
    tensors: Any,
    config: CompressConfig | Mapping[str, Any] | None = None,
    *,
    source: str = "tensors",
    digests: list[InputDigest] | None = None,
    progress: Progress | None = None,
    sink: BinaryIO | None = None,
    model: Any = None,
) -> CompressRun:
    """Compress named tensors into one ``.qfz`` container and measure it.

    Parameters
    ----------
    tensors : Checkpoint, ndarray, torch tensor or mapping of name -> array
        A lazily read checkpoint (:func:`load_checkpoint_input`) or numeric
        tensors of any shape and dtype (bf16 and float8 as ``ml_dtypes`` arrays).
    config : CompressConfig or mapping
    source : str
        Name used in error messages.
    digests : list of InputDigest, optional
        The input files' digests.
    progress : callable(fraction, message), optional
    sink : binary file, optional
        Where the container is written as tensors are encoded (seekable);
        without it the container's bytes are returned in ``CompressRun.container``.

    Returns
    -------
    CompressRun
        ``plan.metrics``: ``compression_ratio`` (original / container bytes),
        ``relative_l2_error``, ``max_abs_error``, ``snr_db``,
        ``cosine_similarity`` (all tensors together), ``compress_mb_per_s``
        (wall time of the whole run), ``compress_core_mb_per_s`` and
        ``decompress_mb_per_s`` (per core: bytes over the CPU time the worker
        threads spent encoding / decoding, so a busy machine does not skew them);
        ``plan.result["tensors"]`` has them per tensor; ``plan.baselines``:
        ``fp16_cast``, ``zstd_raw``, ``int8_plain`` (on ``result["baseline_sample"]``). With a Dask
        scheduler (``dask_scheduler`` or ``QFLOW_DASK_SCHEDULER``) and a checkpoint opened from a path,
        its shards are encoded on the cluster (:mod:`qflow.compression._distributed`), the container is
        the same bytes, and ``result["cluster"]`` names the worker of each task.
    """
    run = PlanRun.start("compress", config, CompressConfig, requested=_requested_compress, progress=progress)
    config = run.config
    refs, layout = _tensor_refs(tensors, source)
    wall = time.perf_counter()
    quantum = _vqc_device(config, run.solver)
    ctx = _Context(config, quantum, source, _largest_float(refs), _loaded_denoisers(model))
    learned = not config.lossless and (config.denoiser or config.dropout_simulator or quantum is not None)
    workers = _workers(config, learned)
    buffer = io.BytesIO() if sink is None else None
    writer = ContainerWriter(sink if sink is not None else buffer)
    cluster: dict[str, Any] = {}
    outs = _cluster_outs(tensors, refs, ctx, config, source, run.solver, cluster)
    encoded = _encode_all(refs, ctx, workers, writer, run.timer, run.solver, run.progress, outs)
    _ran_compress(config, encoded, run.solver)
    with run.stage("compress", 0.87, "writing the container header"):
        steps = _compress_steps(config, encoded)
        container_bytes = writer.finish(_container_header(config, steps, encoded, layout))
    wall = time.perf_counter() - wall
    rows = [e.row for e in encoded]
    with run.stage("baselines", 0.9, "measuring baselines"):
        release_memory()  # the last tensors' freed planes, before the sample is loaded on top of them
        run.baselines, sample_info = _baselines(refs, rows)
    if quantum is not None:
        run.solver.quantum = quantum[2]
    container = buffer.getvalue() if buffer is not None else None
    run.digests = digests or [_digest_records(encoded, source)]
    run.diagnostics.extend(_compress_diagnostics(config, rows))
    metrics = _compress_metrics(encoded, workers, wall, container_bytes)
    result = _compress_result(config, encoded, steps, layout, container_bytes, container, sample_info, metrics)
    if cluster:
        result["cluster"] = cluster
        metrics["workers"] = len(cluster["workers"])
    plan = run.finish(result, metrics)
    if model is not None:
        _record_loaded_denoiser(plan, model, config)
    return CompressRun(plan, container, {e.row["name"]: e.denoiser_weights for e in encoded if e.denoiser_weights is not None})


def _loaded_denoisers(model: Any) -> Any:
    """The per-tensor denoisers of a ``qflow train denoiser`` model, or ``None`` without one."""
    if model is None:
        return None
    from qflow.compression._train import loaded_denoisers

    return loaded_denoisers(model)


def _container_header(config: CompressConfig, steps: list[dict[str, str]], encoded: list[_Encoded],
                      layout: dict[str, Any] | None) -> dict[str, Any]:
    """The container's JSON header: config, steps, tensor records and the original layout."""
    # where the work ran is not part of the encoding: a cluster's container is the same bytes as a local one's
    header = {"config": config.model_dump(exclude={"dask_scheduler"}), "steps": steps,
              "tensors": [e.enc.record for e in encoded]}
    if layout is not None:
        header["layout"] = layout
    return header


def _record_loaded_denoiser(plan: Plan, model: Any, config: CompressConfig) -> None:
    """Say in the plan which denoiser model was given and whether it was used."""
    if not config.denoiser:
        plan.diagnostics.append(f"model {model.source} given but the denoiser is off: it was checked and not used")
        return
    rows = plan.result.get("denoiser") or []
    loaded = sum(1 for r in rows if r.get("trained") == "no, loaded")
    plan.result["trained_model"] = {**model.describe(), "component": "per-tensor denoisers", "used": loaded > 0,
                                    "tensors_loaded": loaded, "tensors_trained_here": sum(1 for r in rows if "steps" in r)}
    plan.diagnostics.append(f"denoiser: trained: no, loaded from {model.source} (card sha256 {model.card_sha256[:12]}) for {loaded} "
                            f"of {len(rows)} tensors")


def _cluster_outs(tensors: Any, refs: list[TensorRef], ctx: _Context, config: CompressConfig, source: str,
                  solver: SolverReport, cluster: dict[str, Any]) -> Iterator[_Encoded] | None:
    """The cluster's encoded tensors when a Dask scheduler is set and the input allows it (else None, and the
    reason as a fallback); ``cluster`` receives ``result.cluster`` once they are all consumed."""
    address = scheduler_address(config.dask_scheduler, source)
    if address is None:
        return None
    from qflow.compression._distributed import cluster_encoded, cluster_unsupported

    reason = cluster_unsupported(tensors, ctx.quantum is not None)
    if reason is not None:
        solver.fall_back("dask", "threads", reason)
        return None
    return cluster_encoded(address, tensors, refs, ctx, source, cluster)


def _largest_float(refs: list[TensorRef]) -> str | None:
    """The float tensor with the most values (its histogram goes in the plan), or None."""
    floats = [r for r in refs if is_float(numpy_dtype(r.dtype)) and math.prod(r.shape)]
    return max(floats, key=lambda r: math.prod(r.shape)).name if floats else None


def _compress_metrics(encoded: list[_Encoded], workers: int, wall: float, container_bytes: int) -> dict[str, Any]:
    """Ratio, error figures of all tensors together and throughputs (wall, and per core from the workers' CPU seconds)."""
    rows = [e.row for e in encoded]
    original_bytes = sum(r["original_bytes"] for r in rows)
    total = ErrorSums()
    for e in encoded:
        total = total + e.sums
    encode_s = sum(e.cpu.get("encode", 0.0) for e in encoded)  # CPU seconds of the workers' threads
    decode_s = sum(e.cpu.get("decode", 0.0) for e in encoded)
    mb = original_bytes / 2**20
    return {
        "compression_ratio": original_bytes / container_bytes,
        **total.figures(),
        "original_bytes": original_bytes,
        "container_bytes": container_bytes,
        "tensors": len(rows),
        "workers": workers,
        "compress_mb_per_s": round(mb / wall, 3) if wall > 0 else None,
        "compress_core_mb_per_s": round(mb / encode_s, 3) if encode_s > 0 else None,
        "decompress_mb_per_s": round(mb / decode_s, 3) if decode_s > 0 else None,
    }


def _compress_diagnostics(config: CompressConfig, rows: list[dict[str, Any]]) -> list[str]:
    """The tensors' notes (first 20), led by the lossy steps lossless mode skipped."""
    diagnostics = [f"{r['name']}: {note}" for r in rows for note in r["notes"]][:20]
    if config.lossless:
        skipped = [name for name, on in (("vqc_autoencoder", config.vqc_autoencoder), ("denoiser", config.denoiser),
                                         ("dropout_simulator", config.dropout_simulator),
                                         ("target_sparsity", config.target_sparsity > 0)) if on]
        if skipped:
            diagnostics.insert(0, "lossless mode is bit-exact: lossy steps skipped (" + ", ".join(skipped) + ")")
    return diagnostics


def _compress_result(config: CompressConfig, encoded: list[_Encoded], steps: list[dict[str, str]],
                     layout: dict[str, Any] | None, container_bytes: int, container: bytes | None,
                     sample_info: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """The container's identity, the steps, per-tensor rows and the learned steps' records (adds their counts to ``metrics``)."""
    info: dict[str, Any] = {"bytes": container_bytes, "format": f"qflow.qfz/{VERSION}"}
    if container is not None:
        info["sha256"] = hashlib.sha256(container).hexdigest()
    result: dict[str, Any] = {"container": info, "steps": steps, "tensors": [e.row for e in encoded],
                              "preview": next((e.preview for e in encoded if e.preview), None),
                              "baseline_sample": sample_info}
    if layout is not None:
        result["layout"] = {"kind": layout["kind"], "files": [f["name"] for f in layout["files"]]}
    if config.dropout_simulator:
        result["dropout_simulator"] = [e.dropout for e in encoded if e.dropout]
    if config.denoiser:
        result["denoiser"] = [e.denoise for e in encoded if e.denoise]
        metrics["denoiser_tensors"] = sum(1 for d in result["denoiser"] if d["used"])
    if config.vqc_autoencoder:
        result["autoencoder"] = [e.latent for e in encoded if e.latent]
        metrics["latent_tensors"] = sum(1 for e in encoded if e.enc.record["scheme"] == "latent")
    return result


def _digest_records(encoded: list[_Encoded], source: str) -> InputDigest:
    """Digest of the tensors: names, dtypes, shapes and each tensor's sha256, in order."""
    h = hashlib.sha256()
    for e in encoded:
        r = e.enc.record
        h.update(f"{r['name']}:{r['dtype']}:{r['shape']}:{r['sha256']};".encode())
    return InputDigest(name="input", sha256=h.hexdigest(), rows=len(encoded), source=source)


def plan_compress(tensors: Any, config: CompressConfig | Mapping[str, Any] | None = None, **kwargs: Any) -> Plan:
    """:func:`compress_tensors` without the container bytes."""
    return compress_tensors(tensors, config, **kwargs).plan


def _without(path: str, part: str) -> str:
    """``plain+hhl+qsvt`` without ``+hhl``."""
    return "+".join(p for p in path.split("+") if p != part)


def _decode_checked(record: dict[str, Any], opened: Any, source: str, check_sha: bool = True) -> np.ndarray:
    """One tensor's plain decode; a forged record is an :class:`InputError` naming the tensor, and (``check_sha``)
    a lossless tensor must reproduce its recorded sha256."""
    name = record["name"]
    try:
        restored = decode_tensor(record, opened)
    except InputError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, ZeroDivisionError, np.linalg.LinAlgError) as exc:
        raise InputError(source, f"tensor '{name}'", "cannot be decoded", "a record qflow wrote", str(exc)[:200]) from None
    if tuple(restored.shape) != tuple(record["shape"]):
        raise InputError(source, f"tensor '{name}'", "decodes to another shape", str(record["shape"]),
                         list(restored.shape))
    if check_sha and record["scheme"] == "lossless" and original_sha256(restored) != record["sha256"]:
        raise InputError(source, f"tensor '{name}'", "restored bytes differ from the recorded sha256",
                         record["sha256"][:16], original_sha256(restored)[:16])
    return restored


def write_decoded(record: dict[str, Any], opened: Any, source: str, fd: int, offset: int) -> None:
    """Decode one tensor into the open file ``fd`` at byte ``offset`` (errors as :func:`_decode_checked`).

    A lossless ``float`` layout is joined a step at a time into this
    thread's step buffer and written from there: memory holds one step, not
    the tensor, and no fresh tensor-sized array is paged in. Other records
    are decoded whole and written.
    """
    info = record.get("lossless") if record.get("scheme") == "lossless" else None
    if not (isinstance(info, dict) and info.get("layout") == "float" and hasattr(opened, "reader")):
        pwrite_all(fd, _decode_checked(record, opened, source, check_sha=False), offset)
        return
    try:
        dtype = numpy_dtype(record["dtype"])
        readers = [opened.reader(name, CHUNK_BYTES, slot) for slot, name in enumerate(info["blocks"])]
        for first, values in join_float_chunks(readers, dtype, math.prod(record["shape"])):
            pwrite_all(fd, values, offset + first * dtype.itemsize)
        for reader in readers:
            reader.close()
    except InputError:
        raise
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise InputError(source, f"tensor '{record.get('name')}'", "cannot be decoded", "a record qflow wrote",
                         str(exc)[:200]) from None


def decoded_tensors(opened: Any, records: list[dict[str, Any]], workers: int, check_sha: bool = True,
                    cpu: list[float] | None = None) -> Any:
    """``(name, array)`` for ``records`` in order, decoded on ``workers`` threads (a bounded window in flight).

    ``cpu``, when given, receives each decode's thread CPU seconds.
    """
    def one(record: dict[str, Any]) -> tuple[str, np.ndarray]:
        start = time.thread_time()
        values = _decode_checked(record, opened, opened.source, check_sha)
        if cpu is not None:
            cpu.append(time.thread_time() - start)
        return record["name"], values

    return ordered_map(one, records, workers)


def _requested_decompress(config: DecompressConfig) -> str:
    parts = ["plain"] + [name for name, on in (("hhl", config.hhl), ("qft", config.qft), ("qsvt", config.qsvt),
                                               ("lstm", config.lstm_enhancer)) if on]
    return "+".join(parts)


def _check_reference(records: list[dict[str, Any]], reference: Mapping[str, np.ndarray] | None
                     ) -> dict[str, np.ndarray] | None:
    if reference is None:
        return None
    reference = check_tensors(as_arrays(reference), "reference")
    for record in records:
        ref = reference.get(record["name"])
        if ref is None:
            raise InputError("reference", record["name"], "tensor missing from the reference", "every tensor of the container")
        if list(ref.shape) != record["shape"]:
            raise InputError("reference", record["name"], "shape differs from the container's", str(record["shape"]),
                             list(ref.shape))
    return reference


def _judge_by_reference(step: str, info: dict[str, Any], before: Mapping[str, np.ndarray],
                        changed: dict[str, np.ndarray], reference: Mapping[str, np.ndarray] | None,
                        diagnostics: list[str]) -> dict[str, np.ndarray]:
    """Keep a refinement's tensors only where the reference (when given) says it lowered the error.

    A tensor the step's own self-check kept but the reference shows worse is
    reverted to its previous values, listed in ``info["reverted"]`` with both
    errors, and named in a diagnostic (the self-check and the reference
    disagree).
    """
    if reference is None:
        return changed
    kept: dict[str, np.ndarray] = {}
    reverted = []
    for name, values in changed.items():
        old = error_sums(reference[name], before[name]).figures()["relative_l2_error"] or 0.0
        new = error_sums(reference[name], values).figures()["relative_l2_error"] or 0.0
        if new > old:
            reverted.append({"tensor": name, "relative_l2_before": old, "relative_l2_after": new})
        else:
            kept[name] = values
    if reverted:
        info["reverted"] = reverted
        info["applied"] = [n for n in info.get("applied", []) if n in kept]
        diagnostics.append(f"{step}: its self-check kept it on {len(reverted)} tensor(s) where the reference shows "
                           "it made the error worse (" + ", ".join(
                               f"{r['tensor']} {r['relative_l2_before']:.6g} -> {r['relative_l2_after']:.6g}"
                               for r in reverted[:4]) + "); reverted there")
    return kept


def _quantum_steps(config: DecompressConfig, records: list[dict[str, Any]], opened: Any, out: dict[str, np.ndarray],
                   reference: Mapping[str, np.ndarray] | None, solver: SolverReport, timer: StageTimer,
                   report: Progress, diagnostics: list[str]) -> tuple[dict[str, Any], QuantumReport | None,
                                                                      list[tuple[str, dict[str, np.ndarray]]]]:
    """HHL, QFT decoding, QSVT and the LSTM, each kept only where it changed a tensor (and the reference agrees).

    HHL, QFT and QSVT run through :func:`~qflow.core.skeleton.quantum_step`: a
    refusal (no PennyLane, the budget spent) drops that step with its reason.
    """
    steps_report: dict[str, Any] = {}
    snapshots: list[tuple[str, dict[str, np.ndarray]]] = []
    shared = _SharedQuantum(quantum_budget(config)) if config.hhl or config.qsvt or config.qft else None
    for step, on, fraction in (("hhl", config.hhl, 0.3), ("qft", config.qft, 0.4), ("qsvt", config.qsvt, 0.5),
                               ("lstm", config.lstm_enhancer, 0.7)):
        if not on:
            continue
        report(fraction, {"hhl": "HHL on the latent decoder's Gram systems", "qsvt": "QSVT spectrum sharpening",
                          "qft": "QFT frequency decoding", "lstm": "LSTM enhancer"}[step])
        with timer.stage({"lstm": "lstm_enhancer"}.get(step, step)):
            if step == "lstm":
                info, changed = _run_refinement(step, config, records, opened, out, None, None, None)
            else:
                found = quantum_step(solver, lambda device, budget, step=step: _run_refinement(
                    step, config, records, opened, out, device, budget, shared.report_on(device)),
                    shared.budget, fallback_from=step, fallback_to=_without(solver.ran, step))
                if found is None:
                    continue
                info, changed = found
            changed = _judge_by_reference(step, info, out, changed, reference, diagnostics)
            out.update(changed)
            steps_report["lstm_enhancer" if step == "lstm" else step] = info
            snapshots.append(("lstm_enhancer" if step == "lstm" else step, dict(out)))
            if not changed:
                solver.fall_back(step, _without(solver.ran, step), _not_adopted_reason(step, info))
    return steps_report, shared.report if shared is not None else None, snapshots


@dataclass
class _SharedQuantum:
    """What HHL and QSVT share: one time budget and one quantum report (made when a device is first chosen)."""

    budget: QuantumBudget
    report: QuantumReport | None = None

    def report_on(self, device: QuantumDevice) -> QuantumReport:
        """The shared report, started on ``device`` by the first step that gets one."""
        if self.report is None:
            self.report = QuantumReport(device=device.name, device_reason=device.reason, layers=0)
        return self.report


def _run_refinement(step: str, config: DecompressConfig, records: list[dict[str, Any]], opened: Any,
                    out: dict[str, np.ndarray], device: Any, budget: Any, quantum: QuantumReport | None
                    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if step == "hhl":
        from qflow.compression._quantum import hhl_refine

        return hhl_refine(records, opened, out, config, device, budget, quantum)
    if step == "qft":
        from qflow.compression._qft import qft_decode

        return qft_decode(records, opened, out, config, device, budget, quantum)
    if step == "qsvt":
        from qflow.compression._quantum import qsvt_sharpen

        return qsvt_sharpen(records, opened, out, config, device, budget, quantum)
    from qflow.compression._enhance import lstm_enhance

    return lstm_enhance(records, opened, out, config)


def _not_adopted_reason(step: str, info: dict[str, Any]) -> str:
    """Why a refinement changed no tensor, with what it measured."""
    tensors = info.get("tensors", [])
    reverted = info.get("reverted", [])
    if reverted:
        return (f"{step} kept on no tensor: the reference shows it made the error worse where its self-check kept it ("
                + ", ".join(f"{r['tensor']} {r['relative_l2_before']:.6g} -> {r['relative_l2_after']:.6g}"
                            for r in reverted[:3]) + ")")
    if step == "hhl":
        if not tensors:
            return ("no latent tensors in this container (compressed classically): no linear system to solve; "
                    "plain inverse used")
        measured = "; ".join(f"{t['tensor']}: residual HHL {t['residual_hhl']:.3g} vs numpy {t['residual_numpy']:.3g}"
                             for t in tensors[:3])
        return f"numpy's solve kept on every latent tensor ({measured})"
    if step == "qft":
        measured = "; ".join(f"{t['tensor']}: {t['error_plain']:.4g} -> {t['error_qft']:.4g}"
                             for t in tensors[:3] if "error_qft" in t)
        return "QFT decoding kept on no tensor: " + (info.get("reason") or f"the measured error did not drop ({measured})")
    if step == "qsvt":
        return "QSVT kept on no tensor: " + (info.get("reason") or "the self-check found no tensor where it helps")
    return "LSTM kept on no tensor: the held-out residual did not improve (or no quantized tensor to enhance)"


def decompress_container(
    container: Any,
    config: DecompressConfig | Mapping[str, Any] | None = None,
    *,
    source: str = "container.qfz",
    reference: Mapping[str, np.ndarray] | None = None,
    digests: list[InputDigest] | None = None,
    progress: Progress | None = None,
) -> DecompressRun:
    """Verify a ``.qfz`` container and restore its tensors in memory.

    Parameters
    ----------
    container : bytes or memory map
        The container file's bytes.
    config : DecompressConfig or mapping
        All toggles off: the exact inverse of the recorded steps.
    source : str
        File name used in messages (``block '...'`` errors name it).
    reference : mapping of name -> ndarray, optional
        The original tensors; when given, every path's error is measured
        against them and a refinement is kept only where it lowers that error.

    Raises
    ------
    InputError
        Not a container, truncated, a checksum mismatch (naming the block), a
        declared size over ``decoded_bytes`` (all tensors together, as they
        are held in memory) or inconsistent with the header, or a lossless
        tensor whose restored bytes differ from the recorded sha256.
    """
    run = PlanRun.start("decompress", config, DecompressConfig, requested=_requested_decompress, progress=progress)
    config = run.config
    if scheduler_address(config.dask_scheduler, source) is not None:
        run.solver.fall_back("dask", "threads", "the cluster restores plain containers into files (an output folder or "
                             ".safetensors file, no reference, no refinement step); these tensors are decoded in this process")
    with run.stage("decompress", 0.05, "verifying checksums"):
        opened = read_container(container, source)
        records = opened.header["tensors"]
        check_limit(sum(tensor_nbytes(r) for r in records), "decoded_bytes", source, "(all tensors)")
        plain = dict(decoded_tensors(opened, records, max_workers(config.n_workers or None)))
    reference = _check_reference(records, reference)
    restored_bytes = sum(a.nbytes for a in plain.values())
    decompress_s = run.timer.timings_s["decompress"]
    out = dict(plain)
    steps_report, quantum, snapshots = _quantum_steps(config, records, opened, out, reference, run.solver, run.timer,
                                                      run.progress, run.diagnostics)
    if quantum is not None:
        run.solver.quantum = quantum
    run.progress(0.9, "measuring")
    metrics: dict[str, Any] = {
        "tensors": len(out), "container_bytes": opened.stored_bytes, "restored_bytes": restored_bytes,
        "compression_ratio": restored_bytes / opened.stored_bytes,
        "decompress_mb_per_s": round(restored_bytes / 2**20 / decompress_s, 1) if decompress_s > 0 else None,
    }
    rows, run.baselines = _decompress_rows(records, plain, out, steps_report, reference, snapshots, metrics)
    result = {"tensors": rows, "steps": opened.header.get("steps", []), "enhancements": steps_report,
              "compressed_with": opened.header.get("config", {}), "reference_given": reference is not None}
    if opened.header.get("layout"):
        layout = opened.header["layout"]
        result["layout"] = {"kind": layout.get("kind"), "files": [f.get("name") for f in layout.get("files", [])]}
    run.digests = digests or [InputDigest(name="input", sha256=hashlib.sha256(container).hexdigest(), source=source)]
    return DecompressRun(run.finish(result, metrics), out)


def _decompress_rows(records: list[dict[str, Any]], plain: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray],
                     steps_report: dict[str, Any], reference: Mapping[str, np.ndarray] | None,
                     snapshots: list[tuple[str, dict[str, np.ndarray]]], metrics: dict[str, Any]
                     ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-tensor rows, and with a reference every path's error (what each step added or removed)."""
    rows = []
    plain_sums, final_sums = ErrorSums(), ErrorSums()
    for record in records:
        name = record["name"]
        row = {"name": name, "shape": record["shape"], "dtype": record["dtype"], "scheme": record["scheme"],
               "changed_by": [step for step, info in steps_report.items() if name in info.get("applied", [])]}
        if reference is not None:
            p, f = error_sums(reference[name], plain[name]), error_sums(reference[name], out[name])
            plain_sums, final_sums = plain_sums + p, final_sums + f
            row["plain"] = p.figures()
            row.update(f.figures())
        rows.append(row)
    if reference is None:
        return rows, {}
    metrics.update(final_sums.figures())
    metrics["plain_relative_l2_error"] = plain_sums.figures()["relative_l2_error"]
    previous = metrics["plain_relative_l2_error"]
    for step, arrays in snapshots:  # what each step added (+) or removed (-) from the relative error
        total = ErrorSums()
        for record in records:
            total = total + error_sums(reference[record["name"]], arrays[record["name"]])
        rel = total.figures()["relative_l2_error"]
        steps_report[step]["relative_l2_error_after"] = rel
        steps_report[step]["relative_l2_error_change"] = None if previous is None or rel is None else rel - previous
        previous = rel
    return rows, {"plain": plain_sums.figures()}


def _restore_targets(opened: Any, out: Path) -> tuple[list[tuple[Path, bytes, list[str]]], Path | None]:
    """The files a restore to ``out`` writes (see :func:`qflow.compression._stream.safetensors_outputs`)."""
    folder = None if out.suffix.lower() == ".safetensors" else out
    return safetensors_outputs(opened.header.get("layout"), opened.header["tensors"], out, opened.source), folder


def write_restored(container: Any, arrays: Mapping[str, np.ndarray], out: Path, source: str = "container.qfz"
                   ) -> list[str]:
    """Write restored ``arrays`` to ``out`` (a ``.safetensors`` file, or a folder holding the recorded layout)."""
    opened = read_container(container, source, verify=False)
    outputs, folder = _restore_targets(opened, out)
    names = [n for _, _, order in outputs for n in order]
    return write_safetensors_files(outputs, ((n, arrays[n]) for n in names), opened.header.get("layout"), folder)


def _decode_into_files(opened: Any, outputs: list[tuple[Path, bytes, list[str]]], workers: int, cpu: list[float]
                       ) -> list[str]:
    """Create ``outputs`` (headers written, files at full length) and decode every tensor into its place on
    ``workers`` threads (each tensor's thread CPU seconds go to ``cpu``); returns the paths written. When a
    tensor fails, the files are removed before the error propagates."""
    records = {r["name"]: r for r in opened.header["tensors"]}
    sizes = {name: tensor_nbytes(r) for name, r in records.items()}
    written: list[str] = []
    handles: dict[Path, int] = {}

    def one(item: tuple[Path, str, int]) -> None:
        start = time.thread_time()
        write_decoded(records[item[1]], opened, opened.source, handles[item[0]], item[2])
        cpu.append(time.thread_time() - start)

    try:
        sized_files(outputs, sizes, written)
        handles.update({path: os.open(path, os.O_WRONLY) for path, _, _ in outputs})
        for _ in ordered_map(one, tensor_offsets(outputs, sizes), workers):
            pass
    except BaseException:
        for path in written:
            Path(path).unlink(missing_ok=True)
        raise
    finally:
        for fd in handles.values():
            os.close(fd)
    return written


def decompress_to_files(
    container: Any,
    out: Path,
    config: DecompressConfig | Mapping[str, Any] | None = None,
    *,
    source: str = "container.qfz",
    digests: list[InputDigest] | None = None,
    progress: Progress | None = None,
    path: Path | None = None,
) -> Plan:
    """The plain inverse of a container written straight to ``out`` as tensors are decoded (bounded memory).

    With a Dask scheduler (``dask_scheduler`` or ``QFLOW_DASK_SCHEDULER``)
    and the container's ``path``, the cluster's workers decode and write the
    files (see :mod:`qflow.compression._distributed`); ``result.cluster``
    names the worker of each task.

    ``out`` ending in ``.safetensors``: one file (a single recorded file is
    written as it was); otherwise a folder receiving the recorded files --
    each shard with its header as stored and the sharded index -- or
    ``model.safetensors`` for checkpoints that were not safetensors. Each
    block's checksum is checked as it is read; each tensor's declared size
    against ``decoded_bytes``. Each worker thread writes its tensor at its
    offset in the file as it decodes it: a lossless float tensor a step at
    a time from one reused buffer (memory: a few steps per worker, whatever
    the tensor's size), other tensors decoded whole (one per worker).
    The sha256 of each restored lossless tensor is not recomputed here (the
    blocks' checksums cover the stored bytes, and compression already
    checked the round trip bit for bit); :func:`decompress_container` does.
    """
    run = PlanRun.start("decompress", config, DecompressConfig, requested="plain", progress=progress,
                        digests=digests or [InputDigest(name="input", sha256="", source=source)])
    config = run.config
    with run.stage("decompress"):
        opened = read_container(container, source, verify=False)
        records = {r["name"]: r for r in opened.header["tensors"]}
        outputs, folder = _restore_targets(opened, out)
        order = [records[n] for _, _, names in outputs for n in names]
        workers = max_workers(config.n_workers or None)
        address = scheduler_address(config.dask_scheduler, source)
        cluster = None
        cpu: list[float] = []
        if address is not None and path is not None:
            from qflow.compression._distributed import cluster_decode_files

            run.progress(0.05, f"decoding {len(order)} tensors on the cluster at {address}")
            written, cluster = cluster_decode_files(address, Path(path), source, records, outputs,
                                                    opened.header.get("layout"), folder, cpu, run.progress)
            workers = len(cluster["workers"])
        else:
            if address is not None:
                run.solver.fall_back("dask", "threads", "the container was given as bytes, not a path the workers could "
                                     "read: decoded in this process")
            run.progress(0.05, f"decoding {len(order)} tensors on {workers} threads")
            written = _decode_into_files(opened, outputs, workers, cpu)
            write_index(folder, opened.header.get("layout"), written)
    restored_bytes = sum(tensor_nbytes(r) for r in order)
    seconds, mb = run.timer.timings_s["decompress"], restored_bytes / 2**20
    metrics = {"tensors": len(order), "container_bytes": opened.stored_bytes, "restored_bytes": restored_bytes,
               "compression_ratio": restored_bytes / opened.stored_bytes, "workers": workers,
               "decompress_mb_per_s": round(mb / seconds, 1) if seconds > 0 else None,
               "decompress_core_mb_per_s": round(mb / sum(cpu), 1) if sum(cpu) > 0 else None}
    rows = [{"name": r["name"], "shape": r["shape"], "dtype": r["dtype"], "scheme": r["scheme"], "changed_by": []}
            for r in order]
    result = {"tensors": rows, "steps": opened.header.get("steps", []), "enhancements": {},
              "compressed_with": opened.header.get("config", {}), "reference_given": False,
              "files": [Path(w).name for w in written]}
    if cluster is not None:
        result["cluster"] = cluster
    return run.finish(result, metrics)


def plan_decompress(container: bytes, config: DecompressConfig | Mapping[str, Any] | None = None, **kwargs: Any) -> Plan:
    """:func:`decompress_container` without the restored arrays."""
    return decompress_container(container, config, **kwargs).plan

