"""Quantum steps: VQC vs PCA computed honestly, HHL against numpy.linalg.solve, QSVT against numpy's SVD."""

from __future__ import annotations

import numpy as np
import pytest

from qflow.compression import compress_tensors, decompress_container
from qflow.compression._quantum import (
    HHL_TOLERANCE,
    autoencoder_split,
    blocks_of,
    hhl_solve,
    qsvt_transform,
    vqc_reconstruct,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def low_rank_run():
    """A tensor whose 16-value blocks span 4 dimensions, compressed with the VQC autoencoder at 4 bits."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(256, 4)) @ rng.normal(size=(4, 16))).astype(np.float32)
    config = {"vqc_autoencoder": True, "bits": 4, "vqc_blocks": 16, "vqc_steps": 6, "seed": 1}
    return x, config, compress_tensors({"low_rank": x}, config)


def test_vqc_and_pca_are_scored_on_the_same_held_out_blocks(low_rank_run) -> None:
    x, config, run = low_rank_run
    info = run.plan.result["autoencoder"][0]
    # recompute PCA's held-out error independently (numpy SVD) on the documented split
    blocks = blocks_of(x, 16)
    seed = (config["seed"] * 1_000_003 + 0) % 2**32
    train_idx, held_idx = autoencoder_split(len(blocks), config["vqc_blocks"], seed)
    train, held = blocks[train_idx], blocks[held_idx]
    mean = train.mean(axis=0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    basis = vt[: min(8, len(train))].T
    recon = mean + (held - mean) @ basis @ basis.T
    expected = np.linalg.norm(recon - held) / np.linalg.norm(held)
    assert info["pca_relative_error"] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert info["train_blocks"] == len(train_idx) and info["held_out_blocks"] == len(held_idx)
    assert info["winner"] == ("vqc" if info["vqc_relative_error"] < info["pca_relative_error"] else "pca")
    assert info["vqc_loss_last"] < info["vqc_loss_first"]  # the circuit really trained
    quantum = run.plan.solver.quantum
    assert quantum.circuits_run == config["vqc_steps"] * len(train_idx) and quantum.qubits_per_circuit == [4]


def test_latent_is_used_only_where_it_beats_the_codes_and_round_trips(low_rank_run) -> None:
    x, _, run = low_rank_run
    info = run.plan.result["autoencoder"][0]
    assert info["used"] == (info["latent_relative_error"] <= info["codes_relative_error"]
                            and info["latent_bytes"] < info["codes_bytes"])
    assert info["used"]  # low-rank blocks: 8 components at 8 bits beat 4-bit codes
    assert run.plan.result["tensors"][0]["scheme"] == "latent"
    # the stored latent is PCA's, not the VQC's: `ran` says so and the VQC is a fallback with its measured errors
    assert run.plan.solver.requested == "quant4+vqc" and run.plan.solver.ran == "quant4+pca_latent"
    (fallback,) = run.plan.solver.fallbacks
    assert fallback.from_ == "vqc" and "PCA won" in fallback.reason and "held-out error VQC" in fallback.reason
    restored = decompress_container(run.container).arrays["low_rank"]
    assert np.linalg.norm(restored - x) / np.linalg.norm(x) == pytest.approx(run.plan.metrics["relative_l2_error"])


def test_hhl_on_the_latent_gram_system_is_checked_against_numpy(low_rank_run) -> None:
    x, _, run = low_rank_run
    result = decompress_container(run.container, {"hhl": True}, reference={"low_rank": x})
    entry = result.plan.result["enhancements"]["hhl"]["tensors"][0]
    assert entry["system_size"] == 8 and entry["qubits"] == 1 + 6 + 3
    assert entry["relative_deviation_vs_numpy"] <= HHL_TOLERANCE
    assert not entry["used"] and entry["residual_numpy"] <= entry["residual_hhl"]  # numpy's exact solve is kept
    # HHL ran but numpy's answer was kept: not in `ran`, a fallback with what it measured
    assert result.plan.solver.ran == "plain" and result.plan.solver.quantum.circuits_run == 8
    (fallback,) = result.plan.solver.fallbacks
    assert fallback.from_ == "hhl" and "numpy's solve kept" in fallback.reason and "residual HHL" in fallback.reason


def test_vqc_reconstruct_keeps_the_latent_amplitudes() -> None:
    blocks = np.zeros((3, 16))
    blocks[:, :4] = np.random.default_rng(1).normal(size=(3, 4))  # only the trash = |00> amplitudes are non-zero
    latent, recon = vqc_reconstruct(np.eye(16), blocks, trash=2)
    assert latent.shape == (3, 4)
    np.testing.assert_allclose(recon, blocks, atol=1e-12)


def test_hhl_exact_when_eigenvalues_sit_on_the_clock_grid() -> None:
    x, info = hhl_solve(np.diag([1.0, 2.0, 3.0, 6.0]), np.ones(4), clock_qubits=3)
    np.testing.assert_allclose(x, [1, 1 / 2, 1 / 3, 1 / 6], atol=1e-9)
    assert info["qubits"] == 6


@pytest.mark.parametrize("size", [2, 4])
def test_hhl_matches_numpy_on_random_spd_systems(size: int) -> None:
    rng = np.random.default_rng(size)
    q, _ = np.linalg.qr(rng.normal(size=(size, size)))
    matrix = (q * rng.uniform(1.0, 3.0, size)) @ q.T
    b = rng.normal(size=size)
    x, info = hhl_solve(matrix, b, clock_qubits=7)
    np.testing.assert_allclose(x, np.linalg.solve(matrix, b), rtol=0.05, atol=0.05 * np.linalg.norm(b))
    assert info["relative_error_vs_numpy"] < 0.05 and 0 < info["success_probability"] < 1


def test_qsvt_applies_the_polynomial_to_the_singular_values() -> None:
    a = np.random.default_rng(2).normal(size=(6, 5))
    out, deviation = qsvt_transform(a, 0.4)
    assert deviation < 1e-8
    s = np.linalg.svd(a, compute_uv=False)
    alpha = np.linalg.norm(a)
    p = 0.6 * (s / alpha) + 0.4 * (s / alpha) ** 3
    np.testing.assert_allclose(np.linalg.svd(out, compute_uv=False), p * s[0] / p[0], rtol=1e-8)


def test_qsvt_on_a_checkpoint_reports_the_self_check() -> None:
    rng = np.random.default_rng(3)
    w = rng.normal(size=(16, 32)).astype(np.float32)
    run = compress_tensors({"w": w}, {"bits": 4})
    result = decompress_container(run.container, {"qsvt": True, "max_qubits": 8}, reference={"w": w})
    entry = result.plan.result["enhancements"]["qsvt"]["tensors"][0]
    assert entry["used"] == (entry["selfcheck_error_qsvt"] < entry["selfcheck_error_plain"])
    assert entry["max_deviation_vs_numpy_svd"] < 1e-8 and entry["qubits"] == 6
    if not entry["used"]:
        assert result.plan.solver.ran == "plain"
        assert np.array_equal(result.arrays["w"], decompress_container(run.container).arrays["w"])


def test_missing_quantum_library_falls_back_to_the_plain_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import qflow.core.skeleton as skeleton  # quantum_step chooses the device for every quantum step
    from qflow.core.errors import QuantumUnavailableError

    def missing(*_args, **_kwargs):
        raise QuantumUnavailableError("pennylane is not installed")

    monkeypatch.setattr(skeleton, "choose_device", missing)
    w = np.random.default_rng(4).normal(size=(16, 32)).astype(np.float32)
    run = compress_tensors({"w": w}, {"vqc_autoencoder": True})
    assert run.plan.solver.requested == "quant8+vqc" and run.plan.solver.ran == "quant8"
    assert run.plan.solver.fallbacks[0].reason == "pennylane is not installed"
    result = decompress_container(run.container, {"hhl": True, "qsvt": True})
    assert result.plan.solver.ran == "plain"
    assert [(f.from_, f.reason) for f in result.plan.solver.fallbacks] == [
        ("hhl", "pennylane is not installed"), ("qsvt", "pennylane is not installed")]
    assert np.array_equal(result.arrays["w"], decompress_container(run.container).arrays["w"])
