"""The top-k router's utility table without an (n, E) copy of the affinities.

``u[t, e] = affinity[t, e] - locality_weight * distance(node(t), node(e))``
depends on the token only through its source node, so the table is kept as
the affinities plus one small row of offsets per source node, and every reader
(the compiled kernels, the gathers below) subtracts on the fly. The result is
the same float32 value :func:`qflow.routing._classical.utility_matrix` stores
(one float32 subtraction), without its copy: at a million tokens x 256 experts
that copy was 1 GB of fresh memory and about 1.5-2 s of page faults on this
machine, more than the subtraction the kernels now repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from qflow.routing._schemas import RoutingProblem

__all__ = ["UtilityTable", "as_table", "utility_table"]


@dataclass(frozen=True)
class UtilityTable:
    """``u[t, e] = float32(values[t, e] - offsets[offset_row[t], e])``.

    Attributes
    ----------
    values : ndarray of shape (n, E), float32, C order
        Usually the problem's affinities themselves (not a copy).
    offsets : ndarray of shape (R, E), float32
        One row per source node, plus a zero row for tokens of unknown source.
    offset_row : ndarray of shape (n,), int64
        Each token's row of ``offsets``.
    """

    values: np.ndarray
    offsets: np.ndarray
    offset_row: np.ndarray

    @classmethod
    def dense(cls, u: np.ndarray) -> UtilityTable:
        """A table that is ``u`` itself (zero offsets): every value reads back unchanged."""
        values = np.ascontiguousarray(u, dtype=np.float32)
        n, E = values.shape
        return cls(values, np.zeros((1, E), dtype=np.float32), np.zeros(n, dtype=np.int64))

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape

    def at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``u[rows, cols]`` (broadcast as numpy indexing does), float32."""
        rows = np.asarray(rows)
        return self.values[rows, cols] - self.offsets[self.offset_row[rows], cols]

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """``u[rows]``, shape (r, E), float32 (a new array)."""
        return self.values[rows] - self.offsets[self.offset_row[rows]]

    def subset(self, rows: np.ndarray) -> UtilityTable:
        """The table of ``rows`` only (their values copied, the offsets shared)."""
        return UtilityTable(self.values[rows], self.offsets, self.offset_row[rows])

    def to_array(self) -> np.ndarray:
        """The whole (n, E) float32 table, materialised (for small problems and exact solvers)."""
        return self.rows(np.arange(self.values.shape[0]))

    @cached_property
    def extremes(self) -> tuple[float, float]:
        """``(u.min(), u.max())`` in one pass, no copy."""
        from qflow.routing._topk_kernels import utility_extremes

        low, high = utility_extremes(self.values, self.offsets, self.offset_row)
        return float(low), float(high)


def as_table(u: np.ndarray | UtilityTable) -> UtilityTable:
    """``u`` as a :class:`UtilityTable` (a dense array is wrapped, not copied, when it is C-order float32)."""
    return u if isinstance(u, UtilityTable) else UtilityTable.dense(u)


def utility_table(problem: RoutingProblem, locality_weight: float) -> UtilityTable:
    """Affinity minus locality penalty over ``problem.affinity`` itself (no copy).

    The values equal :func:`~qflow.routing._classical.utility_matrix`'s to
    the bit; tokens with no known source pay no penalty.
    """
    values = np.ascontiguousarray(problem.affinity, dtype=np.float32)
    known = problem.source_node >= 0
    if locality_weight <= 0 or not known.any():
        return UtilityTable.dense(values)
    # Penalty depends only on (source node, expert): an (N + 1, E) table, its last row zero for unknown sources.
    penalty = locality_weight * problem.graph.node_distance[:, problem.graph.expert_node]
    offsets = np.vstack([penalty, np.zeros(penalty.shape[1])]).astype(np.float32)
    offset_row = np.where(known, problem.source_node, offsets.shape[0] - 1).astype(np.int64)
    return UtilityTable(values, offsets, offset_row)
