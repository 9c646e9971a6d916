"""Small spaces and histories shared by the hpo tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

MIXED_SPACE = {"parameters": {
    "lr": {"kind": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "depth": {"kind": "int", "low": 2, "high": 9},
    "act": {"kind": "categorical", "choices": ["relu", "tanh", "gelu"]},
    "dropout": {"kind": "float", "low": 0.0, "high": 0.5},
}}


def loss(config: dict) -> float:
    """A smooth made-up validation loss with its minimum at lr=1e-2, depth=6, act=gelu, dropout=0.1."""
    return (float((np.log10(config["lr"]) + 2) ** 2) + 0.05 * (config["depth"] - 6) ** 2
            + {"relu": 0.3, "tanh": 0.6, "gelu": 0.0}[config["act"]] + 4 * (config["dropout"] - 0.1) ** 2)


def mixed_history(n: int = 8, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        config = {"lr": float(10 ** rng.uniform(-4, -1)), "depth": int(rng.integers(2, 10)),
                  "act": str(rng.choice(["relu", "tanh", "gelu"])), "dropout": float(rng.uniform(0, 0.5))}
        rows.append({**config, "objective": loss(config)})
    return pd.DataFrame(rows)
