"""InfoNCE loss against a direct computation, and the trainer lowering it deterministically."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from attention_helpers import qkv

from qflow.attention._classical import info_nce_loss, train_contrastive


def direct_info_nce(q: np.ndarray, k: np.ndarray) -> float:
    """L = sum_i -log(exp(q_i . k_i) / sum_j exp(q_i . k_j)), written out term by term."""
    total = 0.0
    for i in range(q.shape[0]):
        numerator = math.exp(float(q[i] @ k[i]))
        denominator = sum(math.exp(float(q[i] @ k[j])) for j in range(k.shape[0]))
        total += -math.log(numerator / denominator)
    return total


def test_info_nce_matches_direct_computation():
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(7, 4)) * 0.7, rng.normal(size=(7, 4)) * 0.7
    got = float(info_nce_loss(torch.tensor(q), torch.tensor(k)))
    assert got == pytest.approx(direct_info_nce(q, k), rel=1e-10)
    # Perfectly separated positives give a loss near zero; swapping positives makes it large.
    eye = torch.eye(5) * 20
    assert float(info_nce_loss(eye, eye)) < 1e-6
    assert float(info_nce_loss(eye, eye.roll(1, dims=0))) > 5 * 20 - 1


def test_trainer_lowers_the_loss_deterministically():
    x, _, _ = qkv(n=32, d=8, sharp=0.3, seed=3)
    eye = np.eye(8, dtype=np.float32)
    wq, wk, losses = train_contrastive(x, x, eye, 0.1 * eye, steps=25, lr=0.05, seed=1)
    assert len(losses) == 26
    assert losses[-1] < 0.5 * losses[0]
    assert losses[-1] == pytest.approx(float(info_nce_loss(torch.tensor(x @ wq.T), torch.tensor(x @ wk.T))), rel=1e-5)
    again = train_contrastive(x, x, eye, 0.1 * eye, steps=25, lr=0.05, seed=1)
    assert np.array_equal(again[0], wq) and again[2] == losses
    assert torch.get_num_threads() >= 1  # the single-thread block restored the setting
