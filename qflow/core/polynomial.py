"""Diagonal costs with terms on more than two spins, for QAOA and the exact check.

A :class:`PolynomialModel` is ``H(z) = offset + sum_k c_k prod_{i in S_k} z_i``
over spins ``z = 1 - 2x``; any function of ``n`` bits has such an expansion
(its Walsh-Hadamard transform). It offers what :func:`qflow.core.qaoa.run_qaoa`
and :func:`qflow.core.qaoa.solve_exact` read from an
:class:`~qflow.core.qaoa.IsingModel` (``n``, ``energy``, ``energies``,
``terms``, ``scaled``), so a cost that is not quadratic in its bits (a
multi-level variable encoded on two qubits, squared) runs on the same circuit
builder: a term on ``k`` wires becomes one ``MultiRZ``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qflow.core.quantum import HARD_MAX_QUBITS

__all__ = ["PolynomialModel"]


def _spins(n: int) -> np.ndarray:
    """Spins of all ``2**n`` bitstrings, shape ``(2**n, n)``, wire 0 = MSB."""
    states = np.arange(1 << n, dtype=np.int64)
    return 1.0 - 2.0 * ((states[:, None] >> np.arange(n - 1, -1, -1)) & 1)


@dataclass(frozen=True)
class PolynomialModel:
    """A diagonal cost on ``n`` spins with terms of any order.

    Attributes
    ----------
    n_spins : int
    coefficients : dict of tuple of int -> float
        Sorted wire tuples (at least one wire) and their coefficients.
    offset : float
        The constant term.

    Examples
    --------
    >>> m = PolynomialModel(3, {(0, 1, 2): 1.0, (1,): 0.5}, 2.0)
    >>> m.energy(np.array([1, 0, 0])), m.energy(np.array([0, 1, 0]))
    (1.5, 0.5)
    """

    n_spins: int
    coefficients: dict[tuple[int, ...], float]
    offset: float = 0.0

    @property
    def n(self) -> int:
        return self.n_spins

    def energy(self, bits: np.ndarray) -> float:
        """Energy of one bitstring ``bits`` of shape (n,), values 0/1."""
        z = 1.0 - 2.0 * np.asarray(bits, dtype=float)
        return float(self.offset + sum(c * np.prod(z[list(w)]) for w, c in self.coefficients.items()))

    def energies(self) -> np.ndarray:
        """Energies of all ``2**n`` bitstrings, PennyLane order (wire 0 = MSB), shape ``(2**n,)``.

        Terms are summed on a spin table split in two halves like
        :meth:`qflow.core.qaoa.IsingModel.energies` (a term is the product of
        its high-half and low-half parts), so memory stays at a few
        ``2**n`` vectors.
        """
        n = self.n
        if n > HARD_MAX_QUBITS:
            raise ValueError(f"refusing to enumerate 2**{n} states (at most 2**{HARD_MAX_QUBITS})")
        cut = n // 2
        z_a, z_b = _spins(cut), _spins(n - cut)
        # Group terms by their high-half part: E = sum_a_part (prod z_A) * (sum of low-half products with coefficients).
        groups: dict[tuple[int, ...], np.ndarray] = {}
        for wires, c in self.coefficients.items():
            high = tuple(w for w in wires if w < cut)
            low = [w - cut for w in wires if w >= cut]
            part = np.prod(z_b[:, low], axis=1) if low else np.ones(z_b.shape[0])
            groups[high] = groups.get(high, 0.0) + c * part
        table = np.full((z_a.shape[0], z_b.shape[0]), self.offset)
        for high, low_sum in groups.items():
            head = np.prod(z_a[:, list(high)], axis=1) if high else np.ones(z_a.shape[0])
            table += head[:, None] * low_sum[None, :]
        return table.ravel()

    def terms(self) -> tuple[list[float], list[tuple[int, ...]]]:
        """Non-zero coefficients and the wires they act on (any number of wires)."""
        items = [(w, float(c)) for w, c in sorted(self.coefficients.items(), key=lambda kv: (len(kv[0]), kv[0])) if c != 0.0]
        return [c for _, c in items], [w for w, _ in items]

    def scaled(self) -> tuple[PolynomialModel, float]:
        """The model divided by its largest coefficient, and that scale."""
        scale = max((abs(c) for c in self.coefficients.values()), default=0.0)
        if scale == 0.0:
            return self, 1.0
        return PolynomialModel(self.n_spins, {w: c / scale for w, c in self.coefficients.items()}, self.offset / scale), float(scale)
