"""Every dtype a checkpoint holds, as numpy dtypes (``ml_dtypes`` supplies bfloat16 and float8).

numpy has no bfloat16 or float8; ``ml_dtypes`` registers them as real numpy
dtypes (casts, ufuncs, ``view``), so a bf16 tensor is read, coded and
written without passing through a dtype it does not have. The table maps
each dtype to its safetensors code and its float layout (exponent and
mantissa bits), which the float-aware lossless scheme uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

__all__ = ["DTYPES", "DtypeInfo", "dtype_info", "from_safetensors", "is_float", "numpy_dtype", "torch_to_numpy",
           "work_dtype"]


@dataclass(frozen=True)
class DtypeInfo:
    """One dtype: its name (as recorded in containers), numpy dtype, safetensors code and float layout.

    ``exponent_bits`` / ``mantissa_bits`` are None for integers and bool.
    """

    name: str
    numpy: np.dtype
    safetensors: str
    exponent_bits: int | None = None
    mantissa_bits: int | None = None

    @property
    def is_float(self) -> bool:
        return self.exponent_bits is not None


def _info(name: str, dt: object, code: str, exp: int | None = None, mant: int | None = None) -> DtypeInfo:
    return DtypeInfo(name, np.dtype(dt), code, exp, mant)


#: Every supported dtype by its recorded name.
DTYPES: dict[str, DtypeInfo] = {d.name: d for d in (
    _info("bool", np.bool_, "BOOL"),
    _info("uint8", np.uint8, "U8"), _info("uint16", np.uint16, "U16"),
    _info("uint32", np.uint32, "U32"), _info("uint64", np.uint64, "U64"),
    _info("int8", np.int8, "I8"), _info("int16", np.int16, "I16"),
    _info("int32", np.int32, "I32"), _info("int64", np.int64, "I64"),
    _info("float16", np.float16, "F16", 5, 10), _info("float32", np.float32, "F32", 8, 23),
    _info("float64", np.float64, "F64", 11, 52), _info("bfloat16", ml_dtypes.bfloat16, "BF16", 8, 7),
    _info("float8_e4m3fn", ml_dtypes.float8_e4m3fn, "F8_E4M3", 4, 3),
    _info("float8_e5m2", ml_dtypes.float8_e5m2, "F8_E5M2", 5, 2),
)}
_BY_CODE = {d.safetensors: d for d in DTYPES.values()}


def dtype_info(dtype: np.dtype | str) -> DtypeInfo | None:
    """The table entry of ``dtype`` (a numpy dtype or a recorded name), or None when unsupported.

    >>> dtype_info("bfloat16").safetensors
    'BF16'
    >>> dtype_info(np.dtype("complex64")) is None
    True
    """
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    return DTYPES.get(name)


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype of a recorded name; ``KeyError`` for an unknown one (callers report it as input)."""
    return DTYPES[name].numpy


def from_safetensors(code: str) -> DtypeInfo | None:
    """The entry of a safetensors dtype code (``"BF16"``), or None when unsupported."""
    return _BY_CODE.get(code)


def is_float(dtype: np.dtype) -> bool:
    """True for every float dtype, bf16 and float8 included (their numpy ``kind`` is not always ``"f"``).

    >>> is_float(np.dtype(ml_dtypes.bfloat16)), is_float(np.dtype(np.int8))
    (True, False)
    """
    info = dtype_info(dtype)
    return info is not None and info.is_float


def work_dtype(dtype: np.dtype) -> type:
    """The dtype arithmetic on ``dtype`` values runs in: float64 for float64, float32 for the narrower floats."""
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


#: torch dtypes numpy lacks, by the name of the numpy (ml_dtypes) dtype they become; read through a same-width view.
_TORCH_VIEWS = {"bfloat16": "int16", "float8_e4m3fn": "uint8", "float8_e5m2": "uint8"}


def torch_to_numpy(tensor: Any) -> np.ndarray | None:
    """A CPU torch tensor as a numpy array of the same dtype (bf16 and float8 through ``ml_dtypes``), no copy of floats.

    Returns None for a dtype the table does not have (complex, quantized...).
    """
    import torch

    name = str(tensor.dtype).removeprefix("torch.")
    name = {"bool": "bool"}.get(name, name)
    info = DTYPES.get(name)
    if info is None:
        return None
    t = tensor.detach().cpu().contiguous()
    if name in _TORCH_VIEWS:
        return t.view(getattr(torch, _TORCH_VIEWS[name])).numpy().view(info.numpy)
    return t.numpy()
