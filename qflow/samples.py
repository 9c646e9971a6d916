"""Write every module's sample data (``python -m qflow sample DIR``).

Each package with a ``_sample`` module contributes ``write_sample(directory,
seed) -> list of paths``, written under ``DIR/<package>/``.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from qflow.core.commands import MODULE_PACKAGES

__all__ = ["write_samples"]


def write_samples(directory: str | Path, seed: int = 0) -> list[Path]:
    """Write the sample inputs of every module under ``directory/<module>/``."""
    root = Path(directory)
    written: list[Path] = []
    for package in MODULE_PACKAGES:
        if importlib.util.find_spec(f"qflow.{package}") is None or importlib.util.find_spec(f"qflow.{package}._sample") is None:
            continue
        written.extend(importlib.import_module(f"qflow.{package}._sample").write_sample(root / package, seed=seed))
    return written
