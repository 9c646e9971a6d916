"""Compression configs and input parsing: validate once, then trust.

:class:`CompressConfig` and :class:`DecompressConfig` are the pages' toggles
and the CLI's flags. :func:`load_tensor_file` reads a checkpoint (``.npy``,
``.npz``, ``.safetensors``, ``.pt``/``.pth`` weights-only, CSV matrix) into
named numeric arrays; :func:`check_tensors` refuses non-finite values, empty
inputs and unsupported dtypes with an :class:`~qflow.core.errors.InputError`
naming the file and the tensor. The numeric code assumes its input is valid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from qflow.compression._dtypes import DTYPES, is_float, torch_to_numpy
from qflow.core.config import QflowConfig
from qflow.core.errors import InputError
from qflow.core.io import RawInput, Source, read_input
from qflow.core.quantum import HARD_MAX_QUBITS
from qflow.core.tensors import TENSOR_SUFFIXES, parse_tensors

__all__ = [
    "CompressConfig",
    "DecompressConfig",
    "INPUT_SUFFIXES",
    "as_arrays",
    "check_finite_step",
    "check_tensors",
    "load_tensor_file",
]

#: Accepted checkpoint suffixes (the page's uploader types): the shared tensor formats plus CSV matrices.
INPUT_SUFFIXES = (*TENSOR_SUFFIXES, "csv")
#: dtypes the container records (anything else is refused up front).
SUPPORTED_DTYPES = tuple(DTYPES)


class CompressConfig(QflowConfig):
    """Toggles and settings of the compressor (page widgets, CLI flags, API form)."""

    vqc_autoencoder: bool = Field(
        False, description="Train a variational quantum autoencoder (StronglyEntanglingLayers, amplitude-encoded "
        "blocks, trash qubits) on each eligible tensor's blocks; compare it with PCA of the same latent size and keep "
        "a latent encoding only where it beats both PCA and plain quantization.")
    denoiser: bool = Field(
        False, description="Train a small residual conv net on the tensor's compress->decompress pairs; store it in "
        "the container and apply it on decompression where it lowers the error.")
    dropout_simulator: bool = Field(
        False, description="Monte Carlo over randomly dropped output channels to rank channel sensitivity; the most "
        "sensitive channels keep twice the bits, pruning spares them and hits the least sensitive.")
    lossless: bool = Field(
        False, description="Bit-exact mode: floats have their exponent split from sign and mantissa and entropy-coded "
        "(plain byte planes where a sample says they store smaller); other dtypes byte planes + zstd; incompressible "
        "data is stored as is.")
    per_channel: bool = Field(True, description="One scale and zero point per output channel (first axis) instead "
                              "of one per tensor.")
    bits: int = Field(8, ge=4, le=8, description="Bits per quantized value: 8 or 4.")
    max_relative_error: float = Field(
        0.01, ge=0.0, le=1.0, description="Error budget of the granularity choice: with per_channel on, a tensor "
        "whose relative L2 quantization error with one scale for the whole tensor stays within this budget is "
        "quantized per tensor (coarser steps on narrow channels: codes zstd packs better, no per-channel scales); "
        "the others per channel. 0 keeps every tensor per channel.")
    target_sparsity: float = Field(
        0.0, ge=0.0, le=0.95, description="Fraction of each float tensor's values zeroed by magnitude pruning "
        "(sparse bitmask encoding); 0 turns pruning off.")
    max_qubits: int = Field(8, ge=4, le=HARD_MAX_QUBITS, description="Largest circuit of the VQC autoencoder.")
    vqc_qubits: int = Field(4, ge=2, le=6, description="Qubits per VQC block (a block holds 2**vqc_qubits values).")
    vqc_trash_qubits: int = Field(2, ge=1, le=5, description="Trash qubits driven to |0> (latent = the other qubits).")
    vqc_layers: int = Field(2, ge=1, le=8, description="StronglyEntanglingLayers of the VQC encoder.")
    vqc_blocks: int = Field(24, ge=2, le=512, description="Blocks per tensor the VQC and PCA are trained and compared on.")
    vqc_steps: int = Field(25, ge=1, le=500, description="Adam steps (adjoint/backprop gradients) of the VQC.")
    vqc_prune_variance: float = Field(
        0.0, ge=0.0, le=1.0, description="Prune VQC latent qubits whose <Z> varies less than this over the training "
        "blocks (fixed at their likelier value; the retained qubits are stored) and compare with PCA of the same "
        "latent size; 0 = no pruning.")
    denoiser_steps: int = Field(150, ge=1, le=5000, description="Adam steps of the denoiser per tensor.")
    dropout_trials: int = Field(48, ge=4, le=2000, description="Monte Carlo trials of the dropout simulator.")
    sensitive_fraction: float = Field(
        0.1, ge=0.0, le=0.5, description="Share of channels the dropout simulator keeps at twice the bits.")
    error_probe: int = Field(
        0, ge=0, le=65536, description="Original values per quantized tensor stored in the container (float32, at "
        "positions seeded by the tensor's sha256) so decompress can measure a refinement's error; 0 stores none.")
    quantum_time_budget_s: float = Field(120.0, gt=0, le=3600, description="Wall time for all circuits of one run, s.")
    n_workers: int = Field(
        0, ge=0, le=1024, description="Threads encoding tensors in parallel; 0 = every core. Capped by the cores and "
        "QFLOW_MAX_WORKERS; 1 when the denoiser, dropout simulator or VQC is on (their training is single-threaded).")
    dask_scheduler: str = Field(
        "", max_length=256, description="Dask scheduler (tcp://HOST:PORT; QFLOW_DASK_SCHEDULER when empty) whose "
        "workers encode the checkpoint's shards, or groups of its tensors, as tasks; the checkpoint must be at the same "
        "path on a filesystem every worker sees. The container is assembled here, identical to a local run's. Neither: "
        "threads of this machine.")

    @field_validator("bits")
    @classmethod
    def _bits_supported(cls, value: int) -> int:
        if value not in (4, 8):
            raise ValueError("bits must be 4 or 8")
        return value


class DecompressConfig(QflowConfig):
    """Toggles and settings of the decompressor. All toggles off: the exact inverse of the recorded steps."""

    hhl: bool = Field(
        False, description="Solve the latent decoder's Gram systems with a simulated HHL circuit (checked against "
        "numpy.linalg.solve); falls back to the plain solve when the container holds no latent tensors.")
    qsvt: bool = Field(
        False, description="Sharpen the singular-value spectrum of small decompressed matrices with qml.qsvt "
        "(odd polynomial); kept per tensor only where a re-quantization self-check says it helps.")
    qft: bool = Field(
        False, description="QFT frequency decoding: shrink quantization noise per frequency in the basis of qml.QFT "
        "(checked against numpy's FFT); kept per tensor only where the measured error (the container's error probe, "
        "else a re-quantization self-check) drops.")
    lstm_enhancer: bool = Field(
        False, description="Train a torch LSTM on the residuals of re-decompressing the decompressed tensor; applied "
        "only where it lowers the held-out residual.")
    max_qubits: int = Field(10, ge=4, le=HARD_MAX_QUBITS, description="Largest circuit of HHL and QSVT.")
    hhl_clock_qubits: int = Field(6, ge=2, le=10, description="Phase-estimation (clock) qubits of HHL.")
    qft_qubits: int = Field(6, ge=2, le=12, description="Qubits of the QFT: blocks of 2**qft_qubits values.")
    qsvt_strength: float = Field(
        0.3, ge=0.0, le=1.0, description="Cubic weight g of the QSVT polynomial P(x) = (1 - g) x + g x^3.")
    lstm_steps: int = Field(120, ge=1, le=5000, description="Adam steps of the LSTM enhancer per tensor.")
    quantum_time_budget_s: float = Field(120.0, gt=0, le=3600, description="Wall time for all circuits of one run, s.")
    n_workers: int = Field(0, ge=0, le=1024, description="Threads decoding tensors in parallel; 0 = every core "
                           "(capped by the cores and QFLOW_MAX_WORKERS).")
    dask_scheduler: str = Field(
        "", max_length=256, description="Dask scheduler (tcp://HOST:PORT; QFLOW_DASK_SCHEDULER when empty) whose "
        "workers decode the container's tensors and write the restored shard files, a task per shard or tensor group; "
        "the container and the output folder must be at the same paths on a filesystem every worker sees. Applies to "
        "plain restores written to files; neither: threads of this machine.")


def _csv_matrix(raw: RawInput) -> dict[str, np.ndarray]:
    import io

    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(raw.data), header=None)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(raw.name, "(file)", "not a CSV matrix", "rows of comma-separated numbers", str(exc)) from None
    if not frame.map(lambda v: isinstance(v, int | float | np.number)).all().all():
        raise InputError(raw.name, "(file)", "non-numeric cells", "a CSV of numbers only (no header row)")
    return {"matrix": frame.to_numpy(dtype=np.float64)}


def _from_torch(tensor: Any, name: str) -> np.ndarray:
    array = torch_to_numpy(tensor)
    if array is None:
        raise InputError("<tensors>", name, "unsupported dtype", ", ".join(SUPPORTED_DTYPES), str(tensor.dtype))
    return array


def as_arrays(value: Any) -> dict[str, np.ndarray]:
    """An array, a torch tensor or a mapping of them -> ``{name: ndarray}`` (``"array"`` for a single one)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(value, torch.Tensor):
        return {"array": _from_torch(value, "array")}
    if isinstance(value, np.ndarray):
        return {"array": value}
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if torch is not None and isinstance(item, torch.Tensor):
                item = _from_torch(item, str(key))
            out[str(key)] = np.asarray(item)
        return out
    raise InputError("<tensors>", "(input)", "unsupported input", "an array, a tensor or a mapping of them",
                     type(value).__name__)


#: Values tested per step by :func:`_has_nonfinite` (its temporaries stay this small, not tensor-sized).
NONFINITE_STEP = 1 << 20


def _has_nonfinite(array: np.ndarray) -> bool:
    """True when a float tensor holds NaN or inf, tested :data:`NONFINITE_STEP` values at a time.

    Narrow floats test their bits: with the sign cleared, a value is NaN or
    inf exactly when its bits are at least the all-ones exponent (float8_e4m3fn
    has no inf and its only NaN is all ones) -- several times faster than
    ``np.isfinite`` through ml_dtypes' casts.
    """
    info = DTYPES[array.dtype.name]
    flat = np.ascontiguousarray(array).reshape(-1)
    if info.numpy.itemsize >= 4:
        return not all(bool(np.isfinite(flat[i: i + NONFINITE_STEP]).all()) for i in range(0, flat.size, NONFINITE_STEP))
    width = info.numpy.itemsize
    bits = flat.view(np.uint16 if width == 2 else np.uint8)
    lowest = 0x7F if info.name == "float8_e4m3fn" else ((1 << info.exponent_bits) - 1) << info.mantissa_bits
    magnitude = np.empty(min(NONFINITE_STEP, bits.size), bits.dtype)
    for i in range(0, bits.size, NONFINITE_STEP):
        part = magnitude[: min(NONFINITE_STEP, bits.size - i)]
        np.bitwise_and(bits[i: i + NONFINITE_STEP], (1 << (8 * width - 1)) - 1, out=part)  # the sign cleared
        if part.max() >= lowest:
            return True
    return False


def check_finite_step(values: np.ndarray, first: int, shape: tuple[int, ...], name: str, source: str) -> None:
    """Refuse a NaN or inf among ``values``, the flat positions ``first:first + values.size`` of float tensor
    ``name`` of ``shape`` read a step at a time; the error names the value's index in the tensor, as
    :func:`check_tensors` does."""
    if values.size and _has_nonfinite(values):
        position = int(np.argwhere(~np.isfinite(values))[0][0])
        index = ", ".join(str(int(i)) for i in np.unravel_index(first + position, shape))
        raise InputError(source, f"{name}[{index}]", "not a finite number", "finite values", values[position])


def check_tensors(arrays: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Refuse empty inputs, unsupported dtypes and non-finite floats; returns the arrays unchanged.

    Raises
    ------
    InputError
        Naming ``source`` and the tensor, e.g. ``ckpt.npz: fc1.weight[3, 1]: not a finite number``.
    """
    if not arrays:
        raise InputError(source, "(file)", "no tensors", "at least one tensor")
    for name, array in arrays.items():
        if array.dtype.name not in SUPPORTED_DTYPES:
            raise InputError(source, name, "unsupported dtype", ", ".join(SUPPORTED_DTYPES), array.dtype.name)
        if is_float(array.dtype) and array.size and _has_nonfinite(array):
            where = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
            index = ", ".join(map(str, where))
            raise InputError(source, f"{name}[{index}]", "not a finite number", "finite values",
                             array[where] if where else array.item())
    return dict(arrays)


def load_tensor_file(source: Source, name: str | None = None) -> tuple[dict[str, np.ndarray], RawInput]:
    """Read a checkpoint or tensor file into checked ``{name: ndarray}`` and its raw bytes.

    Nothing is unpickled: ``.pt`` goes through ``torch.load(weights_only=True)``
    (a pickle that would run code is refused), ``.npy``/``.npz`` through
    ``numpy.load(allow_pickle=False)``.
    """
    raw = read_input(source, name)
    arrays = _csv_matrix(raw) if raw.suffix == ".csv" else parse_tensors(raw)
    return check_tensors(arrays, raw.name), raw
