"""Next-window power per node: a GraphSAGE-style GNN against ridge and persistence.

The telemetry is summed per node and interval into a series ``P[t, n]`` (W).
Every method predicts ``P[t+1, n]`` from what is known at ``t``:

* persistence: ``P[t, n]``;
* ridge (scikit-learn): a linear model of the node's own last
  ``history_window`` powers, mean utilization and the target's hour of day;
* GNN: the same features per node, two GraphSAGE layers
  ``h' = relu(W_self h + W_neigh mean_{u in N(n)} h)`` over the topology's links
  (a learnt node embedding added), then a linear head, trained with a Huber
  loss (see :func:`train_gnn`).

Ridge and the GNN predict the change ``P[t+1] - P[t]`` scaled by the node's
power limit, so both start from persistence. They are fitted on the head of
the series and evaluated walk-forward on the held-out tail: each step is
predicted from the measured history up to it (no refitting, no peeking).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import Ridge

from qflow.core.threads import one_torch_thread
from qflow.energy._schemas import Topology

#: Huber loss threshold, in units of the node's power limit (0.05 of an 8 x 700 W node is 280 W).
HUBER_DELTA = 0.05

__all__ = ["NodeSeries", "PredictionReport", "build_node_series", "estimate_job_power", "evaluate_predictors", "make_features"]


@dataclass(frozen=True)
class NodeSeries:
    """Telemetry per node and interval: arrays of shape (T, m) in ``topology.node_ids`` order.

    ``power_w`` sums the node's GPUs; ``utilization`` averages them (0 when not
    logged); ``timestamps`` has shape (T,); ``interval_hours`` is the median
    spacing.
    """

    timestamps: pd.DatetimeIndex
    power_w: np.ndarray
    utilization: np.ndarray
    interval_hours: float


def build_node_series(telemetry: pd.DataFrame, topology: Topology) -> NodeSeries:
    """Sum power and average utilization per (timestamp, node); gaps are carried forward."""
    nodes = topology.node_ids
    power = telemetry.pivot_table(index="timestamp", columns="node", values="power_w", aggfunc="sum")
    power = power.reindex(columns=nodes).ffill().fillna(0.0)
    if "utilization" in telemetry:
        util = telemetry.pivot_table(index="timestamp", columns="node", values="utilization", aggfunc="mean")
        util = util.reindex(index=power.index, columns=nodes).ffill().fillna(0.0)
    else:
        util = pd.DataFrame(0.0, index=power.index, columns=nodes)
    steps = np.diff(power.index.asi8) / 3.6e12 if len(power.index) > 1 else np.array([1.0])
    return NodeSeries(pd.DatetimeIndex(power.index), power.to_numpy(float), util.to_numpy(float), float(np.median(steps)))


def make_features(series: NodeSeries, scale_w: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features known at ``t`` and the scaled change to ``t + 1``.

    Returns
    -------
    X : ndarray of shape (S, m, window + 3)
        Last ``window`` powers / scale, mean utilization, sin and cos of the
        target's hour of day, for every origin ``t = window-1 .. T-2``.
    y : ndarray of shape (S, m)
        ``(P[t+1] - P[t]) / scale``.
    origins : ndarray of shape (S,)
        The ``t`` of each sample.
    """
    P = series.power_w / scale_w
    T, m = P.shape
    origins = np.arange(window - 1, T - 1)
    lags = np.stack([P[origins - k] for k in range(window)], axis=-1)  # (S, m, window), most recent first
    hours = (series.timestamps.hour + series.timestamps.minute / 60.0).to_numpy(float)
    angle = 2 * np.pi * hours[origins + 1] / 24.0
    clock = np.broadcast_to(np.stack([np.sin(angle), np.cos(angle)], -1)[:, None, :], (len(origins), m, 2))
    X = np.concatenate([lags, series.utilization[origins][..., None], clock], axis=-1)
    y = P[origins + 1] - P[origins]
    return X, y, origins


def neighbour_mean_matrix(topology: Topology) -> np.ndarray:
    """Row-normalised adjacency (m, m) of the links; no links: every other node is a neighbour."""
    m = topology.n_nodes
    A = np.zeros((m, m))
    for a, b in topology.links:
        A[a, b] = A[b, a] = 1.0
    if not topology.links:
        A = np.ones((m, m)) - np.eye(m)
    degree = A.sum(axis=1, keepdims=True)
    return np.divide(A, degree, out=np.zeros_like(A), where=degree > 0)


class GraphSage(torch.nn.Module):
    """Two mean-aggregator GraphSAGE layers over (S, m, F) features -> (S, m), plus a linear skip.

    ``out = w . x_n + head(h2_n)`` with ``h1 = relu(W1s x_n + W1n mean_N(n) x)``,
    ``h2 = relu(W2s h1_n + W2n mean_N(n) h1)``: the skip is the ridge-like
    model of the node's own features, the graph layers add what neighbours say.
    """

    def __init__(self, n_features: int, hidden: int, n_nodes: int, neighbour_mean: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("A", torch.as_tensor(neighbour_mean, dtype=torch.float32))
        self.embed = torch.nn.Parameter(torch.zeros(n_nodes, 4))
        width = n_features + 4
        self.skip = torch.nn.Linear(width, 1)
        self.self1, self.neigh1 = torch.nn.Linear(width, hidden), torch.nn.Linear(width, hidden, bias=False)
        self.self2, self.neigh2 = torch.nn.Linear(hidden, hidden), torch.nn.Linear(hidden, hidden, bias=False)
        self.head = torch.nn.Linear(hidden, 1)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        x = torch.cat([X, self.embed.expand(X.shape[0], -1, -1)], dim=-1)
        h = torch.relu(self.self1(x) + self.neigh1(self.A @ x))
        h = torch.relu(self.self2(h) + self.neigh2(self.A @ h))
        return (self.skip(x) + self.head(h)).squeeze(-1)


def train_gnn(X: np.ndarray, y: np.ndarray, neighbour_mean: np.ndarray, hidden: int, steps: int, seed: int,
              validation_fraction: float = 0.2, heartbeat: Callable[[], None] | None = None) -> tuple[GraphSage, list[float]]:
    """Full-batch Adam on the Huber loss, early-stopped on the last ``validation_fraction`` of ``X``.

    Power jumps when jobs start or stop, so the scaled changes ``y`` are
    mostly near zero with heavy tails; the Huber loss (quadratic within
    :data:`HUBER_DELTA`, linear beyond) fits the typical change rather than
    the mean jump, which is what a mean-absolute-error score rewards.

    The weights with the lowest validation loss are kept (the head of the
    series is short: a few hundred samples per node, easy to overfit).
    Returns the model and the training loss per step. Seeded inside
    :func:`torch.random.fork_rng`, so the caller's RNG is untouched.
    ``heartbeat`` is called every step (a cancel raised there stops training).
    """
    # One thread: the model is tiny (see qflow.core.threads for the measurements).
    with one_torch_thread():
        return _train_gnn(X, y, neighbour_mean, hidden, steps, seed, validation_fraction, heartbeat)


def _train_gnn(X: np.ndarray, y: np.ndarray, neighbour_mean: np.ndarray, hidden: int, steps: int, seed: int,
               validation_fraction: float, heartbeat: Callable[[], None] | None = None) -> tuple[GraphSage, list[float]]:
    n_val = max(1, round(validation_fraction * len(X))) if len(X) > 4 else 0
    n_fit = len(X) - n_val
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GraphSage(X.shape[-1], hidden, X.shape[1], neighbour_mean)
        opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-4)
        Xt, yt = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
        losses = []
        best_val, best_state = float("inf"), None
        for _ in range(steps):
            if heartbeat is not None:
                heartbeat()
            opt.zero_grad()
            loss = torch.nn.functional.huber_loss(model(Xt[:n_fit]), yt[:n_fit], delta=HUBER_DELTA)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if n_val:
                with torch.no_grad():
                    val = torch.nn.functional.huber_loss(model(Xt[n_fit:]), yt[n_fit:], delta=HUBER_DELTA).item()
                if val < best_val:
                    best_val, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
        if best_state is not None:
            model.load_state_dict(best_state)
    model.eval()
    return model, losses


def _gnn_predict(model: GraphSage, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(X, dtype=torch.float32)).numpy().astype(float)


@dataclass
class PredictionReport:
    """Walk-forward errors and predictions of every method.

    ``mae_w`` maps method -> mean absolute error over the tail (W per node and
    interval); ``tail_*`` arrays have shape (S_test, m); ``forecast_w`` maps
    method -> next-interval power per node after the last telemetry row.
    """

    methods: list[str]
    mae_w: dict[str, float]
    mae_by_node_w: dict[str, list[float]]
    best: str
    tail_timestamps: list[str]
    tail_measured_w: np.ndarray
    tail_predicted_w: dict[str, np.ndarray]
    forecast_w: dict[str, list[float]]
    train_samples: int
    test_samples: int
    gnn_losses: list[float] = field(default_factory=list)
    interval_hours: float = 1.0
    mape: dict[str, float] = field(default_factory=dict)
    mape_by_node: dict[str, list[float | None]] = field(default_factory=dict)
    node_ids: list[str] = field(default_factory=list)
    gnn_model: Any = None

    def per_node(self) -> dict[str, dict[str, dict[str, float | None]]]:
        """Node -> method -> ``{"mae_w", "mape"}`` on the held-out tail (the figures an operator reads per machine)."""
        return {node: {k: {"mae_w": round(self.mae_by_node_w[k][i], 3),
                           "mape": None if self.mape_by_node[k][i] is None else round(self.mape_by_node[k][i], 6)}
                       for k in self.methods} for i, node in enumerate(self.node_ids)}

    def summary(self) -> dict[str, Any]:
        """Plain JSON for the plan (the per-step arrays summed over nodes, to keep it small)."""
        return {
            "methods": self.methods,
            "mae_w": {k: round(v, 3) for k, v in self.mae_w.items()},
            "mae_by_node_w": {k: [round(x, 3) for x in v] for k, v in self.mae_by_node_w.items()},
            "mape": {k: round(v, 6) for k, v in self.mape.items()},
            "mape_definition": "mean of |predicted - measured| / measured over the tail intervals whose measured node power is > 0",
            "per_node": self.per_node(),
            "best_method": self.best,
            "evaluation": "walk-forward one interval ahead on the held-out tail; models fitted once on the head",
            "train_samples": self.train_samples,
            "test_samples": self.test_samples,
            "interval_hours": self.interval_hours,
            "tail_timestamps": self.tail_timestamps,
            "tail_measured_total_w": [round(float(v), 2) for v in self.tail_measured_w.sum(axis=1)],
            "tail_predicted_total_w": {k: [round(float(x), 2) for x in v.sum(axis=1)] for k, v in self.tail_predicted_w.items()},
            "forecast_next_w": {k: [round(x, 2) for x in v] for k, v in self.forecast_w.items()},
            "gnn_final_loss": round(self.gnn_losses[-1], 8) if self.gnn_losses else None,
            "gnn_steps": len(self.gnn_losses),
        }


def effective_window(series: NodeSeries, window: int) -> int:
    """The history window the predictors use: ``window`` shrunk so at least 2 samples remain."""
    return max(1, min(window, series.power_w.shape[0] - 3))


def evaluate_predictors(series: NodeSeries, topology: Topology, *, window: int, test_fraction: float, use_gnn: bool,
                        hidden: int, steps: int, seed: int, heartbeat: Callable[[], None] | None = None,
                        gnn_model: GraphSage | None = None) -> PredictionReport:
    """Fit ridge (and the GNN) on the head, score all methods walk-forward on the tail.

    Needs at least ``window + 3`` intervals; shorter histories shrink the
    window to fit (the caller validated at least 3 timestamps). A given
    ``gnn_model`` (a trained one, checked against these inputs by the
    caller) is scored instead of training one.
    """
    window = effective_window(series, window)
    scale = np.maximum(topology.gpus * topology.gpu_power_limit_w, 1.0)
    X, y, origins = make_features(series, scale, window)
    S = len(origins)
    n_test = min(max(1, round(test_fraction * S)), S - 1)
    n_train = S - n_test
    last = series.power_w[origins]  # (S, m): P[t]
    truth = series.power_w[origins + 1]
    predictions: dict[str, np.ndarray] = {"persistence": last[n_train:]}

    ridge = Ridge(alpha=1e-2).fit(X[:n_train].reshape(n_train * X.shape[1], -1), y[:n_train].reshape(-1))
    ridge_delta = ridge.predict(X.reshape(S * X.shape[1], -1)).reshape(S, -1)
    predictions["ridge"] = last[n_train:] + ridge_delta[n_train:] * scale
    # The forecast after the last row: features of origin T-1 (one more than the samples).
    X_next = _features_at_end(series, scale, window)
    forecast = {"persistence": series.power_w[-1].tolist(),
                "ridge": (series.power_w[-1] + ridge.predict(X_next.reshape(X.shape[1], -1)) * scale).tolist()}
    losses: list[float] = []
    model = gnn_model
    if use_gnn and model is None:
        model, losses = train_gnn(X[:n_train], y[:n_train], neighbour_mean_matrix(topology), hidden, steps, seed, heartbeat=heartbeat)
    if use_gnn:
        predictions["gnn"] = last[n_train:] + _gnn_predict(model, X[n_train:]) * scale
        forecast["gnn"] = (series.power_w[-1] + _gnn_predict(model, X_next[None])[0] * scale).tolist()
    # Power cannot be negative: clip every method the same way.
    predictions = {k: np.maximum(v, 0.0) for k, v in predictions.items()}
    forecast = {k: [max(0.0, float(x)) for x in v] for k, v in forecast.items()}
    tail = truth[n_train:]
    mae = {k: float(np.mean(np.abs(v - tail))) for k, v in predictions.items()}
    by_node = {k: np.mean(np.abs(v - tail), axis=0).tolist() for k, v in predictions.items()}
    best = min(mae, key=lambda k: (mae[k], k))
    mape, mape_by_node = _mape(predictions, tail)
    stamps = [ts.isoformat() for ts in series.timestamps[origins[n_train:] + 1]]
    return PredictionReport(methods=list(predictions), mae_w=mae, mae_by_node_w=by_node, best=best, tail_timestamps=stamps,
                            tail_measured_w=tail, tail_predicted_w=predictions, forecast_w=forecast, train_samples=n_train,
                            test_samples=n_test, gnn_losses=losses, interval_hours=series.interval_hours, mape=mape,
                            mape_by_node=mape_by_node, node_ids=list(topology.node_ids), gnn_model=model if use_gnn else None)


def _mape(predictions: dict[str, np.ndarray], truth: np.ndarray) -> tuple[dict[str, float], dict[str, list[float | None]]]:
    """Mean absolute percentage error (as a fraction) overall and per node, over tail points with measured power > 0.

    >>> _mape({"m": np.array([[110.0, 5.0], [90.0, 5.0]])}, np.array([[100.0, 0.0], [100.0, 0.0]]))
    ({'m': 0.1}, {'m': [0.1, None]})
    """
    positive = truth > 0
    overall, by_node = {}, {}
    for k, v in predictions.items():
        ratio = np.where(positive, np.abs(v - truth) / np.where(positive, truth, 1.0), np.nan)
        overall[k] = float(np.nanmean(ratio)) if positive.any() else float("nan")
        counts = positive.sum(axis=0)
        by_node[k] = [float(np.nansum(ratio[:, i]) / counts[i]) if counts[i] else None for i in range(truth.shape[1])]
    return overall, by_node


def _features_at_end(series: NodeSeries, scale_w: np.ndarray, window: int) -> np.ndarray:
    """Features of origin ``T-1`` (predicting the interval after the log), shape (m, window + 3)."""
    P = series.power_w / scale_w
    lags = np.stack([P[-1 - k] for k in range(window)], axis=-1)
    nxt = series.timestamps[-1] + pd.Timedelta(hours=series.interval_hours)
    angle = 2 * np.pi * (nxt.hour + nxt.minute / 60.0) / 24.0
    m = P.shape[1]
    clock = np.broadcast_to(np.array([np.sin(angle), np.cos(angle)]), (m, 2))
    return np.concatenate([lags, series.utilization[-1][:, None], clock], axis=-1)


def estimate_job_power(telemetry: pd.DataFrame, job_ids: list[str], gpus: np.ndarray, node: np.ndarray,
                       topology: Topology, missing: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Power of the jobs whose file gave none, W, and where each estimate came from.

    Per GPU: the mean power of the job's own telemetry rows when its id is in
    the ``job_id`` column; else the mean power of busy GPUs (utilization >=
    0.5) on its required node, else on the whole cluster (without a
    utilization column: the 90th percentile of per-GPU power). Times ``gpus``.

    Returns ``(power_w of shape (n,), sources)`` with NaN kept where not missing.
    """
    out = np.full(len(job_ids), np.nan)
    sources = [""] * len(job_ids)
    if "utilization" in telemetry:
        busy = telemetry[telemetry["utilization"] >= 0.5]
        busy = busy if len(busy) else telemetry
        per_node = busy.groupby("node")["power_w"].mean()
        cluster = float(busy["power_w"].mean())
    else:
        per_node = telemetry.groupby("node")["power_w"].quantile(0.9)
        cluster = float(telemetry["power_w"].quantile(0.9))
    per_job = telemetry[telemetry["job_id"] != ""].groupby("job_id")["power_w"].mean() if "job_id" in telemetry else pd.Series(dtype=float)
    for i in np.flatnonzero(missing):
        if job_ids[i] in per_job.index:
            out[i], sources[i] = per_job[job_ids[i]] * gpus[i], "telemetry rows of this job id"
        elif node[i] >= 0 and topology.node_ids[node[i]] in per_node.index:
            out[i], sources[i] = per_node[topology.node_ids[node[i]]] * gpus[i], "busy-GPU power of its node"
        else:
            out[i], sources[i] = cluster * gpus[i], "busy-GPU power of the cluster"
    return out, sources
