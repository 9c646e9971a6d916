"""The plan envelope (``schema: "qflow.plan/v1"``) every module returns.

A :class:`Plan` is plain, JSON-serialisable data. Its ``solver`` section says
which path was requested, which ran, and every fallback with its reason, so an
operator never has to guess whether a quantum result was really quantum.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from qflow._version import __version__

__all__ = [
    "PLAN_SCHEMA",
    "Fallback",
    "InputDigest",
    "Plan",
    "QuantumReport",
    "SolverReport",
    "StageTimer",
    "digest_bytes",
]

PLAN_SCHEMA = "qflow.plan/v1"


def digest_bytes(data: bytes) -> str:
    """sha256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


class InputDigest(BaseModel):
    """One input: its name, a sha256 of its canonical bytes, and its size."""

    name: str
    sha256: str
    rows: int | None = None
    shape: list[int] | None = None
    source: str | None = Field(None, description="File name the input came from, if any.")


class Fallback(BaseModel):
    """One step down from the requested path, always with a reason."""

    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    reason: str


class QuantumReport(BaseModel):
    """What the quantum path actually did."""

    device: str
    device_reason: str = Field(description="Why this device was chosen (e.g. lightning.qubit not installed).")
    layers: int
    qubits_per_circuit: list[int] = Field(default_factory=list)
    circuits_run: int = 0
    optimizer_steps: list[int] = Field(default_factory=list)
    block_ratios: list[float | None] = Field(
        default_factory=list,
        description="Per block: (worst - qaoa) / (worst - exact) of the block cost; 1.0 is optimal.",
    )
    exact_checked: list[bool] = Field(default_factory=list)
    convergence: list[list[float]] = Field(
        default_factory=list, description="Per block: expectation of the cost after each optimizer step."
    )
    blocks: list[dict[str, Any]] = Field(default_factory=list, description="Per-block detail.")


class SolverReport(BaseModel):
    """Requested path, the path that ran, and why they differ."""

    requested: str
    ran: str
    fallbacks: list[Fallback] = Field(default_factory=list)
    quantum: QuantumReport | None = None

    def fall_back(self, from_: str, to: str, reason: str) -> None:
        """Record a fallback and make ``to`` the path that ran."""
        self.fallbacks.append(Fallback(**{"from": from_, "to": to, "reason": reason}))
        self.ran = to


class Plan(BaseModel):
    """The downloadable plan a scheduler applies as it is.

    Deterministic for a given input, config and ``config.seed`` except for
    ``created_at`` and ``timings_s``.
    """

    model_config = ConfigDict(populate_by_name=True)

    schema_: Literal["qflow.plan/v1"] = Field(PLAN_SCHEMA, alias="schema")
    module: str
    qflow_version: str = __version__
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    inputs: list[InputDigest]
    config: dict[str, Any]
    solver: SolverReport
    result: dict[str, Any]
    metrics: dict[str, Any]
    baselines: dict[str, dict[str, Any]] = Field(default_factory=dict)
    timings_s: dict[str, float] = Field(default_factory=dict)
    diagnostics: list[str] = Field(default_factory=list, description="Soft warnings worth an operator's glance.")
    #: Arrays too large for the JSON, by name (e.g. a large routing plan's per-token experts); never serialised.
    #: A module's command writes them beside ``--out`` and its result names the file.
    _arrays: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def arrays(self) -> dict[str, Any]:
        """:attr:`_arrays`: empty for most plans; filled in place by the module that made the plan."""
        return self._arrays

    def to_json(self, indent: int | None = 2) -> str:
        """The plan as JSON text (field ``schema``, not ``schema_``)."""
        return self.model_dump_json(by_alias=True, indent=indent)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.to_json(indent=None))

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        return cls.model_validate_json(text)


class StageTimer:
    """Wall time per named stage, for ``Plan.timings_s``.

    >>> timer = StageTimer()
    >>> with timer.stage("solve"):
    ...     pass
    >>> list(timer.timings_s)
    ['solve']
    """

    def __init__(self) -> None:
        self.timings_s: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings_s[name] = round(self.timings_s.get(name, 0.0) + time.perf_counter() - start, 6)
