"""QFT frequency decoding: PennyLane's QFT equals numpy's FFT, the error probe, adoption only where the error drops."""

from __future__ import annotations

import numpy as np
import pytest

from qflow.compression import compress_tensors, decompress_container
from qflow.compression._container import read_container
from qflow.compression._probe import probe_positions, read_probe
from qflow.compression._qft import qft_matrix, qft_state, wiener_decode
from qflow.core.quantum import choose_device

pytest.importorskip("pennylane")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _smooth(n: int, seed: int = 0) -> np.ndarray:
    """A random walk: most of its power at low frequencies, unlike 8-bit rounding noise."""
    return np.cumsum(np.random.default_rng(seed).normal(size=n)).astype(np.float32) * np.float32(0.01)


class TestQftIsTheFft:
    @pytest.mark.parametrize("n_qubits", [2, 3, 6])
    def test_matrix_equals_numpy_fft(self, n_qubits):
        blocks = np.random.default_rng(n_qubits).normal(size=(5, 2**n_qubits))
        np.testing.assert_allclose(blocks @ qft_matrix(n_qubits).T, np.fft.ifft(blocks, axis=1, norm="ortho"), atol=1e-12)

    def test_device_circuit_equals_numpy_fft(self):
        x = np.random.default_rng(1).normal(size=8)
        np.testing.assert_allclose(qft_state(x, choose_device()) * np.linalg.norm(x), np.fft.ifft(x, norm="ortho"),
                                   atol=1e-12)

    def test_zero_noise_changes_nothing_and_noise_is_shrunk(self):
        x = _smooth(1024).astype(np.float64)
        F = qft_matrix(5)
        np.testing.assert_allclose(wiener_decode(x, 0.0, F), x, atol=1e-12)
        step = 0.02
        noisy = np.round(x / step) * step
        decoded = wiener_decode(noisy, step**2 / 12, F)
        assert np.linalg.norm(decoded - x) < np.linalg.norm(noisy - x)


class TestProbe:
    def test_container_round_trips_with_the_probe(self):
        w = np.random.default_rng(2).normal(size=(64, 32)).astype(np.float32)
        run = compress_tensors({"w": w}, {"error_probe": 100, "bits": 4})
        opened = read_container(run.container)
        record = opened.header["tensors"][0]
        positions, values = read_probe(record, opened)
        assert positions.tolist() == probe_positions(record["sha256"], w.size, 100).tolist()
        np.testing.assert_array_equal(values, w.reshape(-1)[positions].astype(np.float64))
        plain = decompress_container(compress_tensors({"w": w}, {"bits": 4}).container).arrays["w"]
        np.testing.assert_array_equal(decompress_container(run.container).arrays["w"], plain)


class TestAdoption:
    def test_adopted_on_smooth_data_where_the_probe_error_drops(self):
        x = _smooth(8192).reshape(64, 128)
        run = compress_tensors({"smooth": x}, {"bits": 4, "per_channel": False, "error_probe": 2048})
        result = decompress_container(run.container, {"qft": True, "qft_qubits": 6}, reference={"smooth": x})
        entry = result.plan.result["enhancements"]["qft"]["tensors"][0]
        assert "probe" in entry["measured_by"] and entry["max_deviation_vs_numpy_fft"] < 1e-10
        assert entry["used"] and entry["error_qft"] < entry["error_plain"]
        assert result.plan.solver.ran == "plain+qft"
        assert result.plan.metrics["relative_l2_error"] < result.plan.metrics["plain_relative_l2_error"]

    def test_not_adopted_on_white_noise_and_reported(self):
        w = np.random.default_rng(4).normal(size=(64, 64)).astype(np.float32)
        run = compress_tensors({"w": w}, {"bits": 8, "error_probe": 4096})
        result = decompress_container(run.container, {"qft": True})
        entry = result.plan.result["enhancements"]["qft"]["tensors"][0]
        assert entry["used"] == (entry["error_qft"] < entry["error_plain"])
        if not entry["used"]:
            assert result.plan.solver.ran == "plain"
            assert any("QFT decoding kept on no tensor" in f.reason for f in result.plan.solver.fallbacks)
            np.testing.assert_array_equal(result.arrays["w"], decompress_container(run.container).arrays["w"])

    def test_without_a_probe_the_self_check_decides(self):
        x = _smooth(4096).reshape(32, 128)
        run = compress_tensors({"smooth": x}, {"bits": 4, "per_channel": False})
        entry = decompress_container(run.container, {"qft": True}).plan.result["enhancements"]["qft"]["tensors"][0]
        assert entry["measured_by"].startswith("self-check")
        assert entry["used"] == (entry["error_qft"] < entry["error_plain"])
