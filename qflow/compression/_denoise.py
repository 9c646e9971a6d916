"""Denoiser: a small residual 1-D conv net that moves dequantized values toward the originals.

Trained per tensor on its own compress->decompress pairs. Input per value:
its code position ``u = (x_hat - zero_point) / (scale * levels)`` in [0, 1]
and its neighbours along the channel (kernel 5). Output: a correction in
units of the channel's step, bounded to +-0.5 step by ``0.5 tanh``, so a
denoised value never leaves its quantization bin's neighbourhood (the error
stays <= one step). It learns what the bin centre ignores: inside a bin,
values are not uniform (weights are bell-shaped, so the mean of a bin lies
toward the distribution's centre) and neighbouring values are correlated.
The weights (~400 floats) travel in the container; pruned values stay zero.
"""

from __future__ import annotations

import numpy as np
import torch

from qflow.core.threads import one_torch_thread

__all__ = ["MAX_DENOISE_VALUES", "apply_denoiser", "train_denoiser"]

#: Tensors larger than this (values) are not denoised (training and applying stay interactive).
MAX_DENOISE_VALUES = 4_000_000
#: Values per training batch (rows x columns sampled from the channel matrix).
TRAIN_ROWS, TRAIN_COLS = 64, 512
HIDDEN, KERNEL = 16, 5


class ResidualDenoiser(torch.nn.Module):
    """(batch, 1, n) code positions -> (batch, 1, n) correction in steps, within +-0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv1d(1, HIDDEN, KERNEL, padding=KERNEL // 2), torch.nn.GELU(),
            torch.nn.Conv1d(HIDDEN, HIDDEN, 1), torch.nn.GELU(),
            torch.nn.Conv1d(HIDDEN, 1, 1),
        )

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.tanh(self.net(u))


def _positions(recon2d: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, levels: np.ndarray) -> np.ndarray:
    span = np.where(scales > 0, scales * levels, 1.0)
    return ((recon2d - zero_points[:, None]) / span[:, None]).astype(np.float32)


def _to_bytes(model: ResidualDenoiser) -> bytes:
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().astype("<f4")
    return flat.tobytes()


def _from_bytes(data: bytes) -> ResidualDenoiser:
    model = ResidualDenoiser()
    flat = torch.from_numpy(np.frombuffer(data, dtype="<f4").copy())
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(flat[offset: offset + p.numel()].reshape(p.shape))
            offset += p.numel()
    return model


def _correct(model: ResidualDenoiser, recon2d: np.ndarray, scales: np.ndarray, zero_points: np.ndarray,
             levels: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    u = torch.from_numpy(_positions(recon2d, scales, zero_points, levels))[:, None, :]
    with torch.no_grad():
        steps = torch.cat([model(u[i: i + 256]) for i in range(0, u.shape[0], 256)])[:, 0, :].numpy()
    out = recon2d + steps.astype(recon2d.dtype) * scales[:, None]
    if keep is not None:
        out *= keep
    return out


def apply_denoiser(weights: bytes, recon2d: np.ndarray, scales: np.ndarray, zero_points: np.ndarray,
                   levels: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """Apply stored denoiser ``weights`` to a channel matrix of shape (channels, n); returns a new matrix.

    Runs on one thread, as training's evaluation did, so decompression
    reproduces the compress-time figures bit for bit.
    """
    with one_torch_thread():
        return _correct(_from_bytes(weights), recon2d, scales, zero_points, levels, keep)


def train_denoiser(x2d: np.ndarray, recon2d: np.ndarray, scales: np.ndarray, zero_points: np.ndarray,
                   levels: np.ndarray, keep: np.ndarray | None, steps: int, seed: int
                   ) -> tuple[bytes, np.ndarray, list[float]]:
    """Fit the denoiser on (reconstruction, original) of one tensor.

    Parameters
    ----------
    x2d, recon2d : ndarray of shape (channels, n)
        Original and dequantized values.
    scales, zero_points, levels : ndarray of shape (channels,)
    keep : ndarray of shape (channels, n), bool, or None
        Retained values (pruned ones are excluded from the loss and stay 0).

    Returns
    -------
    weights : bytes
        float32 parameters (what the container stores).
    denoised : ndarray of shape (channels, n)
    losses : list of float
        Mean squared error in steps**2 per Adam step.
    """
    with one_torch_thread():  # deterministic bytes on every machine
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        rows = rng.choice(x2d.shape[0], size=min(TRAIN_ROWS, x2d.shape[0]), replace=False)
        width = min(TRAIN_COLS, x2d.shape[1])
        start = int(rng.integers(0, x2d.shape[1] - width + 1))
        cols = slice(start, start + width)
        u = torch.from_numpy(_positions(recon2d[rows, cols], scales[rows], zero_points[rows], levels[rows]))[:, None, :]
        safe = np.where(scales[rows] > 0, scales[rows], 1.0)[:, None]
        target = torch.from_numpy(((x2d[rows, cols] - recon2d[rows, cols]) / safe).astype(np.float32))[:, None, :]
        weight = torch.ones_like(target) if keep is None else torch.from_numpy(keep[rows, cols].astype(np.float32))[:, None]
        model = ResidualDenoiser()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(steps):
            loss = (((model(u) - target) ** 2) * weight).sum() / weight.sum().clamp_min(1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        weights = _to_bytes(model)
        denoised = _correct(_from_bytes(weights), recon2d, scales, zero_points, levels, keep)
    return weights, denoised, losses

