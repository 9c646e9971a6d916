"""Contention classifier: an SVM that flags placements and routings likely to congest.

Logs are simulated on the fabric itself (or uploaded as CSV with the same
columns): each run draws a job (all-to-all, ring all-reduce, pipeline, random
sparse or hot-spot traffic on 2..32 ranks), a placement (random, round-robin
over hosts or compact) and a routing (weighted ECMP, static shortest path or
a random single path), then the flow simulator runs all flows concurrently.
A run is *congested* when its completion time is more than
:data:`CONGESTION_SLOWDOWN` times the injection bound (the busiest GPU's
bytes over its total link bandwidth: what no routing can beat).

Features (:data:`FEATURES`) are known before running anything:
``gpus_share`` (GPUs used / GPUs), ``density`` (flows / ordered GPU pairs),
``cross_node_fraction`` and ``cross_switch_fraction`` (of bytes),
``paths_per_flow`` (log2 of 1 + options used), ``injection_imbalance``
(busiest GPU's bytes / mean), ``mean_hops`` and ``route_capacity`` (the
bandwidth a flow's routes reach alone, over its GPU's injection bandwidth,
byte-weighted). Model: ``StandardScaler`` + ``SVC`` (RBF kernel, balanced
class weights), accuracy measured on a stratified 25 % held out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from qflow.core.errors import InputError
from qflow.nvlink._simulator import FlowSet, PaddedPaths, PathTable, injection_bound_s

__all__ = ["CONGESTION_SLOWDOWN", "FEATURES", "ContentionModel", "features_of", "simulate_logs", "split_logs", "train_classifier"]

CONGESTION_SLOWDOWN = 1.5
FEATURES = ("gpus_share", "density", "cross_node_fraction", "cross_switch_fraction", "paths_per_flow",
            "injection_imbalance", "mean_hops", "route_capacity")
LABEL = "congested"
_PATTERNS = ("all_to_all", "all_reduce", "pipeline", "random_sparse", "hotspot")
_LOG_BYTES = 256e6


def features_of(table: PathTable, flows: FlowSet, paths: PaddedPaths, weights: np.ndarray) -> dict[str, float]:
    """The :data:`FEATURES` of concurrent ``flows`` routed by ``weights`` (n_flows, n_options)."""
    total = float(flows.nbytes.sum())
    gpus = np.unique(np.concatenate([flows.src, flows.dst]))
    k = len(gpus)
    hosts = table.hosts
    switch_hops = np.array([table.crosses_switches(s, d) for s, d in zip(flows.src.tolist(), flows.dst.tolist(), strict=True)])
    out = np.bincount(flows.src, weights=flows.nbytes, minlength=len(hosts))[gpus]
    hops = (paths.links >= 0).sum(axis=2)
    used = weights > 0
    reach = np.where(used, paths.bottleneck_gbps / np.where(used, weights, 1.0), np.inf).min(axis=1)
    reach = np.minimum(reach, table.gpu_capacity_gbps[flows.src])
    return {
        "gpus_share": k / len(hosts),
        "density": flows.n / max(k * (k - 1), 1),
        "cross_node_fraction": float(flows.nbytes[hosts[flows.src] != hosts[flows.dst]].sum()) / total,
        "cross_switch_fraction": float(flows.nbytes[switch_hops].sum()) / total,
        "paths_per_flow": float(np.log2(1 + used.sum(axis=1)).mean()),
        "injection_imbalance": float(out.max() / max(out.mean(), 1e-300)),
        "mean_hops": float(((weights * hops).sum(axis=1) * flows.nbytes).sum() / total),
        "route_capacity": float((reach / table.gpu_capacity_gbps[flows.src] * flows.nbytes).sum() / total),
    }


def _traffic(pattern: str, n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.zeros((n, n))
    if pattern == "all_to_all":
        t[:] = 1.0
    elif pattern == "all_reduce":
        t[np.arange(n), (np.arange(n) + 1) % n] = 1.0
    elif pattern == "pipeline":
        t[np.arange(n - 1), np.arange(1, n)] = 1.0
        t[np.arange(1, n), np.arange(n - 1)] = 1.0
    elif pattern == "random_sparse":
        t = (rng.random((n, n)) < rng.uniform(0.1, 0.5)) * rng.uniform(0.2, 1.0, (n, n))
    else:  # hotspot: everyone sends to a few ranks
        hot = rng.choice(n, size=max(1, n // 8), replace=False)
        t[:, hot] = 1.0
        t += (rng.random((n, n)) < 0.1) * 0.2
    np.fill_diagonal(t, 0.0)
    if not t.any():
        t[0, 1] = 1.0
    return t * _LOG_BYTES


def _placement(kind: str, n: int, table: PathTable, rng: np.random.Generator) -> np.ndarray:
    n_gpus = len(table.hosts)
    if kind == "random":
        return rng.permutation(n_gpus)[:n]
    if kind == "compact":
        start = int(rng.integers(0, n_gpus - n + 1))
        return np.arange(start, start + n)
    hosts = list(dict.fromkeys(table.hosts.tolist()))
    queues = {h: list(np.flatnonzero(table.hosts == h)) for h in hosts}
    out: list[int] = []
    i = 0
    while len(out) < n:
        q = queues[hosts[i % len(hosts)]]
        if q:
            out.append(int(q.pop(0)))
        i += 1
    return np.array(out)


def _routing(kind: str, paths: PaddedPaths, rng: np.random.Generator) -> np.ndarray:
    n, k = paths.bottleneck_gbps.shape
    if kind == "ecmp":
        return paths.ecmp_weights()
    pick = np.zeros(n, dtype=int) if kind == "shortest" else np.floor(rng.random(n) * paths.n_options).astype(int)
    w = np.zeros((n, k))
    w[np.arange(n), pick] = 1.0
    return w


def label_of(table: PathTable, flows: FlowSet, paths: PaddedPaths, weights: np.ndarray) -> tuple[int, float]:
    """(congested, slowdown) of one run: simulated time / injection bound."""
    time_s = float(paths.split_times(table, flows.nbytes, weights, 0.0).max())
    slowdown = time_s / max(injection_bound_s(table, flows), 1e-300)
    return int(slowdown > CONGESTION_SLOWDOWN), slowdown


def simulate_logs(table: PathTable, samples: int, seed: int, jobs: Sequence[np.ndarray] = (),
                  heartbeat: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """``samples`` simulated runs on the fabric: :data:`FEATURES`, ``slowdown``, ``congested``, and how each was drawn.

    ``heartbeat(i, samples)`` is called before each run (a Cancel raised there stops the simulation).

    A run is a mix of 1-3 jobs, each a synthetic pattern on 2..32 ranks or, with
    ``jobs`` given (traffic matrices), one of them, or (30 % of runs) all of
    ``jobs`` together, so the logs cover the workload being planned; all ranks
    of the run are placed together.
    """
    rng = np.random.default_rng([seed, 31])
    n_gpus = len(table.hosts)
    rows = []
    for i in range(samples):
        if heartbeat is not None:
            heartbeat(i, samples)
        blocks: list[np.ndarray] = []
        labels: list[str] = []
        whole = bool(jobs) and sum(t.shape[0] for t in jobs) <= n_gpus and rng.random() < 0.3
        if whole:  # the planned workload itself, under a random placement and routing
            blocks = [t / max(float(t.max()), 1e-300) * _LOG_BYTES for t in jobs]
            labels = ["workload"]
        for _ in range(0 if whole else int(rng.integers(1, 4))):
            room = n_gpus - sum(b.shape[0] for b in blocks)
            real = [t for t in jobs if t.shape[0] <= room]
            if real and rng.random() < 0.5:
                t = real[int(rng.integers(len(real)))]
                blocks.append(t / max(float(t.max()), 1e-300) * _LOG_BYTES)
                labels.append("job")
            elif room >= 2:
                pattern = _PATTERNS[int(rng.integers(len(_PATTERNS)))]
                blocks.append(_traffic(pattern, int(rng.integers(2, min(room, 32) + 1)), rng))
                labels.append(pattern)
        if not blocks:
            blocks, labels = [_traffic("all_to_all", min(n_gpus, 2), rng)], ["all_to_all"]
        traffic = _block_diagonal(blocks)
        n = traffic.shape[0]
        place_kind = ("random", "round_robin", "compact")[int(rng.integers(3))]
        route_kind = ("ecmp", "shortest", "random_single")[int(rng.integers(3))]
        flows = FlowSet.from_traffic(traffic, _placement(place_kind, n, table, rng))
        paths = PaddedPaths.build(table, flows)
        weights = _routing(route_kind, paths, rng)
        congested, slowdown = label_of(table, flows, paths, weights)
        rows.append({**features_of(table, flows, paths, weights), "slowdown": slowdown, LABEL: congested,
                     "jobs": "+".join(labels), "placement": place_kind, "routing": route_kind, "ranks": n})
    return pd.DataFrame(rows)


def _block_diagonal(blocks: Sequence[np.ndarray]) -> np.ndarray:
    n = sum(b.shape[0] for b in blocks)
    out = np.zeros((n, n))
    at = 0
    for b in blocks:
        k = b.shape[0]
        out[at:at + k, at:at + k] = b
        at += k
    return out


def parse_logs(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Validate uploaded logs: every feature column numeric and finite, ``congested`` 0/1 (or true/false)."""
    missing = [c for c in (*FEATURES, LABEL) if c not in frame.columns]
    if missing:
        raise InputError(source, missing[0], "missing column", "columns " + ", ".join((*FEATURES, LABEL)))
    out = frame.copy()
    for col in FEATURES:
        values = pd.to_numeric(out[col], errors="coerce")
        bad = np.flatnonzero(~np.isfinite(values.to_numpy(dtype=float)))
        if bad.size:
            raise InputError(source, f"{col}[row {int(bad[0])}]", "not a finite number", "a number", out[col].iloc[int(bad[0])])
        out[col] = values.astype(float)
    labels = out[LABEL].map(lambda v: {"true": 1, "false": 0, "1": 1, "0": 0, "1.0": 1, "0.0": 0}.get(str(v).strip().lower()))
    if labels.isna().any():
        row = int(np.flatnonzero(labels.isna().to_numpy())[0])
        raise InputError(source, f"{LABEL}[row {row}]", "not a label", "0/1 or true/false", out[LABEL].iloc[row])
    out[LABEL] = labels.astype(int)
    if len(out) < 20:
        raise InputError(source, "(rows)", "too few runs to train on", "at least 20 rows", len(out))
    return out


@dataclass
class ContentionModel:
    """A trained classifier and its held-out figures."""

    pipeline: Any
    report: dict[str, Any]

    @property
    def beats_majority_class(self) -> bool:
        """Whether its held-out accuracy is above always answering the held-out split's majority class."""
        return self.report["held_out_accuracy"] > self.report["majority_class_accuracy"]

    def predict(self, features: dict[str, float]) -> dict[str, Any]:
        x = np.array([[features[f] for f in FEATURES]])
        return {"congested": bool(self.pipeline.predict(x)[0]), "score": float(self.pipeline.decision_function(x)[0])}


def split_logs(logs: pd.DataFrame, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The stratified 75/25 split every contention model trains and is measured on: X_train, X_test (n, 8), y_train, y_test."""
    from sklearn.model_selection import train_test_split

    X = logs[list(FEATURES)].to_numpy(dtype=float)
    y = logs[LABEL].to_numpy(dtype=int)
    return tuple(train_test_split(X, y, test_size=0.25, stratify=y, random_state=seed % (2**32 - 1)))  # type: ignore[return-value]


def train_classifier(logs: pd.DataFrame, seed: int) -> ContentionModel | None:
    """Fit the SVM on 75 % of ``logs`` (stratified) and measure it on the rest; ``None`` when the logs hold one class only."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    y = logs[LABEL].to_numpy(dtype=int)
    counts = np.bincount(y, minlength=2)
    if counts.min() < 2:
        return None
    X_train, X_test, y_train, y_test = split_logs(logs, seed)
    pipeline = make_pipeline(StandardScaler(), SVC(kernel="rbf", C=10.0, gamma="scale", class_weight="balanced"))
    pipeline.fit(X_train, y_train)
    predicted = pipeline.predict(X_test)
    majority = max(np.mean(y_test == 0), np.mean(y_test == 1))
    report = {
        "model": "StandardScaler + SVC(rbf, C=10, balanced)",
        "features": list(FEATURES),
        "congestion_rule": f"simulated time > {CONGESTION_SLOWDOWN} x injection bound",
        "n_train": int(len(y_train)),
        "n_test": int(len(y_test)),
        "positive_share": float(y.mean()),
        "held_out_accuracy": float(accuracy_score(y_test, predicted)),
        "held_out_balanced_accuracy": float(balanced_accuracy_score(y_test, predicted)),
        "majority_class_accuracy": float(majority),
        "confusion_matrix": confusion_matrix(y_test, predicted, labels=[0, 1]).tolist(),
        "labels": ["not congested", "congested"],
    }
    return ContentionModel(pipeline, report)
