"""Compression: checkpoints and tensors into a checksummed ``.qfz`` container and back.

Two entry points: :func:`compress_tensors` (:func:`plan_compress` for the plan
alone) and :func:`decompress_container` (:func:`plan_decompress`);
:func:`decompress_to_files` restores straight to files. Loaders:
:func:`load_checkpoint_input` (lazy: .safetensors, sharded index or folder,
.pt/.pth/.bin weights-only, .npz; else in memory: .npy, CSV),
:func:`load_tensors_input` (the same, in memory) and :func:`load_container`.
:func:`restored_bytes` writes restored tensors of any dtype as a file's bytes.
"""

from qflow._lazy import lazy_exports

#: Public name -> the submodule defining it, imported on first use (the CLI lists every
#: module's command without importing any engine).
_EXPORTS = {
    "CompressRun": "qflow.compression._plan",
    "DecompressRun": "qflow.compression._plan",
    "compress_tensors": "qflow.compression._plan",
    "decompress_container": "qflow.compression._plan",
    "decompress_to_files": "qflow.compression._plan",
    "load_checkpoint_input": "qflow.compression._plan",
    "load_container": "qflow.compression._plan",
    "load_tensors_input": "qflow.compression._plan",
    "plan_compress": "qflow.compression._plan",
    "plan_decompress": "qflow.compression._plan",
    "INPUT_SUFFIXES": "qflow.compression._schemas",
    "CompressConfig": "qflow.compression._schemas",
    "DecompressConfig": "qflow.compression._schemas",
    "restored_bytes": "qflow.compression._stream",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

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
