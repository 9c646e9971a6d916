"""VQC autoencoder qubit pruning: exactly the low-variance latent qubits go, the stored latent round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from qflow.compression import compress_tensors, decompress_container
from qflow.compression._codec import decode_tensor
from qflow.compression._container import read_container, write_container
from qflow.compression._vqc_latent import (
    prune_qubits,
    qubit_variances,
    retained_positions,
    vqc_latent_encoding,
    vqc_pruned_reconstruct,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _latent_with_qubit_1_fixed(n: int = 40, value: int = 1, seed: int = 0) -> np.ndarray:
    """Latent amplitudes on 3 qubits: qubits 0 and 2 vary from row to row, qubit 1 is always ``value``."""
    rng = np.random.default_rng(seed)
    latent = np.zeros((n, 8), dtype=complex)
    positions = retained_positions(3, {1: value})
    latent[:, positions] = rng.normal(size=(n, 4)) + 1j * rng.normal(size=(n, 4))
    return latent


def _orthogonal(size: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(size, size)))
    return q


class TestPruning:
    def test_drops_exactly_the_low_variance_qubits(self):
        latent = _latent_with_qubit_1_fixed(value=1)
        mean, variance = qubit_variances(latent)
        assert variance[1] == pytest.approx(0.0, abs=1e-12) and mean[1] == pytest.approx(-1.0)
        assert variance[0] > 0.05 and variance[2] > 0.05
        retained, fixed, _ = prune_qubits(latent, threshold=0.01)
        assert retained == [0, 2] and fixed == {1: 1}
        assert retained_positions(3, fixed).tolist() == [2, 3, 6, 7]

    def test_threshold_zero_prunes_nothing_and_never_everything(self):
        latent = _latent_with_qubit_1_fixed()
        assert prune_qubits(latent, 0.0)[0] == [0, 1, 2]
        retained, fixed, variance = prune_qubits(latent, 1.0)
        assert retained == [int(np.argmax(variance))] and len(fixed) == 2

    def test_pruning_the_fixed_qubit_loses_nothing_pruning_another_does(self):
        unitary, trash = _orthogonal(16, 1), 1  # 4 qubits: 1 trash, 3 latent
        padded = np.zeros((40, 16))
        padded[:, :8] = _latent_with_qubit_1_fixed().real
        blocks = padded @ unitary  # rows: U^T p, so U @ block = p (trash qubit at |0>)
        right = vqc_pruned_reconstruct(unitary, blocks, trash, retained_positions(3, {1: 1}))
        wrong = vqc_pruned_reconstruct(unitary, blocks, trash, retained_positions(3, {0: 0}))
        np.testing.assert_allclose(right, blocks, atol=1e-10)
        assert np.linalg.norm(wrong - blocks) > 0.3 * np.linalg.norm(blocks)


class TestStoredLatent:
    def test_container_round_trips_with_the_stored_indices(self):
        unitary, trash = _orthogonal(16, 2), 1
        padded = np.zeros((64, 16))
        padded[:, :8] = _latent_with_qubit_1_fixed(n=64, seed=3).real
        x = (padded @ unitary).astype(np.float32).reshape(32, 32)
        enc = vqc_latent_encoding("w", x, unitary, trash, [0, 2], {1: 1}, "0" * 64)
        latent = enc.record["latent"]
        assert latent["retained_qubits"] == [0, 2] and latent["pruned_qubits"] == {"1": 1}
        assert latent["amplitudes"] == 4  # of 8 unpruned: the stored latent is half the size
        codes = next(b for b in enc.blocks if b.name == "w/vqc_codes")
        assert codes.packed.raw_length == 2 * 4 * 64  # real and imaginary 8-bit codes of 4 amplitudes x 64 blocks
        opened = read_container(write_container({"config": {}, "steps": [], "tensors": [enc.record]}, enc.blocks))
        restored = decode_tensor(opened.header["tensors"][0], opened)
        np.testing.assert_array_equal(restored, enc.reconstruction)
        assert np.linalg.norm(restored - x) / np.linalg.norm(x) < 0.02  # 8-bit amplitudes, nothing lost to pruning

    def test_compress_reports_pruning_against_pca_of_the_same_size(self):
        rng = np.random.default_rng(0)
        x = (rng.normal(size=(256, 4)) @ rng.normal(size=(4, 16))).astype(np.float32)
        config = {"vqc_autoencoder": True, "bits": 4, "vqc_blocks": 16, "vqc_steps": 4, "seed": 1,
                  "vqc_prune_variance": 0.5}
        run = compress_tensors({"low_rank": x}, config)
        info = next(t for t in run.plan.result["autoencoder"] if t["tensor"] == "low_rank")
        pruning = info["pruning"]
        assert len(pruning["retained_qubits"]) + len(pruning["pruned_qubits"]) == 2
        assert pruning["amplitudes_stored"] == 2 ** len(pruning["retained_qubits"])
        assert pruning["pca_components"] == 2 * pruning["amplitudes_stored"]
        assert pruning["winner"] == ("vqc_pruned" if pruning["vqc_pruned_relative_error"]
                                     < pruning["pca_same_size_relative_error"] else "pca")
        restored = decompress_container(run.container).arrays["low_rank"]
        assert restored.shape == x.shape


def test_a_forged_vqc_record_is_a_one_line_input_error():
    from qflow.core.errors import InputError

    unitary = _orthogonal(16, 2)
    x = np.random.default_rng(5).normal(size=(32, 32)).astype(np.float32)
    enc = vqc_latent_encoding("w", x, unitary, 1, [0, 2], {1: 1}, "0" * 64)
    enc.record["latent"]["blocks"] = 10**9  # would size a (1e9, 16) complex array
    data = write_container({"config": {}, "steps": [], "tensors": [enc.record]}, enc.blocks)
    with pytest.raises(InputError, match="cannot be decoded") as info:
        decompress_container(data)
    assert "\n" not in str(info.value)
