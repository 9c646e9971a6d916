"""Shared helpers of the compression tests: the sample files and a compress -> decompress round trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qflow.compression import compress_tensors, decompress_container

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_data" / "compression"
CHECKPOINT = SAMPLES / "checkpoint.safetensors"
CONTAINER = SAMPLES / "checkpoint.qfz"


def round_trip(arrays: dict[str, np.ndarray], **config: Any) -> tuple[dict[str, np.ndarray], Any, bytes]:
    """Compress then decompress (plain path); returns (restored arrays, compress plan, container bytes)."""
    run = compress_tensors(arrays, config)
    restored = decompress_container(run.container).arrays
    return restored, run.plan, run.container


def load_checkpoint() -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return dict(load_file(str(CHECKPOINT)))
