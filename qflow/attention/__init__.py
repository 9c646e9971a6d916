"""Attention: sparse top-k attention against dense SDPA, QAOA top-k, QPE positions,
an InfoNCE trainer and an SVD head pruner for single-layer, BERT and Llama/Mistral checkpoints.

One entry point, :func:`plan_attention` (:func:`run_attention` also returns
the updated embeddings and the pruned checkpoint); :func:`load_attention_inputs` reads the
tensor files (.npy, .npz, .pt weights-only, .safetensors) and a ``config.json`` beside the weights;
:func:`read_model_config` reads such a ``config.json`` given on its own (an upload).
"""

from qflow.attention._checkpoint import Checkpoint, parse_checkpoint
from qflow.attention._plan import (
    AttentionRun,
    load_attention_inputs,
    npy_bytes,
    plan_attention,
    read_model_config,
    run_attention,
)
from qflow.attention._schemas import AttentionConfig, AttentionInputs, AttentionWeights, build_inputs
from qflow.core.tensors import TENSOR_SUFFIXES, load_tensors

__all__ = [
    "AttentionConfig",
    "AttentionInputs",
    "AttentionRun",
    "AttentionWeights",
    "Checkpoint",
    "TENSOR_SUFFIXES",
    "build_inputs",
    "load_attention_inputs",
    "load_tensors",
    "npy_bytes",
    "parse_checkpoint",
    "plan_attention",
    "read_model_config",
    "run_attention",
]
