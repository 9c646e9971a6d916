"""``plan_kernel``: the quantum kernel matrix of a features table, its alignment, and the RBF baseline's.

Stages: read (split the table, standardise, check the limits), rbf (the
baseline kernel on the same standardised features), states (one feature-map
circuit per row, through :func:`qflow.core.skeleton.quantum_step`; a refusal
falls back to the RBF matrix with the reason recorded), kernel (overlaps and
alignments) and write (a matrix over ``inline_rows`` rows goes beside the
plan as ``<plan stem>.kernel.npy``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qflow.core.errors import InputError
from qflow.core.io import load_table
from qflow.core.limits import check_limit
from qflow.core.plan import InputDigest, Plan, QuantumReport
from qflow.core.skeleton import PlanRun, Progress, quantum_budget, quantum_step
from qflow.kernel._feature_map import CLIP, feature_angles, feature_states, kernel_matrix, rbf_matrix, target_alignment
from qflow.kernel._schemas import KernelConfig

__all__ = ["FeatureTable", "load_kernel_inputs", "matrix_path", "plan_kernel", "split_table"]

FEATURE_MAPS = {
    "angle": "[AngleEmbedding(Y) + CNOT ring + AngleEmbedding(Z)] x layers",
    "iqp": "IQPEmbedding (Hadamards, RZ(theta_i), ZZ(theta_i theta_j) on every pair) x layers",
}


def load_kernel_inputs(features: Any, *, features_name: str | None = None) -> tuple[pd.DataFrame, list[InputDigest]]:
    """Read the features table (CSV or a JSON list of records): ``(frame, digests)``."""
    frame, raw = load_table(features, name=features_name)
    return frame, [raw.digest("features", rows=len(frame), shape=list(frame.shape))]


class FeatureTable:
    """A features table split into numbers and labels.

    Attributes
    ----------
    X : ndarray of shape (n_rows, n_features), float64
    labels : ndarray of shape (n_rows,) or None
        The label column as text, when the file has one.
    names : list of str
        Feature column names, in file order.
    """

    def __init__(self, X: np.ndarray, labels: np.ndarray | None, names: list[str]) -> None:
        self.X, self.labels, self.names = X, labels, names


def _numeric_column(values: pd.Series, name: str, source: str) -> np.ndarray:
    """One feature column as float64, or a one-line error naming the first bad cell."""
    if not (pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype)):
        numbers = pd.to_numeric(values, errors="coerce")
        bad = np.flatnonzero(numbers.isna().to_numpy() & values.notna().to_numpy())
        if bad.size:
            raise InputError(source, f"{name} (row {int(bad[0]) + 1})", "not a number",
                             "numbers in every feature column (or name the label column with label_column)",
                             values.iloc[int(bad[0])])
        values = numbers
    out = values.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        raise InputError(source, f"{name} (row {int(bad[0]) + 1})", "missing or non-finite value", "a finite number",
                         values.iloc[int(bad[0])])
    if np.abs(out).max() > 1e150:  # squares would overflow while standardising
        row = int(np.argmax(np.abs(out)))
        raise InputError(source, f"{name} (row {row + 1})", "value too large", "a magnitude <= 1e150", out[row])
    return out


def split_table(frame: pd.DataFrame, label_column: str, source: str = "features") -> FeatureTable:
    """Numeric feature columns and the optional label column of ``frame``, with the limits checked first.

    Raises
    ------
    LimitExceededError
        More rows than ``kernel_rows`` or more feature columns than
        ``kernel_features`` (checked before any conversion).
    InputError
        Fewer than two rows, no feature column, a non-numeric or missing
        feature value, a duplicated column name or a missing label.
    """
    names = [str(c) for c in frame.columns]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InputError(source, dup, "duplicated column name", "unique column names", dup)
    features = [n for n in names if n != label_column]
    check_limit(len(frame), "kernel_rows", source, "(rows)")
    check_limit(len(features), "kernel_features", source, "(feature columns)")
    if len(frame) < 2:
        raise InputError(source, "(rows)", "too few rows", "at least 2 rows", len(frame))
    if not features:
        raise InputError(source, "(columns)", "no feature column", f"numeric columns besides {label_column!r}", names)
    X = np.column_stack([_numeric_column(frame[n], n, source) for n in features])
    labels = None
    if label_column in names:
        column = frame[label_column]
        missing = np.flatnonzero(column.isna().to_numpy())
        if missing.size:
            raise InputError(source, f"{label_column} (row {int(missing[0]) + 1})", "missing label",
                             "a label on every row, or no label column")
        labels = column.astype(str).to_numpy()
    return FeatureTable(X, labels, features)


def matrix_path(out: Path) -> Path:
    """Where a large matrix goes for the plan written at ``out``: ``<stem>.kernel.npy`` beside it."""
    return out.with_name(out.stem + ".kernel.npy")


def _matrix_figures(K: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """Alignment (None without labels), mean off-diagonal similarity and the smallest eigenvalue of ``K``."""
    n = len(K)
    return {
        "kernel_target_alignment": None if labels is None else target_alignment(K, labels),
        "mean_off_diagonal": float((K.sum() - np.trace(K)) / (n * (n - 1))),
        "min_eigenvalue": float(np.linalg.eigvalsh(K)[0]),
    }


def _quantum_report(device: Any, config: KernelConfig, n: int, d: int) -> QuantumReport:
    return QuantumReport(device=device.name, device_reason=device.reason, layers=config.layers, qubits_per_circuit=[d],
                         circuits_run=n, blocks=[{"embedding": config.embedding, "feature_map": FEATURE_MAPS[config.embedding],
                                                  "circuits": n, "overlaps": n * n}])


def _quantum_kernel(run: PlanRun, angles: np.ndarray, config: KernelConfig) -> np.ndarray | None:
    """The feature-map Gram matrix, or ``None`` after a recorded fallback to the RBF kernel."""
    n, d = angles.shape
    budget = quantum_budget(config, heartbeat=lambda: run.progress(0.5, "quantum kernel: feature-map states"))

    def step(device: Any, budget: Any) -> np.ndarray:
        states = feature_states(angles, config.embedding, config.layers, device, budget)
        run.solver.quantum = _quantum_report(device, config, n, d)
        return kernel_matrix(states)

    return quantum_step(run.solver, step, budget, fallback_to="rbf_kernel", what="quantum kernel")


def plan_kernel(frame: pd.DataFrame, config: KernelConfig | dict[str, Any] | None = None, *,
                digests: list[InputDigest] | None = None, source: str = "features", out: Path | None = None,
                progress: Progress | None = None) -> Plan:
    """The quantum kernel matrix of ``frame``'s rows, its kernel-target alignment and the RBF kernel's.

    Parameters
    ----------
    frame : DataFrame of shape (n_rows, n_columns)
        Numeric feature columns and an optional ``config.label_column``.
    config : KernelConfig or mapping, optional
    digests : list of InputDigest, optional
        The input digests (from :func:`load_kernel_inputs`); computed from ``frame`` otherwise.
    source : str
        The input's name in error messages.
    out : Path, optional
        Where the plan JSON goes; a matrix over ``inline_rows`` rows is written
        at :func:`matrix_path` (``out``) instead of into the plan.

    Returns
    -------
    Plan
        ``result.matrix`` (n_rows, n_rows) or ``result.matrix_file``; ``metrics``
        of the returned kernel; ``baselines.rbf`` the same figures for the RBF kernel.
    """
    from qflow.core.io import digest_frame

    run = PlanRun.start("kernel", config, KernelConfig, requested="quantum_kernel",
                        digests=digests or [digest_frame(frame, "features")], progress=progress)
    config = run.config
    with run.stage("read", 0.05, "reading the features"):
        table = split_table(frame, config.label_column, source)
        angles = feature_angles(table.X, config.angle_scale)
    n, d = angles.shape
    with run.stage("rbf", 0.1, "RBF kernel (baseline)"):
        K_rbf = rbf_matrix(angles / config.angle_scale, config.rbf_gamma)
        run.baselines["rbf"] = {**_matrix_figures(K_rbf, table.labels),
                                "gamma": config.rbf_gamma if config.rbf_gamma > 0 else 1.0 / d}
    with run.stage("states", 0.2, f"quantum kernel: {n} circuits on {d} qubits"):
        K_quantum = _quantum_kernel(run, angles, config)
    with run.stage("kernel", 0.9, "alignment"):
        K = K_quantum if K_quantum is not None else K_rbf
        figures = _matrix_figures(K, table.labels)
        _note_alignment(run, figures, run.baselines["rbf"], K_quantum is not None)
    with run.stage("write", 0.95, "writing the matrix"):
        inline, written = _place_matrix(run, K, config.inline_rows, out)
    result = {
        "kernel": "quantum" if K_quantum is not None else "rbf",
        "embedding": config.embedding, "layers": config.layers, "feature_map": FEATURE_MAPS[config.embedding],
        "angles": f"theta = clip(z, -{CLIP:g}, {CLIP:g}) * {config.angle_scale:g} rad (z: per-column z-score)",
        "rows": n, "qubits": d, "features": table.names,
        "label_column": config.label_column if table.labels is not None else None,
        "classes": None if table.labels is None else dict(zip(*np.unique(table.labels, return_counts=True), strict=True)),
        "matrix": inline, "matrix_file": written,
    }
    if result["classes"] is not None:
        result["classes"] = {str(k): int(v) for k, v in result["classes"].items()}
    return run.finish(result, {**figures, "rows": n, "qubits": d})


def _note_alignment(run: PlanRun, quantum: dict[str, Any], rbf: dict[str, Any], ran_quantum: bool) -> None:
    """Say when labels are missing, or when the quantum kernel aligns no better than the RBF kernel."""
    if quantum["kernel_target_alignment"] is None:
        run.note(f"no {run.config.label_column!r} column: kernel-target alignment not computed")
    elif ran_quantum and quantum["kernel_target_alignment"] <= rbf["kernel_target_alignment"]:
        run.note(f"the quantum kernel aligns with the labels no better than the RBF kernel "
                 f"({quantum['kernel_target_alignment']:.4f} vs {rbf['kernel_target_alignment']:.4f}): "
                 "the RBF kernel is the better choice on this data")


def _place_matrix(run: PlanRun, K: np.ndarray, inline_rows: int, out: Path | None) -> tuple[list | None, str | None]:
    """``(matrix as lists, None)`` up to ``inline_rows`` rows; else ``(None, file written)`` (or a note without ``out``)."""
    if len(K) <= inline_rows:
        return K.tolist(), None
    if out is None:
        run.note(f"the {len(K)} x {len(K)} matrix is over inline_rows ({inline_rows}) and no output path was given: "
                 "not written (pass --out plan.json to write it beside the plan)")
        return None, None
    target = matrix_path(Path(out))
    np.save(target, K, allow_pickle=False)
    return None, str(target)
