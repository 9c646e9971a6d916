"""Compression: checkpoints and tensors into a checksummed ``.qfz`` container and back.

Two entry points: :func:`compress_tensors` (:func:`plan_compress` for the plan
alone) and :func:`decompress_container` (:func:`plan_decompress`). Loaders:
:func:`load_tensors_input` (.npy, .npz, .safetensors, .pt/.pth weights-only,
CSV) and :func:`load_container`.
"""

from qflow.compression._plan import (
    CompressRun,
    DecompressRun,
    compress_tensors,
    decompress_container,
    load_container,
    load_tensors_input,
    plan_compress,
    plan_decompress,
)
from qflow.compression._schemas import INPUT_SUFFIXES, CompressConfig, DecompressConfig

__all__ = [
    "CompressConfig",
    "CompressRun",
    "DecompressConfig",
    "DecompressRun",
    "INPUT_SUFFIXES",
    "compress_tensors",
    "decompress_container",
    "load_container",
    "load_tensors_input",
    "plan_compress",
    "plan_decompress",
]
