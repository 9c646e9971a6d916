"""The compress and decompress commands as the CLI and API drive them.

``compress --input`` takes a ``.safetensors`` file, a sharded checkpoint
(its ``*.safetensors.index.json`` or the folder holding it), ``.pt``/
``.pth``/``.bin``, ``.npz``, ``.npy`` or CSV; checkpoints given as paths
are read lazily with no size cap and the container is written as tensors
are encoded: exactly at ``--out`` when it ends with ``.qfz`` (the plan JSON
then goes beside it as ``<out>.plan.json``), or at ``<out stem>.qfz`` when
``--out`` is a plan path ending with ``.json``. ``decompress`` writes the
restored tensors at ``--out`` when it ends with ``.safetensors`` or ``.npz``
(plan beside it as ``<out>.plan.json``), into the folder ``--out`` when it
has no suffix (the recorded shard files and index; plan at
``<folder>.plan.json``), or at ``<out stem>.safetensors`` when ``--out``
ends with ``.json``. Without ``--out`` nothing but the plan (stdout) is
produced.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from qflow.compression._schemas import INPUT_SUFFIXES, CompressConfig, DecompressConfig
from qflow.core.commands import ModuleCommand, Progress, format_value
from qflow.core.config import QflowConfig
from qflow.core.plan import Plan

__all__ = ["COMMANDS", "artifact_paths"]

#: Suffixes the artifact itself may have (anything else is treated as the plan path).
ARTIFACT_SUFFIXES = {"compress": (".qfz",), "decompress": (".safetensors", ".npz")}
DEFAULT_SUFFIX = {"compress": ".qfz", "decompress": ".safetensors"}


def artifact_paths(out: Path, command: str) -> tuple[Path, Path]:
    """``(artifact, plan JSON)`` for ``--out``.

    >>> artifact_paths(Path("model.qfz"), "compress")
    (PosixPath('model.qfz'), PosixPath('model.qfz.plan.json'))
    >>> artifact_paths(Path("plan.json"), "compress")
    (PosixPath('plan.qfz'), PosixPath('plan.json'))
    >>> artifact_paths(Path("restored"), "decompress")
    (PosixPath('restored'), PosixPath('restored.plan.json'))
    """
    if out.suffix.lower() in ARTIFACT_SUFFIXES[command] or (command == "decompress" and out.suffix == ""):
        return out, out.with_name(out.name + ".plan.json")
    return out.with_name(out.stem + DEFAULT_SUFFIX[command]), out


def _sha256_of(handle) -> str:
    """sha256 of a written container, read back through one 4 MB buffer (a 64 MB ``read`` per step held two
    64 MB chunks at a time, more than the encoding itself)."""
    handle.seek(0)
    h = hashlib.sha256()
    buffer = memoryview(bytearray(4 << 20))
    while got := handle.readinto(buffer):
        h.update(buffer[:got])
    return h.hexdigest()


def _run_compress(files: dict[str, Path | None], config: QflowConfig, out: Path | None = None,
                  progress: Progress | None = None) -> Plan:
    from qflow.compression._plan import compress_tensors, load_checkpoint_input
    from qflow.core.models import load_model, model_digest

    checkpoint, digest = load_checkpoint_input(files["input"])
    target = None if out is None else artifact_paths(out, "compress")[0]
    with (target.open("w+b") if target is not None else tempfile.TemporaryFile()) as sink:
        model = load_model(files["model"], "denoiser") if files.get("model") else None
        digests = [digest] + ([model_digest(files["model"])] if model is not None else [])
        run = compress_tensors(checkpoint, config, source=digest.source or "input", digests=digests, sink=sink,
                               progress=progress, model=model)
        info = run.plan.result["container"]
        info["sha256"] = _sha256_of(sink)
    info["written_to"] = None
    if target is not None:
        info["file"] = target.name
        info["written_to"] = str(target)
    return run.plan


def _run_decompress(files: dict[str, Path | None], config: QflowConfig, out: Path | None = None,
                    progress: Progress | None = None) -> Plan:
    from qflow.compression._plan import (
        decompress_container,
        decompress_to_files,
        load_container,
        load_tensors_input,
        write_restored,
    )
    from qflow.compression._stream import restored_bytes

    data, name, digest = load_container(files["input"])
    target = None if out is None else artifact_paths(out, "decompress")[0]
    plain = not (config.hhl or config.qsvt or config.lstm_enhancer)
    if target is not None and plain and files.get("reference") is None and target.suffix.lower() != ".npz":
        path = files["input"] if isinstance(files["input"], str | Path) else None
        plan = decompress_to_files(data, target, config, source=name, digests=[digest], progress=progress, path=path)
        plan.result["written_to"] = str(target)
        return plan
    reference, digests = None, [digest]
    if files.get("reference") is not None:
        reference, ref_digest = load_tensors_input(files["reference"])
        ref_digest.name = "reference"
        digests.append(ref_digest)
    run = decompress_container(data, config, source=name, reference=reference, digests=digests, progress=progress)
    run.plan.result["written_to"] = None
    if target is not None:
        if target.suffix.lower() == ".npz":
            target.write_bytes(restored_bytes(run.arrays, target.suffix))
        else:
            write_restored(data, run.arrays, target, name)
        run.plan.result["written_to"] = str(target)
    return run.plan


def _error_line(m: dict) -> str:
    return (f"relative L2 {format_value(m.get('relative_l2_error'))}, max abs {format_value(m.get('max_abs_error'))}, "
            f"SNR {format_value(m.get('snr_db'))} dB, cosine {format_value(m.get('cosine_similarity'), 6)}")


def _summarize_compress(plan: Plan) -> list[str]:
    m = plan.metrics
    lines = [f"  {m['tensors']} tensors, {m['original_bytes']} -> {m['container_bytes']} bytes: "
             f"ratio {format_value(m['compression_ratio'])}",
             "  " + _error_line(m),
             f"  compress {format_value(m['compress_mb_per_s'])} MB/s, decompress {format_value(m['decompress_mb_per_s'])} MB/s"]
    for name, b in plan.baselines.items():
        lines.append(f"  baseline {name:<11} ratio {format_value(b['compression_ratio'])}, relative L2 "
                     f"{format_value(b['relative_l2_error'])}, {format_value(b['compress_mb_per_s'])} MB/s")
    for info in plan.result.get("autoencoder", []):
        p = info.get("pruning")
        if p is not None:
            lines.append(f"  {info['tensor']}: VQC latent qubits kept {p['retained_qubits']} (pruned {p['pruned_qubits']}), "
                         f"held-out error {format_value(p['vqc_pruned_relative_error'])} vs PCA of the same size "
                         f"{format_value(p['pca_same_size_relative_error'])}; {'stored' if p['stored'] else 'not stored'}")
    where = plan.result["container"].get("written_to")
    lines.append(f"  container written to {where}" if where else "  container not written (pass --out model.qfz)")
    return lines


def _summarize_decompress(plan: Plan) -> list[str]:
    m = plan.metrics
    lines = [f"  {m['tensors']} tensors restored ({m['restored_bytes']} bytes) from {m['container_bytes']} bytes; "
             f"decompress {format_value(m['decompress_mb_per_s'])} MB/s"]
    if plan.result.get("reference_given"):
        lines.append("  vs reference: " + _error_line(m) + f"; plain path relative L2 {format_value(m['plain_relative_l2_error'])}")
    qft = plan.result.get("enhancements", {}).get("qft")
    if qft is not None:
        tried = [t for t in qft["tensors"] if "error_qft" in t]
        lines.append(f"  QFT decoding kept on {len(qft['applied'])} of {len(tried)} quantized tensors"
                     + (f" (measured by {tried[0]['measured_by']})" if tried else ""))
    where = plan.result.get("written_to")
    lines.append(f"  tensors written to {where}" if where else "  tensors not written (pass --out restored.safetensors)")
    return lines


COMMANDS = (
    ModuleCommand(
        name="compress",
        help="compress a checkpoint into a checksummed .qfz container (8/4-bit, pruning, zstd, lossless mode)",
        config_cls=CompressConfig,
        inputs=("input",),
        optional_inputs=("model",),
        input_help={"model": "denoisers from qflow train denoiser (.safetensors): applied instead of training them",
                    "input": ".safetensors, a sharded checkpoint (its .safetensors.index.json or folder), .pt/.bin "
                    "(weights-only), .npz/.npy/.csv tensors; --out model.qfz writes the container (plan beside it "
                    "as model.qfz.plan.json)"},
        sample_inputs={"input": "sample_data/compression/checkpoint.safetensors"},
        run=_run_compress,
        summarize=_summarize_compress,
        plan_path=lambda out: artifact_paths(out, "compress")[1],
        title="Compress",
        icon=":material/compress:",
        summary="Shrink checkpoints, gradients and activations into a checksummed container: per-channel "
        "quantization, pruning, entropy packing, or bit-exact lossless mode, against fp16 and zstd.",
        input_types={"input": INPUT_SUFFIXES, "model": ("safetensors",)},
    ),
    ModuleCommand(
        name="decompress",
        help="verify a .qfz container and restore its tensors (.safetensors or .npz)",
        config_cls=DecompressConfig,
        inputs=("input",),
        optional_inputs=("reference",),
        input_help={"input": ".qfz container; --out restored.safetensors (or .npz) writes the tensors, --out FOLDER "
                    "the recorded shard files and index",
                    "reference": "optional original tensors: errors of every path are measured against them"},
        sample_inputs={"input": "sample_data/compression/checkpoint.qfz",
                       "reference": "sample_data/compression/checkpoint.safetensors"},
        run=_run_decompress,
        summarize=_summarize_decompress,
        plan_path=lambda out: artifact_paths(out, "decompress")[1],
        title="Decompress",
        icon=":material/expand:",
        summary="Restore tensors from a container, verifying every block's checksum, with optional "
        "refinement steps measured against the plain inverse.",
        input_types={"input": ("qfz",), "reference": INPUT_SUFFIXES},
    ),
)
