"""``qflow train contention-classifier``: the nvlink plan's RBF SVM, trained once and reused.

Trained as a plan trains it: on the uploaded logs, or on runs simulated on
the fabric with the jobs' traffic, the same stratified 75/25 split and seed.
The weights are the fitted arrays themselves (scaler mean and scale, support
vectors, dual coefficients, intercept, gamma); a loaded model decides with
the RBF decision function in numpy, ``sum_k a_k exp(-gamma |z - s_k|^2) + b``
on the standardised features ``z``, which is what scikit-learn's binary SVC
computes (the tests compare the two on every point).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qflow.core.config import QflowConfig
from qflow.core.errors import InputError
from qflow.core.models import ModelArtifact, TrainedModel, Trainer, check_spec, digest_list
from qflow.nvlink._classifier import FEATURES, ContentionModel
from qflow.nvlink._schemas import NvlinkConfig

__all__ = ["TRAINERS", "RbfSvm", "classifier_from_artifact", "classifier_tensors", "train_contention_classifier"]

KIND = "contention-classifier"
TENSORS = ("scaler_mean", "scaler_scale", "support_vectors", "dual_coef", "intercept", "gamma")


class RbfSvm:
    """A fitted binary RBF SVM from its arrays: ``predict`` and ``decision_function`` on (n, 8) feature rows."""

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        self.mean, self.scale = tensors["scaler_mean"], tensors["scaler_scale"]
        self.support, self.dual = tensors["support_vectors"], tensors["dual_coef"].ravel()
        self.intercept, self.gamma = float(tensors["intercept"].ravel()[0]), float(tensors["gamma"].ravel()[0])

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        z = (np.asarray(X, dtype=float) - self.mean) / self.scale
        sq = (z**2).sum(axis=1)[:, None] + (self.support**2).sum(axis=1)[None, :] - 2 * z @ self.support.T
        return np.exp(-self.gamma * np.maximum(sq, 0.0)) @ self.dual + self.intercept

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(int)


def classifier_tensors(pipeline: Any) -> dict[str, np.ndarray]:
    """The arrays of a fitted ``StandardScaler + SVC(rbf)`` pipeline (binary, classes 0 and 1)."""
    scaler, svc = pipeline[0], pipeline[-1]
    return {"scaler_mean": scaler.mean_.astype(float), "scaler_scale": scaler.scale_.astype(float),
            "support_vectors": svc.support_vectors_.astype(float), "dual_coef": svc.dual_coef_.astype(float),
            "intercept": svc.intercept_.astype(float), "gamma": np.array([float(svc._gamma)])}


def train_contention_classifier(files: dict[str, Path | None], config: QflowConfig) -> TrainedModel:
    """Fit the SVM on the logs (or simulated runs on the fabric and jobs) and measure it on the held-out quarter."""
    from qflow.nvlink._classifier import simulate_logs, train_classifier
    from qflow.nvlink._plan import load_nvlink_inputs
    from qflow.nvlink._schemas import parse_jobs
    from qflow.nvlink._simulator import PathTable

    assert isinstance(config, NvlinkConfig)
    fabric, jobs, logs, digests = load_nvlink_inputs(files["fabric"], files["jobs"], files.get("logs"))
    job_list = parse_jobs(jobs, digests[1].source or "jobs", fabric.n_gpus)
    data = logs if logs is not None else simulate_logs(PathTable(fabric, config.max_paths), config.classifier_samples, config.seed,
                                                       [j.traffic for j in job_list])
    model = train_classifier(data, config.seed)
    if model is None:
        raise InputError(digests[-1].source or "logs", "congested", "the logs hold fewer than 2 runs of one class",
                         "both congested and free runs")
    metrics = {**model.report, "logs": "uploaded" if logs is not None else "simulated", "log_rows": int(len(data))}
    return TrainedModel(tensors=classifier_tensors(model.pipeline), spec={"features": list(FEATURES), "classes": [0, 1]},
                        metrics=metrics, inputs=digest_list(digests), config=config.model_dump())


def classifier_from_artifact(model: ModelArtifact) -> ContentionModel:
    """The saved SVM as a :class:`ContentionModel` whose report is the one measured when it was trained."""
    check_spec(model, {"features": list(FEATURES), "classes": [0, 1]})
    t = model.tensors
    missing = [k for k in TENSORS if k not in t]
    if missing:
        raise InputError(model.source, f"model.tensors.{missing[0]}", "missing", "the arrays of qflow train contention-classifier")
    n = len(FEATURES)
    if t["scaler_mean"].shape != (n,) or t["scaler_scale"].shape != (n,) or t["support_vectors"].ndim != 2 \
            or t["support_vectors"].shape[1] != n or t["dual_coef"].shape != (1, t["support_vectors"].shape[0]):
        raise InputError(model.source, "model.tensors", "shapes do not fit the classifier",
                         f"{n} features, dual_coef (1, support vectors)", {k: list(v.shape) for k, v in t.items()})
    report = {k: v for k, v in (model.card.get("metrics") or {}).items()}
    return ContentionModel(RbfSvm(t), report)


TRAINERS = (Trainer(
    name=KIND,
    help="train the nvlink plan's contention classifier (RBF SVM) on logs, or on runs simulated on the fabric and jobs",
    config_cls=NvlinkConfig,
    inputs=("fabric", "jobs"),
    optional_inputs=("logs",),
    input_help={"fabric": "the nvlink plan's fabric (node-link JSON or nvidia-smi topo -m text)",
                "jobs": "the nvlink plan's jobs (JSON/YAML)",
                "logs": "contention logs (CSV: feature columns and congested 0/1); without them runs are simulated"},
    train=train_contention_classifier,
),)
