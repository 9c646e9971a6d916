"""LSTM enhancer: learn the residual of decompression from the decompressed tensor itself.

No original is available at decompression, so the enhancer trains on an
earlier decompression of a known signal: the decompressed tensor ``x_hat`` is
quantized again with its recorded scheme (``x_hat2``), and a torch LSTM
running along each channel learns ``x_hat - x_hat2`` from ``x_hat2`` (in
units of the channel's step, bounded to +-0.5 step). The learned map is then
applied to ``x_hat``. It is kept on a tensor only when it lowers the residual
on held-out channels of that self-supervised pair; otherwise the plain
inverse stands and the plan says why.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from qflow.compression._container import Container
from qflow.compression._quantize import channel_matrix, dequantize, quantize
from qflow.core.threads import one_torch_thread

__all__ = ["MAX_ENHANCE_VALUES", "lstm_enhance"]

#: Tensors larger than this (values) are not enhanced.
MAX_ENHANCE_VALUES = 2_000_000
HIDDEN = 16
#: Sequence length the LSTM sees (a channel is cut into windows of this many values).
WINDOW = 64


class ResidualLSTM(torch.nn.Module):
    """(batch, window, 1) code positions -> (batch, window, 1) correction in steps within +-0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(1, HIDDEN, batch_first=True, bidirectional=True)
        self.head = torch.nn.Linear(2 * HIDDEN, 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.tanh(self.head(self.lstm(u)[0]))


def _windows(u: np.ndarray) -> tuple[torch.Tensor, int]:
    """(channels, n) -> (channels * ceil(n / WINDOW), WINDOW, 1) windows, zero-padded."""
    pad = (-u.shape[1]) % WINDOW
    padded = np.pad(u, ((0, 0), (0, pad)))
    return torch.from_numpy(padded.reshape(-1, WINDOW, 1).astype(np.float32)), pad


def _correction(model: ResidualLSTM, u: np.ndarray) -> np.ndarray:
    w, pad = _windows(u)
    with torch.no_grad():
        out = model(w).numpy().reshape(u.shape[0], -1)
    return out[:, : u.shape[1]] if pad else out


def _positions(values: np.ndarray, scales: np.ndarray, zps: np.ndarray, levels: int) -> np.ndarray:
    span = np.where(scales > 0, scales * levels, 1.0)
    return (values - zps[:, None]) / span[:, None]


def _enhance_one(x_hat: np.ndarray, per_channel: bool, bits: int, steps: int, seed: int) -> tuple[np.ndarray | None, dict]:
    x2d = channel_matrix(x_hat.astype(np.float64), per_channel)
    if x2d.shape[0] < 2:  # per-tensor: split the single row into pseudo-channels for the held-out check
        x2d = x2d.reshape(-1, WINDOW) if x2d.size % WINDOW == 0 and x2d.size >= 2 * WINDOW else x2d
    if x2d.shape[0] < 2:
        return None, {"used": False, "reason": "too small for a held-out check"}
    codes, scales, zps = quantize(x2d, bits)
    again = dequantize(codes, scales, zps, np.float64)
    levels = (1 << bits) - 1
    safe = np.where(scales > 0, scales, 1.0)[:, None]
    target = (x2d - again) / safe
    rng = np.random.default_rng(seed)
    order = rng.permutation(x2d.shape[0])
    n_train = max(1, int(0.75 * len(order)))
    train, held = order[:n_train], order[n_train:]
    torch.manual_seed(seed)
    model = ResidualLSTM()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    u_train, _ = _windows(_positions(again[train], scales[train], zps[train], levels))
    t_train, _ = _windows(target[train])
    batch = u_train.shape[0] if u_train.shape[0] <= 256 else 256
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, u_train.shape[0], (batch,), generator=gen)
        loss = ((model(u_train[idx]) - t_train[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    corr_held = _correction(model, _positions(again[held], scales[held], zps[held], levels))
    before = float(np.linalg.norm(target[held]))
    after = float(np.linalg.norm(target[held] - corr_held))
    info = {"heldout_residual_plain": before, "heldout_residual_lstm": after, "steps": steps, "used": bool(after < before)}
    if after >= before:
        info["reason"] = "did not lower the held-out residual"
        return None, info
    # apply to the real decompressed tensor: its own channels, steps and positions
    real2d = channel_matrix(x_hat.astype(np.float64), per_channel).reshape(x2d.shape)
    lo, hi = real2d.min(axis=1), real2d.max(axis=1)
    step = (hi - lo) / levels
    corr = _correction(model, _positions(real2d, step, lo, levels))
    return (real2d + corr * step[:, None]).reshape(x_hat.shape), info


def lstm_enhance(records: list[dict[str, Any]], container: Container, current: dict[str, np.ndarray], config: Any
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Train and apply the enhancer per quantized tensor; returns the report and the tensors it changed."""
    info: dict[str, Any] = {"tensors": [], "applied": []}
    changed: dict[str, np.ndarray] = {}
    with one_torch_thread():
        for i, record in enumerate(records):
            if record["scheme"] != "quant" or record.get("sparse"):
                continue
            x_hat = current[record["name"]]
            if x_hat.size > MAX_ENHANCE_VALUES:
                info["tensors"].append({"tensor": record["name"], "used": False, "reason": "too large"})
                continue
            q = record["quant"]
            out, entry = _enhance_one(x_hat, q["per_channel"], q["bits"], config.lstm_steps, config.seed + i)
            info["tensors"].append({"tensor": record["name"], **entry})
            if out is not None:
                changed[record["name"]] = out.astype(record["dtype"])
                info["applied"].append(record["name"])
    return info, changed
