"""Compression: checkpoints and tensors into a checksummed ``.qfz`` container and back.

Two entry points: :func:`compress_tensors` (:func:`plan_compress` for the plan
alone) and :func:`decompress_container` (:func:`plan_decompress`);
:func:`decompress_to_files` restores straight to files. Loaders:
:func:`load_checkpoint_input` (lazy: .safetensors, sharded index or folder,
.pt/.pth/.bin weights-only, .npz; else in memory: .npy, CSV),
:func:`load_tensors_input` (the same, in memory) and :func:`load_container`.
:func:`restored_bytes` writes restored tensors of any dtype as a file's bytes.
"""

from qflow.compression._plan import (
    CompressRun,
    DecompressRun,
    compress_tensors,
    decompress_container,
    decompress_to_files,
    load_checkpoint_input,
    load_container,
    load_tensors_input,
    plan_compress,
    plan_decompress,
)
from qflow.compression._schemas import INPUT_SUFFIXES, CompressConfig, DecompressConfig
from qflow.compression._stream import restored_bytes

__all__ = [
    "CompressConfig",
    "CompressRun",
    "DecompressConfig",
    "DecompressRun",
    "INPUT_SUFFIXES",
    "compress_tensors",
    "decompress_container",
    "decompress_to_files",
    "load_checkpoint_input",
    "load_container",
    "load_tensors_input",
    "plan_compress",
    "plan_decompress",
    "restored_bytes",
]
