"""Engine core: plan envelope, config base, loaders, quantum backend, errors."""

from qflow.core.config import QflowConfig
from qflow.core.errors import InfeasibleError, InputError, QflowError, QuantumUnavailableError
from qflow.core.plan import Fallback, InputDigest, Plan, QuantumReport, SolverReport

__all__ = [
    "Fallback",
    "InfeasibleError",
    "InputDigest",
    "InputError",
    "Plan",
    "QflowConfig",
    "QflowError",
    "QuantumReport",
    "QuantumUnavailableError",
    "SolverReport",
]
