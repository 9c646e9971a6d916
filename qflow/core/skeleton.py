"""What every ``plan_*`` repeats, written once.

A plan runs as a list of named stages between :meth:`PlanRun.start` and
:meth:`PlanRun.finish`:

>>> from qflow.core.config import QflowConfig
>>> run = PlanRun.start("demo", {}, QflowConfig, requested="classical")
>>> with run.stage("solve", 0.5, "solving"):
...     answer = 42
>>> plan = run.finish({"answer": answer}, {"cost": 1.0})
>>> plan.module, plan.solver.ran, list(plan.timings_s)
('demo', 'classical', ['solve'])

:func:`quantum_step` owns the quantum side every module shares: device
choice, the qubit/memory/time budget, and the fallback record when a circuit
cannot run. The exact check of a QAOA answer lives with the QAOA loop itself
(:func:`qflow.core.qaoa.run_qaoa`), so every module gets it by calling that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from qflow.core.config import QflowConfig
from qflow.core.errors import QuantumUnavailableError
from qflow.core.plan import InputDigest, Plan, SolverReport, StageTimer
from qflow.core.quantum import QuantumBudget, QuantumDevice, choose_device

__all__ = ["PlanRun", "Progress", "input_sources", "quantum_step", "quantum_budget"]

#: ``progress(fraction in 0..1, message)``.
Progress = Callable[[float, str], None]

C = TypeVar("C", bound=QflowConfig)
T = TypeVar("T")


def _silent(fraction: float, message: str) -> None:
    """A progress sink that drops every report."""


@dataclass
class PlanRun:
    """One plan in the making: its validated config, solver report, timings and notes.

    Attributes
    ----------
    module : str
        The module name written into the plan.
    config : QflowConfig
        The validated config (a module's own subclass).
    solver : SolverReport
        Requested path, the path that ran, and each fallback.
    digests : list of InputDigest
        The inputs the plan answers to.
    progress : callable
        ``progress(fraction, message)``; a front end's Cancel raises from it.
    """

    module: str
    config: Any
    solver: SolverReport
    digests: list[InputDigest]
    progress: Progress = _silent
    timer: StageTimer = field(default_factory=StageTimer)
    diagnostics: list[str] = field(default_factory=list)
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        module: str,
        config: Any,
        config_class: type[C],
        *,
        requested: str | Callable[[C], str],
        digests: list[InputDigest] | None = None,
        progress: Progress | None = None,
    ) -> PlanRun:
        """Validate ``config`` (a ``config_class``, a mapping or ``None``) and open the run.

        ``requested`` is the path name, or a function of the validated config
        that returns it. An invalid config raises :class:`~qflow.core.errors.InputError`.
        """
        if not isinstance(config, config_class):
            config = config_class.from_mapping(config, "config")  # a non-mapping is a one-line InputError there
        path = requested(config) if callable(requested) else requested
        return cls(module=module, config=config, solver=SolverReport(requested=path, ran=path),
                   digests=list(digests or []), progress=progress or _silent)

    @contextmanager
    def stage(self, name: str, fraction: float | None = None, message: str | None = None) -> Iterator[None]:
        """Time the block as stage ``name``; report ``fraction`` first when given."""
        if fraction is not None:
            self.progress(fraction, message or name)
        with self.timer.stage(name):
            yield

    def note(self, text: str) -> None:
        """Add a diagnostic (a soft warning worth an operator's glance)."""
        self.diagnostics.append(text)

    def finish(self, result: dict[str, Any], metrics: dict[str, Any]) -> Plan:
        """Report completion and build the :class:`~qflow.core.plan.Plan`."""
        self.progress(1.0, "done")
        return Plan(module=self.module, inputs=self.digests, config=self.config.model_dump(), solver=self.solver,
                    result=result, metrics=metrics, baselines=self.baselines, timings_s=self.timer.timings_s,
                    diagnostics=self.diagnostics)


def input_sources(digests: list[InputDigest] | None) -> dict[str, str]:
    """Input name -> the file it came from (the name itself when no file was given), for error messages.

    >>> input_sources([InputDigest(name="tokens", sha256="", source="trace.csv"), InputDigest(name="graph", sha256="")])
    {'tokens': 'trace.csv', 'graph': 'graph'}
    """
    return {d.name: (d.source or d.name) for d in digests or []}


def quantum_budget(config: Any, heartbeat: Callable[[], None] | None = None) -> QuantumBudget:
    """The budget a config's ``max_qubits`` and ``quantum_time_budget_s`` allow."""
    return QuantumBudget(max_qubits=config.max_qubits, time_budget_s=config.quantum_time_budget_s, heartbeat=heartbeat)


def quantum_step(
    solver: SolverReport,
    step: Callable[[QuantumDevice, QuantumBudget], T],
    budget: QuantumBudget,
    *,
    fallback_to: str,
    fallback_from: str | None = None,
    what: str = "",
    device: QuantumDevice | None = None,
    prefer_lightning: bool = True,
) -> T | None:
    """Run ``step(device, budget)`` or record why it could not run.

    Parameters
    ----------
    solver : SolverReport
        Receives a fallback from the path that ran to ``fallback_to`` when
        the step raises :class:`~qflow.core.errors.QuantumUnavailableError`
        (no PennyLane, a circuit over the qubit or memory budget, the time
        budget spent).
    step : callable
        The quantum work; gets the chosen device and the shared budget.
    budget : QuantumBudget
        Shared by every step of one plan, so the time budget is the plan's.
    fallback_to : str
        The path name the plan reports when the step is abandoned.
    fallback_from : str, optional
        What the fallback leaves (default: the path that ran); a module whose
        path joins optional steps (``plain+hhl+qsvt``) names the step dropped.
    what : str, optional
        Prefix of the recorded reason (e.g. ``"window 3"``).
    device : QuantumDevice, optional
        A device already chosen; otherwise :func:`~qflow.core.quantum.choose_device`.

    Returns
    -------
    The step's value, or ``None`` after a recorded fallback.
    """
    try:
        chosen = device if device is not None else choose_device(prefer_lightning)
        return step(chosen, budget)
    except QuantumUnavailableError as exc:
        reason = f"{what}: {exc}" if what else str(exc)
        solver.fall_back(fallback_from or solver.ran, fallback_to, reason)
        return None
