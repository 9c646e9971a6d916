"""Attention weights of real checkpoints: layouts, head counts, and the pruned checkpoint.

Three layouts are read (a common prefix such as ``bert.`` is allowed):

``single``
    One layer: ``{q,k,v,o}_proj.weight`` (d, d), optional biases, ``n_heads``.
``bert``
    ``encoder.layer.N.attention.self.{query,key,value}.{weight,bias}`` and
    ``encoder.layer.N.attention.output.dense.{weight,bias}``.
``llama``
    ``model.layers.N.self_attn.{q,k,v,o}_proj.weight`` (Llama, Mistral, Qwen:
    biases where present), with grouped-query attention: ``k_proj`` and
    ``v_proj`` have ``num_key_value_heads`` heads, each shared by
    ``num_attention_heads / num_key_value_heads`` query heads.

Head counts come from the checkpoint's ``config.json`` (the loader puts
``num_attention_heads``, ``num_key_value_heads`` and ``head_dim`` in as
``config.*`` scalars), from an ``n_heads`` array, or from the settings. The
head width is fixed per model, so a layer's head count is its rows over the
head width: a pruned checkpoint (heads differing per layer) reads back with
the original ``config.json``.

Weights are in ``torch.nn.Linear`` layout (out_features, in_features): query
head ``h`` owns rows ``h*dh:(h+1)*dh`` of q and those columns of o; key/value
head ``g`` owns those rows of k and v.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from qflow.core.errors import InputError

__all__ = ["CONFIG_KEYS", "PROJECTIONS", "AttentionWeights", "Checkpoint", "parse_checkpoint", "pruned_checkpoint"]

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
#: ``config.json`` fields the loader carries into the weights as ``config.<name>`` scalars.
CONFIG_KEYS = ("num_attention_heads", "num_key_value_heads", "head_dim", "hidden_size")
_BERT = re.compile(r"^(?P<pre>.*?)encoder\.layer\.(?P<layer>\d+)\.attention\."
                   r"(?:self\.(?P<proj>query|key|value)|output\.(?P<out>dense))\.(?P<part>weight|bias)$")
_LLAMA = re.compile(r"^(?P<pre>.*?)layers\.(?P<layer>\d+)\.self_attn\.(?P<proj>[qkvo])_proj\.(?P<part>weight|bias)$")
_BERT_NAMES = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "dense": "o_proj"}


@dataclass(frozen=True)
class AttentionWeights:
    """One multi-head attention layer, ``y = concat_h(softmax(q_h k_g(h)^T / sqrt(dh)) v_g(h)) W_O^T + b_O``.

    Attributes
    ----------
    w : dict of str to ndarray, float32
        ``q_proj`` (H*dh, d), ``k_proj`` and ``v_proj`` (Hkv*dh, d), ``o_proj`` (d, H*dh).
    b : dict of str to ndarray, float32
        Biases of the same four (zeros where the checkpoint has none).
    n_heads : int
        Query heads H.
    n_kv_heads : int
        Key/value heads Hkv (H for multi-head attention; fewer with grouped-query attention).
    index : int
        Layer number in the checkpoint.
    names : dict of str to str
        ``"q_proj.weight"`` etc. -> the checkpoint's own key (biases only where present).
    """

    w: dict[str, np.ndarray]
    b: dict[str, np.ndarray]
    n_heads: int
    n_kv_heads: int = 0
    index: int = 0
    names: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if not self.n_kv_heads:
            object.__setattr__(self, "n_kv_heads", self.n_heads)

    @property
    def d_model(self) -> int:
        return int(self.w["q_proj"].shape[1])

    @property
    def d_head(self) -> int:
        return int(self.w["q_proj"].shape[0]) // self.n_heads

    @property
    def group(self) -> int:
        """Query heads per key/value head."""
        return self.n_heads // self.n_kv_heads

    @property
    def n_params(self) -> int:
        """Weights and stored biases of the four projections."""
        weights = sum(a.size for a in self.w.values())
        biases = sum(self.b[p].size for p in PROJECTIONS if self.names is None or f"{p}.bias" in self.names)
        return int(weights + biases)


@dataclass(frozen=True)
class Checkpoint:
    """The attention layers of a checkpoint.

    Attributes
    ----------
    layout : str
        ``"single"``, ``"bert"`` or ``"llama"``.
    layers : list of AttentionWeights
        In layer order.
    heads_from : str
        Where the head counts came from.
    """

    layout: str
    layers: list[AttentionWeights]
    heads_from: str

    @property
    def n_params(self) -> int:
        return sum(layer.n_params for layer in self.layers)


def _finite(array: Any, source: str, field: str) -> np.ndarray:
    a = np.asarray(array)
    if a.dtype.kind not in "fiu":
        raise InputError(source, field, "not a numeric array", "float weights", str(a.dtype))
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise InputError(source, field, "not a finite number", "finite weights (no NaN or inf)",
                         f"{int((~np.isfinite(a)).sum())} non-finite values")
    return np.ascontiguousarray(a)


def _scalar(arrays: Mapping[str, Any], names: tuple[str, ...], source: str) -> tuple[int, str] | None:
    for name in names:
        for key in arrays:
            if key == name or key.endswith("." + name) and not key.startswith(("encoder.", "model.")):
                a = np.asarray(arrays[key])
                if a.size != 1 or a.dtype.kind not in "iuf" or float(a.reshape(-1)[0]) != int(a.reshape(-1)[0]) \
                        or int(a.reshape(-1)[0]) < 1:
                    raise InputError(source, key, "not a positive whole number", "one integer >= 1", a.tolist())
                return int(a.reshape(-1)[0]), key
    return None


def _head_counts(arrays, heads: int, kv_heads: int, source: str) -> tuple[int, int, int | None, str]:
    """(H, Hkv, head_dim or None, where from): the checkpoint's own counts first, then the settings."""
    h = _scalar(arrays, ("config.num_attention_heads", "n_heads", "num_heads", "n_head"), source)
    hkv = _scalar(arrays, ("config.num_key_value_heads",), source)
    dim = _scalar(arrays, ("config.head_dim",), source)
    if h is None:
        return heads, kv_heads or heads, None, "settings (heads, kv_heads)"
    return h[0], hkv[0] if hkv else h[0], dim[0] if dim else None, f"weights file ({h[1]})"


def _group_layers(arrays: Mapping[str, Any]) -> tuple[str, dict[int, dict[str, str]]]:
    """The layout and, per layer, ``"q_proj.weight"`` etc. -> the checkpoint's key."""
    for layout, pattern in (("bert", _BERT), ("llama", _LLAMA)):
        layers: dict[int, dict[str, str]] = {}
        for key in arrays:
            match = pattern.match(key)
            if match:
                proj = _BERT_NAMES[match["proj"] or match["out"]] if layout == "bert" else f"{match['proj']}_proj"
                layers.setdefault(int(match["layer"]), {})[f"{proj}.{match['part']}"] = key
        if layers:
            return layout, dict(sorted(layers.items()))
    single: dict[str, str] = {}
    for key in arrays:
        for proj in PROJECTIONS:
            for part in ("weight", "bias"):
                if key == f"{proj}.{part}" or key.endswith(f".{proj}.{part}"):
                    single[f"{proj}.{part}"] = key
    return "single", {0: single} if single else {}


def _layer(arrays, names: dict[str, str], index: int, counts: tuple[int, int, int | None], d_model: int,
           source: str) -> AttentionWeights:
    heads, kv_heads, head_dim = counts
    for proj in PROJECTIONS:
        if f"{proj}.weight" not in names:
            raise InputError(source, f"layer {index}: {proj}.weight", "missing array",
                             "q, k, v and output projection weights in every layer", sorted(names.values())[:6])
    w = {p: _finite(arrays[names[f"{p}.weight"]], source, names[f"{p}.weight"]) for p in PROJECTIONS}
    key = names["q_proj.weight"]
    if w["q_proj"].ndim != 2 or w["q_proj"].shape[1] != d_model:
        raise InputError(source, key, "shape mismatch with the embeddings",
                         f"shape (heads * head_dim, {d_model}) for embeddings of width {d_model}", f"shape {w['q_proj'].shape}")
    dh = head_dim or d_model // heads
    if dh < 1 or (head_dim is None and d_model % heads):
        raise InputError(source, "n_heads", "does not divide the model width", f"a divisor of d = {d_model}", heads)
    rows = {p: w[p].shape[0] for p in ("q_proj", "k_proj", "v_proj")}
    if any(r % dh for r in rows.values()) or w["k_proj"].shape != w["v_proj"].shape or w["o_proj"].shape != (d_model, rows["q_proj"]):
        raise InputError(source, f"layer {index}", "projection shapes do not fit the head width",
                         f"q (H*{dh}, {d_model}), k and v (Hkv*{dh}, {d_model}), o ({d_model}, H*{dh})",
                         {p: list(a.shape) for p, a in w.items()})
    n_q, n_kv = rows["q_proj"] // dh, rows["k_proj"] // dh
    if n_kv < 1 or n_q < 1 or n_q % n_kv:
        raise InputError(source, f"layer {index}", "query heads are not a multiple of key/value heads",
                         f"H a multiple of Hkv (head_dim {dh}); the file gives {kv_heads} kv heads",
                         f"H = {n_q}, Hkv = {n_kv}")
    b = {}
    for p in PROJECTIONS:
        size = w[p].shape[0]
        bias_key = names.get(f"{p}.bias")
        b[p] = np.zeros(size, dtype=np.float32) if bias_key is None else _finite(arrays[bias_key], source, bias_key).reshape(-1)
        if b[p].shape != (size,):
            raise InputError(source, bias_key, "bad bias", f"{size} values", f"shape {np.shape(arrays[bias_key])}")
    return AttentionWeights(w=w, b=b, n_heads=n_q, n_kv_heads=n_kv, index=index, names=names)


def parse_checkpoint(arrays: Mapping[str, Any], d_model: int, heads: int, kv_heads: int = 0,
                     source: str = "weights") -> Checkpoint:
    """Every attention layer of a state dict in one of the three layouts.

    Parameters
    ----------
    arrays : mapping of str to array
    d_model : int
        The embeddings' width (the layers' input width).
    heads, kv_heads : int
        Used when the checkpoint declares no head count (``kv_heads`` 0: as ``heads``).

    Raises
    ------
    InputError
        No attention weights, missing projections, shapes that fit no head split.
    """
    layout, grouped = _group_layers(arrays)
    if not grouped:
        raise InputError(source, "(file)", "no attention weights found",
                         "{q,k,v,o}_proj.weight, BERT encoder.layer.N.attention.* or Llama model.layers.N.self_attn.*",
                         sorted(arrays)[:8])
    h, hkv, dim, heads_from = _head_counts(arrays, heads, kv_heads, source)
    layers = [_layer(arrays, names, index, (h, hkv, dim), d_model, source) for index, names in grouped.items()]
    return Checkpoint(layout=layout, layers=layers, heads_from=heads_from)


def pruned_checkpoint(arrays: Mapping[str, Any], checkpoint: Checkpoint, keep: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The state dict with the heads not in ``keep`` removed, every other array unchanged.

    A query head goes with its rows of q (and bias) and its columns of o; a
    key/value head goes only when every query head sharing it is removed.
    Shapes stay consistent: a layer keeps ``H' * dh`` rows of q, ``Hkv' *
    dh`` rows of k and v, and ``H' * dh`` columns of o.

    Parameters
    ----------
    keep : list of ndarray of shape (H_l,), bool
        Per layer, the query heads kept.
    """
    out = {key: np.asarray(value) for key, value in arrays.items()}
    for layer, kept in zip(checkpoint.layers, keep, strict=True):
        dh, group = layer.d_head, layer.group
        q_rows = np.concatenate([np.arange(h * dh, (h + 1) * dh) for h in np.flatnonzero(kept)] or [np.arange(0)])
        kv_kept = np.array([kept[g * group:(g + 1) * group].any() for g in range(layer.n_kv_heads)])
        kv_rows = np.concatenate([np.arange(g * dh, (g + 1) * dh) for g in np.flatnonzero(kv_kept)] or [np.arange(0)])
        names = layer.names or {}
        for proj, rows in (("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)):
            out[names[f"{proj}.weight"]] = layer.w[proj][rows]
            if f"{proj}.bias" in names:
                out[names[f"{proj}.bias"]] = layer.b[proj][rows]
        out[names["o_proj.weight"]] = layer.w["o_proj"][:, q_rows]
    return out
