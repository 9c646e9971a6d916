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
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from qflow.compression._codec import (
    EncodedTensor,
    QuantOptions,
    decode_tensor,
    encode_lossless,
    encode_quant,
    original_sha256,
    should_store_losslessly,
)
from qflow.compression._container import VERSION, Block, read_container, write_container
from qflow.compression._metrics import ErrorSums, baseline_fp16, baseline_int8, baseline_zstd, error_sums
from qflow.compression._quantize import channel_matrix, per_tensor_relative_error
from qflow.compression._schemas import CompressConfig, DecompressConfig, as_arrays, check_tensors, load_tensor_file
from qflow.core.config import config_from_mapping
from qflow.core.errors import InputError, QuantumUnavailableError
from qflow.core.io import Source, read_input
from qflow.core.plan import InputDigest, Plan, QuantumReport, SolverReport, StageTimer
from qflow.core.quantum import QuantumBudget, choose_device

__all__ = ["CompressRun", "DecompressRun", "compress_tensors", "decompress_container", "load_container",
           "load_tensors_input", "plan_compress", "plan_decompress"]

Progress = Callable[[float, str], None]
#: Values of the largest tensor carried in the plan for the histogram (original and reconstructed).
PREVIEW_VALUES = 4000
#: Side of the error heatmap carried in the plan.
HEATMAP_SIDE = 48


@dataclass(frozen=True)
class CompressRun:
    """The plan and the container bytes (too large for the plan JSON)."""

    plan: Plan
    container: bytes


@dataclass(frozen=True)
class DecompressRun:
    """The plan and the restored tensors ``{name: ndarray}`` (original names, shapes and dtypes)."""

    plan: Plan
    arrays: dict[str, np.ndarray]


def _ignore(fraction: float, message: str) -> None:
    """Progress sink when nobody watches."""


def _digest_arrays(arrays: Mapping[str, np.ndarray], name: str) -> InputDigest:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        h.update(memoryview(a.reshape(-1)).cast("B"))
    return InputDigest(name=name, sha256=h.hexdigest(), rows=len(arrays))


def load_tensors_input(source: Source, name: str | None = None) -> tuple[dict[str, np.ndarray], InputDigest]:
    """Read a checkpoint file (path, bytes or upload) for :func:`compress_tensors`; see ``load_tensor_file``."""
    arrays, raw = load_tensor_file(source, name)
    return arrays, raw.digest("input", rows=len(arrays))


def load_container(source: Source, name: str | None = None) -> tuple[bytes, str, InputDigest]:
    """Read a container file's bytes (verification happens in :func:`decompress_container`)."""
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
             per_channel: bool) -> dict[str, Any]:
    """Train the denoiser on this tensor; keep it (block + record) only when it lowers the error."""
    from qflow.compression._denoise import MAX_DENOISE_VALUES, train_denoiser
    from qflow.compression._lossless import pack

    if x.size > MAX_DENOISE_VALUES:
        return {"tensor": name, "used": False, "reason": f"over {MAX_DENOISE_VALUES} values"}
    ex = enc.extras
    levels = np.where(ex["hi"], (1 << (2 * config.bits)) - 1, (1 << config.bits) - 1).astype(ex["recon2d"].dtype)
    x2d = channel_matrix(x, per_channel)
    weights, denoised, losses = train_denoiser(x2d, ex["recon2d"], ex["scales"], ex["zero_points"], levels,
                                               ex["keep"], config.denoiser_steps, seed)
    before = error_sums(x2d, ex["recon2d"]).figures()["relative_l2_error"]
    after = error_sums(x2d, denoised).figures()["relative_l2_error"]
    info = {"tensor": name, "relative_l2_before": before, "relative_l2_after": after, "steps": config.denoiser_steps,
            "loss_first": losses[0], "loss_last": losses[-1], "used": bool(after < before)}
    if after < before:
        block = Block(f"{name}/denoiser", pack(weights, level=3))
        enc.blocks.append(block)
        enc.record["blocks"].append(block.name)
        enc.record["denoiser"] = {"block": block.name, "arch": "residual conv1d k5 x16, 0.5 tanh output (steps)",
                                  "relative_l2_before": before, "relative_l2_after": after}
        enc.reconstruction = denoised.reshape(x.shape).astype(x.dtype, copy=False)
    else:
        info["reason"] = "did not lower the error on this tensor"
    return info


def _preview(arrays: Mapping[str, np.ndarray], restored: Mapping[str, np.ndarray]) -> dict[str, Any] | None:
    """Values and an error map of the largest float tensor, for the page's histogram and heatmap."""
    floats = [n for n, a in arrays.items() if a.dtype.kind == "f" and a.size]
    if not floats:
        return None
    name = max(floats, key=lambda n: arrays[n].size)
    x, y = arrays[name].reshape(-1), restored[name].reshape(-1)
    idx = np.linspace(0, x.size - 1, min(PREVIEW_VALUES, x.size)).astype(np.int64)
    x2d = channel_matrix(arrays[name], True).astype(np.float64)
    y2d = channel_matrix(restored[name], True).astype(np.float64)
    rows = np.linspace(0, x2d.shape[0] - 1, min(HEATMAP_SIDE, x2d.shape[0])).astype(np.int64)
    cols = np.linspace(0, x2d.shape[1] - 1, min(HEATMAP_SIDE, x2d.shape[1])).astype(np.int64)
    err = np.abs(y2d[np.ix_(rows, cols)] - x2d[np.ix_(rows, cols)])
    return {"tensor": name, "original": x[idx].astype(float).tolist(), "reconstructed": y[idx].astype(float).tolist(),
            "error_map": err.tolist(), "error_map_rows": rows.tolist(), "error_map_cols": cols.tolist()}


def compress_tensors(
    tensors: Any,
    config: CompressConfig | Mapping[str, Any] | None = None,
    *,
    source: str = "tensors",
    digests: list[InputDigest] | None = None,
    progress: Progress | None = None,
) -> CompressRun:
    """Compress named tensors into one ``.qfz`` container and measure it.

    Parameters
    ----------
    tensors : ndarray, torch tensor or mapping of name -> array
        Numeric tensors of any shape (a checkpoint's state dict).
    config : CompressConfig or mapping
    source : str
        Name used in error messages.
    digests : list of InputDigest, optional
        The input files' digests (from :func:`load_tensors_input`).
    progress : callable(fraction, message), optional

    Returns
    -------
    CompressRun
        ``plan.metrics``: ``compression_ratio`` (original / container bytes),
        ``relative_l2_error``, ``max_abs_error``, ``snr_db``,
        ``cosine_similarity`` (all tensors together), ``compress_mb_per_s``,
        ``decompress_mb_per_s``; ``plan.result["tensors"]`` has them per tensor;
        ``plan.baselines``: ``fp16_cast``, ``zstd_raw``, ``int8_plain``.
    """
    if not isinstance(config, CompressConfig):
        config = config_from_mapping(CompressConfig, config, "config")
    report = progress or _ignore
    arrays = check_tensors(as_arrays(tensors), source)
    timer = StageTimer()
    solver = SolverReport(requested=_requested_compress(config), ran=_requested_compress(config))
    original_bytes = sum(a.nbytes for a in arrays.values())
    encoded: dict[str, EncodedTensor] = {}
    dropout_info, denoise_info, latent_info = [], [], []
    steps = []
    quantum = None
    if config.vqc_autoencoder:
        try:
            device = choose_device()
            budget = QuantumBudget(max_qubits=config.max_qubits, time_budget_s=config.quantum_time_budget_s)
            quantum = (device, budget, QuantumReport(device=device.name, device_reason=device.reason,
                                                     layers=config.vqc_layers))
        except QuantumUnavailableError as exc:
            solver.fall_back("vqc", _without(solver.ran, "vqc"), str(exc))
    n = len(arrays)
    with ThreadPoolExecutor(1) as hasher:
        shas = {name: hasher.submit(original_sha256, x) for name, x in arrays.items()}
        for i, (name, x) in enumerate(arrays.items()):
            report(0.7 * i / n, f"compressing {name} {tuple(x.shape)}")
            seed = (config.seed * 1_000_003 + i) % 2**32
            with timer.stage("compress"):
                reason = "lossless mode" if config.lossless else should_store_losslessly(x)
                if reason is not None:
                    encoded[name] = encode_lossless(name, x, "", reason if not config.lossless else None)
                    continue
                per_channel, granularity = _granularity(x, config)
                x2d = channel_matrix(x, per_channel)
                options = QuantOptions(config.bits, per_channel, config.target_sparsity)
            if config.dropout_simulator and x2d.shape[0] >= 4:
                with timer.stage("dropout_simulator"):
                    options, info = _sensitivity_options(x2d, config, seed)
                    dropout_info.append({"tensor": name, **info})
            with timer.stage("compress"):
                enc = encode_quant(name, x, "", options, reconstruct=config.denoiser or quantum is not None)
                enc.record["quant"]["granularity"] = granularity
            if config.denoiser:
                with timer.stage("denoiser"):
                    denoise_info.append(_denoise(name, x, enc, config, seed, per_channel))
            if quantum is not None:
                from qflow.compression._quantum import autoencoder_candidate

                with timer.stage("vqc_autoencoder"):
                    try:
                        info, latent = autoencoder_candidate(name, x, enc, config, quantum, seed)
                        latent_info.append(info)
                        if latent is not None:
                            enc = latent
                    except QuantumUnavailableError as exc:
                        solver.fall_back("vqc", _without(solver.ran, "vqc"), f"{name}: {exc}")
                        quantum = None
            encoded[name] = enc
        with timer.stage("compress"):
            for name, enc in encoded.items():
                enc.record["sha256"] = shas[name].result()
    report(0.75, "writing the container")
    with timer.stage("compress"):
        if config.lossless:
            steps.append({"step": "lossless", "detail": "byte planes + zstd, level by a quick trial per plane"})
        else:
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
            if any(d["used"] for d in denoise_info):
                steps.append({"step": "denoiser", "detail": "residual conv net applied on decompression"})
            if any(e.record["scheme"] == "latent" for e in encoded.values()):
                steps.append({"step": "latent", "detail": "autoencoder latents for some tensors"})
        header = {"config": config.model_dump(), "steps": steps, "tensors": [e.record for e in encoded.values()]}
        container = write_container(header, [b for e in encoded.values() for b in e.blocks])
    compress_s = sum(timer.timings_s.values())
    report(0.8, "reading the container back (checksums, decode)")
    with timer.stage("decompress"):
        opened = read_container(container, "compressed.qfz")
        restored = {r["name"]: decode_tensor(r, opened) for r in opened.header["tensors"]}
    decompress_s = timer.timings_s["decompress"]
    report(0.88, "measuring errors and baselines")
    with timer.stage("evaluate"):
        rows, sums = [], []
        for name, x in arrays.items():
            s = error_sums(x, restored[name])
            sums.append(s)
            rec = encoded[name].record
            stored = sum(len(b.packed.payload) for b in encoded[name].blocks)
            rows.append({"name": name, "shape": list(x.shape), "dtype": x.dtype.name, "scheme": rec["scheme"],
                         "bits": rec.get("quant", {}).get("bits"), **_granularity_columns(rec),
                         "original_bytes": int(x.nbytes),
                         "stored_bytes": stored, "compression_ratio": x.nbytes / max(stored, 1), **s.figures(),
                         "notes": rec["notes"]})
        total = ErrorSums()
        for s in sums:
            total = total + s
        preview = _preview(arrays, restored)
    with timer.stage("baselines"):
        baselines, per_tensor = {}, {}
        for key, func in (("fp16_cast", baseline_fp16), ("zstd_raw", baseline_zstd), ("int8_plain", baseline_int8)):
            baselines[key], per = func(arrays)
            for name, figures in per.items():
                per_tensor.setdefault(name, {})[key] = figures
    for row in rows:
        row["baselines"] = per_tensor[row["name"]]
    if quantum is not None:
        solver.quantum = quantum[2]
    metrics = {
        "compression_ratio": original_bytes / len(container),
        **total.figures(),
        "original_bytes": original_bytes,
        "container_bytes": len(container),
        "tensors": len(arrays),
        "compress_mb_per_s": round(original_bytes / 2**20 / compress_s, 3) if compress_s > 0 else None,
        "decompress_mb_per_s": round(original_bytes / 2**20 / decompress_s, 3) if decompress_s > 0 else None,
    }
    diagnostics = [f"{r['name']}: {note}" for r in rows for note in r["notes"]][:20]
    if config.lossless:
        skipped = [name for name, on in (("vqc_autoencoder", config.vqc_autoencoder), ("denoiser", config.denoiser),
                                         ("dropout_simulator", config.dropout_simulator),
                                         ("target_sparsity", config.target_sparsity > 0)) if on]
        if skipped:
            diagnostics.insert(0, "lossless mode is bit-exact: lossy steps skipped (" + ", ".join(skipped) + ")")
    result = {
        "container": {"bytes": len(container), "sha256": hashlib.sha256(container).hexdigest(), "format": f"qflow.qfz/{VERSION}"},
        "steps": steps,
        "tensors": rows,
        "preview": preview,
    }
    if config.dropout_simulator:
        result["dropout_simulator"] = dropout_info
    if config.denoiser:
        result["denoiser"] = denoise_info
        used = [d for d in denoise_info if d["used"]]
        metrics["denoiser_tensors"] = len(used)
    if config.vqc_autoencoder:
        result["autoencoder"] = latent_info
        metrics["latent_tensors"] = sum(1 for e in encoded.values() if e.record["scheme"] == "latent")
    plan = Plan(module="compress", inputs=digests or [_digest_arrays(arrays, "input")], config=config.model_dump(),
                solver=solver, result=result, metrics=metrics, baselines=baselines, timings_s=timer.timings_s,
                diagnostics=diagnostics)
    report(1.0, "done")
    return CompressRun(plan, container)


def plan_compress(tensors: Any, config: CompressConfig | Mapping[str, Any] | None = None, **kwargs: Any) -> Plan:
    """:func:`compress_tensors` without the container bytes."""
    return compress_tensors(tensors, config, **kwargs).plan


def _without(path: str, part: str) -> str:
    """``plain+hhl+qsvt`` without ``+hhl``."""
    return "+".join(p for p in path.split("+") if p != part)


def _requested_decompress(config: DecompressConfig) -> str:
    parts = ["plain"] + [name for name, on in (("hhl", config.hhl), ("qsvt", config.qsvt),
                                               ("lstm", config.lstm_enhancer)) if on]
    return "+".join(parts)


def decompress_container(
    container: bytes,
    config: DecompressConfig | Mapping[str, Any] | None = None,
    *,
    source: str = "container.qfz",
    reference: Mapping[str, np.ndarray] | None = None,
    digests: list[InputDigest] | None = None,
    progress: Progress | None = None,
) -> DecompressRun:
    """Verify a ``.qfz`` container and restore its tensors.

    Parameters
    ----------
    container : bytes
        The container file's bytes.
    config : DecompressConfig or mapping
        All toggles off: the exact inverse of the recorded steps.
    source : str
        File name used in messages (``block '...'`` errors name it).
    reference : mapping of name -> ndarray, optional
        The original tensors; when given, every path's error is measured against them.

    Raises
    ------
    InputError
        Not a container, truncated, a checksum mismatch (naming the block), or
        a lossless tensor whose restored bytes differ from the recorded sha256.
    """
    if not isinstance(config, DecompressConfig):
        config = config_from_mapping(DecompressConfig, config, "config")
    report = progress or _ignore
    timer = StageTimer()
    requested = _requested_decompress(config)
    solver = SolverReport(requested=requested, ran=requested)
    report(0.05, "verifying checksums")
    with timer.stage("decompress"):
        opened = read_container(container, source)
        records = opened.header["tensors"]
        plain = {}
        for record in records:
            restored = decode_tensor(record, opened)
            if record["scheme"] == "lossless" and original_sha256(restored) != record["sha256"]:
                raise InputError(source, f"tensor '{record['name']}'", "restored bytes differ from the recorded sha256",
                                 record["sha256"][:16], original_sha256(restored)[:16])
            plain[record["name"]] = restored
    restored_bytes = sum(a.nbytes for a in plain.values())
    decompress_s = timer.timings_s["decompress"]
    out = dict(plain)
    steps_report: dict[str, Any] = {}
    snapshots: list[tuple[str, dict[str, np.ndarray]]] = [("plain", dict(plain))]
    quantum: QuantumReport | None = None
    if config.hhl or config.qsvt:
        try:
            device = choose_device()
            budget = QuantumBudget(max_qubits=config.max_qubits, time_budget_s=config.quantum_time_budget_s)
            quantum = QuantumReport(device=device.name, device_reason=device.reason, layers=0)
        except QuantumUnavailableError as exc:
            for name, on in (("hhl", config.hhl), ("qsvt", config.qsvt)):
                if on:
                    solver.fall_back(name, _without(solver.ran, name), str(exc))
            device = budget = None
    if config.hhl and quantum is not None:
        from qflow.compression._quantum import hhl_refine

        report(0.3, "HHL on the latent decoder's Gram systems")
        with timer.stage("hhl"):
            try:
                info, refined = hhl_refine(records, opened, out, config, device, budget, quantum)
                out.update(refined)
                steps_report["hhl"] = info
                snapshots.append(("hhl", dict(out)))
                if not info["tensors"]:
                    solver.fall_back("hhl", _without(solver.ran, "hhl"), "no latent tensors in this container (compressed classically): "
                                     "no linear system to solve; plain inverse used")
            except QuantumUnavailableError as exc:
                solver.fall_back("hhl", _without(solver.ran, "hhl"), str(exc))
    if config.qsvt and quantum is not None:
        from qflow.compression._quantum import qsvt_sharpen

        report(0.5, "QSVT spectrum sharpening")
        with timer.stage("qsvt"):
            try:
                info, sharpened = qsvt_sharpen(records, opened, out, config, device, budget, quantum)
                out.update(sharpened)
                steps_report["qsvt"] = info
                snapshots.append(("qsvt", dict(out)))
                if not sharpened:
                    solver.fall_back("qsvt", _without(solver.ran, "qsvt"), "QSVT kept on no tensor: " + (info.get("reason") or "the self-check "
                                     "found no tensor where it helps"))
            except QuantumUnavailableError as exc:
                solver.fall_back("qsvt", _without(solver.ran, "qsvt"), str(exc))
    if config.lstm_enhancer:
        from qflow.compression._enhance import lstm_enhance

        report(0.7, "LSTM enhancer")
        with timer.stage("lstm_enhancer"):
            info, enhanced = lstm_enhance(records, opened, out, config)
            out.update(enhanced)
            steps_report["lstm_enhancer"] = info
            snapshots.append(("lstm_enhancer", dict(out)))
            if not enhanced:
                solver.fall_back("lstm", _without(solver.ran, "lstm"), "LSTM kept on no tensor: the held-out residual did not improve "
                                 "(or no quantized tensor to enhance)")
    if quantum is not None:
        solver.quantum = quantum
    report(0.9, "measuring")
    metrics: dict[str, Any] = {
        "tensors": len(out), "container_bytes": len(container), "restored_bytes": restored_bytes,
        "compression_ratio": restored_bytes / len(container),
        "decompress_mb_per_s": round(restored_bytes / 2**20 / decompress_s, 1) if decompress_s > 0 else None,
    }
    rows = []
    reference = None if reference is None else check_tensors(as_arrays(reference), "reference")
    if reference is not None:
        missing = [r["name"] for r in records if r["name"] not in reference]
        if missing:
            raise InputError("reference", missing[0], "tensor missing from the reference", "every tensor of the container")
    plain_sums, final_sums = ErrorSums(), ErrorSums()
    for record in records:
        name = record["name"]
        row = {"name": name, "shape": record["shape"], "dtype": record["dtype"], "scheme": record["scheme"],
               "changed_by": [step for step, info in steps_report.items() if name in info.get("applied", [])]}
        if reference is not None:
            ref = reference[name]
            if list(ref.shape) != record["shape"]:
                raise InputError("reference", name, "shape differs from the container's", str(record["shape"]),
                                 list(ref.shape))
            p, f = error_sums(ref, plain[name]), error_sums(ref, out[name])
            plain_sums, final_sums = plain_sums + p, final_sums + f
            row["plain"] = p.figures()
            row.update(f.figures())
        rows.append(row)
    if reference is not None:
        metrics.update(final_sums.figures())
        metrics["plain_relative_l2_error"] = plain_sums.figures()["relative_l2_error"]
        baselines = {"plain": plain_sums.figures()}
        previous = None
        for step, arrays in snapshots:  # what each step added (+) or removed (-) from the relative error
            total = ErrorSums()
            for record in records:
                total = total + error_sums(reference[record["name"]], arrays[record["name"]])
            rel = total.figures()["relative_l2_error"]
            if step in steps_report:
                steps_report[step]["relative_l2_error_after"] = rel
                steps_report[step]["relative_l2_error_change"] = None if previous is None or rel is None else rel - previous
            previous = rel
    else:
        baselines = {}
    result = {"tensors": rows, "steps": opened.header.get("steps", []), "enhancements": steps_report,
              "compressed_with": opened.header.get("config", {}), "reference_given": reference is not None}
    inputs = digests or [InputDigest(name="input", sha256=hashlib.sha256(container).hexdigest(), source=source)]
    plan = Plan(module="decompress", inputs=inputs, config=config.model_dump(), solver=solver, result=result,
                metrics=metrics, baselines=baselines, timings_s=timer.timings_s)
    report(1.0, "done")
    return DecompressRun(plan, out)


def plan_decompress(container: bytes, config: DecompressConfig | Mapping[str, Any] | None = None, **kwargs: Any) -> Plan:
    """:func:`decompress_container` without the restored arrays."""
    return decompress_container(container, config, **kwargs).plan

