"""Quantum backend: device choice, qubit/memory/time budgets.

``lightning.qubit`` is used when installed (C++ state vector, adjoint
gradients); otherwise ``default.qubit`` with backprop, and the reason is
recorded. Every circuit is checked against the qubit budget and a memory
estimate *before* it is built, and optimisation loops check a deadline
between steps. Any refusal raises :class:`QuantumUnavailableError`, which the
module catches and records as a fallback -- never a crash, never a silent
classical answer.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from qflow.core.errors import InputError, QuantumUnavailableError

__all__ = [
    "HARD_MAX_QUBITS",
    "QuantumDevice",
    "QuantumBudget",
    "choose_device",
    "state_vector_bytes",
    "estimate_circuit_bytes",
    "available_memory_bytes",
]

#: No config may ask for more qubits than this (2**24 amplitudes = 256 MiB).
HARD_MAX_QUBITS = 24


@dataclass(frozen=True)
class QuantumDevice:
    """The simulator that will run circuits, and why it was chosen."""

    name: str
    diff_method: str
    reason: str


def choose_device(prefer_lightning: bool = True) -> QuantumDevice:
    """Pick ``lightning.qubit`` when importable, else ``default.qubit``.

    Raises
    ------
    QuantumUnavailableError
        When PennyLane itself is not installed.
    """
    if importlib.util.find_spec("pennylane") is None:
        raise QuantumUnavailableError("pennylane is not installed")
    if prefer_lightning and importlib.util.find_spec("pennylane_lightning") is not None:
        return QuantumDevice("lightning.qubit", "adjoint", "lightning.qubit installed (C++ state vector, adjoint gradients)")
    why = "lightning not requested" if not prefer_lightning else "pennylane-lightning not installed"
    return QuantumDevice("default.qubit", "backprop", f"default.qubit: {why}")


def state_vector_bytes(n_qubits: int) -> int:
    """Bytes of one complex128 state vector on ``n_qubits`` qubits."""
    return 16 * (1 << n_qubits)


def estimate_circuit_bytes(n_qubits: int, n_gates: int, device: QuantumDevice) -> int:
    """Peak memory estimate of one gradient evaluation, bytes.

    Adjoint differentiation keeps a few state vectors (state, bra, derivative
    scratch); backprop keeps one per gate for the backward pass.
    """
    copies = 4 if device.diff_method == "adjoint" else n_gates + 4
    return copies * state_vector_bytes(n_qubits)


def available_memory_bytes() -> int:
    """``MemAvailable`` from /proc/meminfo, or 4 GiB where it can't be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30


def _budget_from_environment(text: str) -> float:
    """``QFLOW_QUANTUM_TIME_BUDGET_S`` as seconds (finite, >= 0), else an :class:`InputError` naming it."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise InputError("QFLOW_QUANTUM_TIME_BUDGET_S", "(environment)", "not a usable number", "seconds >= 0", text)
    return value


@dataclass
class QuantumBudget:
    """Limits one plan's quantum work must stay within.

    Parameters
    ----------
    max_qubits : int
        Largest circuit allowed (``<= HARD_MAX_QUBITS``).
    time_budget_s : float
        Wall time for all circuits of one plan, seconds.
    memory_fraction : float
        Share of currently available memory one circuit may use.
    heartbeat : callable, optional
        Called at every time check (between optimiser steps). Front ends pass
        their progress sink here, so a Cancel raised from it stops a quantum
        loop after the current step instead of at the end of the stage.
    """

    max_qubits: int = 16
    time_budget_s: float = 60.0
    memory_fraction: float = 0.5
    heartbeat: Callable[[], None] | None = None
    _start: float = field(default_factory=time.perf_counter, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.max_qubits <= HARD_MAX_QUBITS:
            raise ValueError(f"max_qubits must be in [1, {HARD_MAX_QUBITS}]; got {self.max_qubits}")
        # Tests force a timeout by setting this to 0; an operator can too.
        override = os.environ.get("QFLOW_QUANTUM_TIME_BUDGET_S")
        if override is not None:
            self.time_budget_s = _budget_from_environment(override)

    def elapsed_s(self) -> float:
        return time.perf_counter() - self._start

    def check_circuit(self, n_qubits: int, n_gates: int, device: QuantumDevice) -> None:
        """Refuse a circuit over the qubit budget or the memory estimate."""
        if n_qubits > self.max_qubits:
            raise QuantumUnavailableError(f"circuit needs {n_qubits} qubits, over the budget of {self.max_qubits}")
        need = estimate_circuit_bytes(n_qubits, n_gates, device)
        have = int(available_memory_bytes() * self.memory_fraction)
        if need > have:
            raise QuantumUnavailableError(
                f"circuit on {n_qubits} qubits needs about {need / 2**20:.0f} MiB, over the {have / 2**20:.0f} MiB allowed"
            )
        self.check_time()

    def check_time(self) -> None:
        """Raise once the plan's quantum time budget is spent (after calling the heartbeat)."""
        if self.heartbeat is not None:
            self.heartbeat()
        if self.elapsed_s() > self.time_budget_s:
            raise QuantumUnavailableError(
                f"quantum time budget of {self.time_budget_s:g} s exceeded after {self.elapsed_s():.2f} s"
            )
