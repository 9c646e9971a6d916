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
from typing import Any, Literal

import numpy as np
from pydantic import Field

from qflow.core.config import QflowConfig
from qflow.core.errors import InputError
from qflow.core.limits import check_limit
from qflow.core.quantum import HARD_MAX_QUBITS

__all__ = ["AttentionConfig", "AttentionInputs", "AttentionWeights", "build_inputs", "parse_embeddings", "parse_weights"]

#: Largest sequence accepted (keys or queries); the dense baseline is n x n.
MAX_SEQ = 16_384
#: Key names accepted for separate Q/K/V arrays in an .npz/.pt/.safetensors file.
QKV_NAMES = {"q": ("q", "query", "queries"), "k": ("k", "key", "keys"), "v": ("v", "value", "values")}
#: Key names accepted for a single embeddings array inside a multi-array file.
EMBEDDING_NAMES = ("embeddings", "x", "hidden_states", "array")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


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
    topk_search: Literal["bounds", "dense"] = Field(
        "bounds", description="How the exact top-k keys are found: 'bounds' skips key blocks whose per-dimension "
        "min/max bound cannot reach a query's k-th score (falling back to dense where they prune too little); "
        "'dense' scores every key. Both give the same keys.")
    key_block: int = Field(32, ge=4, le=1024, description="Keys per block (consecutive positions) for the top-k bounds.")
    heads: int = Field(4, ge=1, le=64, description="Attention heads of the layer; must match the weights file's n_heads.")
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
class AttentionWeights:
    """One multi-head attention layer, ``y = concat_h(softmax(q_h k_h^T / sqrt(d_h)) v_h) W_O^T + b_O``.

    Attributes
    ----------
    w : dict of str to ndarray of shape (d, d), float32
        ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` in ``torch.nn.Linear``
        layout (out_features, in_features); head ``h`` owns rows
        ``h*d_h:(h+1)*d_h`` of q/k/v and those columns of o.
    b : dict of str to ndarray of shape (d,), float32
        Biases (zeros where the file has none).
    n_heads : int
    """

    w: dict[str, np.ndarray]
    b: dict[str, np.ndarray]
    n_heads: int

    @property
    def d_model(self) -> int:
        return int(self.w["q_proj"].shape[1])

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


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
    weights : AttentionWeights or None
    """

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    shared: bool
    weights: AttentionWeights | None = None

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


def _scalar_int(value: Any, source: str, field: str) -> int:
    a = np.asarray(value)
    if a.size != 1 or a.dtype.kind not in "iuf" or float(a.reshape(-1)[0]) != int(a.reshape(-1)[0]):
        raise InputError(source, field, "not a whole number", "one integer", a.tolist())
    return int(a.reshape(-1)[0])


def parse_weights(arrays: Mapping[str, np.ndarray], d_model: int, heads: int, source: str = "weights") -> AttentionWeights:
    """An :class:`AttentionWeights` from a state dict.

    Expects ``{q,k,v,o}_proj.weight`` of shape (d_model, d_model), optional
    ``{q,k,v,o}_proj.bias`` of shape (d_model,), and optionally ``n_heads``
    (must equal ``heads``). A common prefix (``layers.0.attn.``) is ignored.
    """
    names = {key: key for key in arrays}
    stripped: dict[str, str] = {}
    for key in names:
        for proj in PROJECTIONS:
            for part in ("weight", "bias"):
                if key == f"{proj}.{part}" or key.endswith(f".{proj}.{part}"):
                    stripped[f"{proj}.{part}"] = key
        if key == "n_heads" or key.endswith(".n_heads") or key in ("num_heads", "n_head"):
            stripped["n_heads"] = key
    w, b = {}, {}
    for proj in PROJECTIONS:
        key = stripped.get(f"{proj}.weight")
        if key is None:
            raise InputError(source, f"{proj}.weight", "missing array", "q_proj, k_proj, v_proj and o_proj weights",
                             sorted(arrays)[:8])
        w[proj] = _matrix(arrays[key], source, key)
        if w[proj].shape != (d_model, d_model):
            raise InputError(source, key, "shape mismatch with the embeddings",
                             f"shape ({d_model}, {d_model}) for embeddings of width {d_model}", f"shape {w[proj].shape}")
        bias_key = stripped.get(f"{proj}.bias")
        if bias_key is None:
            b[proj] = np.zeros(d_model, dtype=np.float32)
            continue
        bias = np.asarray(arrays[bias_key], dtype=np.float32).reshape(-1)
        if bias.shape != (d_model,) or not np.isfinite(bias).all():
            raise InputError(source, bias_key, "bad bias", f"{d_model} finite values", f"shape {np.shape(arrays[bias_key])}")
        b[proj] = bias
    n_heads = heads
    if "n_heads" in stripped:
        n_heads = _scalar_int(arrays[stripped["n_heads"]], source, stripped["n_heads"])
        if n_heads != heads:
            raise InputError(source, stripped["n_heads"], "head count differs from config.heads",
                             f"config.heads = {heads} (set --heads {n_heads})", n_heads)
    if n_heads < 1 or d_model % n_heads:
        raise InputError(source, "n_heads", "does not divide the model width", f"a divisor of d = {d_model}", n_heads)
    return AttentionWeights(w=w, b=b, n_heads=n_heads)


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
    parsed = None
    if weights is not None:
        if not shared and not (q.shape[1] == k.shape[1] == v.shape[1]):
            raise InputError(weights_name, "(file)", "cannot apply a layer to Q/K/V of different widths",
                             "one embeddings array, or q, k, v of one width", f"{q.shape[1]}, {k.shape[1]}, {v.shape[1]}")
        parsed = parse_weights(weights, int(k.shape[1]), config.heads, weights_name)
    elif config.svd_pruner:
        raise InputError(weights_name, "(file)", "svd_pruner needs the attention layer's weights",
                         "a weights file (q/k/v/o_proj and n_heads), or svd_pruner off")
    return AttentionInputs(q=q, k=k, v=v, shared=shared, weights=parsed)
