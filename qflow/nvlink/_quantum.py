"""QAOA on the recolouring blocks of the transfer rounds, each checked by brute force.

A block (see :func:`qflow.nvlink._rounds.build_block`) is a small conflict
sub-graph: the transfer to be moved out of the last round plus the transfers
of two earlier rounds ``a``/``b`` it reaches through shared GPUs. One qubit
per transfer (``|0>`` = round ``a``, ``|1>`` = round ``b``) and the cost
counts conflicts::

    H = sum_{i~j in block} (1 + Z_i Z_j) / 2 + sum_{i ~ fixed w} (1 +- Z_i) / 2

so the ground state (energy 0) is a valid recolouring when one exists. QAOA
(:func:`qflow.core.qaoa.run_qaoa`, PennyLane on the device of
:func:`qflow.core.quantum.choose_device`) reads out its likeliest bitstring;
the block is also solved by enumerating all ``2**n`` bitstrings, and the
better answer is the one used (QAOA's whenever it reaches the optimum).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qflow.core.errors import QuantumUnavailableError
from qflow.core.qaoa import approximation_ratio, run_qaoa, solve_exact
from qflow.core.quantum import QuantumBudget, QuantumDevice
from qflow.nvlink._rounds import RecolourBlock

__all__ = ["QaoaBlockSolver"]


@dataclass
class QaoaBlockSolver:
    """Solves blocks with QAOA while the budget lasts, exactly afterwards; records every block.

    Attributes
    ----------
    blocks : list of dict
        Per QAOA block: qubits, QAOA and exact energies, ratio, whether QAOA
        was optimal, which answer was used, whether a move was applied from
        QAOA's answer, steps, convergence.
    stopped : str or None
        Why QAOA stopped being used (budget spent, simulator failure).
    """

    device: QuantumDevice
    budget: QuantumBudget
    layers: int
    steps: int
    max_blocks: int
    seed: int = 0
    blocks: list[dict[str, Any]] = field(default_factory=list)
    exact_only: int = 0
    stopped: str | None = None
    circuits: int = 0

    @property
    def moves_applied(self) -> int:
        """Blocks whose recolouring was applied from QAOA's answer (not the brute-force one)."""
        return sum(1 for b in self.blocks if b["applied_from_qaoa"])

    def __call__(self, block: RecolourBlock) -> np.ndarray:
        exact_bits, best, worst = solve_exact(block.model)
        if self.stopped is not None or len(self.blocks) >= self.max_blocks:
            if self.stopped is None:
                self.stopped = f"QAOA block limit qaoa_blocks={self.max_blocks} reached; later blocks solved exactly"
            self.exact_only += 1
            return exact_bits
        try:
            result = run_qaoa(block.model, self.layers, self.device, self.budget, max_steps=self.steps,
                              seed=self.seed + len(self.blocks))
        except QuantumUnavailableError as exc:
            self.stopped = str(exc)
            self.exact_only += 1
            return exact_bits
        self.circuits += result.circuits_run
        optimal = result.energy <= best + 1e-9
        self.blocks.append({
            "target_transfer": int(block.target),
            "rounds": [int(block.colours[0]), int(block.colours[1])],
            "qubits": result.n_qubits,
            "qaoa_conflicts": float(result.energy),
            "exact_conflicts": float(best),
            "worst_conflicts": float(worst),
            "ratio": approximation_ratio(worst, result.energy, best),
            "optimal": bool(optimal),
            "used": "qaoa" if optimal else "exact",
            # The answer used has no conflict, so the block's recolouring is applied (a transfer moves).
            "applied_from_qaoa": bool(optimal and best < 0.5),
            "steps": result.steps,
            "probability": result.probability,
            "history": [float(v) for v in result.expectation_history],
        })
        return result.bits if optimal else exact_bits
