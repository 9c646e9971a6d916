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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qflow.nvlink._simulator import FlowSet, PaddedPaths, PathTable

__all__ = ["QLearningResult", "learn_paths"]


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
                epsilon_start: float = 0.3, epsilon_end: float = 0.01, groups: np.ndarray | None = None,
                heartbeat: Callable[[int, int], None] | None = None) -> QLearningResult:
    """Train the agents on ``flows`` for ``episodes`` episodes; see the module docstring.

    ``heartbeat(episode, episodes)`` is called before each episode (a Cancel raised there stops training).

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
        if heartbeat is not None:
            heartbeat(episode, episodes)
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
