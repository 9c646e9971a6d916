"""``plan_attention``: the attention module's one entry point.

Pipeline, each stage optional where its toggle says so::

    Q, K, V  --(qpe_positions: + sinusoid of QPE-recovered positions on Q, K)-->
             --(contrastive_trainer: Q W_q^T, K W_k^T with InfoNCE-trained W)-->
             sparse top-k attention  ->  updated embeddings (n_q, d_v)
    weights  --(svd_pruner)--> kept / pruned heads, output change, parameters saved
    qaoa_sparse: k-of-m key windows of the first queries solved by QAOA, exact-checked

Dense SDPA and random-k attention on the same final Q, K, V are the baselines.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qflow.attention._blocksparse import SelectionStats
from qflow.attention._checkpoint import CONFIG_KEYS, pruned_checkpoint
from qflow.attention._classical import (
    ERROR_VS_K_QUERIES,
    attention_memory_bytes,
    dense_attention,
    error_vs_k,
    head_report,
    k_grid,
    layer_forward,
    params_saved,
    random_k_attention,
    relative_error,
    sinusoidal_encoding,
    sparse_attention,
    train_contrastive,
)
from qflow.attention._quantum import qaoa_topk, qpe_sweep
from qflow.attention._schemas import AttentionConfig, AttentionInputs, build_inputs
from qflow.core.errors import InputError
from qflow.core.io import read_input
from qflow.core.plan import InputDigest, Plan, QuantumReport, SolverReport, digest_bytes
from qflow.core.quantum import QuantumBudget, QuantumDevice
from qflow.core.skeleton import PlanRun, input_sources, quantum_step
from qflow.core.tensors import load_tensors

__all__ = ["AttentionRun", "EMBEDDINGS_FILE", "load_attention_inputs", "npy_bytes", "plan_attention", "run_attention"]

Progress = Callable[[float, str], None]
#: File name the updated embeddings are offered under (the CLI writes ``<out stem>.embeddings.npy``).
EMBEDDINGS_FILE = "attention_embeddings.npy"
#: Queries whose selected key indices are listed in the plan JSON (all are in the .npy).
LISTED_QUERIES = 256
#: Largest model config.json read beside a weights file.
CONFIG_MAX_BYTES = 1 << 20
#: File name the pruned checkpoint is offered under (the CLI writes ``<out stem>.pruned/model.safetensors``).
PRUNED_FILE = "model.safetensors"
#: Side of the dense-vs-sparse attention map carried in the plan for the page's heatmaps.
MAP_SIDE = 48


@dataclass(frozen=True)
class AttentionRun:
    """A plan and the arrays too large for its JSON.

    Attributes
    ----------
    plan : Plan
    embeddings : ndarray of shape (n_q, d_v), float32
        The updated embeddings (sparse attention output); ``plan.result
        ["updated_embeddings"]`` holds their shape and sha256.
    selected_keys : ndarray of shape (n_q, top_k), int64
    pruned_checkpoint : bytes or None
        With svd_pruner on: the weights file as safetensors with the pruned
        heads removed (``plan.result["pruned_checkpoint"]`` describes it).
    pruned_config : dict or None
        Its ``config.json``: the original head counts and head width (a
        layer's heads are its rows over ``head_dim``) and ``pruned_heads``.
    """

    plan: Plan
    embeddings: np.ndarray
    selected_keys: np.ndarray
    pruned_checkpoint: bytes | None = None
    pruned_config: dict[str, Any] | None = None


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as the bytes of a .npy file (what the download and the CLI write)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def load_attention_inputs(
    embeddings: Any, weights: Any = None, *, embeddings_name: str | None = None, weights_name: str | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None, list[InputDigest]]:
    """Read the embeddings file and the optional weights file (path, bytes or upload).

    Formats: .npy, .npz, .pt/.pth (``weights_only``), .safetensors; the
    ``*_name`` arguments name raw bytes in messages and pick their format.
    """
    emb, raw_emb = load_tensors(embeddings, embeddings_name)
    first = next(iter(emb.values()))
    digests = [raw_emb.digest("embeddings", shape=list(first.shape) if len(emb) == 1 else None)]
    w = None
    if weights is not None:
        w, raw_w = load_tensors(weights, weights_name)
        digests.append(raw_w.digest("weights"))
        beside = Path(weights).with_name("config.json") if isinstance(weights, str | Path) else None
        if beside is not None and beside.is_file():
            counts, raw_c = read_model_config(beside)
            w.update(counts)
            digests.append(raw_c.digest("weights_config"))
    return emb, w, digests


def read_model_config(source: Any, name: str = "config.json") -> tuple[dict[str, np.ndarray], Any]:
    """Head counts from a model's ``config.json`` as ``config.<field>`` scalars (fields it lacks are left out).

    Raises
    ------
    InputError
        Not JSON, not an object, or a head count that is not a positive integer.
    """
    raw = read_input(source, name, max_bytes=CONFIG_MAX_BYTES)
    try:
        data = json.loads(raw.data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(raw.name, "(file)", "not valid JSON", "a model config.json", str(exc)[:80]) from None
    if not isinstance(data, dict):
        raise InputError(raw.name, "(file)", "not a JSON object", "a model config.json", type(data).__name__)
    counts = {}
    for key in CONFIG_KEYS:
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1 << 20:
            raise InputError(raw.name, key, "not a usable count", "a whole number from 1 to 1048576", value)
        counts[f"config.{key}"] = np.array(value, dtype=np.int64)
    return counts, raw


def _digest_arrays(arrays: Mapping[str, np.ndarray], name: str) -> InputDigest:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    shape = list(next(iter(arrays.values())).shape) if len(arrays) == 1 else None
    return InputDigest(name=name, sha256=h.hexdigest(), shape=shape)


def _as_arrays(value: Any) -> dict[str, np.ndarray] | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return {"array": value.detach().cpu().numpy()}
    if isinstance(value, np.ndarray):
        return {"array": value}
    return {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in dict(value).items()}


def _requested(config: AttentionConfig) -> list[str]:
    parts = ["topk_bounds" if config.topk_bounds_limit > 0 else "topk_dense"]
    parts += [name for name, on in (("qaoa", config.qaoa_sparse), ("qpe", config.qpe_positions),
                                    ("infonce", config.contrastive_trainer), ("svd_prune", config.svd_pruner)) if on]
    return parts


def plan_attention(
    embeddings: Any,
    weights: Any = None,
    config: AttentionConfig | Mapping[str, Any] | None = None,
    *,
    digests: list[InputDigest] | None = None,
    progress: Progress | None = None,
) -> Plan:
    """Sparse top-k attention on ``embeddings``, measured against dense attention.

    Parameters
    ----------
    embeddings : ndarray, tensor or mapping of arrays
        One (seq, d) array used as Q = K = V, or arrays named ``q``, ``k``,
        ``v`` of shapes (n_q, d), (n, d), (n, d_v).
    weights : mapping of arrays, optional
        An attention layer's state dict: ``{q,k,v,o}_proj.weight`` (d, d),
        optional biases and ``n_heads``. Needed by ``svd_pruner``; also the
        contrastive trainer's starting projections.
    config : AttentionConfig or mapping, optional
    digests : list of InputDigest, optional
        Digests of the files the inputs came from (front ends pass them).
    progress : callable, optional
        ``progress(fraction, message)``.

    Returns
    -------
    Plan
        See :func:`run_attention` for the arrays behind ``result.updated_embeddings``.

    Examples
    --------
    >>> x = np.eye(4, dtype=np.float32)
    >>> plan = plan_attention(x, config={"top_k": 4})
    >>> plan.metrics["relative_error"] < 1e-6, plan.result["updated_embeddings"]["shape"]
    (True, [4, 4])
    """
    return run_attention(embeddings, weights, config, digests=digests, progress=progress).plan


def run_attention(
    embeddings: Any,
    weights: Any = None,
    config: AttentionConfig | Mapping[str, Any] | None = None,
    *,
    digests: list[InputDigest] | None = None,
    progress: Progress | None = None,
    model: Any = None,
) -> AttentionRun:
    """:func:`plan_attention`, also returning the updated embeddings and selected keys as arrays."""
    run = PlanRun.start("attention", config, AttentionConfig, requested=lambda c: "+".join(_requested(c)), digests=digests,
                        progress=progress)
    config, result, metrics, quantum = run.config, {}, {}, _QuantumLog()
    emb_arrays, w_arrays = _as_arrays(embeddings), _as_arrays(weights)
    inputs = _validate(run, emb_arrays, w_arrays, digests)
    torch.manual_seed(config.seed)
    q, k, v = inputs.q, inputs.k, inputs.v
    if config.qpe_positions:
        with run.stage("qpe", 0.05, "QPE position encoding"):
            q, k = _positions(inputs, config, run.solver, quantum, result, metrics, run.diagnostics,
                              heartbeat=lambda: run.progress(0.1, "QPE position encoding"))
    if config.contrastive_trainer:
        with run.stage("train", 0.2, "contrastive training (InfoNCE)"):
            q, k = _train(q, k, inputs, config, result, metrics, run.progress, model, run.diagnostics)
    elif model is not None:
        run.note(f"model {model.source} given but contrastive_trainer is off: it was checked and not used")
    with run.stage("sparse_attention", 0.4, "sparse top-k attention"):
        out, idx, search = sparse_attention(q, k, v, config.top_k, block=config.key_block,
                                            prune_limit=config.topk_bounds_limit,
                                            tick=lambda f: run.progress(0.4 + 0.05 * f, "sparse top-k attention"))
    _record_search(search, config, run.solver, result, metrics)
    if config.qaoa_sparse:
        with run.stage("qaoa", 0.45, "QAOA top-k windows"):
            out, idx = _qaoa(q, k, v, out, idx, config, run.solver, quantum, result, metrics, run.diagnostics,
                             heartbeat=lambda: run.progress(0.45, "QAOA top-k windows"))
    run.diagnostics.extend(_idle_settings(config, inputs))
    _measure_against_baselines(run, q, k, v, out, idx, metrics)
    with run.stage("error_vs_k", 0.5, "error against k"):
        result["error_vs_k"] = error_vs_k(q, k, v, k_grid(int(k.shape[0]), config.top_k), config.seed,
                                          tick=lambda f: run.progress(0.5 + 0.1 * f, "error against k"))
    result["error_vs_k_queries"] = min(int(q.shape[0]), ERROR_VS_K_QUERIES)
    result["attention_map"] = _attention_map(q, k, idx)
    pruned_bytes, pruned_config = None, None
    if inputs.weights is not None:
        with run.stage("svd_prune", 0.85, "SVD of the heads"):
            keeps = _heads(inputs, config, result, metrics, tick=lambda f: run.progress(0.85 + 0.1 * f, "SVD of the heads"))
        if keeps is not None:
            pruned_bytes, pruned_config = _write_pruned(w_arrays, inputs.weights, keeps, result)
    run.solver.quantum = quantum.report(config)
    embeddings_out, selected = _output_arrays(out, idx, result)
    return AttentionRun(plan=run.finish(result, metrics), embeddings=embeddings_out, selected_keys=selected,
                        pruned_checkpoint=pruned_bytes, pruned_config=pruned_config)


def _validate(run: PlanRun, emb_arrays: dict[str, np.ndarray] | None, w_arrays: dict[str, np.ndarray] | None,
              digests: list[InputDigest] | None) -> AttentionInputs:
    """Stage ``validate``: the checked inputs; digests of the arrays when the caller gave none."""
    names = input_sources(digests)
    with run.stage("validate"):
        inputs = build_inputs(emb_arrays, w_arrays, run.config, names.get("embeddings", "embeddings"),
                              names.get("weights", "weights"))
    if digests is None:
        run.digests = [_digest_arrays(emb_arrays, "embeddings")]
        if w_arrays is not None:
            run.digests.append(_digest_arrays(w_arrays, "weights"))
    return inputs


def _measure_against_baselines(run: PlanRun, q, k, v, out: torch.Tensor, idx: torch.Tensor, metrics: dict[str, Any]) -> None:
    """Stages ``dense_attention`` and ``random_k_attention``: the error and memory of the plan and of both baselines."""
    config = run.config
    with run.stage("dense_attention", 0.5, "dense attention (baseline)"):
        dense = dense_attention(q, k, v, tick=lambda f: run.progress(0.5 + 0.05 * f, "dense attention (baseline)"))
    with run.stage("random_k_attention"):
        rand_out, _ = random_k_attention(q, k, v, config.top_k, config.seed)
    n_q, n = int(q.shape[0]), int(k.shape[0])
    metrics.update({
        "relative_error": relative_error(out, dense),
        "attention_memory_bytes": attention_memory_bytes(n_q, n, config.top_k),
        "memory_ratio_vs_dense": attention_memory_bytes(n_q, n, config.top_k) / attention_memory_bytes(n_q, n, None),
        "top_k": config.top_k,
        "n_queries": n_q,
        "n_keys": n,
        "kept_fraction": config.top_k / n,
        "attention_mass_kept": _mass_kept(q, k, idx),
    })
    run.baselines = {
        "dense": {"relative_error": 0.0, "attention_memory_bytes": attention_memory_bytes(n_q, n, None),
                  "memory_ratio_vs_dense": 1.0},
        "random_k": {"relative_error": relative_error(rand_out, dense),
                     "attention_memory_bytes": attention_memory_bytes(n_q, n, config.top_k),
                     "memory_ratio_vs_dense": metrics["memory_ratio_vs_dense"]},
    }


def _output_arrays(out: torch.Tensor, idx: torch.Tensor, result: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The updated embeddings (n_q, d_v) float32 and selected keys (n_q, top_k) int64, described in ``result``."""
    embeddings_out = out.numpy().astype(np.float32)
    selected = idx.numpy().astype(np.int64)
    listed = min(int(selected.shape[0]), LISTED_QUERIES)
    result["updated_embeddings"] = {
        "file": EMBEDDINGS_FILE, "shape": list(embeddings_out.shape), "dtype": "float32",
        "sha256": digest_bytes(npy_bytes(embeddings_out)),
        "what": "sparse top-k attention output (Q/K after the enabled position encoding and trained projections)",
    }
    result["selected_key_indices"] = {
        "shape": list(selected.shape), "sha256": digest_bytes(npy_bytes(selected)),
        "queries_listed": listed, "indices": selected[:listed].tolist(),
    }
    return embeddings_out, selected


def _write_pruned(arrays, checkpoint, keeps, result) -> tuple[bytes, dict[str, Any]]:
    """The pruned state dict as safetensors bytes, its config.json, and their description in ``result``."""
    from safetensors.numpy import save

    state = {key: np.ascontiguousarray(value) for key, value in pruned_checkpoint(arrays, checkpoint, keeps).items()
             if not key.startswith("config.")}
    first = checkpoint.layers[0]
    config = {"num_attention_heads": first.n_heads, "num_key_value_heads": first.n_kv_heads, "head_dim": first.d_head,
              "hidden_size": first.d_model,
              "pruned_heads": {str(layer.index): np.flatnonzero(~keep).tolist() for layer, keep in zip(
                  checkpoint.layers, keeps, strict=True) if (~keep).any()}}
    data = save(state)
    result["pruned_checkpoint"] = {
        "file": PRUNED_FILE, "config_file": "config.json", "sha256": digest_bytes(data), "bytes": len(data),
        "layout": checkpoint.layout, "arrays": len(state), "config": config,
        "shapes": {name: list(state[name].shape) for layer in checkpoint.layers for name in (layer.names or {}).values()},
        "what": "the weights file with the pruned heads removed (rows of q, columns of o; k/v rows once no query head "
                "uses them); read it back with its config.json beside it",
    }
    return data, config


class _QuantumLog:
    """What the quantum stages did, gathered into one :class:`QuantumReport`."""

    def __init__(self) -> None:
        self.device: QuantumDevice | None = None
        self.blocks: list[dict[str, Any]] = []

    def device_or_fall_back(self, solver: SolverReport, part: str, budget: QuantumBudget) -> QuantumDevice | None:
        """The device, chosen once; ``None`` with ``part`` dropped from the path that ran when there is none."""
        if self.device is None:
            self.device = quantum_step(solver, lambda device, _: device, budget, fallback_to=_without(solver.ran, part))
        return self.device

    def report(self, config: AttentionConfig) -> QuantumReport | None:
        if self.device is None or not self.blocks:
            return None
        qaoa = [b for b in self.blocks if b["kind"] == "qaoa_topk"]
        return QuantumReport(
            device=self.device.name, device_reason=self.device.reason, layers=config.qaoa_layers if qaoa else 0,
            qubits_per_circuit=[b["qubits"] for b in self.blocks],
            circuits_run=sum(b["circuits"] for b in self.blocks),
            optimizer_steps=[b["steps"] for b in qaoa],
            block_ratios=[round(b["ratio"], 6) for b in qaoa],
            exact_checked=[True for _ in qaoa],
            convergence=[b["history"] for b in qaoa],
            blocks=[{key: value for key, value in b.items() if key != "history"} for b in self.blocks],
        )


def _without(ran: str, part: str) -> str:
    """The path ``ran`` with ``part`` replaced by its classical stand-in (``+<part>_classical``, last)."""
    return "+".join(p for p in ran.split("+") if p != part) + f"+{part}_classical"


def _fall_back(solver: SolverReport, part: str, reason: str) -> None:
    """Drop ``part`` from the path that ran, recording why."""
    solver.fall_back(solver.ran, _without(solver.ran, part), reason)


def _budget(config: AttentionConfig, heartbeat: Callable[[], None] | None = None) -> QuantumBudget:
    """The plan's quantum budget; ``heartbeat`` (the progress sink) is called between optimiser steps, so a cancel stops them."""
    return QuantumBudget(max_qubits=config.max_qubits, time_budget_s=config.quantum_time_budget_s, heartbeat=heartbeat)


def _record_search(search: SelectionStats, config: AttentionConfig, solver: SolverReport, result, metrics) -> None:
    """How the top-k keys were found: the fraction of scores computed, the scratch held, and a dense fallback if any."""
    dense_bytes = 4 * search.scores_total
    result["topk_search"] = {
        "bounds_limit": config.topk_bounds_limit, "path": search.path, "reason": search.reason, "key_block": config.key_block,
        "scores_computed": search.scores_computed, "scores_total": search.scores_total,
        "tiles": search.tiles, "tiles_scored_densely": search.tiles_dense,
        "exact": "every key whose block bound reaches a query's k-th score is scored; the result is exact top-k",
    }
    metrics["scores_computed_fraction"] = search.fraction_computed
    metrics["score_scratch_bytes"] = 4 * search.scratch_elements
    metrics["score_scratch_ratio_vs_dense"] = 4 * search.scratch_elements / dense_bytes
    if config.topk_bounds_limit > 0 and search.path == "dense":
        solver.fall_back(solver.ran, solver.ran.replace("topk_bounds", "topk_dense", 1), search.reason)


def _positions(inputs: AttentionInputs, config, solver, quantum, result, metrics, diagnostics, heartbeat=None):
    """Encode positions with QPE, read them back, add their sinusoid to Q and K."""
    n_q, n, d = inputs.q.shape[0], inputs.k.shape[0], inputs.k.shape[1]
    n_pos = max(n_q, n)
    needed = max(1, math.ceil(math.log2(n_pos)))
    t_max = min(needed, config.max_qubits - 1)
    if t_max < needed:
        diagnostics.append(f"QPE: {n_pos} positions need {needed} counting qubits (2^t >= N) but max_qubits allows "
                           f"{t_max}; recovered positions are approximate")
    recovered, rows = np.arange(n_pos), []
    budget = _budget(config, heartbeat)
    device = quantum.device_or_fall_back(solver, "qpe", budget)
    if device is not None:
        sweep = quantum_step(solver, lambda device, budget: qpe_sweep(n_pos, t_max, device, budget), budget,
                             fallback_to=_without(solver.ran, "qpe"), device=device)
        if sweep is not None:
            rows, recovered, circuits = sweep
            quantum.blocks.append({"kind": "qpe_positions", "qubits": t_max + 1, "circuits": circuits, "positions": n_pos,
                                   "counting_qubits": t_max})
    standard = sinusoidal_encoding(np.arange(n_pos), d)
    encoded = sinusoidal_encoding(recovered, d)
    result["qpe"] = {"positions": n_pos, "counting_qubits_needed": needed, "accuracy_by_qubits": rows,
                     "encoding": "sinusoid(recovered position) added to Q and K"}
    metrics["qpe_recovery_accuracy"] = rows[-1]["accuracy"] if rows else None
    metrics["position_encoding_relative_error"] = relative_error(encoded, standard)
    q = inputs.q + encoded[:n_q]
    k = inputs.k + encoded[:n]
    return q, k


def _train(q: np.ndarray, k: np.ndarray, inputs: AttentionInputs, config, result, metrics, report, model=None, diagnostics=None):
    """InfoNCE-train W_q, W_k (or take them from a loaded model); return the projected Q and K."""
    q_np, k_np = np.asarray(q), np.asarray(k)
    if model is not None:
        from qflow.attention._train import loaded_projections

        wq, wk, figures = loaded_projections(model, q_np, k_np)
        result["training"] = {**figures, "trained_model": {**model.describe(), "component": "contrastive W_q, W_k", "used": True}}
        metrics["infonce_initial"], metrics["infonce_final"] = figures["infonce_identity"], figures["infonce_loaded"]
        if diagnostics is not None:
            diagnostics.append(f"contrastive trainer: trained: no, loaded from {model.source} (card sha256 {model.card_sha256[:12]})")
        return q_np @ wq.T, k_np @ wk.T
    wq, wk, losses, start, rows = contrastive_weights(q_np, k_np, inputs, config, report)
    result["training"] = {"loss_curve": [round(x, 6) for x in losses], "start": start, "pairs": rows,
                          "loss": "sum_i -log softmax_j(q_i . k_j)[i]"}
    metrics["infonce_initial"] = losses[0]
    metrics["infonce_final"] = losses[-1]
    return q_np @ wq.T, k_np @ wk.T


def contrastive_weights(q_np: np.ndarray, k_np: np.ndarray, inputs: AttentionInputs, config, report):
    """``(W_q, W_k, losses, start, pairs)``: the InfoNCE training of the plan (also what ``qflow train contrastive`` saves)."""
    d = q_np.shape[1]
    first = inputs.weights.layers[0] if inputs.weights is not None else None
    if first is not None and first.w["q_proj"].shape == first.w["k_proj"].shape == (d, d):
        wq0, wk0 = first.w["q_proj"], first.w["k_proj"]
        start = f"weights file layer {first.index} q_proj / k_proj"
    else:
        wq0 = wk0 = np.eye(d, dtype=np.float32)
        start = "identity"
    if q_np.shape[0] != k_np.shape[0]:
        rows = min(q_np.shape[0], k_np.shape[0])  # positives are row-aligned pairs
    else:
        rows = q_np.shape[0]
    wq, wk, losses = train_contrastive(q_np[:rows], k_np[:rows], wq0, wk0, config.train_steps, config.learning_rate,
                                       config.seed, tick=lambda f: report(0.2 + 0.2 * f, "contrastive training (InfoNCE)"))
    return wq, wk, losses, start, rows


def _mass_kept(q, k, idx: torch.Tensor, limit: int = 512) -> float:
    """Mean share of each query's dense softmax mass on its selected keys (first ``limit`` queries)."""
    qt, kt = torch.as_tensor(np.asarray(q))[:limit], torch.as_tensor(np.asarray(k))
    probs = torch.softmax(qt @ kt.T / math.sqrt(qt.shape[1]), dim=1)
    return float(probs.gather(1, idx[:limit]).sum(dim=1).mean())


def _attention_map(q, k, idx: torch.Tensor) -> dict[str, Any]:
    """Dense and sparse attention weights of the first MAP_SIDE queries over the first MAP_SIDE keys."""
    side_q, side_k = min(MAP_SIDE, q.shape[0]), min(MAP_SIDE, k.shape[0])
    qt, kt = torch.as_tensor(np.asarray(q))[:side_q], torch.as_tensor(np.asarray(k))
    scores = qt @ kt.T / math.sqrt(qt.shape[1])
    dense = torch.softmax(scores, dim=1)
    masked = torch.full_like(scores, -torch.inf).scatter(1, idx[:side_q], scores.gather(1, idx[:side_q]))
    sparse = torch.softmax(masked, dim=1)
    return {"queries": side_q, "keys": side_k, "dense": dense[:, :side_k].numpy().round(5).tolist(),
            "sparse": sparse[:, :side_k].numpy().round(5).tolist()}


def _qaoa_window(scores: torch.Tensor, selected: torch.Tensor, top_k: int, max_qubits: int) -> tuple[int, np.ndarray] | None:
    """The keys QAOA decides for one query: ``j`` open slots at the end of its top k, and ``m`` candidates for them.

    The query's ``top_k - j`` best keys are certain; the candidates are its
    keys ranked ``top_k - j`` to ``top_k - j + m - 1`` (the selection's last
    ``j`` and the best unselected ones). ``j = m // 3``, not ``m // 2``: at
    half the count penalty is symmetric under complementing the selection,
    and shallow QAOA then often reads out the complement.

    Returns ``(j, candidate key indices (m,))``, or None when every key is selected.
    """
    n = scores.numel()
    m = min(max_qubits, n)
    j = max(1, min(top_k, m // 3))
    m = min(m, n - top_k + j)
    if m <= j:
        return None
    outside = torch.ones(n, dtype=torch.bool)
    outside[selected] = False
    rest = torch.nonzero(outside).flatten()
    best_rest = rest[torch.argsort(scores[rest], descending=True, stable=True)[: m - j]]
    return j, torch.cat([selected[top_k - j:], best_rest]).numpy()


def _qaoa(q, k, v, out, idx, config, solver, quantum, result, metrics, diagnostics, heartbeat=None):
    """QAOA fills the last slots of the top-k selection of the first ``qaoa_queries`` queries; the output uses its pick.

    QAOA's pick is adopted only where its exact check shows it optimal (the
    exact top-j of the candidates); elsewhere the exact pick is used. Those
    queries' output rows are recomputed from the adopted selection.

    Returns
    -------
    out : tensor of shape (n_q, d_v)
    idx : tensor of shape (n_q, top_k), int64
    """
    qt, kt, vt = (torch.as_tensor(np.asarray(a, dtype=np.float32)) for a in (q, k, v))
    scale = 1.0 / math.sqrt(qt.shape[1])
    out, idx = out.clone(), idx.clone()
    device = quantum.device_or_fall_back(solver, "qaoa", _budget(config, heartbeat))
    rows = []
    for query in range(min(config.qaoa_queries, qt.shape[0])):
        scores = kt @ qt[query] * scale
        window = _qaoa_window(scores, idx[query], config.top_k, config.max_qubits)
        if window is None:
            diagnostics.append(f"qaoa_sparse has no effect: top_k = {config.top_k} keeps every one of the "
                               f"{kt.shape[0]} keys, so there is nothing to choose")
            break
        j, candidates = window
        cand_scores = scores[candidates].double().numpy()
        exact = np.sort(candidates[np.argsort(-cand_scores, kind="stable")[:j]])
        row = {"query": query, "slots": j, "candidates": candidates.tolist(), "exact": exact.tolist()}
        if device is not None:
            window_step = partial(qaoa_topk, cand_scores, j, config.qaoa_layers, max_steps=config.qaoa_steps,
                                  seed=config.seed + query)
            found = quantum_step(solver, window_step, _budget(config, heartbeat), fallback_to=_without(solver.ran, "qaoa"),
                                 device=device)
            if found is None:
                device = None
            else:
                row.update({"qaoa": sorted(candidates[found["qaoa"]].tolist()), "used": sorted(candidates[found["used"]].tolist()),
                            "adopted": found["optimal"], **{key: found[key] for key in (
                                "overlap", "optimal", "ratio", "probability", "feasible_probability", "argmax_feasible")}})
                quantum.blocks.append({"kind": "qaoa_topk", **{key: found[key] for key in
                                      ("qubits", "circuits", "steps", "history", "ratio", "overlap")}, "query": query})
        if "used" not in row:
            row["used"], row["adopted"] = row["exact"], False
        keys = torch.cat([idx[query][: config.top_k - j], torch.as_tensor(row["used"], dtype=torch.int64)])
        order = torch.argsort(scores[keys], descending=True, stable=True)
        idx[query] = keys[order]
        out[query] = torch.softmax(scores[idx[query]], dim=0) @ vt[idx[query]]
        rows.append(row)
    result["qaoa_topk"] = rows
    result["qaoa_topk_use"] = (
        "For each listed query, QAOA chooses the last `slots` keys of its top-k among `candidates` (the keys ranked "
        "around the k-th); the updated embeddings use that choice where QAOA's exact check shows it optimal and the "
        "exact choice elsewhere. An optimal choice is the exact top-k, so the output equals exact top-k attention.")
    done = [r for r in rows if "overlap" in r]
    adopted = sum(r["adopted"] for r in done)
    metrics["qaoa_overlap"] = float(np.mean([r["overlap"] for r in done])) if done else None
    metrics["qaoa_mean_ratio"] = float(np.mean([r["ratio"] for r in done])) if done else None
    metrics["qaoa_windows_adopted"] = adopted
    if done and adopted == 0:
        _fall_back(solver, "qaoa", f"QAOA missed the exact top-k on all {len(done)} windows; the exact selection was used")
    elif done and adopted < len(done):
        diagnostics.append(f"QAOA missed the exact top-k on {len(done) - adopted} of {len(done)} windows; "
                           "the exact selection was used there")
    if adopted:
        diagnostics.append(f"QAOA's selection is used on {adopted} window(s); being optimal it equals exact top-k, so "
                           "the updated embeddings are those of exact top-k attention")
    return out, idx


#: Settings that only act through a toggle (or an input), and what they need.
_NEEDS = {
    "qaoa_queries": ("qaoa_sparse",), "qaoa_layers": ("qaoa_sparse",), "qaoa_steps": ("qaoa_sparse",),
    "train_steps": ("contrastive_trainer",), "learning_rate": ("contrastive_trainer",),
    "max_qubits": ("qaoa_sparse", "qpe_positions"), "quantum_time_budget_s": ("qaoa_sparse", "qpe_positions"),
}


def _idle_settings(config: AttentionConfig, inputs: AttentionInputs) -> list[str]:
    """One diagnostic per setting changed from its default that cannot act in this combination."""
    fields = AttentionConfig.model_fields
    changed = [name for name in fields if getattr(config, name) != fields[name].default]
    notes = []
    for name in changed:
        needs = _NEEDS.get(name)
        if needs and not any(getattr(config, toggle) for toggle in needs):
            notes.append(f"{name} = {getattr(config, name)} has no effect: {' and '.join(needs)} "
                         f"{'is' if len(needs) == 1 else 'are'} off")
    if inputs.weights is None:
        notes += [f"{name} = {getattr(config, name)} has no effect: no weights file was given"
                  for name in ("heads", "kv_heads", "prune_threshold") if name in changed]
    elif "settings" not in inputs.weights.heads_from:
        notes += [f"{name} = {getattr(config, name)} has no effect: head counts come from the {inputs.weights.heads_from}"
                  for name in ("heads", "kv_heads") if name in changed]
    elif "prune_threshold" in changed and not config.svd_pruner:
        notes.append(f"prune_threshold = {config.prune_threshold} only marks heads in the report: svd_pruner is off, "
                     "so no head is removed")
    if "key_block" in changed and config.topk_bounds_limit == 0:
        notes.append(f"key_block = {config.key_block} has no effect: topk_bounds_limit is 0 (every key is scored)")
    return notes


def _heads(inputs: AttentionInputs, config, result, metrics, tick=None) -> list[np.ndarray] | None:
    """SVD of every head of every layer; with svd_pruner on, remove those under the threshold and measure the change.

    Returns, when svd_pruner is on, per layer the query heads kept ((H_l,) bool); else None.
    """
    checkpoint = inputs.weights
    x = inputs.q  # the layers' sample inputs: the embeddings (or the queries when Q/K/V are separate)
    layers, keeps, flat_sv, flat_pruned, labels = [], [], [], [], []
    saved = 0
    for number, layer in enumerate(checkpoint.layers):
        report = head_report(layer, config.prune_threshold)
        # Grouped-query attention needs equal groups: a query head goes only with its whole key/value group.
        prunable = report.keep.reshape(layer.n_kv_heads, layer.group).any(axis=1).repeat(layer.group)
        keep = prunable if config.svd_pruner else np.ones(layer.n_heads, dtype=bool)
        change = relative_error(layer_forward(x, layer, keep), layer_forward(x, layer))
        layer_saved = params_saved(layer, keep)
        saved += layer_saved
        keeps.append(keep)
        for h in range(layer.n_heads):
            if not keep[h]:
                flat_pruned.append(len(labels))
            labels.append(f"L{layer.index}.H{h}")
        flat_sv += report.singular_values.round(6).tolist()
        layers.append({
            "layer": layer.index, "n_heads": layer.n_heads, "n_kv_heads": layer.n_kv_heads, "d_head": layer.d_head,
            "kept": np.flatnonzero(keep).tolist(), "pruned": np.flatnonzero(~keep).tolist(),
            "under_threshold": np.flatnonzero(~report.keep).tolist(),
            "leading_singular_values": report.singular_values[:, 0].round(6).tolist(),
            "qk_leading_singular_values": report.qk_leading.round(6).tolist(),
            "output_relative_change": change, "params_saved": layer_saved,
        })
        if tick is not None:
            tick((number + 1) / len(checkpoint.layers))
    first = checkpoint.layers[0]
    result["heads"] = {
        "layout": checkpoint.layout, "layers": layers, "heads_from": checkpoint.heads_from,
        "n_heads": len(labels), "d_head": first.d_head, "threshold": config.prune_threshold, "head_labels": labels,
        "kept": [i for i in range(len(labels)) if i not in set(flat_pruned)], "pruned": flat_pruned,
        "leading_singular_values": [row[0] for row in flat_sv], "singular_values": flat_sv,
        "criterion": "leading singular value of [W_O,h W_V,g(h) | W_O,h b_V,g(h)] < threshold (g(h): the head's key/value "
                     "head); with grouped-query attention a head is removed only with every head of its group",
        "applied": bool(config.svd_pruner),
        "measured_on": "each layer's attention output on the embeddings, with all heads and with the kept heads "
                       "(no rotary positions, norms or MLPs)",
    }
    metrics["heads_pruned"] = len(flat_pruned)
    metrics["params_saved"] = saved
    metrics["params_saved_fraction"] = saved / checkpoint.n_params
    metrics["layer_output_relative_change"] = max(row["output_relative_change"] for row in layers)
    return keeps if config.svd_pruner else None
