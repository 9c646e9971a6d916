"""Decoding a ``latent`` tensor record: PCA coefficients back to values, plain numpy.

A latent tensor (chosen at compression by :mod:`._quantum`) stores a mean
block, an 8-bit basis ``B`` and 8-bit coefficients ``c``; decoding solves
``(B^T B) z = c`` and returns ``mean + B z`` per block. Kept apart from the
quantum code: decompressing a container needs only this.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from qflow.compression._quantize import dequantize

__all__ = ["decode_latent", "decode_pca", "pca_parts"]


def pca_parts(latent: dict[str, Any], read: Callable[[str], bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean (size,), basis (size, k), coefficients (n, k)) of a PCA latent, dequantized to float64."""
    size, k, n = latent["block_size"], latent["components"], latent["blocks"]
    meta = np.frombuffer(read("latent_meta"), dtype="<f8")
    mean, meta = meta[:size], meta[size:]
    b_scales, b_zps, c_scales, c_zps = meta[:k], meta[k:2 * k], meta[2 * k:3 * k], meta[3 * k:4 * k]
    b_codes = np.frombuffer(read("latent_basis"), dtype=np.uint8).reshape(k, size)
    c_codes = np.frombuffer(read("latent_codes"), dtype=np.uint8).reshape(k, n)
    basis = dequantize(b_codes, b_scales, b_zps, np.float64).T
    coeffs = dequantize(c_codes, c_scales, c_zps, np.float64).T
    return mean, basis, coeffs


def decode_pca(latent: dict[str, Any], read: Callable[[str], bytes], gram_inverse: np.ndarray | None = None) -> np.ndarray:
    """Flat float64 values of every block: ``mean + B z`` with ``(B^T B) z = c`` (or ``z = gram_inverse c``)."""
    mean, basis, coeffs = pca_parts(latent, read)
    gram = basis.T @ basis
    z = coeffs @ gram_inverse.T if gram_inverse is not None else np.linalg.solve(gram, coeffs.T).T
    return (mean + z @ basis.T).reshape(-1)


def decode_latent(record: dict[str, Any], container: Any, gram_inverse: np.ndarray | None = None) -> np.ndarray:
    """Plain decoder of a ``latent`` record: flat float64 values (numpy solve unless ``gram_inverse`` is given)."""
    size = int(np.prod(record["shape"], dtype=np.int64))
    if record["latent"].get("kind") == "vqc":
        from qflow.compression._vqc_latent import decode_vqc

        return decode_vqc(record["latent"], lambda key: container.block(f"{record['name']}/{key}"), size)[:size]
    flat = decode_pca(record["latent"], lambda key: container.block(f"{record['name']}/{key}"), gram_inverse)
    return flat[:size]
