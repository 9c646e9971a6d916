"""The attention module as the CLI and API drive it.

The updated embeddings are an (n, d) array, too large for the plan JSON: the
CLI writes them beside ``--out`` as ``<out stem>.embeddings.npy`` and the plan
names that file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qflow.attention._plan import load_attention_inputs, npy_bytes, run_attention
from qflow.attention._schemas import AttentionConfig
from qflow.core.commands import ModuleCommand, format_value
from qflow.core.config import QflowConfig
from qflow.core.plan import Plan
from qflow.core.tensors import TENSOR_SUFFIXES

__all__ = ["COMMANDS", "embeddings_path"]


def embeddings_path(out: Path) -> Path:
    """``plan.json`` -> ``plan.embeddings.npy`` (same folder)."""
    return out.with_name(out.stem + ".embeddings.npy")


def _run(files: dict[str, Path | None], config: QflowConfig, out: Path | None = None,
         progress: Callable[[float, str], None] | None = None) -> Plan:
    emb, weights, digests = load_attention_inputs(files["embeddings"], files.get("weights"))
    run = run_attention(emb, weights, config, digests=digests, progress=progress)
    info = run.plan.result["updated_embeddings"]
    if out is not None:
        target = embeddings_path(out)
        target.write_bytes(npy_bytes(run.embeddings))
        info["file"] = target.name
        info["written_to"] = str(target)
    else:
        info["written_to"] = None
    return run.plan


def _summarize(plan: Plan) -> list[str]:
    m, t = plan.metrics, plan.timings_s
    lines = [f"  {'':<12}{'relative_error':>16}{'memory_bytes':>16}{'time_s':>10}"]
    for name, rel, mem, key in (
        ("top-k", m["relative_error"], m["attention_memory_bytes"], "sparse_attention"),
        ("dense", 0.0, plan.baselines["dense"]["attention_memory_bytes"], "dense_attention"),
        ("random-k", plan.baselines["random_k"]["relative_error"], plan.baselines["random_k"]["attention_memory_bytes"],
         "random_k_attention"),
    ):
        lines.append(f"  {name:<12}{format_value(rel):>16}{mem:>16}{format_value(t.get(key)):>10}")
    lines.append(f"  k = {m['top_k']} of {m['n_keys']} keys; softmax mass kept {m['attention_mass_kept']:.3f}")
    if m.get("qpe_recovery_accuracy") is not None or "qpe" in plan.result:
        lines.append(f"  QPE positions: recovery accuracy {format_value(m.get('qpe_recovery_accuracy'))}, "
                     f"encoding error vs sinusoidal {format_value(m.get('position_encoding_relative_error'))}")
    if "training" in plan.result:
        lines.append(f"  InfoNCE: {format_value(m['infonce_initial'])} -> {format_value(m['infonce_final'])}")
    if "qaoa_topk" in plan.result:
        lines.append(f"  QAOA top-k windows: overlap {format_value(m.get('qaoa_overlap'))}, mean ratio {format_value(m.get('qaoa_mean_ratio'))}")
    heads = plan.result.get("heads")
    if heads:
        lines.append(f"  heads kept {heads['kept']}, pruned {heads['pruned']}; params saved {m['params_saved']}; "
                     f"layer output change {format_value(m['layer_output_relative_change'])}")
    info = plan.result["updated_embeddings"]
    where = info.get("written_to")
    lines.append(f"  updated embeddings {tuple(info['shape'])} "
                 + (f"written to {where}" if where else "not written (pass --out to write <out stem>.embeddings.npy)"))
    return lines


COMMANDS = (ModuleCommand(
    name="attention",
    help="sparse top-k attention vs dense, QAOA top-k, QPE positions, InfoNCE trainer, SVD head pruning",
    config_cls=AttentionConfig,
    inputs=("embeddings",),
    optional_inputs=("weights",),
    input_help={
        "embeddings": ".npy/.npz/.pt/.safetensors: one (seq, d) array used as Q = K = V, or arrays q, k, v",
        "weights": ".npz/.pt/.safetensors state dict: {q,k,v,o}_proj.weight (d, d), optional biases, n_heads",
    },
    sample_inputs={"embeddings": "sample_data/attention/embeddings.npy", "weights": "sample_data/attention/attention_weights.safetensors"},
    run=_run,
    summarize=_summarize,
    title="Attention",
    icon=":material/center_focus_strong:",
    summary="Sparse top-k attention against dense attention, QPE position encoding, a contrastive trainer "
    "and SVD head pruning on uploaded embeddings and weights.",
    input_types={"embeddings": TENSOR_SUFFIXES, "weights": TENSOR_SUFFIXES},
),)
