"""Learned steps: the denoiser lowers the error on the sample checkpoint; dropout simulator; LSTM enhancer."""

from __future__ import annotations

import numpy as np
import pytest
from compression_helpers import load_checkpoint

from qflow.compression import compress_tensors, decompress_container
from qflow.compression._dropout import channel_sensitivity


@pytest.fixture(scope="module")
def checkpoint() -> dict[str, np.ndarray]:
    return load_checkpoint()


def test_denoiser_reduces_error_on_the_sample_checkpoint(checkpoint) -> None:
    plain = compress_tensors(checkpoint, {"bits": 4})
    denoised = compress_tensors(checkpoint, {"bits": 4, "denoiser": True, "denoiser_steps": 80})
    assert denoised.plan.metrics["relative_l2_error"] < plain.plan.metrics["relative_l2_error"]
    reports = denoised.plan.result["denoiser"]
    assert any(r["used"] for r in reports)
    for r in reports:
        assert r["used"] == (r["relative_l2_after"] < r["relative_l2_before"])
    # the decompressor applies the stored net: the restored tensors are what compress measured
    restored = decompress_container(denoised.container, reference=checkpoint)
    assert restored.plan.metrics["relative_l2_error"] == pytest.approx(denoised.plan.metrics["relative_l2_error"],
                                                                       rel=1e-5)
    # the correction is bounded: error stays within one step of the 4-bit grid
    w = checkpoint["2.weight"].astype(np.float64)
    step = (w.max(axis=1) - w.min(axis=1)) / 15
    assert (np.abs(restored.arrays["2.weight"] - w) <= step[:, None] * (1 + 1e-5)).all()


def test_dropout_simulator_finds_the_channel_that_matters() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(32, 64))
    w[7] *= 10
    sensitivity = channel_sensitivity(w, trials=64, seed=1)
    assert int(np.argmax(sensitivity)) == 7
    run = compress_tensors({"w": w.astype(np.float32)}, {"dropout_simulator": True, "sensitive_fraction": 0.05,
                                                          "bits": 4})
    info = run.plan.result["dropout_simulator"][0]
    assert 7 in info["high_precision_rows"] and len(info["high_precision_rows"]) == 2
    restored = decompress_container(run.container).arrays["w"]
    relative = np.abs(restored - w).max(axis=1) / (w.max(axis=1) - w.min(axis=1))  # error in units of the range
    low = np.setdiff1d(np.arange(32), info["high_precision_rows"])
    # float16 steps (compact_params) are at most 0.5 % wider than the exact ones
    assert relative[7] <= 0.5 / 255 * (1 + 5e-3)  # kept at 8 bits
    assert relative[low].max() > 0.5 / 255 * 2 and relative[low].max() <= 0.5 / 15 * (1 + 5e-3)  # the rest at 4 bits


def test_dropout_weighted_pruning_spares_sensitive_channels() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(size=(32, 64)).astype(np.float32)
    w[3] *= 8
    run = compress_tensors({"w": w}, {"dropout_simulator": True, "target_sparsity": 0.5, "sensitive_fraction": 0.0})
    restored = decompress_container(run.container).arrays["w"]
    zero_share = (restored == 0).mean(axis=1)
    assert zero_share[3] < zero_share.mean()
    assert (restored == 0).mean() == pytest.approx(0.5, abs=0.01)


def test_lstm_enhancer_is_kept_only_where_the_held_out_residual_drops(checkpoint) -> None:
    run = compress_tensors(checkpoint, {"bits": 4})
    result = decompress_container(run.container, {"lstm_enhancer": True, "lstm_steps": 30}, reference=checkpoint)
    info = result.plan.result["enhancements"]["lstm_enhancer"]
    assert info["tensors"]
    for entry in info["tensors"]:
        if "heldout_residual_plain" in entry:
            assert entry["used"] == (entry["heldout_residual_lstm"] < entry["heldout_residual_plain"])
    assert info["relative_l2_error_change"] == pytest.approx(
        result.plan.metrics["relative_l2_error"] - result.plan.metrics["plain_relative_l2_error"])
    changed = set(info["applied"])
    plain = decompress_container(run.container).arrays
    for name, array in result.arrays.items():
        assert np.array_equal(array, plain[name]) == (name not in changed)

    def error(name: str, values: np.ndarray) -> float:
        ref = checkpoint[name].astype(np.float64)
        return float(np.linalg.norm(values.astype(np.float64) - ref) / np.linalg.norm(ref))

    # with a reference the LSTM is never kept where it made the error worse; where its self-check kept it
    # and the reference disagrees, it is reverted and a diagnostic says so
    assert all(error(n, result.arrays[n]) <= error(n, plain[n]) for n in changed)
    assert info["relative_l2_error_change"] <= 0
    for entry in info.get("reverted", []):
        assert entry["relative_l2_after"] > entry["relative_l2_before"] and entry["tensor"] not in changed
        assert any(d.startswith("lstm: its self-check kept it") and entry["tensor"] in d
                   for d in result.plan.diagnostics)
    if not changed:
        assert "lstm" not in result.plan.solver.ran.split("+")
