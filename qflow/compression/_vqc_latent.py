"""VQC autoencoder qubit pruning and the stored VQC latent, against PCA of the same latent size.

The trained encoder ``U`` maps a block's amplitude state to ``2**L`` latent
amplitudes (``L = q - t`` latent qubits, the trash qubits at |0>). Latent
qubit ``i`` is *pruned* when the variance of ``<Z_i>`` over the training
blocks falls below ``vqc_prune_variance``: it barely changes from block to
block, so it is fixed at its more likely basis value (the sign of its mean
``<Z_i>``) and only the amplitudes with every pruned qubit at its fixed
value are stored: ``2**(L - pruned)`` complex amplitudes per block instead of
``2**L``.

Stored (scheme ``latent``, kind ``vqc``): the encoder's matrix (float64
real and imaginary parts, so decoding needs numpy only), each block's norm
(float32), and the retained amplitudes' real and imaginary parts as 8-bit
codes per amplitude; the record keeps the retained and pruned qubits (with
their fixed values). Decoding puts the amplitudes back at their positions,
applies ``U^dagger`` and takes the real part times the norm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from qflow.compression._codec import EncodedTensor
from qflow.compression._container import Block
from qflow.compression._lossless import pack, unpack
from qflow.compression._quantize import dequantize, quantize

__all__ = ["decode_vqc", "prune_qubits", "pruned_candidate", "qubit_variances", "retained_positions", "vqc_latent_encoding",
           "vqc_pruned_reconstruct"]


def _bits(n_qubits: int) -> np.ndarray:
    """Bit of latent qubit ``i`` (qubit 0 most significant) in each amplitude index: shape (2**n, n), 0/1."""
    index = np.arange(2**n_qubits)[:, None]
    return (index >> (n_qubits - 1 - np.arange(n_qubits))[None, :]) & 1


def qubit_variances(latent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance over rows of each latent qubit's ``<Z>``: two arrays of shape (L,).

    ``latent`` (n, 2**L) complex; each row is normalised first (a zero row counts as |0...0>).

    >>> lat = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=complex)  # qubit 0 always |0>, qubit 1 flips
    >>> [v.round(3).tolist() for v in qubit_variances(lat)]
    [[1.0, 0.0], [0.0, 1.0]]
    """
    n_qubits = int(np.log2(latent.shape[1]))
    probs = np.abs(latent) ** 2
    totals = probs.sum(axis=1, keepdims=True)
    probs = np.where(totals > 0, probs / np.where(totals > 0, totals, 1.0), np.eye(1, latent.shape[1]))
    z = probs @ (1 - 2 * _bits(n_qubits))  # (n, L)
    return z.mean(axis=0), z.var(axis=0)


def prune_qubits(latent: np.ndarray, threshold: float) -> tuple[list[int], dict[int, int], np.ndarray]:
    """Latent qubits to keep, the pruned ones with their fixed value, and every qubit's variance.

    A qubit is pruned when its ``<Z>`` variance is below ``threshold``; at
    least one qubit (the most variable) is always kept.
    """
    mean, variance = qubit_variances(latent)
    pruned = [i for i in range(len(variance)) if variance[i] < threshold]
    if len(pruned) == len(variance):
        pruned.remove(int(np.argmax(variance)))
    retained = [i for i in range(len(variance)) if i not in pruned]
    return retained, {i: int(mean[i] < 0) for i in pruned}, variance


def retained_positions(n_latent: int, fixed: dict[int, int]) -> np.ndarray:
    """Amplitude indices (ascending) whose pruned qubits sit at their fixed values: shape (2**(L - pruned),).

    >>> retained_positions(2, {0: 0}).tolist(), retained_positions(2, {1: 1}).tolist()
    ([0, 1], [1, 3])
    """
    bits = _bits(n_latent)
    mask = np.ones(2**n_latent, dtype=bool)
    for qubit, value in fixed.items():
        mask &= bits[:, qubit] == value
    return np.flatnonzero(mask)


def _states(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = np.linalg.norm(blocks, axis=1)
    return np.divide(blocks, norms[:, None], out=np.zeros_like(blocks), where=norms[:, None] > 0), norms


def vqc_pruned_reconstruct(unitary: np.ndarray, blocks: np.ndarray, trash: int, positions: np.ndarray) -> np.ndarray:
    """Encode blocks (n, 2**q), keep the latent amplitudes at ``positions``, decode back: (n, 2**q) real."""
    size = blocks.shape[1]
    states, norms = _states(blocks)
    latent = (states @ unitary.T)[:, : size >> trash]
    padded = np.zeros((blocks.shape[0], size), dtype=complex)
    padded[:, positions] = latent[:, positions]
    return (padded @ unitary.conj()).real * norms[:, None]


def vqc_latent_encoding(name: str, x: np.ndarray, unitary: np.ndarray, trash: int, retained: list[int],
                        fixed: dict[int, int], sha: str) -> EncodedTensor:
    """The ``latent`` record (kind ``vqc``) and its blocks for ``x``, and the reconstruction a decoder will give."""
    from qflow.compression._quantum import blocks_of

    size = unitary.shape[0]
    n_latent = int(np.log2(size)) - trash
    positions = retained_positions(n_latent, fixed)
    blocks = blocks_of(x, size)
    states, norms = _states(blocks)
    kept = (states @ unitary.T)[:, positions]  # (n, m) complex
    parts = np.concatenate([kept.real.T, kept.imag.T])  # (2m, n): one row per stored real
    codes, scales, zps = quantize(parts.copy(), 8)
    meta = np.concatenate([unitary.real.reshape(-1), unitary.imag.reshape(-1), scales, zps]).astype("<f8")
    out = [Block(f"{name}/vqc_meta", pack(meta.tobytes(), level=3)),
           Block(f"{name}/vqc_norms", pack(norms.astype("<f4").tobytes(), level=3)),
           Block(f"{name}/vqc_codes", pack(codes.tobytes(), level=3))]
    record = {"name": name, "dtype": x.dtype.name, "shape": list(x.shape), "sha256": sha, "notes": [],
              "scheme": "latent", "blocks": [b.name for b in out],
              "latent": {"kind": "vqc", "block_size": size, "blocks": int(blocks.shape[0]), "trash_qubits": trash,
                         "latent_qubits": n_latent, "retained_qubits": retained,
                         "pruned_qubits": {str(k): v for k, v in fixed.items()}, "amplitudes": int(len(positions)),
                         "decoder": "x = Re(U^dagger a) * norm, a = the stored amplitudes at their positions, 0 elsewhere"}}
    unpacked = {b.name: unpack(b.packed.codec, b.packed.payload, b.packed.raw_length) for b in out}
    recon = decode_vqc(record["latent"], lambda key: unpacked[f"{name}/{key}"])[: x.size]
    return EncodedTensor(record, out, recon.reshape(x.shape).astype(x.dtype))


def decode_vqc(latent: dict[str, Any], read: Callable[[str], bytes], values: int | None = None) -> np.ndarray:
    """Flat float64 values of every block of a ``vqc`` latent (numpy only).

    ``values`` (the tensor's size) bounds what the record may declare: a
    forged record raises ``ValueError`` before anything of its size is allocated.
    """
    size, n, n_latent = int(latent["block_size"]), int(latent["blocks"]), int(latent["latent_qubits"])
    if size < 2 or size & (size - 1) or size > 4096 or not 1 <= n_latent < int(np.log2(size)) + 1 \
            or (values is not None and n != -(-values // size)):
        raise ValueError(f"vqc latent: block_size {size}, {n} blocks, {n_latent} latent qubits do not fit the tensor")
    fixed = {int(k): int(v) for k, v in latent["pruned_qubits"].items()}
    positions = retained_positions(n_latent, fixed)
    m = len(positions)
    meta = np.frombuffer(read("vqc_meta"), dtype="<f8")
    if len(meta) != 2 * size * size + 4 * m:
        raise ValueError(f"vqc latent: {len(meta)} meta values, expected {2 * size * size + 4 * m}")
    unitary = (meta[: size * size] + 1j * meta[size * size: 2 * size * size]).reshape(size, size)
    scales, zps = meta[2 * size * size: 2 * size * size + 2 * m], meta[2 * size * size + 2 * m:]
    norms = np.frombuffer(read("vqc_norms"), dtype="<f4").astype(np.float64)
    codes = np.frombuffer(read("vqc_codes"), dtype=np.uint8).reshape(2 * m, n)
    parts = dequantize(codes, scales, zps, np.float64)
    padded = np.zeros((n, size), dtype=complex)
    padded[:, positions] = (parts[:m] + 1j * parts[m:]).T
    return ((padded @ unitary.conj()).real * norms[:, None]).reshape(-1)


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    den = np.linalg.norm(a)
    return float(np.linalg.norm(b - a) / den) if den > 0 else 0.0


def pruned_candidate(name: str, x: np.ndarray, enc: EncodedTensor, train: np.ndarray, held: np.ndarray,
                     unitary: np.ndarray, trash: int, threshold: float, codes: tuple[float, int]
                     ) -> tuple[dict[str, Any], EncodedTensor | None]:
    """Prune the trained encoder's latent qubits, score it against PCA of the same size, and store it if it wins.

    Parameters
    ----------
    train, held : ndarray of shape (n, 2**q)
        The blocks the encoder was trained on and the held-out blocks both are scored on.
    codes : (relative error, stored bytes) of the tensor's 8-bit codes.

    Returns
    -------
    The pruning report, and the ``vqc`` latent encoding when the pruned VQC
    beats PCA of the same size on the held-out blocks and its latent beats the
    codes in size and error (else ``None``).
    """
    from qflow.compression._quantum import pca_fit, pca_reconstruct

    size = unitary.shape[0]
    n_latent = int(np.log2(size)) - trash
    states, _ = _states(train)
    retained, fixed, variance = prune_qubits((states @ unitary.T)[:, : size >> trash], threshold)
    positions = retained_positions(n_latent, fixed)
    m = len(positions)
    vqc_err = _relative(held, vqc_pruned_reconstruct(unitary, held, trash, positions))
    mean, basis = pca_fit(train, 2 * m)
    pca_err = _relative(held, pca_reconstruct(held, mean, basis))
    report: dict[str, Any] = {
        "threshold": threshold, "z_variance": [round(float(v), 6) for v in variance], "retained_qubits": retained,
        "pruned_qubits": {str(k): v for k, v in fixed.items()}, "amplitudes_stored": m,
        "amplitudes_unpruned": size >> trash, "latent_reals_per_block": 2 * m + 1, "pca_components": int(basis.shape[1]),
        "vqc_pruned_relative_error": vqc_err, "pca_same_size_relative_error": pca_err,
        "winner": "vqc_pruned" if vqc_err < pca_err else "pca"}
    if vqc_err >= pca_err:
        report.update(stored=False, reason=f"PCA with {basis.shape[1]} components beat the pruned VQC on held-out "
                      f"blocks ({pca_err:.4g} vs {vqc_err:.4g})")
        return report, None
    latent = vqc_latent_encoding(name, x, unitary, trash, retained, fixed, enc.record["sha256"])
    lat_err = _relative(x.astype(np.float64), latent.reconstruction.astype(np.float64))
    lat_bytes = sum(len(b.packed.payload) for b in latent.blocks)
    report.update(latent_relative_error=lat_err, latent_bytes=lat_bytes)
    if lat_err <= codes[0] and lat_bytes < codes[1]:
        report.update(stored=True, reason="the pruned VQC beat PCA of the same size, and its latent beats the codes")
        return report, latent
    report.update(stored=False, reason=f"the pruned VQC beat PCA of the same size, but its latent ({lat_err:.3g} error, "
                  f"{lat_bytes} B) does not beat the codes ({codes[0]:.3g}, {codes[1]} B)")
    return report, None
