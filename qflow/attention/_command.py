"""The attention module as the CLI and API drive it.

The updated embeddings are an (n, d) array, too large for the plan JSON: the
CLI writes them beside ``--out`` as ``<out stem>.embeddings.npy`` and the plan
names that file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from qflow.attention._schemas import AttentionConfig
from qflow.core.commands import ModuleCommand, format_value
from qflow.core.config import QflowConfig
from qflow.core.plan import Plan
from qflow.core.tensors import TENSOR_SUFFIXES

__all__ = ["COMMANDS", "embeddings_path"]


def embeddings_path(out: Path) -> Path:
    """``plan.json`` -> ``plan.embeddings.npy`` (same folder)."""
    return out.with_name(out.stem + ".embeddings.npy")


def pruned_dir(out: Path) -> Path:
    """``plan.json`` -> ``plan.pruned/`` (same folder): ``model.safetensors`` and ``config.json``, as a model hub stores them."""
    return out.with_name(out.stem + ".pruned")


def _run(files: dict[str, Path | None], config: QflowConfig, out: Path | None = None,
         progress: Callable[[float, str], None] | None = None) -> Plan:
    from qflow.attention._plan import load_attention_inputs, npy_bytes, run_attention
    from qflow.core.models import load_model, model_digest

    emb, weights, digests = load_attention_inputs(files["embeddings"], files.get("weights"))
    model = load_model(files["model"], "contrastive") if files.get("model") else None
    if model is not None:
        digests.append(model_digest(files["model"]))
    run = run_attention(emb, weights, config, digests=digests, progress=progress, model=model)
    info = run.plan.result["updated_embeddings"]
    if out is not None:
        target = embeddings_path(out)
        target.write_bytes(npy_bytes(run.embeddings))
        info["file"] = target.name
        info["written_to"] = str(target)
    else:
        info["written_to"] = None
    pruned = run.plan.result.get("pruned_checkpoint")
    if pruned is not None:
        pruned["written_to"] = None
        if out is not None:
            folder = pruned_dir(out)
            folder.mkdir(exist_ok=True)
            (folder / pruned["file"]).write_bytes(run.pruned_checkpoint)
            (folder / pruned["config_file"]).write_text(json.dumps(run.pruned_config, indent=2) + "\n")
            pruned["written_to"] = str(folder)
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
        pruned = [heads["head_labels"][i] for i in heads["pruned"]]
        lines.append(f"  heads ({heads['layout']} layout, {len(heads['layers'])} layers): pruned {len(pruned)} of "
                     f"{heads['n_heads']} {pruned[:12]}{' ...' if len(pruned) > 12 else ''}; params saved "
                     f"{m['params_saved']}; largest layer output change {format_value(m['layer_output_relative_change'])}")
    search = plan.result.get("topk_search")
    if search:
        lines.append(f"  top-k search: {search['path']} ({search['reason']}); scores computed "
                     f"{format_value(m['scores_computed_fraction'])} of dense")
    pruned_info = plan.result.get("pruned_checkpoint")
    if pruned_info:
        where = pruned_info.get("written_to")
        lines.append("  pruned checkpoint " + (f"written to {where}" if where else "not written (pass --out)"))
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
    optional_inputs=("weights", "model"),
    input_help={
        "model": "contrastive projections from qflow train contrastive (.safetensors): reused instead of training",
        "embeddings": ".npy/.npz/.pt/.safetensors: one (seq, d) array used as Q = K = V, or arrays q, k, v",
        "weights": ".npz/.pt/.safetensors state dict: {q,k,v,o}_proj.weight, BERT encoder.layer.N.attention.* or "
                   "Llama/Mistral model.layers.N.self_attn.{q,k,v,o}_proj (head counts from config.json beside it)",
    },
    sample_inputs={"embeddings": "sample_data/attention/embeddings.npy", "weights": "sample_data/attention/attention_weights.safetensors"},
    run=_run,
    summarize=_summarize,
    title="Attention",
    icon=":material/center_focus_strong:",
    summary="Sparse top-k attention against dense attention, QPE position encoding, a contrastive trainer "
    "and SVD head pruning on uploaded embeddings and weights.",
    input_types={"embeddings": TENSOR_SUFFIXES, "weights": TENSOR_SUFFIXES, "model": ("safetensors",)},
),)
