"""Quantum kernel: a PennyLane feature-map kernel on a features table, with its kernel-target alignment.

One entry point, :func:`plan_kernel`; :func:`load_kernel_inputs` reads the
features CSV (numeric columns, optional label column). The kernel is the
state overlap ``|<phi(x)|phi(x')>|^2`` of an angle or IQP embedding with an
entangling layer, computed on ``lightning.qubit`` when installed; the RBF
kernel on the same standardised features is the baseline.
"""

from qflow._lazy import lazy_exports

#: Public name -> the submodule defining it, imported on first use.
_EXPORTS = {
    "load_kernel_inputs": "qflow.kernel._plan",
    "plan_kernel": "qflow.kernel._plan",
    "KernelConfig": "qflow.kernel._schemas",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["KernelConfig", "load_kernel_inputs", "plan_kernel"]
