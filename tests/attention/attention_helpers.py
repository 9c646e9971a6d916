"""Small inputs shared by the attention tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_data" / "attention"


def qkv(n: int = 48, d: int = 16, d_v: int = 8, seed: int = 0, sharp: float = 2.0) -> tuple[np.ndarray, ...]:
    """Random Q (n, d), K (n, d), V (n, d_v), float32; ``sharp`` scales Q so attention is peaked."""
    rng = np.random.default_rng(seed)
    q = (sharp * rng.normal(size=(n, d))).astype(np.float32)
    k = rng.normal(size=(n, d)).astype(np.float32)
    v = rng.normal(size=(n, d_v)).astype(np.float32)
    return q, k, v


def layer_weights(d: int = 16, heads: int = 4, seed: int = 0, dead: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    """A random attention state dict; heads in ``dead`` get zero V rows, V bias and O columns."""
    rng = np.random.default_rng(seed)
    w = {f"{p}.weight": (rng.normal(size=(d, d)) / np.sqrt(d)).astype(np.float32) for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
    w.update({f"{p}.bias": (0.1 * rng.normal(size=d)).astype(np.float32) for p in ("q_proj", "k_proj", "v_proj", "o_proj")})
    dh = d // heads
    for h in dead:
        w["v_proj.weight"][h * dh:(h + 1) * dh] = 0.0
        w["v_proj.bias"][h * dh:(h + 1) * dh] = 0.0
        w["o_proj.weight"][:, h * dh:(h + 1) * dh] = 0.0
    w["n_heads"] = np.array(heads, dtype=np.int64)
    return w
