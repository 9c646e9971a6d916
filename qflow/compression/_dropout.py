"""Dropout simulator: Monte Carlo channel sensitivity of one weight matrix.

For a layer ``y = W x`` with ``W`` of shape (channels, n), draw random probe
inputs ``X`` (n, probes) and, in each trial, drop a random subset ``S`` of
output channels (each with probability ``p``). The damage of a trial is the
relative change of the output Gram matrix the next layer sees,

    D(S) = || Y_S^T Y_S ||_F / || Y^T Y ||_F,   Y = W X,

which is not additive over channels (dropped channels interact through the
Frobenius norm of their summed outer products). A channel's sensitivity is
the mean damage of trials that dropped it minus the mean of those that kept
it (a Monte Carlo main-effect estimate). Cost per trial: |S| x probes**2.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DROP_PROBABILITY", "PROBES", "channel_sensitivity"]

#: Chance that a channel is dropped in one trial.
DROP_PROBABILITY = 0.2
#: Random probe inputs per tensor.
PROBES = 32
#: Columns of W used at most (a random subset, for very wide tensors).
MAX_COLUMNS = 4096


def channel_sensitivity(w2d: np.ndarray, trials: int, seed: int) -> np.ndarray:
    """Monte Carlo sensitivity per channel (row) of ``w2d``.

    Parameters
    ----------
    w2d : ndarray of shape (channels, n), float
    trials : int
    seed : int

    Returns
    -------
    ndarray of shape (channels,), float64
        Higher = dropping the channel hurts more; channels never dropped (or
        never kept) in any trial get the mean sensitivity.
    """
    rng = np.random.default_rng(seed)
    rows, cols = w2d.shape
    if cols > MAX_COLUMNS:
        w2d = w2d[:, np.sort(rng.choice(cols, MAX_COLUMNS, replace=False))]
    probes = rng.standard_normal((w2d.shape[1], PROBES)).astype(np.float64)
    y = w2d.astype(np.float64) @ probes  # (channels, probes)
    full = np.linalg.norm(y.T @ y)
    if full == 0:
        return np.zeros(rows)
    dropped = rng.random((trials, rows)) < DROP_PROBABILITY
    damage = np.empty(trials)
    for t in range(trials):  # trials are few; each is a small matrix product
        ys = y[dropped[t]]
        damage[t] = np.linalg.norm(ys.T @ ys) / full
    n_drop = dropped.sum(axis=0)
    n_keep = trials - n_drop
    mean_drop = np.divide(dropped.T.astype(np.float64) @ damage, n_drop, out=np.full(rows, np.nan), where=n_drop > 0)
    mean_keep = np.divide((~dropped).T.astype(np.float64) @ damage, n_keep, out=np.full(rows, np.nan), where=n_keep > 0)
    sensitivity = mean_drop - mean_keep
    fill = np.nanmean(sensitivity) if np.isfinite(sensitivity).any() else 0.0
    return np.where(np.isfinite(sensitivity), sensitivity, fill)
