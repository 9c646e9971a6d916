"""Expert placement with replicas: which GPU hosts which expert copy, from expert-load statistics.

Per MoE layer, ``E`` logical experts with expected loads go into ``G x S``
physical slots (``G`` GPUs, ``S`` slots each, ``E + redundant`` slots in
all). Hot experts get extra replicas; a token for an expert goes to one of
its replicas, so each replica carries ``load / replicas``. The goal is the
lowest maximum GPU load, nodes balanced first (inter-node links are the slow
ones), and the replicas of one expert on different GPUs.

Method (written here: the problem is small, a few hundred items per layer,
and no maintained library solves this packing with its side constraints):

1. Replica counts: repeatedly give a replica to the expert with the largest
   load per replica. This minimises the largest replica load (the classic
   greedy apportionment; EPLB's ``replicate_experts`` step is the same rule).
2. Placement: replicas in decreasing load, each to the least-loaded node with
   a free slot, then to the least-loaded GPU of that node with a free slot
   that does not hold the same expert (longest-processing-time first,
   hierarchical).
3. Improvement: swap one replica of the most loaded GPU with one elsewhere
   while that lowers the larger of the two GPU loads (distinctness kept).

The same improvement is run from DeepSeek's EPLB greedy placement (written
here from its published description: groups to nodes by balanced packing,
replication within nodes, replicas to GPUs by balanced packing) and the
better final placement is kept; the plan says which start won.

Lower bound on the maximum GPU load: the larger of the mean GPU load and the
largest replica load under the best replica counts (any placement puts that
replica on some GPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Placement", "replica_counts", "place_layer", "eplb_greedy", "contiguous", "placement_metrics", "lower_bound"]


@dataclass
class Placement:
    """One layer's placement.

    Attributes
    ----------
    physical_to_logical : ndarray of shape (G * S,), int64
        GPU-major: slot ``g * S + j`` of GPU ``g`` holds this logical expert.
    replicas : ndarray of shape (E,), int64
        Replica count per logical expert.
    """

    physical_to_logical: np.ndarray
    replicas: np.ndarray

    def gpu_load(self, load: np.ndarray, gpus: int) -> np.ndarray:
        """Expected load per GPU, shape (G,): each replica carries its expert's load / replicas."""
        share = load[self.physical_to_logical] / self.replicas[self.physical_to_logical]
        return share.reshape(gpus, -1).sum(axis=1)

    def logical_to_physical(self) -> np.ndarray:
        """(E, max replicas) physical slot indices per expert, padded with -1."""
        E = self.replicas.shape[0]
        table = np.full((E, int(self.replicas.max())), -1, dtype=np.int64)
        order = np.argsort(self.physical_to_logical, kind="stable")
        experts = self.physical_to_logical[order]
        rank = np.arange(order.size) - np.searchsorted(experts, experts)
        table[experts, rank] = order
        return table


def replica_counts(load: np.ndarray, slots: int, max_replicas: int) -> np.ndarray:
    """Replicas per expert (>= 1, <= ``max_replicas``, summing to ``slots``) minimising max load / replicas."""
    count = np.ones(load.shape[0], dtype=np.int64)
    for _ in range(slots - load.shape[0]):
        per = np.where(count < max_replicas, load / count, -np.inf)
        count[int(np.argmax(per))] += 1
    return count


def lower_bound(load: np.ndarray, gpus: int, slots_per_gpu: int) -> float:
    """Lower bound on any placement's maximum GPU load (see module docstring)."""
    best = replica_counts(load, gpus * slots_per_gpu, gpus)
    return float(max(load.sum() / gpus, (load / best).max()))


def _items(load: np.ndarray, replicas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    expert = np.repeat(np.arange(load.shape[0]), replicas)
    return expert, load[expert] / replicas[expert]


def place_layer(load: np.ndarray, nodes: int, gpus_per_node: int, slots_per_gpu: int) -> Placement:
    """Hierarchical longest-first placement (steps 1 and 2 of the module docstring)."""
    G = nodes * gpus_per_node
    replicas = replica_counts(load, G * slots_per_gpu, G)
    expert, weight = _items(load, replicas)
    gpu_load, gpu_fill = np.zeros(G), np.zeros(G, dtype=np.int64)
    holds = np.zeros((G, load.shape[0]), dtype=bool)
    slots = np.full((G, slots_per_gpu), -1, dtype=np.int64)
    node_of = np.arange(G) // gpus_per_node
    for item in np.argsort(-weight, kind="stable"):
        e = expert[item]
        free = (gpu_fill < slots_per_gpu) & ~holds[:, e]
        node_load = np.bincount(node_of, weights=gpu_load, minlength=nodes)
        node_ok = np.bincount(node_of, weights=free, minlength=nodes) > 0
        node = int(np.argmin(np.where(node_ok, node_load, np.inf)))
        candidates = np.flatnonzero(free & (node_of == node))
        g = int(candidates[np.argmin(gpu_load[candidates])])
        slots[g, gpu_fill[g]] = e
        gpu_fill[g] += 1
        gpu_load[g] += weight[item]
        holds[g, e] = True
    return Placement(slots.ravel(), replicas)


def improve(placement: Placement, load: np.ndarray, gpus: int, max_rounds: int = 2000) -> Placement:
    """Swap replicas between the most loaded GPU and any other while the larger load of the pair falls."""
    slots = placement.physical_to_logical.reshape(gpus, -1).copy()
    replicas = placement.replicas
    share = load / replicas
    gpu_load = share[slots].sum(axis=1)
    for _ in range(max_rounds):
        top = int(np.argmax(gpu_load))
        a_items = share[slots[top]]  # (S,)
        b_items = share[slots]  # (G, S)
        # new loads for swapping slot i of `top` with slot j of GPU g
        delta = a_items[None, :, None] - b_items[:, None, :]  # (G, S, S): load moving from top to g
        new_top = gpu_load[top] - delta
        new_other = gpu_load[:, None, None] + delta
        worse = np.maximum(new_top, new_other)
        valid = delta > 1e-12
        valid[top] = False
        # distinctness: g must not already hold top's expert i, and top must not hold g's expert j
        holds_g = (slots[:, :, None] == slots[top][None, None, :]).any(axis=1)  # (G, S_i)
        holds_top = (slots[top][None, :, None] == slots[:, None, :]).any(axis=1)  # (G, S_j)
        valid &= ~holds_g[:, :, None] & ~holds_top[:, None, :]
        worse = np.where(valid, worse, np.inf)
        g, i, j = np.unravel_index(int(np.argmin(worse)), worse.shape)
        if not worse[g, i, j] < gpu_load[top] - 1e-12:
            break
        d = delta[g, i, j]
        slots[top, i], slots[g, j] = slots[g, j], slots[top, i]
        gpu_load[top] -= d
        gpu_load[g] += d
    return Placement(slots.ravel(), replicas)


def _balanced_packing(weight: np.ndarray, packs: int) -> np.ndarray:
    """EPLB's balanced packing: heaviest first, each to the lightest pack that still has room (equal counts)."""
    per_pack = weight.shape[0] // packs
    pack_of = np.empty(weight.shape[0], dtype=np.int64)
    pack_load, pack_count = np.zeros(packs), np.zeros(packs, dtype=np.int64)
    for item in np.argsort(-weight, kind="stable"):
        pack = int(np.argmin(np.where(pack_count < per_pack, pack_load, np.inf)))
        pack_of[item] = pack
        pack_load[pack] += weight[item]
        pack_count[pack] += 1
    return pack_of


def eplb_greedy(load: np.ndarray, nodes: int, gpus_per_node: int, slots_per_gpu: int) -> Placement:
    """DeepSeek EPLB's placement, from its published description (one group per expert, hierarchical when
    the experts divide evenly over the nodes, global otherwise). Replicas may share a GPU, as in EPLB."""
    E = load.shape[0]
    G = nodes * gpus_per_node
    hierarchical = E % nodes == 0
    node_count = nodes if hierarchical else 1
    node_of_expert = _balanced_packing(load, node_count) if hierarchical else np.zeros(E, dtype=np.int64)
    per_node_slots = G * slots_per_gpu // node_count
    gpus_per_pack = G // node_count
    slots = np.empty((G, slots_per_gpu), dtype=np.int64)
    replicas = np.zeros(E, dtype=np.int64)
    for node in range(node_count):
        members = np.flatnonzero(node_of_expert == node)
        count = replica_counts(load[members], per_node_slots, per_node_slots)  # EPLB does not cap per GPU
        replicas[members] = count
        expert = np.repeat(members, count)
        gpu_of = _balanced_packing(load[expert] / count[np.searchsorted(members, expert)], gpus_per_pack)
        for local in range(gpus_per_pack):
            slots[node * gpus_per_pack + local] = expert[gpu_of == local]
    return Placement(slots.ravel(), replicas)


def contiguous(E: int, gpus: int, slots_per_gpu: int) -> Placement | None:
    """No replication: experts in order, ``E / G`` per GPU (``None`` when E is not a multiple of G)."""
    if E % gpus:
        return None
    return Placement(np.arange(E, dtype=np.int64), np.ones(E, dtype=np.int64))


def placement_metrics(placement: Placement, load: np.ndarray, nodes: int, gpus_per_node: int) -> dict[str, float | list[float]]:
    """Max/mean GPU and node loads and the expected cross-node dispatch.

    Cross-node dispatch assumes tokens come from every node alike and go to a
    replica on their own node when there is one: expert ``e`` sends
    ``1 - (nodes hosting e) / nodes`` of its load across nodes.
    """
    G = nodes * gpus_per_node
    gpu_load = placement.gpu_load(load, G)
    node_load = gpu_load.reshape(nodes, gpus_per_node).sum(axis=1)
    node_of_slot = np.arange(placement.physical_to_logical.size) // (placement.physical_to_logical.size // G) // gpus_per_node
    hosts = np.zeros((load.shape[0], nodes), dtype=bool)
    hosts[placement.physical_to_logical, node_of_slot] = True
    cross = float((load * (1.0 - hosts.sum(axis=1) / nodes)).sum() / max(load.sum(), 1e-12))
    return {
        "max_gpu_load": float(gpu_load.max()),
        "gpu_imbalance": float(gpu_load.max() / max(gpu_load.mean(), 1e-12)),
        "max_node_load": float(node_load.max()),
        "node_imbalance": float(node_load.max() / max(node_load.mean(), 1e-12)),
        "cross_node_dispatch": cross,
        "gpu_load": [round(float(x), 6) for x in gpu_load],
        "node_load": [round(float(x), 6) for x in node_load],
    }
