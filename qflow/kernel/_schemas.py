"""The kernel command's config: embedding, depth, angle scale, the label column and the matrix's output."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from qflow.core.config import QflowConfig
from qflow.core.quantum import HARD_MAX_QUBITS

__all__ = ["KernelConfig"]


class KernelConfig(QflowConfig):
    """Fields of ``qflow kernel`` (flags, API form, page widgets)."""

    embedding: Literal["angle", "iqp"] = Field(
        "angle", description="Feature map: angle (RY, CNOT ring, RZ) or iqp (Hadamards, RZ, ZZ on every pair).")
    layers: int = Field(1, ge=1, le=4, description="Repetitions of the feature map.")
    angle_scale: float = Field(0.5236, gt=0, le=3.1416,
                               description="Radians per standard deviation of a feature (features clipped to +-3 sd).")
    label_column: str = Field("label", min_length=1, max_length=128,
                              description="Column holding the labels (optional in the file); every other column is a feature.")
    rbf_gamma: float = Field(0.0, ge=0, le=1e6,
                             description="Baseline RBF kernel's gamma on the standardised features (0 = 1 / features).")
    inline_rows: int = Field(64, ge=2, le=1000,
                             description="Largest matrix written into the plan; a larger one goes beside it as .npy.")
    max_qubits: int = Field(16, ge=1, le=HARD_MAX_QUBITS, description="Qubit budget (one qubit per feature).")
    quantum_time_budget_s: float = Field(60.0, gt=0, le=3600, description="Wall time for all circuits of one plan, s.")
