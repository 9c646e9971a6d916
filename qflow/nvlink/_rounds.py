"""Transfer rounds: an edge colouring of the communication multigraph.

Each transfer ``src -> dst`` of a job occupies two *ports*: with
``full_duplex`` the sender's output port ``src`` and the receiver's input
port ``n + dst`` (a GPU may send one and receive one transfer at once); without
it the GPUs themselves (``src`` and ``dst``: a GPU is in at most one transfer
per round). A round is a set of transfers with no port in common (a
matching); the rounds are the colour classes of a proper edge colouring.

* Lower bound: the largest port degree ``Delta`` (a port serves one transfer
  per round).
* Bipartite port graphs (always with ``full_duplex``; pipelines and even rings
  without) are coloured with exactly ``Delta`` colours (Koenig's edge
  colouring theorem) by making the multigraph ``Delta``-regular with dummy
  edges and peeling off ``Delta`` perfect matchings (Hopcroft-Karp,
  ``scipy.sparse.csgraph.maximum_bipartite_matching``); a regular bipartite
  multigraph always has one (Hall).
* Other graphs: the best of several first-fit orders, then
  :func:`empty_last_rounds` tries to empty the last round with Kempe-style
  two-colour recolouring blocks (solved exactly or by QAOA, see
  ``_quantum``).
* Baseline: first-fit greedy in the traffic matrix's row-major order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import networkx as nx
import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from qflow.core.qaoa import IsingModel, solve_exact

__all__ = [
    "RecolourBlock",
    "Transfers",
    "build_block",
    "colour_bipartite",
    "colour_transfers",
    "empty_last_rounds",
    "first_fit",
    "is_proper",
    "lower_bound",
    "transfers_of",
]


@dataclass(frozen=True)
class Transfers:
    """The transfers of one job as a port multigraph.

    Attributes
    ----------
    src, dst : ndarray of shape (m,)
        Ranks.
    nbytes : ndarray of shape (m,)
    ports : ndarray of shape (m, 2)
        The two ports each transfer occupies.
    n_ports : int
    """

    src: np.ndarray
    dst: np.ndarray
    nbytes: np.ndarray
    ports: np.ndarray
    n_ports: int

    @property
    def m(self) -> int:
        return int(self.src.shape[0])


def transfers_of(traffic: np.ndarray, full_duplex: bool) -> Transfers:
    """One transfer per non-zero entry of ``traffic`` (ranks, ranks), row-major order."""
    n = traffic.shape[0]
    src, dst = np.nonzero(traffic)
    ports = np.stack([src, dst + n if full_duplex else dst], axis=1)
    return Transfers(src, dst, traffic[src, dst].astype(float), ports, 2 * n if full_duplex else n)


def lower_bound(t: Transfers) -> int:
    """The largest port degree: no colouring uses fewer rounds.

    >>> lower_bound(transfers_of(np.array([[0, 1, 1], [1, 0, 0], [0, 0, 0]]), full_duplex=False))
    3
    """
    if t.m == 0:
        return 0
    return int(np.bincount(t.ports.ravel(), minlength=t.n_ports).max())


def is_proper(t: Transfers, colour: np.ndarray) -> bool:
    """Whether no two transfers of one colour share a port (every round is a matching)."""
    seen: set[tuple[int, int]] = set()
    for e in range(t.m):
        for p in set(t.ports[e].tolist()):
            key = (int(colour[e]), p)
            if key in seen:
                return False
            seen.add(key)
    return True


def _port_sides(t: Transfers) -> np.ndarray | None:
    """0/1 side of every port if the port graph is bipartite, else ``None``."""
    graph = nx.Graph()
    graph.add_nodes_from(range(t.n_ports))
    graph.add_edges_from(map(tuple, t.ports.tolist()))
    if not nx.is_bipartite(graph):
        return None
    sides = nx.bipartite.color(graph)
    return np.array([sides[p] for p in range(t.n_ports)])


def colour_bipartite(t: Transfers, sides: np.ndarray) -> np.ndarray:
    """Koenig: a proper colouring with exactly :func:`lower_bound` colours of a bipartite port multigraph.

    Returns the colour (round) of each transfer, shape (m,).
    """
    delta = lower_bound(t)
    colour = np.full(t.m, -1)
    if t.m == 0:
        return colour
    left = np.where(sides[t.ports[:, 0]] == 0, t.ports[:, 0], t.ports[:, 1])
    right = np.where(sides[t.ports[:, 0]] == 0, t.ports[:, 1], t.ports[:, 0])
    left_ids = {p: i for i, p in enumerate(np.unique(left).tolist())}
    right_ids = {p: i for i, p in enumerate(np.unique(right).tolist())}
    size = max(len(left_ids), len(right_ids))
    real = np.zeros((size, size), dtype=np.int64)
    edges: dict[tuple[int, int], list[int]] = {}
    for e, (a, b) in enumerate(zip(left.tolist(), right.tolist(), strict=True)):
        i, j = left_ids[a], right_ids[b]
        real[i, j] += 1
        edges.setdefault((i, j), []).append(e)
    # Dummy edges (north-west corner fill of the row and column deficits) make every degree delta.
    dummy = np.zeros_like(real)
    row_def = delta - real.sum(axis=1)
    col_def = delta - real.sum(axis=0)
    i = j = 0
    while i < size and j < size:
        take = min(row_def[i], col_def[j])
        dummy[i, j] += take
        row_def[i] -= take
        col_def[j] -= take
        if row_def[i] == 0:
            i += 1
        if j < size and col_def[j] == 0:
            j += 1
    total = real + dummy
    for k in range(delta):
        match = maximum_bipartite_matching(csr_matrix(total > 0), perm_type="column")
        if np.any(match < 0):  # pragma: no cover - impossible for a regular bipartite multigraph
            raise RuntimeError("no perfect matching in a regular bipartite multigraph")
        for row, col in enumerate(match.tolist()):
            total[row, col] -= 1
            if real[row, col] > 0:
                real[row, col] -= 1
                colour[edges[(row, col)].pop()] = k
            else:
                dummy[row, col] -= 1
    return colour


def first_fit(t: Transfers, order: np.ndarray) -> np.ndarray:
    """Greedy: each transfer, in ``order``, takes the smallest colour free at both its ports."""
    used: list[set[int]] = [set() for _ in range(t.n_ports)]
    colour = np.full(t.m, -1)
    for e in order.tolist():
        a, b = t.ports[e]
        taken = used[a] | used[b]
        c = 0
        while c in taken:
            c += 1
        colour[e] = c
        used[a].add(c)
        used[b].add(c)
    return colour


def n_colours(colour: np.ndarray) -> int:
    return int(colour.max()) + 1 if colour.size else 0


def colour_transfers(t: Transfers, seed: int = 0) -> tuple[np.ndarray, str]:
    """The plan's classical colouring and the method used (``"koenig"`` or ``"first-fit (best of N orders)"``)."""
    sides = _port_sides(t)
    if sides is not None:
        return colour_bipartite(t, sides), "koenig"
    deg = np.bincount(t.ports.ravel(), minlength=t.n_ports)
    load = deg[t.ports[:, 0]] + deg[t.ports[:, 1]]
    rng = np.random.default_rng([seed, 11])
    orders = [np.arange(t.m), np.lexsort((np.arange(t.m), -load)), np.argsort(-t.nbytes, kind="stable")]
    orders += [rng.permutation(t.m) for _ in range(3)]
    best = min((first_fit(t, o) for o in orders), key=n_colours)
    return best, f"first-fit (best of {len(orders)} orders)"


@dataclass
class RecolourBlock:
    """A Kempe-style block: give ``members`` colours ``a``/``b`` so that none conflicts (``members[0]`` leaves the last round).

    Bit ``x_i = 0`` gives member ``i`` colour ``a``, ``1`` colour ``b``. The
    Ising energy counts conflicts (two members of one colour sharing a port,
    or a member taking the colour of a fixed neighbour outside the block), so
    energy 0 is a valid recolouring.
    """

    target: int
    colours: tuple[int, int]
    members: list[int]
    model: IsingModel


def build_block(t: Transfers, colour: np.ndarray, at_port: list[list[int]], target: int, a: int, b: int,
                max_size: int) -> RecolourBlock:
    """The block around ``target``: transfers coloured ``a``/``b`` reached through shared ports, at most ``max_size``."""
    members = [target]
    index = {target: 0}
    queue = [target]
    while queue:
        e = queue.pop(0)
        for p in set(t.ports[e].tolist()):
            for w in at_port[p]:
                if w not in index and colour[w] in (a, b) and len(members) < max_size:
                    index[w] = len(members)
                    members.append(w)
                    queue.append(w)
    n = len(members)
    h = np.zeros(n)
    J = np.zeros((n, n))
    offset = 0.0
    for i, e in enumerate(members):
        for p in t.ports[e].tolist():
            for w in at_port[p]:
                if w == e:
                    continue
                if w in index:
                    j = index[w]
                    if i < j:  # same colour: (1 + z_i z_j) / 2
                        J[i, j] += 0.5
                        offset += 0.5
                elif colour[w] == a:  # conflict when i takes a (bit 0, z = +1): (1 + z_i) / 2
                    h[i] += 0.5
                    offset += 0.5
                elif colour[w] == b:
                    h[i] -= 0.5
                    offset += 0.5
    return RecolourBlock(target, (a, b), members, IsingModel(h=h, J=J, offset=offset))


BlockSolver = Callable[[RecolourBlock], np.ndarray]


def solve_block_exactly(block: RecolourBlock) -> np.ndarray:
    """Brute-force ground state of the block (at most 20 members)."""
    return solve_exact(block.model)[0]


def empty_last_rounds(t: Transfers, colour: np.ndarray, solver: BlockSolver, max_size: int, max_pairs: int = 4,
                      max_blocks: int = 2000) -> tuple[np.ndarray, dict[str, int]]:
    """Move transfers out of the last round until it is empty, round after round, while every move succeeds.

    A transfer whose ports share a free colour moves directly; otherwise
    blocks for up to ``max_pairs`` colour pairs ``(a, b)`` (``a`` free at
    one port, ``b`` at the other) are solved by ``solver`` and the first with
    zero conflicts is applied. Stops at the lower bound, when a transfer
    cannot be moved (the partial moves are kept: fewer transfers in the last
    round) or after ``max_blocks`` blocks.

    Returns the new colouring and counts (``blocks``, ``moved``, ``rounds_removed``).
    """
    colour = colour.copy()
    stats = {"blocks": 0, "moved": 0, "rounds_removed": 0}
    at_port: list[list[int]] = [[] for _ in range(t.n_ports)]
    for e in range(t.m):
        for p in set(t.ports[e].tolist()):
            at_port[p].append(e)
    bound = lower_bound(t)
    while n_colours(colour) > bound:
        last = n_colours(colour) - 1
        for target in np.flatnonzero(colour == last).tolist():
            u, v = t.ports[target]
            free_u = [c for c in range(last) if all(colour[w] != c for w in at_port[u])]
            free_v = [c for c in range(last) if all(colour[w] != c for w in at_port[v])]
            common = sorted(set(free_u) & set(free_v))
            if common:
                colour[target] = common[0]
                stats["moved"] += 1
                continue
            moved = False
            pairs = [(a, b) for a in free_u for b in free_v if a != b][:max_pairs]
            for a, b in pairs:
                if stats["blocks"] >= max_blocks:
                    return _compact(colour), stats
                block = build_block(t, colour, at_port, target, a, b, max_size)
                stats["blocks"] += 1
                bits = solver(block)
                if block.model.energy(bits) < 0.5:
                    for member, bit in zip(block.members, bits.tolist(), strict=True):
                        colour[member] = b if bit else a
                    moved = True
                    stats["moved"] += 1
                    break
            if not moved:
                return _compact(colour), stats
        stats["rounds_removed"] += 1
    return _compact(colour), stats


def _compact(colour: np.ndarray) -> np.ndarray:
    """Renumber colours 0..k-1 in order (a block may have emptied a round other than the last)."""
    if colour.size == 0:
        return colour
    return np.unique(colour, return_inverse=True)[1].reshape(colour.shape)


def rounds_of(t: Transfers, colour: np.ndarray) -> list[list[dict[str, float | int]]]:
    """The rounds as lists of ``{src, dst, bytes}`` (ranks), round ``k`` = colour ``k``."""
    rounds: list[list[dict[str, float | int]]] = [[] for _ in range(n_colours(colour))]
    for e in range(t.m):
        rounds[int(colour[e])].append({"src": int(t.src[e]), "dst": int(t.dst[e]), "bytes": float(t.nbytes[e])})
    return rounds
