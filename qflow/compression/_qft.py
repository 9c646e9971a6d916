"""QFT frequency decoding (decompress): Wiener shrinkage of quantization noise in the QFT basis.

A decompressed tensor ``x_hat = x + e`` carries rounding noise ``e`` of
variance ``scale**2 / 12`` per value, white, so it spreads evenly over
frequencies, while a trained weight's values are not white. The tensor is
cut into blocks of ``N = 2**q`` values; each block goes to the frequency
domain with PennyLane's ``qml.QFT`` on ``q`` qubits::

    QFT |j> = N**-0.5 * sum_k exp(2 pi i j k / N) |k>     (numpy: ifft(x, norm="ortho"))

each coefficient ``X_k`` is scaled by the Wiener gain ``max(0, 1 - s2 /
|X_k|**2)`` (``s2`` the noise variance), and the inverse QFT brings the block
back. The QFT's matrix comes from ``qml.matrix(qml.QFT)`` and is applied to
every block at once; the same circuit is also run on the device for the
first blocks, and both are checked against numpy's FFT of the same blocks.

Adopted per tensor only where a measured error drops: against the
original's probe values when the container stores them
(:mod:`._probe`), else by the re-quantization self-check QSVT uses
(re-quantize ``x_hat``, decode that, and see whether it moves toward
``x_hat``). With a reference given, decompress also reverts any tensor the
reference shows worse.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qflow.compression._codec import quant_parts
from qflow.compression._probe import read_probe
from qflow.compression._quantize import channel_matrix, dequantize, quantize
from qflow.core.plan import QuantumReport
from qflow.core.quantum import QuantumBudget, QuantumDevice

__all__ = ["QFT_TOLERANCE", "qft_decode", "qft_matrix", "qft_state", "wiener_decode"]

#: The QFT's answer may differ from numpy's FFT by this much (max |difference|) and still count as agreeing.
QFT_TOLERANCE = 1e-8
#: Blocks run through the circuit on the device, per tensor (the rest use the QFT's matrix).
DEVICE_BLOCKS = 2


def qft_matrix(n_qubits: int) -> np.ndarray:
    """PennyLane's QFT on ``n_qubits`` wires as a matrix: shape (2**n, 2**n), complex, wire 0 most significant."""
    import pennylane as qml

    wires = list(range(n_qubits))
    return np.asarray(qml.matrix(qml.QFT(wires=wires), wire_order=wires))


def qft_state(block: np.ndarray, device: QuantumDevice) -> np.ndarray:
    """The state ``QFT |block / ||block||>`` computed by a circuit on ``device``: shape (len(block),), complex."""
    import pennylane as qml

    n = int(np.log2(len(block)))
    wires = list(range(n))
    dev = qml.device(device.name, wires=n)

    @qml.qnode(dev)
    def circuit(values: np.ndarray) -> Any:
        qml.AmplitudeEmbedding(values, wires=wires, normalize=True)
        qml.QFT(wires=wires)
        return qml.state()

    return np.asarray(circuit(block))


def wiener_decode(values: np.ndarray, noise_var: float, F: np.ndarray) -> np.ndarray:
    """Shrink each frequency of each ``len(F)``-value block of ``values`` (flat) by ``max(0, 1 - s2 / |X|^2)``.

    Returns the flat float64 values, same size (the last block is zero-padded while transformed).
    """
    size, n = values.size, len(F)
    pad = (-size) % n
    blocks = np.concatenate([values.astype(np.float64), np.zeros(pad)]).reshape(-1, n)
    spectrum = blocks @ F.T  # each row: F @ block
    power = np.abs(spectrum) ** 2
    gains = np.where(power > 0, np.maximum(0.0, 1.0 - noise_var / np.where(power > 0, power, 1.0)), 0.0)
    back = (spectrum * gains) @ F.conj()  # each row: F^H @ (g * X)
    return back.real.reshape(-1)[:size]


def _noise_variance(record: dict[str, Any], container: Any) -> float:
    """Mean rounding-noise variance ``scale**2 / 12`` over the tensor's channels (scales inline or in a block)."""
    scales = np.asarray(quant_parts(record, container)[1], dtype=np.float64)
    return float(np.mean(scales**2) / 12.0)


def _fft_deviation(values: np.ndarray, F: np.ndarray, device: QuantumDevice) -> float:
    """Max |difference| between the QFT (matrix and device circuit) and numpy's FFT on the same blocks."""
    n = len(F)
    pad = (-values.size) % n
    blocks = np.concatenate([values.astype(np.float64), np.zeros(pad)]).reshape(-1, n)
    reference = np.fft.ifft(blocks, axis=1, norm="ortho")
    deviation = float(np.abs(blocks @ F.T - reference).max())
    for block, expected in zip(blocks[:DEVICE_BLOCKS], reference[:DEVICE_BLOCKS], strict=True):
        norm = np.linalg.norm(block)
        if norm > 0:
            deviation = max(deviation, float(np.abs(qft_state(block, device) * norm - expected).max()))
    return deviation


def _error(a: np.ndarray, b: np.ndarray) -> float:
    """``||a - b|| / ||b||`` (``||a - b||`` when ``b`` is zero)."""
    norm = float(np.linalg.norm(b))
    return float(np.linalg.norm(a - b)) / (norm if norm > 0 else 1.0)


def _measure(record: dict[str, Any], x_hat: np.ndarray, decoded: np.ndarray, F: np.ndarray,
             container: Any) -> dict[str, Any]:
    """Error before and after the decoder: on the stored probe when there is one, else by the self-check."""
    probe = read_probe(record, container)
    if probe is not None:
        positions, original = probe
        return {"measured_by": f"the original's {len(positions)} probe values stored in the container",
                "error_plain": _error(x_hat.reshape(-1)[positions], original),
                "error_qft": _error(decoded[positions], original)}
    q = record["quant"]
    codes, scales, zps = quantize(channel_matrix(x_hat, q["per_channel"]), q["bits"])
    again = dequantize(codes, scales, zps, np.float64).reshape(-1)
    again_var = float(np.mean(np.asarray(scales, dtype=np.float64) ** 2) / 12.0)
    flat = x_hat.reshape(-1).astype(np.float64)
    return {"measured_by": "self-check (re-quantize the decompressed tensor, decode that, compare with it)",
            "error_plain": _error(again, flat), "error_qft": _error(wiener_decode(again, again_var, F), flat)}


def qft_decode(records: list[dict[str, Any]], container: Any, current: dict[str, np.ndarray], config: Any,
               device: QuantumDevice, budget: QuantumBudget, report: QuantumReport
               ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """QFT decoding of each quantized tensor; kept where the measured error drops. Returns (info, changed tensors)."""
    n_qubits = config.qft_qubits
    budget.check_circuit(n_qubits, n_qubits * (n_qubits + 1) // 2, device)
    F = qft_matrix(n_qubits)
    info: dict[str, Any] = {"tensors": [], "applied": [], "block_values": 2**n_qubits,
                            "gain": "max(0, 1 - scale^2 / 12 / |X_k|^2) per QFT coefficient"}
    changed: dict[str, np.ndarray] = {}
    for record in records:
        if record["scheme"] != "quant":
            continue
        budget.check_time()
        x_hat = current[record["name"]]
        if x_hat.size < 2**n_qubits:
            info["tensors"].append({"tensor": record["name"], "used": False,
                                    "reason": f"fewer values than one block of {2**n_qubits}"})
            continue
        noise_var = _noise_variance(record, container)
        deviation = _fft_deviation(x_hat.reshape(-1), F, device)
        report.qubits_per_circuit.append(n_qubits)
        report.circuits_run += DEVICE_BLOCKS
        decoded = wiener_decode(x_hat.reshape(-1), noise_var, F)
        entry = {"tensor": record["name"], "qubits": n_qubits, "noise_variance": noise_var,
                 "max_deviation_vs_numpy_fft": deviation,
                 **_measure(record, x_hat, decoded, F, container)}
        entry["used"] = bool(deviation <= QFT_TOLERANCE and entry["error_qft"] < entry["error_plain"])
        if entry["used"]:
            changed[record["name"]] = decoded.reshape(x_hat.shape).astype(x_hat.dtype)
            info["applied"].append(record["name"])
        else:
            entry["reason"] = ("disagrees with numpy's FFT" if deviation > QFT_TOLERANCE
                               else "the measured error did not drop")
        info["tensors"].append(entry)
    if not info["tensors"]:
        info["reason"] = "no quantized tensor in the container"
    return info, changed
