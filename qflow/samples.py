"""Write every module's sample data (``python -m qflow sample DIR``)."""

from __future__ import annotations

from pathlib import Path

from qflow.routing._sample import write_routing_sample

__all__ = ["write_samples"]


def write_samples(directory: str | Path, seed: int = 0) -> list[Path]:
    """Write the sample inputs of every module under ``directory/<module>/``."""
    root = Path(directory)
    return write_routing_sample(root / "routing", seed=seed)
