"""RL path planner: one tabular Q-learning agent per source GPU choosing a path option per flow.

Agent ``g`` owns the flows leaving GPU ``g``; its state is the flow's
destination, its actions the pair's path options (:meth:`PathTable.paths`).
An episode routes every flow of the workload once (epsilon-greedy, epsilon
decaying linearly from ``epsilon_start`` to ``epsilon_end``), the flow
simulator runs all flows concurrently, and each flow's reward is its achieved
bandwidth relative to its uncontended bandwidth on its best single path::

    r_f = t_f(alone, best path) / t_f(simulated)      in (0, 1]

The update is the stateless (bandit) Q-learning rule
``Q[f, a] += lr * (r_f - Q[f, a])``; optimistic initial values (1.0) make
every agent try its options. The learning curve is the mean reward and the
simulated completion time per episode; the final policy is the greedy one
over the options an agent has tried.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qflow.nvlink._simulator import ALL_PAIRS_MAX_GPUS, FlowSet, PathTable

__all__ = ["PaddedPaths", "QLearningResult", "learn_paths"]


@dataclass(frozen=True)
class PaddedPaths:
    """Path options of every flow as one padded array, for fast repeated simulation.

    Attributes
    ----------
    links : ndarray of shape (n_flows, n_options, max_hops)
        Directed link indices, ``-1`` padding.
    n_options : ndarray of shape (n_flows,)
    latency_s : ndarray of shape (n_flows, n_options)
        Path latency (sum of link latencies), s.
    bottleneck_gbps : ndarray of shape (n_flows, n_options)
    """

    links: np.ndarray
    n_options: np.ndarray
    latency_s: np.ndarray
    bottleneck_gbps: np.ndarray

    @classmethod
    def build(cls, table: PathTable, flows: FlowSet) -> PaddedPaths:
        if len(table.fabric.gpus) <= ALL_PAIRS_MAX_GPUS:
            links, count, latency, bottleneck = table.all_pairs()
            s, d = flows.src, flows.dst
            return cls(links[s, d], count[s, d], latency[s, d], bottleneck[s, d])
        options = [table.paths(s, d) for s, d in zip(flows.src.tolist(), flows.dst.tolist(), strict=True)]
        k = max((len(o) for o in options), default=1)
        hops = max((len(p) for o in options for p in o), default=1)
        links = np.full((flows.n, k, hops), -1, dtype=np.int64)
        latency = np.zeros((flows.n, k))
        bottleneck = np.zeros((flows.n, k))
        for f, opts in enumerate(options):
            for a, path in enumerate(opts):
                links[f, a, : len(path)] = path
                latency[f, a] = table.latency_us[path].sum() * 1e-6
                bottleneck[f, a] = table.capacity_gbps[path].min()
        return cls(links, np.array([len(o) for o in options], dtype=np.int64), latency, bottleneck)

    def flow_times(self, table: PathTable, nbytes: np.ndarray, choice: np.ndarray, alpha_us: float,
                   groups: np.ndarray | None = None) -> np.ndarray:
        """Completion time of every flow (s) when flow ``f`` takes option ``choice[f]``.

        Flows of the same ``groups`` value (a round) run concurrently; groups
        do not overlap in time. Without ``groups`` every flow is concurrent.
        """
        rows = np.arange(len(choice))
        group = np.zeros(len(choice), dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
        n_links = table.n_links
        chosen = self.links[rows, choice]  # (n_flows, max_hops)
        valid = chosen >= 0
        slot = group[:, None] * n_links + np.where(valid, chosen, 0)  # (group, link) pairs
        per_slot = np.bincount(slot[valid], weights=np.broadcast_to(nbytes[:, None], chosen.shape)[valid],
                               minlength=(int(group.max(initial=0)) + 1) * n_links)
        busy = 8.0 * per_slot / (1e9 * np.tile(table.capacity_gbps, int(group.max(initial=0)) + 1))
        worst = np.where(valid, busy[slot], 0.0).max(axis=1)
        return alpha_us * 1e-6 + self.latency_s[rows, choice] + worst

    def split_times(self, table: PathTable, nbytes: np.ndarray, weights: np.ndarray, alpha_us: float) -> np.ndarray:
        """Completion time of every flow (s) when flow ``f`` puts ``weights[f, a]`` of its bytes on option ``a``."""
        valid = self.links >= 0
        share = np.broadcast_to((nbytes[:, None] * weights)[:, :, None], self.links.shape)
        per_link = np.bincount(self.links[valid], weights=share[valid], minlength=table.n_links)
        busy = 8.0 * per_link / (1e9 * table.capacity_gbps)
        used = valid & (weights[:, :, None] > 0)
        worst = np.where(used, busy[np.where(valid, self.links, 0)], 0.0).max(axis=(1, 2))
        latency = np.where(weights > 0, self.latency_s, 0.0).max(axis=1)
        return alpha_us * 1e-6 + latency + worst

    def ecmp_weights(self) -> np.ndarray:
        """Weighted ECMP: each option's share of the flow in proportion to its bottleneck bandwidth: shape (n_flows, n_options)."""
        return self.bottleneck_gbps / self.bottleneck_gbps.sum(axis=1, keepdims=True)


@dataclass
class QLearningResult:
    """The learned routing and its learning curve.

    Attributes
    ----------
    choice : ndarray of shape (n_flows,)
        Greedy path option per flow after training.
    reward_curve, time_curve_s : list of float
        Mean reward and simulated completion time (s) per episode.
    final_time_s, final_reward : float
        Of the greedy policy.
    shortest_path_time_s, shortest_path_reward : float
        Every flow on its cheapest path option (static shortest-path routing).
    """

    choice: np.ndarray
    reward_curve: list[float]
    time_curve_s: list[float]
    final_time_s: float
    final_reward: float
    shortest_path_time_s: float
    shortest_path_reward: float
    agents: int


def _makespan(flow_time: np.ndarray, groups: np.ndarray | None) -> float:
    """Sum over groups of each group's last completion (s); the last completion without groups."""
    if flow_time.size == 0:
        return 0.0
    if groups is None:
        return float(flow_time.max())
    last = np.zeros(int(np.max(groups)) + 1)
    np.maximum.at(last, groups, flow_time)
    return float(last.sum())


def learn_paths(table: PathTable, flows: FlowSet, episodes: int, seed: int, alpha_us: float = 0.0, lr: float = 0.3,
                epsilon_start: float = 0.3, epsilon_end: float = 0.01, groups: np.ndarray | None = None) -> QLearningResult:
    """Train the agents on ``flows`` for ``episodes`` episodes; see the module docstring.

    ``groups`` (n_flows,) says which flows run together (the transfer rounds);
    without it every flow is concurrent. Times in the result are the sum over
    groups of each group's last completion.
    """
    paths = PaddedPaths.build(table, flows)
    n, k = paths.links.shape[:2]
    rng = np.random.default_rng([seed, 23])
    invalid = np.arange(k)[None, :] >= paths.n_options[:, None]
    q = np.where(invalid, -np.inf, 1.0)
    alone = alpha_us * 1e-6 + paths.latency_s[:, 0] + 8.0 * flows.nbytes / (1e9 * paths.bottleneck_gbps.max(axis=1))
    tried = np.zeros(q.shape, dtype=bool)
    rewards, times = [], []
    rows = np.arange(n)
    for episode in range(episodes):
        eps = epsilon_start + (epsilon_end - epsilon_start) * episode / max(episodes - 1, 1)
        greedy = np.argmax(q + rng.random(q.shape) * 1e-9, axis=1)
        explore = rng.random(n) < eps
        random_pick = np.floor(rng.random(n) * paths.n_options).astype(np.int64)
        choice = np.where(explore, random_pick, greedy)
        flow_time = paths.flow_times(table, flows.nbytes, choice, alpha_us, groups)
        reward = alone / flow_time
        q[rows, choice] += lr * (reward - q[rows, choice])
        tried[rows, choice] = True
        rewards.append(float(reward.mean()))
        times.append(_makespan(flow_time, groups))
    # Greedy policy over the options each agent has actually tried (untried ones still hold the optimistic 1.0).
    final = np.argmax(np.where(tried, q, -np.inf), axis=1)
    final_time = paths.flow_times(table, flows.nbytes, final, alpha_us, groups)
    shortest = paths.flow_times(table, flows.nbytes, np.zeros(n, dtype=np.int64), alpha_us, groups)
    return QLearningResult(
        choice=final, reward_curve=rewards, time_curve_s=times,
        final_time_s=_makespan(final_time, groups), final_reward=float((alone / final_time).mean()),
        shortest_path_time_s=_makespan(shortest, groups), shortest_path_reward=float((alone / shortest).mean()),
        agents=len(np.unique(flows.src)),
    )
