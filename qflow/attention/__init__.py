"""Attention: sparse top-k attention against dense SDPA, QAOA top-k, QPE positions,
an InfoNCE trainer and an SVD head pruner.

One entry point, :func:`plan_attention` (:func:`run_attention` also returns
the updated embeddings as an array); :func:`load_attention_inputs` reads the
tensor files (.npy, .npz, .pt weights-only, .safetensors).
"""

from qflow.attention._plan import AttentionRun, load_attention_inputs, npy_bytes, plan_attention, run_attention
from qflow.attention._schemas import AttentionConfig, AttentionInputs, AttentionWeights, build_inputs
from qflow.core.tensors import TENSOR_SUFFIXES, load_tensors

__all__ = [
    "AttentionConfig",
    "AttentionInputs",
    "AttentionRun",
    "AttentionWeights",
    "TENSOR_SUFFIXES",
    "build_inputs",
    "load_attention_inputs",
    "load_tensors",
    "npy_bytes",
    "plan_attention",
    "run_attention",
]
