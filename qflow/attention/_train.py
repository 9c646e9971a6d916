"""``qflow train contrastive``: the attention plan's InfoNCE projections ``W_q, W_k``, trained once and reused.

Trained as a plan trains them (same start: the weights file's first layer or
the identity; same pairs, steps, learning rate and seed), on the embeddings
as given (the plan's optional QPE position encoding is not applied first).
The card's ``spec`` holds the width ``d``; a plan refuses projections of
another width.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qflow.attention._schemas import AttentionConfig
from qflow.core.config import QflowConfig
from qflow.core.errors import InputError
from qflow.core.models import ModelArtifact, TrainedModel, Trainer, check_spec, digest_list
from qflow.core.skeleton import input_sources

__all__ = ["TRAINERS", "loaded_projections", "train_contrastive_model"]

KIND = "contrastive"


def train_contrastive_model(files: dict[str, Path | None], config: QflowConfig) -> TrainedModel:
    """InfoNCE-train ``W_q, W_k`` on the embeddings (and the weights file's start, when given)."""
    from qflow.attention._plan import _as_arrays, build_inputs, contrastive_weights, load_attention_inputs

    assert isinstance(config, AttentionConfig)
    emb, weights, digests = load_attention_inputs(files["embeddings"], files.get("weights"))
    names = input_sources(digests)
    inputs = build_inputs(_as_arrays(emb), _as_arrays(weights), config, names.get("embeddings", "embeddings"), names.get("weights", "weights"))
    q, k = np.asarray(inputs.q), np.asarray(inputs.k)
    wq, wk, losses, start, rows = contrastive_weights(q, k, inputs, config, lambda fraction, message: None)
    metrics = {"infonce_initial": losses[0], "infonce_final": losses[-1], "pairs": rows, "start": start, "steps": config.train_steps}
    return TrainedModel(tensors={"w_q": wq.astype(np.float32), "w_k": wk.astype(np.float32)}, spec={"width": int(q.shape[1])},
                        metrics=metrics, inputs=digest_list(digests), config=config.model_dump())


def loaded_projections(model: ModelArtifact, q: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``W_q, W_k`` of a loaded model checked against width ``d``, and the InfoNCE loss on these pairs with and without them."""
    import torch

    from qflow.attention._classical import info_nce_loss

    d = int(q.shape[1])
    check_spec(model, {"width": d})
    wq, wk = model.tensors.get("w_q"), model.tensors.get("w_k")
    for name, w in (("w_q", wq), ("w_k", wk)):
        if w is None or w.shape != (d, d):
            raise InputError(model.source, f"model.tensors.{name}", "shape does not fit these embeddings", f"({d}, {d})",
                             None if w is None else list(w.shape))
    rows = min(q.shape[0], k.shape[0])
    qt, kt = torch.as_tensor(q[:rows], dtype=torch.float32), torch.as_tensor(k[:rows], dtype=torch.float32)
    with torch.no_grad():
        identity = float(info_nce_loss(qt, kt))
        loaded = float(info_nce_loss(qt @ torch.as_tensor(wq, dtype=torch.float32).T, kt @ torch.as_tensor(wk, dtype=torch.float32).T))
    return wq.astype(np.float32), wk.astype(np.float32), {"pairs": rows, "infonce_identity": identity, "infonce_loaded": loaded,
                                                          "loss": "sum_i -log softmax_j(q_i . k_j)[i]"}


TRAINERS = (Trainer(
    name=KIND,
    help="train the attention plan's contrastive projections (InfoNCE W_q, W_k) on embeddings",
    config_cls=AttentionConfig,
    inputs=("embeddings",),
    optional_inputs=("weights",),
    input_help={"embeddings": "the attention plan's embeddings (.npy/.npz/.pt/.safetensors)",
                "weights": "the attention plan's weights file (its first layer's q_proj / k_proj start the training)"},
    train=train_contrastive_model,
),)
