"""Router logits as tensors: ``.npy``, ``.safetensors`` or ``.pt`` (weights only) in, token tables out.

A tensor of shape (tokens, experts) is one routing problem; (layers, tokens,
experts) is one per layer, sharing the optional token metadata (a CSV or
JSON table with ``token_id``, ``source``, ``complexity``, ``hint``,
``padding``: one row per token, in tensor order). Nothing is unpickled
(:mod:`qflow.core.tensors`), sizes are checked before parsing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qflow.core.errors import InputError
from qflow.core.io import load_table
from qflow.core.plan import InputDigest
from qflow.core.tensors import TENSOR_SUFFIXES, load_tensors
from qflow.routing._schemas import ID_COLUMNS

__all__ = ["is_tensor_file", "load_logit_layers"]

#: Array names read from a multi-array file, in order of preference.
LOGIT_KEYS = ("logits", "router_logits", "array")


def is_tensor_file(source: Any, name: str | None = None) -> bool:
    """True when ``source`` (path or upload) names a tensor file by its suffix."""
    label = name or str(getattr(source, "name", source if isinstance(source, (str, Path)) else ""))
    return Path(label).suffix.lstrip(".").lower() in TENSOR_SUFFIXES


def _logit_array(arrays: dict[str, np.ndarray], source: str) -> tuple[str, np.ndarray]:
    if len(arrays) == 1:
        return next(iter(arrays.items()))
    for key in LOGIT_KEYS:
        if key in arrays:
            return key, arrays[key]
    raise InputError(source, "(arrays)", "several arrays and none named logits", "one array, or one named 'logits'",
                     ", ".join(list(arrays)[:4]))


def load_logit_layers(
    tokens: Any, metadata: Any | None = None, *, tokens_name: str | None = None, metadata_name: str | None = None
) -> tuple[list[pd.DataFrame], list[InputDigest]]:
    """One token table per layer from a logits tensor (and optional metadata).

    Returns
    -------
    frames : list of DataFrame
        Per layer: the metadata columns (or ``token_id`` = row number) and
        ``score_0..score_{E-1}`` holding that layer's logits (float32, no copy
        of the tensor beyond the per-layer slice).
    digests : list of InputDigest
        The tensor file's (and the metadata's) digest.

    Raises
    ------
    InputError
        Not 2-D or 3-D, non-finite logits, metadata rows not matching the tokens.
    """
    arrays, raw = load_tensors(tokens, tokens_name)
    key, logits = _logit_array(arrays, raw.name)
    if logits.ndim not in (2, 3) or 0 in logits.shape:
        raise InputError(raw.name, f"{key}.shape", "wrong shape", "(tokens, experts) or (layers, tokens, experts)", list(logits.shape))
    layers = logits.astype(np.float32, copy=False).reshape((-1, *logits.shape[-2:]))
    bad = ~np.isfinite(layers)
    if bad.any():
        layer, token, expert = np.argwhere(bad)[0]
        where = f"[{layer}, {token}, {expert}]" if logits.ndim == 3 else f"[{token}, {expert}]"
        raise InputError(raw.name, f"{key}{where}", "not a finite number", "finite logits", float(layers[layer, token, expert]))
    n, E = layers.shape[1:]
    digests = [raw.digest("tokens", rows=n, shape=list(logits.shape))]
    if metadata is not None:
        meta, meta_raw = load_table(metadata, name=metadata_name, records_key="tokens", text_columns=ID_COLUMNS)
        if len(meta) != n:
            raise InputError(meta_raw.name, "(rows)", "row count does not match the logits",
                             f"{n} rows, one per token of {raw.name} (layers share them)", len(meta))
        clash = [c for c in meta.columns if str(c).startswith("score") or str(c) == "layer"]
        if clash:
            raise InputError(meta_raw.name, str(clash[0]), "column not allowed with a logits tensor",
                             "token metadata only (token_id, source, complexity, hint, padding)", clash[0])
        digests.append(meta_raw.digest("token_metadata", rows=len(meta), shape=list(meta.shape)))
        base = meta.reset_index(drop=True)
        if "token_id" not in base.columns:
            base.insert(0, "token_id", np.arange(n).astype(str))
    else:
        base = pd.DataFrame({"token_id": np.arange(n).astype(str)})
    columns = [f"score_{e}" for e in range(E)]
    frames = [pd.concat([base, pd.DataFrame(layer, columns=columns, copy=False)], axis=1) for layer in layers]
    return frames, digests
