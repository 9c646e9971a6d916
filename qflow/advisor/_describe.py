"""What the advisor knows about an input before matching rules: sizes, cores, memory, devices."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qflow.core.plan import Plan
from qflow.core.quantum import available_memory_bytes

__all__ = ["describe", "quantum_devices"]

#: module -> (input whose ``rows`` is the size the rules read, the description key it becomes).
_SIZE_INPUTS: dict[str, tuple[str, str]] = {"routing": ("tokens", "tokens"), "nvlink": ("fabric", "gpus"),
                                            "attention": ("embeddings", "positions")}


def quantum_devices() -> list[str]:
    """PennyLane devices installed here (``[]`` without PennyLane)."""
    if importlib.util.find_spec("pennylane") is None:
        return []
    return ["default.qubit"] + (["lightning.qubit"] if importlib.util.find_spec("pennylane_lightning") else [])


def _cuda() -> bool:
    """Whether torch (already a dependency of the engines) sees a CUDA device."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def describe(module: str, files: Mapping[str, Path | None], defaults: Plan) -> dict[str, Any]:
    """The input as the rules see it.

    ``inputs``: per input, ``rows``/``shape`` from the defaults plan's digests
    and ``bytes`` on disk; the module's size key (``tokens`` for routing,
    ``gpus`` for nvlink, ``positions`` for attention) from its main input's
    rows; ``cores`` (``os.cpu_count``), ``memory_bytes`` (available),
    ``quantum_devices``, ``cuda`` and ``config`` (the configuration advised on).
    """
    inputs: dict[str, dict[str, Any]] = {}
    for digest in defaults.inputs:
        path = files.get(digest.name)
        inputs[digest.name] = {"rows": digest.rows, "shape": digest.shape,
                               "bytes": path.stat().st_size if path is not None and path.is_file() else None}
    description: dict[str, Any] = {
        "module": module, "inputs": inputs, "cores": os.cpu_count() or 1, "memory_bytes": available_memory_bytes(),
        "quantum_devices": quantum_devices(), "cuda": _cuda(), "config": dict(defaults.config),
    }
    if module in _SIZE_INPUTS:
        name, key = _SIZE_INPUTS[module]
        rows = inputs.get(name, {}).get("rows")
        if rows is not None:
            description[key] = int(rows)
    return description
