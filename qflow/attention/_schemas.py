"""Attention inputs and config: parse once, validate once, then trust.

:func:`build_inputs` turns the embeddings (and optional layer weights) into an
:class:`AttentionInputs` of finite float32 arrays with matching shapes; every
check that can fail lives here and raises
:class:`~qflow.core.errors.InputError` naming the file and the field. The
numeric code in ``_classical`` and ``_quantum`` assumes its input is valid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from qflow.attention._checkpoint import AttentionWeights, Checkpoint, parse_checkpoint
from qflow.core.config import QflowConfig
from qflow.core.errors import InputError
from qflow.core.limits import check_limit
from qflow.core.quantum import HARD_MAX_QUBITS

__all__ = ["AttentionConfig", "AttentionInputs", "AttentionWeights", "Checkpoint", "build_inputs", "parse_embeddings",
           "parse_weights"]

#: Largest sequence accepted (keys or queries); the dense baseline is n x n.
MAX_SEQ = 16_384
#: Key names accepted for separate Q/K/V arrays in an .npz/.pt/.safetensors file.
QKV_NAMES = {"q": ("q", "query", "queries"), "k": ("k", "key", "keys"), "v": ("v", "value", "values")}
#: Key names accepted for a single embeddings array inside a multi-array file.
EMBEDDING_NAMES = ("embeddings", "x", "hidden_states", "array")


class AttentionConfig(QflowConfig):
    """Toggles and settings of the attention module (page widgets, CLI flags, API form)."""

    qaoa_sparse: bool = Field(
        False, description="Also pick top-k keys with QAOA (k of n as a constrained Ising problem) on small key "
        "windows of the first queries, checked against exact top-k.")
    qpe_positions: bool = Field(
        False, description="Encode position i as the phase 2*pi*i/N with quantum phase estimation, read it back, and "
        "add the sinusoidal encoding of the recovered positions to Q and K.")
    contrastive_trainer: bool = Field(
        False, description="Train the Q and K projections with the InfoNCE loss (Adam) before attention.")
    svd_pruner: bool = Field(
        False, description="Prune heads of the weights file whose leading OV singular value is under prune_threshold "
        "(needs a weights file).")
    top_k: int = Field(32, ge=1, le=MAX_SEQ, description="Keys kept per query by sparse attention (<= number of keys).")
    topk_bounds_limit: float = Field(
        0.5, ge=0, le=1, description="Exact top-k skips key blocks whose per-dimension min/max bound cannot reach a "
        "query's k-th score; when the bounds of more than this share of the blocks reach the k-th scores of a sample "
        "of 16 queries (decided before any tile), or a tile still has to score more, the rest is scored densely. "
        "0 scores every key (no bounds). The keys found are the same either way.")
    key_block: int = Field(32, ge=4, le=1024, description="Keys per block (consecutive positions) for the top-k bounds.")
    heads: int = Field(4, ge=1, le=256, description="Query heads per layer when the weights file declares none (its "
                       "config.json's num_attention_heads or an n_heads array wins).")
    kv_heads: int = Field(0, ge=0, le=256, description="Key/value heads per layer (grouped-query attention) when the "
                          "weights file declares none; 0 = as heads.")
    prune_threshold: float = Field(
        0.5, ge=0, le=1e6, description="A head is pruned when the leading singular value of its W_O W_V is under this.")
    max_qubits: int = Field(
        10, ge=2, le=HARD_MAX_QUBITS, description="Largest circuit: keys per QAOA window; QPE uses max_qubits - 1 "
        "phase qubits at most.")
    qaoa_queries: int = Field(2, ge=1, le=16, description="Queries whose key window is solved by QAOA.")
    qaoa_layers: int = Field(2, ge=1, le=8, description="QAOA depth p: alternating cost and mixer layers.")
    qaoa_steps: int = Field(30, ge=1, le=500, description="Optimiser steps per QAOA circuit at most.")
    train_steps: int = Field(60, ge=1, le=5000, description="Adam steps of the contrastive trainer.")
    learning_rate: float = Field(0.01, ge=1e-6, le=1, description="Adam learning rate of the contrastive trainer.")
    quantum_time_budget_s: float = Field(120.0, gt=0, le=3600, description="Wall time for all circuits of one plan, s.")


@dataclass(frozen=True)
class AttentionInputs:
    """A validated attention instance.

    Attributes
    ----------
    q : ndarray of shape (n_q, d), float32
    k : ndarray of shape (n, d), float32
    v : ndarray of shape (n, d_v), float32
    shared : bool
        True when one embeddings array was given and is used as Q = K = V.
    weights : Checkpoint or None
        Every attention layer of the weights file.
    """

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    shared: bool
    weights: Checkpoint | None = None

    @property
    def n_keys(self) -> int:
        return int(self.k.shape[0])


def _pick(arrays: Mapping[str, np.ndarray], names: tuple[str, ...]) -> str | None:
    lowered = {key.lower(): key for key in arrays}
    return next((lowered[n] for n in names if n in lowered), None)


def _matrix(array: np.ndarray, source: str, field: str) -> np.ndarray:
    """A finite 2-D float32 array, or an InputError saying which rule it broke."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]  # a batch of one, as a model's hidden states come out
    if a.ndim != 2:
        raise InputError(source, field, "wrong number of dimensions", "a 2-D array of shape (seq, d)", f"shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise InputError(source, field, "empty array", "at least one row and one column", f"shape {a.shape}")
    if a.shape[0] > MAX_SEQ:
        raise InputError(source, field, "sequence too long", f"at most {MAX_SEQ} rows", a.shape[0])
    a = a.astype(np.float32)
    bad = ~np.isfinite(a)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise InputError(source, f"{field}[{row}, {col}]", "not a finite number", "finite values (no NaN or inf)",
                         f"{int(bad.sum())} non-finite values, first {a[row, col]}")
    return np.ascontiguousarray(a)


def parse_embeddings(arrays: Mapping[str, np.ndarray], source: str = "embeddings") -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Q, K, V from one array (Q = K = V) or from arrays named q/k/v.

    Returns
    -------
    q, k, v : ndarray, float32
    shared : bool
    """
    keys = {role: _pick(arrays, names) for role, names in QKV_NAMES.items()}
    if all(keys.values()):
        q, k, v = (_matrix(arrays[keys[r]], source, keys[r]) for r in "qkv")
        if q.shape[1] != k.shape[1]:
            raise InputError(source, keys["q"], "shape mismatch with keys", f"width d = {k.shape[1]} (as {keys['k']})",
                             f"shape {q.shape}")
        if v.shape[0] != k.shape[0]:
            raise InputError(source, keys["v"], "shape mismatch with keys", f"{k.shape[0]} rows (as {keys['k']})",
                             f"shape {v.shape}")
        return q, k, v, False
    if any(keys.values()):
        missing = [r for r, key in keys.items() if key is None]
        raise InputError(source, "/".join(missing), "missing array", "q, k and v together, or one embeddings array",
                         sorted(arrays))
    single = _pick(arrays, EMBEDDING_NAMES) or (next(iter(arrays)) if len(arrays) == 1 else None)
    if single is None:
        raise InputError(source, "(file)", "ambiguous arrays", "one array, or arrays named embeddings or q/k/v",
                         sorted(arrays))
    x = _matrix(arrays[single], source, single if single != "array" else "embeddings")
    return x, x, x, True


def parse_weights(arrays: Mapping[str, np.ndarray], d_model: int, heads: int, source: str = "weights") -> AttentionWeights:
    """The first attention layer of a state dict (see :func:`~qflow.attention._checkpoint.parse_checkpoint`)."""
    return parse_checkpoint(arrays, d_model, heads, 0, source).layers[0]


def build_inputs(
    embeddings: Mapping[str, np.ndarray] | np.ndarray,
    weights: Mapping[str, np.ndarray] | None,
    config: AttentionConfig,
    embeddings_name: str = "embeddings",
    weights_name: str = "weights",
) -> AttentionInputs:
    """Validate everything the planner needs, once.

    Raises
    ------
    InputError
        Shape mismatches, NaN/inf, ``top_k`` larger than the number of keys,
        ``svd_pruner`` without weights.
    """
    arrays = {"array": embeddings} if isinstance(embeddings, np.ndarray) else dict(embeddings)
    arrays = {key: np.asarray(value) for key, value in arrays.items()}
    q, k, v, shared = parse_embeddings(arrays, embeddings_name)
    # Dense attention (the baseline) computes n_q * n scores of width d and mixes n_q * n values of width d_v.
    check_limit(q.shape[0] * k.shape[0] * (k.shape[1] + v.shape[1]), "attention_cells", embeddings_name,
                f"(shapes q {q.shape[0]}x{q.shape[1]}, k {k.shape[0]}x{k.shape[1]}, v {v.shape[0]}x{v.shape[1]})")
    if config.top_k > k.shape[0]:
        raise InputError(embeddings_name, "config.top_k", "larger than the sequence",
                         f"at most {k.shape[0]} (the number of keys)", config.top_k)
    if config.contrastive_trainer:
        pairs = min(q.shape[0], k.shape[0])
        # Each Adam step forms the pairs x pairs logits of width d, forward and backward (about 3 passes).
        check_limit(3 * config.train_steps * pairs * pairs * q.shape[1], "attention_cells", embeddings_name,
                    f"(contrastive trainer: {config.train_steps} steps x {pairs}^2 pairs x width {q.shape[1]} x 3)")
    parsed = None
    if weights is not None:
        if not shared and not (q.shape[1] == k.shape[1] == v.shape[1]):
            raise InputError(weights_name, "(file)", "cannot apply a layer to Q/K/V of different widths",
                             "one embeddings array, or q, k, v of one width", f"{q.shape[1]}, {k.shape[1]}, {v.shape[1]}")
        parsed = parse_checkpoint(weights, int(k.shape[1]), config.heads, config.kv_heads, weights_name)
        # The pruner runs every layer twice (all heads, kept heads) on the embeddings.
        check_limit(2 * len(parsed.layers) * q.shape[0] * q.shape[0] * 2 * q.shape[1], "attention_cells", weights_name,
                    f"({len(parsed.layers)} layers on {q.shape[0]} positions of width {q.shape[1]})")
    elif config.svd_pruner:
        raise InputError(weights_name, "(file)", "svd_pruner needs the attention layer's weights",
                         "a weights file (single-layer, BERT or Llama/Mistral layout), or svd_pruner off")
    return AttentionInputs(q=q, k=k, v=v, shared=shared, weights=parsed)
