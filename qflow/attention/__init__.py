"""Attention: sparse top-k attention against dense SDPA, QAOA top-k, QPE positions,
an InfoNCE trainer and an SVD head pruner for single-layer, BERT and Llama/Mistral checkpoints.

One entry point, :func:`plan_attention` (:func:`run_attention` also returns
the updated embeddings and the pruned checkpoint); :func:`load_attention_inputs` reads the
tensor files (.npy, .npz, .pt weights-only, .safetensors) and a ``config.json`` beside the weights;
:func:`read_model_config` reads such a ``config.json`` given on its own (an upload).
"""

from qflow._lazy import lazy_exports

#: Public name -> the submodule defining it, imported on first use (the CLI lists every
#: module's command without importing any engine).
_EXPORTS = {
    "Checkpoint": "qflow.attention._checkpoint",
    "parse_checkpoint": "qflow.attention._checkpoint",
    "KeyBlockIndex": "qflow.attention._blocksparse",
    "AttentionRun": "qflow.attention._plan",
    "load_attention_inputs": "qflow.attention._plan",
    "npy_bytes": "qflow.attention._plan",
    "plan_attention": "qflow.attention._plan",
    "read_model_config": "qflow.attention._plan",
    "run_attention": "qflow.attention._plan",
    "AttentionConfig": "qflow.attention._schemas",
    "AttentionInputs": "qflow.attention._schemas",
    "AttentionWeights": "qflow.attention._schemas",
    "build_inputs": "qflow.attention._schemas",
    "TENSOR_SUFFIXES": "qflow.core.tensors",
    "load_tensors": "qflow.core.tensors",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "AttentionConfig",
    "AttentionInputs",
    "AttentionRun",
    "AttentionWeights",
    "Checkpoint",
    "KeyBlockIndex",
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
