"""Error probes: a few original values stored in the container, so a decoder can measure its error against them.

With ``error_probe = k`` (compress), each quantized tensor gets a block
``<name>/probe`` holding ``k`` of its original values (float32) at positions
drawn without replacement from a generator seeded by the original's sha256
(already in the record), so the positions themselves are not stored. A
decompress refinement (QFT decoding) measures its error on those positions
before and after, an unbiased sample of the tensor's error, and keeps its
change only where that error drops.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qflow.compression._container import Block
from qflow.compression._lossless import pack

__all__ = ["attach_probe", "probe_positions", "read_probe"]


def probe_positions(sha256: str, size: int, count: int) -> np.ndarray:
    """Sorted flat positions (min(count, size),) int64, the same for every reader of the record.

    >>> probe_positions("ab" * 32, 10, 3).tolist() == probe_positions("ab" * 32, 10, 3).tolist()
    True
    """
    rng = np.random.default_rng(int(sha256[:16], 16))
    return np.sort(rng.choice(size, size=min(count, size), replace=False)).astype(np.int64)


def attach_probe(enc: Any, x: np.ndarray, count: int) -> None:
    """Add ``count`` original values of ``x`` to ``enc`` (block ``<name>/probe``, record ``probe``); needs ``sha256``."""
    record = enc.record
    positions = probe_positions(record["sha256"], x.size, count)
    values = np.ascontiguousarray(x.reshape(-1)[positions], dtype="<f4")
    name = f"{record['name']}/probe"
    enc.blocks.append(Block(name, pack(values.tobytes(), level=3)))
    record["blocks"] = [*record.get("blocks", []), name]
    record["probe"] = {"block": name, "values": int(values.size),
                       "positions": "sorted draw without replacement, numpy default_rng(first 16 hex digits of sha256)"}


def read_probe(record: dict[str, Any], container: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``(positions, original values as float64)`` of a record's probe, or ``None`` when it has none."""
    probe = record.get("probe")
    if not isinstance(probe, dict):
        return None
    size = int(np.prod(record["shape"], dtype=np.int64))
    positions = probe_positions(record["sha256"], size, int(probe["values"]))
    values = np.frombuffer(container.block(probe["block"]), dtype="<f4").astype(np.float64)
    if values.size != positions.size:
        return None
    return positions, values
