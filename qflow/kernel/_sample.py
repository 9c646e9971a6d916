"""Sample kernel input (fixed seed): contention-like telemetry rows with a label the RBF kernel finds easy.

48 rows, 4 numeric features and a ``label``: runs are "congested" when the
link utilisation and the message size are both high or both low (an XOR of
two features, the kind of pattern a product feature map can express), plus
two features that carry only noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["sample_features", "write_sample"]


def sample_features(n_rows: int = 48, seed: int = 0) -> pd.DataFrame:
    """The sample table: ``link_utilisation``, ``message_mb``, ``queue_depth``, ``jitter_us``, ``label``."""
    rng = np.random.default_rng(seed)
    util = rng.uniform(0.05, 0.95, n_rows)
    size = rng.uniform(1.0, 64.0, n_rows)
    high_util, big = util > 0.5, size > 32.5
    label = np.where(high_util == big, "congested", "clear")
    return pd.DataFrame({
        "link_utilisation": util.round(3),
        "message_mb": size.round(2),
        "queue_depth": rng.poisson(4, n_rows),
        "jitter_us": rng.normal(12.0, 3.0, n_rows).round(2),
        "label": label,
    })


def write_sample(directory: Path, seed: int = 0) -> list[Path]:
    """Write ``features.csv`` under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "features.csv"
    sample_features(seed=seed).to_csv(path, index=False)
    return [path]
