"""Classical routers, baselines, the exact optimum and the quality metrics.

The problem (one routing step of an MoE layer)::

    maximise   sum_t u[t, e(t)]                      (affinity - locality penalty)
    subject to sum_{t: e(t)=e} w[t] <= C[e]          for every expert e

Tokens are dropped only when the capacities cannot hold them all; a dropped
token costs ``drop_penalty * w[t]``, larger than any affinity, so the optimum
drops as little as possible first.

:func:`route_balanced` solves the LP dual by ascending price updates (an
auction on expert prices, in the spirit of Bertsekas' auction algorithm and
of BASE layers' balanced assignment): each token takes the expert that
maximises ``u[t, e] - w[t] * price[e]``; an overloaded expert raises its price
exactly enough to shed its excess. Prices only rise, and an expert whose price
rose is never left underloaded, so the result satisfies complementary
slackness up to granularity. Any prices give a certified upper bound on the
optimum (weak duality, :func:`dual_bound`), so every plan states how far from
optimal it can at worst be, even at a million tokens. It is written here,
rather than taken from a library, because no maintained library offers a
capacitated assignment at this scale in well under a second; the exact LP
(:func:`exact_optimum`, scipy's HiGHS) is used to check it where it fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from qflow.routing._schemas import RoutingProblem
from qflow.routing._utility import utility_table

#: Rows per block where a pass over (tokens, experts) would otherwise allocate a full-size temporary:
#: at 200k x 64 each one is 51 MB of fresh pages, and the kernel's page zeroing cost as much as the math.
ROW_BLOCK = 16_384

__all__ = [
    "BalancedRoute",
    "drop_penalty",
    "dual_bound",
    "exact_optimum",
    "greedy_balanced",
    "hash_experts",
    "hash_route",
    "route_balanced",
    "top1_gating",
    "utility_matrix",
    "route_metrics",
]


def utility_matrix(problem: RoutingProblem, locality_weight: float) -> np.ndarray:
    """Affinity minus locality penalty, shape (n_tokens, n_experts), float32.

    ``u[t, e] = affinity[t, e] - locality_weight * distance(node(t), node(e))``;
    tokens with no known source pay no penalty. The
    :func:`~qflow.routing._utility.utility_table` written out as a new array.
    """
    table = utility_table(problem, locality_weight)
    u = table.values.copy()
    if table.offsets.any():
        for lo in range(0, u.shape[0], ROW_BLOCK):  # by blocks: no (n, E) temporary
            u[lo:lo + ROW_BLOCK] -= table.offsets[table.offset_row[lo:lo + ROW_BLOCK]]
    return u


def drop_penalty(u: np.ndarray) -> float:
    """Cost per unit complexity of dropping a token: more than any swap can gain."""
    return float(2.0 * (u.max() - u.min()) + 1.0)


@dataclass
class BalancedRoute:
    """Output of :func:`route_balanced`.

    Attributes
    ----------
    expert : ndarray of shape (n,), int64
        Expert index per token, -1 for dropped.
    prices : ndarray of shape (n_experts,)
        Final dual prices (affinity per unit complexity).
    iterations : int
        Price rounds run.
    repaired : int
        Tokens placed by the final repair pass (outside their candidate set).
    """

    expert: np.ndarray
    prices: np.ndarray
    iterations: int
    repaired: int


def _pick(matrix: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``matrix[rows, cols]`` (one value per row, (m,)), by a flat ``np.take`` on a C-ordered matrix.

    The same values as the 2-D fancy index at about 40 % of its time (5 ms -> 2 ms for 200k of 64).
    """
    if not matrix.flags.c_contiguous:
        return matrix[rows, cols]
    return np.take(matrix.reshape(-1), rows * matrix.shape[1] + cols)


def _grouped_shed(group: np.ndarray, margin: np.ndarray, weight: np.ndarray, excess: np.ndarray):
    """For each group, the smallest-margin members whose weight covers its excess.

    Parameters
    ----------
    group : (m,) int, margin : (m,) float >= 0, weight : (m,) float
        Members (tokens) of overloaded experts.
    excess : (E,) float
        Load to shed per expert (> 0 only for overloaded ones).

    Returns
    -------
    shed : (m,) bool
        Members to move away.
    threshold : (E,) float
        Margin of the last member shed per group (NaN where none shed).
    """
    shed = np.zeros(group.shape[0], dtype=bool)
    subset = _small_margin_subset(group, margin, weight, excess)
    g, m, w = group[subset], margin[subset], weight[subset]
    order = np.lexsort((m, g))
    g, m, w = g[order], m[order], w[order]
    cum = np.cumsum(w)
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    before = np.repeat(cum[starts] - w[starts], np.diff(np.r_[starts, len(g)]))
    within = cum - before  # load shed if this member and all smaller-margin ones leave
    # Shed a member if the members before it did not yet cover the excess.
    shed_sorted = (within - w) < excess[g] - 1e-9
    shed[subset[order[shed_sorted]]] = True
    threshold = np.full(excess.shape[0], -np.inf)
    np.maximum.at(threshold, g[shed_sorted], m[shed_sorted])
    return shed, np.where(np.isfinite(threshold), threshold, np.nan)


def _small_margin_subset(group: np.ndarray, margin: np.ndarray, weight: np.ndarray, excess: np.ndarray) -> np.ndarray:
    """Indices of members that can possibly be shed, found without a full sort.

    A per-group weighted histogram of log-margins finds, for each group, the
    bin where the cumulative weight first covers the excess; only members at
    or below that bin need the exact sort. At a million tokens this turns a
    0.2 s lexsort per round into a few bincounts.

    With whole-number weights every sum is exact, so the members shed (and
    their margins) are the same as from the full sort at any size: the
    histogram then pays from a few thousand members (the 25k-token warm-start
    rounds, half their shedding time). Other weights keep it above 50k
    members, where it has always been used.
    """
    if group.shape[0] < 4096 or (group.shape[0] < 50_000 and not np.array_equal(weight, np.round(weight))):
        return np.arange(group.shape[0])
    bins = 128
    logm = np.log2(margin + 1e-12)
    lo, hi = float(logm.min()), float(logm.max()) + 1e-9
    b = np.minimum(((logm - lo) / (hi - lo) * bins).astype(np.int64), bins - 1)
    E = excess.shape[0]
    hist = np.bincount(group * bins + b, weights=weight, minlength=E * bins).reshape(E, bins)
    cum = np.cumsum(hist, axis=1)
    cutoff = (cum < excess[:, None] - 1e-9).sum(axis=1)  # first bin covering the excess
    return np.flatnonzero(b <= cutoff[group])


def route_balanced(
    u: np.ndarray,
    weight: np.ndarray,
    capacity: np.ndarray,
    *,
    candidates: int | None = None,
    max_iter: int | None = None,
    penalty: float | None = None,
) -> BalancedRoute:
    """Capacity-constrained assignment by ascending expert prices.

    Parameters
    ----------
    u : ndarray of shape (n, E)
        Utility of each token for each expert.
    weight : ndarray of shape (n,)
        Complexity of each token (> 0).
    capacity : ndarray of shape (E,)
        Capacity of each expert, complexity units.
    candidates : int, optional
        Experts per token kept for the price rounds: its best by utility
        minus starting price. Default 16, or 8 above 10 million token-expert
        pairs. The repair pass may use any expert.
    max_iter : int, optional
        Price rounds at most; leftovers are fixed by the repair pass. Default:
        a fixed amount of work, 5e7 candidate evaluations, clamped to
        [30, 2000] rounds (small instances converge fully; a million tokens
        get 30 rounds after the sampled warm start).
    penalty : float, optional
        Drop cost per unit complexity (default :func:`drop_penalty`); the
        returned prices are those of this formulation, so
        :func:`dual_bound` with the same penalty is a valid bound.

    Returns
    -------
    BalancedRoute
        Loads never exceed ``capacity``.

    Notes
    -----
    When the experts cannot hold every token, a "drop" expert with the
    missing capacity and utility 0 is added (the textbook reduction of an
    unbalanced transportation problem): the auction then only decides *which*
    tokens are dropped, instead of bidding prices up to the drop penalty one
    small step at a time.

    Above 60k tokens the prices are first solved on a random eighth of the
    tokens (at least 20k; recursively) with capacities scaled to match (a
    sample-average approximation of the dual) and shrunk by 2 % so they stay
    below the full problem's; the full auction then only corrects the
    sampling error, in a few rounds instead of dozens. The sample's own
    auction gets ``WARM_START_ROUNDS`` rounds: more would refine prices
    finer than the sampling error.
    """
    n, E = u.shape
    penalty = drop_penalty(u) if penalty is None else penalty
    shortfall = float(weight.sum() - capacity.sum())
    capacity_all = np.append(capacity, shortfall) if shortfall > 1e-9 else capacity.astype(float)
    state = _auction(u, weight, capacity_all, candidates=candidates, max_iter=max_iter, penalty=penalty)
    expert = np.where(state.expert >= E, -1, state.expert)
    prices = state.prices[:E]
    if capacity_all.shape[0] > E:
        # Shift every price by the same amount so the drop expert's price is
        # the penalty: choices are unchanged (all capacity is used) and the
        # prices become those of the penalty formulation.
        prices = prices + (penalty - state.prices[E])
    expert, repaired = _repair(u, weight.astype(np.float64), capacity, expert, state.margin, penalty)
    expert = _fill_spare_capacity(state.cand_u, state.cand_e, u, weight.astype(np.float64), capacity, expert)
    return BalancedRoute(expert=expert, prices=np.maximum(prices, 0.0), iterations=state.iterations, repaired=repaired)


@dataclass
class _AuctionState:
    expert: np.ndarray  # (n,) index into capacity_all, -1 for the drop option
    prices: np.ndarray  # (len(capacity_all),)
    margin: np.ndarray  # (n,) value of the best choice over the runner-up
    cand_e: np.ndarray  # (n, K) experts considered per token (real experts only)
    cand_u: np.ndarray  # (n, K)
    iterations: int


#: Above this many tokens the auction is first solved on a sample (at least ``WARM_START_SAMPLE`` tokens).
WARM_START_ABOVE = 60_000
WARM_START_SAMPLE = 20_000
#: Price rounds of a sample's auction from zero prices (a quarter per epsilon phase). Its prices carry the sampling error
#: anyway, so rounds past a few per phase refine noise (see README, routing, for the measurements). The top-k
#: router caps its sample's auction the same way (``_topk.SAMPLE_MAX_ROUNDS``).
WARM_START_ROUNDS = 20
BACKOFF = 10.0  # price give-back between epsilon phases, in units of the coarser step


def _auction(
    u: np.ndarray,
    weight: np.ndarray,
    capacity_all: np.ndarray,
    *,
    candidates: int | None,
    max_iter: int | None,
    penalty: float,
    initial_prices: np.ndarray | None = None,
) -> _AuctionState:
    """Price rounds over real experts plus, when present, the drop expert (last, utility 0)."""
    n, E = u.shape
    has_drop = capacity_all.shape[0] > E
    K = min(candidates or (16 if n * E <= 10_000_000 else 8), E)
    if max_iter is None:
        max_iter = int(np.clip(5e7 / max(n * K, 1), 30, 2000))
    prices = np.zeros(capacity_all.shape[0]) if initial_prices is None else initial_prices.astype(float).copy()
    if initial_prices is None and n > WARM_START_ABOVE:
        sample = np.sort(np.random.default_rng(0).choice(n, max(n // 8, WARM_START_SAMPLE), replace=False))
        share = weight[sample].sum() / weight.sum()
        cold = sample.size <= WARM_START_ABOVE  # the sample's own auction starts from zero prices
        coarse = _auction(u[sample], weight[sample], capacity_all * share, candidates=candidates,
                          max_iter=WARM_START_ROUNDS if cold else None, penalty=penalty)
        prices = 0.98 * coarse.prices
    ut = np.ascontiguousarray(u, dtype=np.float32)
    w = weight.astype(np.float32)
    unit = bool(np.all(weight == 1.0))  # skip the multiply in the common case
    cand_e = _candidates(ut, w, prices[:E].astype(np.float32), K, unit)
    cand_u = np.take_along_axis(ut, cand_e, axis=1)
    # Candidate-major (K, n) copies: each round's reductions over a token's candidates become
    # elementwise passes over K long rows (twice as fast as (n, K) reductions in numpy).
    cand_e_all, cand_u_all = np.ascontiguousarray(cand_e.T), np.ascontiguousarray(cand_u.T)
    if has_drop:  # every token may go to the drop expert (index E, utility 0)
        cand_e_all = np.vstack([cand_e_all, np.full((1, n), E, dtype=cand_e.dtype)])
        cand_u_all = np.vstack([cand_u_all, np.zeros((1, n), dtype=cand_u.dtype)])
    drop_value = np.float32(-penalty) * w
    cap = capacity_all.astype(np.float64)
    wd = weight.astype(np.float64)
    # Price steps shrink by phases (Bertsekas' epsilon-scaling): large steps end
    # the "price wars" where two tokens bid for the last slot of full experts
    # in tiny increments, small ones refine. Warm-started prices are already
    # close, so they only get the finest phase.
    steps = (1e-6,) if prices.any() else (1e-3, 1e-4, 1e-5, 1e-6)
    rounds_per_step = max(1, max_iter // len(steps))
    iterations = 0
    previous_eps = 0.0
    for step in steps:
        eps = step * penalty  # smallest price rise; penalty already spans the utility range
        # Each coarser rise may have overshot by up to its step: give that back
        # so the finer phase can settle below (prices only rise within a phase).
        prices = np.maximum(prices - BACKOFF * previous_eps, 0.0)
        previous_eps = eps
        for _ in range(rounds_per_step):
            iterations += 1
            expert, margin_t = _best_choices(cand_u_all, cand_e_all, prices.astype(np.float32), None if unit else w,
                                             drop_value)
            assigned = expert >= 0
            excess = np.bincount(expert[assigned], weights=wd[assigned], minlength=cap.shape[0]) - cap
            over = excess > 1e-9
            if not over.any():
                break
            members = np.flatnonzero(assigned & over[np.maximum(expert, 0)])
            margin = margin_t[members].astype(np.float64) / wd[members]
            _, threshold = _grouped_shed(expert[members], margin, wd[members], np.where(over, excess, 0.0))
            prices = prices + np.where(over & np.isfinite(threshold), threshold + eps, 0.0)
    return _AuctionState(expert=expert, prices=prices, margin=margin_t,
                         cand_e=cand_e, cand_u=cand_u, iterations=iterations)


def _candidates(ut: np.ndarray, w: np.ndarray, real_prices: np.ndarray, k: int, unit: bool) -> np.ndarray:
    """Each token's ``k`` best experts by utility minus starting price, (n, k) int64, in no particular order.

    All experts, in index order, when ``k = E``.
    """
    n, E = ut.shape
    if k >= E:
        return np.tile(np.arange(E, dtype=np.int64), (n, 1))
    out = np.empty((n, k), dtype=np.int64)
    # By blocks of rows: argpartition returns all E indices per row (an (n, E) int64 array at once).
    for lo in range(0, n, ROW_BLOCK):
        block = ut[lo:lo + ROW_BLOCK]
        if real_prices.any():
            block = block - real_prices if unit else block - w[lo:lo + ROW_BLOCK, None] * real_prices
        out[lo:lo + ROW_BLOCK] = np.argpartition(block, E - k, axis=1)[:, E - k:]
    return out


def _best_choices(cand_u: np.ndarray, cand_e: np.ndarray, prices: np.ndarray, weight: np.ndarray | None,
                  drop_value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One price round: each token's best candidate and its margin over the runner-up (or over dropping).

    Parameters
    ----------
    cand_u : (K, n) float32, cand_e : (K, n) int64
        Candidate utilities and experts, candidate-major.
    prices : (E',) float32
    weight : (n,) float32, or None for unit complexities
    drop_value : (n,) float32
        ``-penalty * w``: the value of dropping the token.

    Returns
    -------
    expert : (n,) int64 -- the best candidate's expert, -1 where dropping beats every candidate.
    margin : (n,) float32 -- the best value over the next best option (ties: first candidate wins, margin 0).
    """
    K, n = cand_u.shape
    # Gathers by np.take and flat positions, the round's (K, n) temporary reused in place: a third less
    # time than fancy indexing at 25k-200k tokens (same values).
    value = np.take(prices, cand_e)
    if weight is not None:
        np.multiply(weight, value, out=value)
    np.subtract(cand_u, value, out=value)
    best_value = value.max(axis=0)
    best_k = np.zeros(n, dtype=np.int64)
    reaches = np.empty(n, dtype=bool)
    for j in range(K - 1, -1, -1):  # the first candidate reaching the best value
        np.equal(value[j], best_value, out=reaches)
        np.copyto(best_k, j, where=reaches)
    best_at = best_k * n + np.arange(n)
    np.put(value, best_at, -np.inf)
    runner_up = np.maximum(value.max(axis=0), drop_value)
    dropped = best_value < drop_value
    margin = np.where(dropped, drop_value - best_value, best_value - runner_up)
    return np.where(dropped, -1, np.take(cand_e, best_at)), margin


def _fill_spare_capacity(
    cand_u: np.ndarray, cand_e: np.ndarray, u: np.ndarray, w: np.ndarray, capacity: np.ndarray, expert: np.ndarray,
    rounds: int = 8,
) -> np.ndarray:
    """Move tokens into capacity the auction left unused, where they gain.

    With uneven complexities an expert can shed a whole token to cover a
    fraction of its excess, and warm-started prices can start a little high;
    either way an expert can end below capacity at a positive price, and no
    price rise brings anyone back. Each round, every token picks its best
    gaining move among its candidates into an expert with room for it, and
    experts take those moves in order of gain while they fit.
    """
    expert = expert.copy()
    n, E = u.shape
    routed = expert >= 0
    room = capacity - np.bincount(expert[routed], weights=w[routed], minlength=E)
    ut = np.ascontiguousarray(u, dtype=np.float32)
    current = _pick(ut, np.arange(n), np.maximum(expert, 0))
    current[expert < 0] = -np.inf
    # Only tokens with a candidate above their current utility can ever gain (a move only raises it): the
    # rounds look at those rows alone, typically a seventh to a third of the tokens, with the same outcome.
    rows = np.flatnonzero(((cand_u - current[:, None]) > np.float32(1e-7)).any(axis=1))
    cand_u, cand_e = cand_u[rows], cand_e[rows]
    wt = w[rows].astype(np.float32)[:, None] - np.float32(1e-6)
    local = np.arange(rows.size)
    for _ in range(rounds):
        fits = np.take(room.astype(np.float32), cand_e) >= wt
        gain = np.where(fits & (cand_e != expert[rows][:, None]), cand_u - current[rows][:, None], np.float32(-np.inf))
        best_k = gain.argmax(axis=1)
        best_gain = _pick(gain, local, best_k)
        found = np.flatnonzero(best_gain > np.float32(1e-7))
        if found.size == 0:
            break
        found = found[_descending_order(best_gain[found])]
        target = cand_e[found, best_k[found]]
        took = _accept_in_order(target, w[rows[found]], room)
        moved, to, from_k = rows[found[took]], target[took], best_k[found[took]]
        np.add.at(room, expert[moved][expert[moved] >= 0], w[moved][expert[moved] >= 0])
        expert[moved] = to
        current[moved] = cand_u[found[took], from_k]
    return expert


def _repair(
    u: np.ndarray, w: np.ndarray, capacity: np.ndarray, expert: np.ndarray, margin: np.ndarray, penalty: float
) -> tuple[np.ndarray, int]:
    """Enforce capacity exactly and re-place shed or dropped tokens.

    Overloaded experts (possible after ``max_iter`` or through ties) shed
    their smallest-margin tokens; shed tokens and tokens dropped while
    capacity remains are placed by :func:`greedy_balanced` on what is left.
    """
    E = capacity.shape[0]
    expert = expert.copy()
    load = np.bincount(expert[expert >= 0], weights=w[expert >= 0], minlength=E)
    excess = load - capacity
    if (excess > 1e-9).any():
        members = np.flatnonzero((expert >= 0) & (excess[np.maximum(expert, 0)] > 1e-9))
        shed, _ = _grouped_shed(expert[members], margin[members] / w[members], w[members], np.maximum(excess, 0.0))
        expert[members[shed]] = -1
        load = np.bincount(expert[expert >= 0], weights=w[expert >= 0], minlength=E)
    pending = np.flatnonzero(expert < 0)
    if pending.size == 0:
        return expert, 0
    room = capacity - load
    if room.max() <= 1e-9:
        return expert, 0
    placed = greedy_balanced(u[pending], w[pending], np.maximum(room, 0.0))
    expert[pending] = placed
    return expert, int((placed >= 0).sum())


def _accept_in_order(group: np.ndarray, weight: np.ndarray, room: np.ndarray) -> np.ndarray:
    """Each group takes its members in the given order while they still fit.

    The sequential rule "accept a token if its complexity fits in what is
    left", vectorised: accept the longest fitting prefix of every group, drop
    the members that can no longer fit (room only shrinks), repeat. Every
    pass accepts at least one member, and typically one or two passes do.

    Parameters
    ----------
    group : (m,) int
        Expert each member asks for, listed in priority order.
    weight : (m,) float
    room : (E,) float
        Remaining capacity; reduced in place by what is accepted.

    Returns
    -------
    accepted : (m,) bool
    """
    accepted = np.zeros(group.shape[0], dtype=bool)
    pending = _stable_order(group)
    while pending.size:
        g, w = group[pending], weight[pending]
        cum = np.cumsum(w)
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        before = np.repeat(cum[starts] - w[starts], np.diff(np.r_[starts, len(g)]))
        fits = (cum - before) <= room[g] + 1e-9
        accepted[pending[fits]] = True
        np.subtract.at(room, g[fits], w[fits])
        rest = pending[~fits]
        pending = rest[weight[rest] <= room[group[rest]] + 1e-9]
    return accepted


def greedy_balanced(u: np.ndarray, weight: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Greedy balanced assignment (experts keep their highest-utility proposals).

    In rounds, every unplaced token proposes to its best expert not yet
    refused; each expert takes the proposals in order of utility while they
    fit in its remaining capacity and refuses the rest for good (deferred
    acceptance with fixed acceptances). The simple method an operator might
    write; a baseline, and the repair pass of :func:`route_balanced`.

    Returns
    -------
    ndarray of shape (n,), int64 -- expert per token, -1 when nothing fits.
    """
    n, E = u.shape
    expert = np.full(n, -1, dtype=np.int64)
    room = capacity.astype(np.float64).copy()
    # With equal complexities a refusal means the expert cannot fit any waiting token (room only
    # shrinks), so the "too full for the lightest token" rule below already blocks it for everyone.
    uniform = n == 0 or bool(np.all(weight == weight[0]))
    blocked = np.zeros((n, E), dtype=bool) if not uniform and n * E <= 50_000_000 else None
    ut = np.ascontiguousarray(u, dtype=np.float32)
    active = np.arange(n)
    for _ in range(E):
        if active.size == 0:
            break
        best, value, alive = _best_open_expert(ut, active, blocked, room >= weight[active].min() - 1e-9)
        active, best, value = active[alive], best[alive], value[alive]
        if active.size == 0:
            break
        order = _descending_order(value)
        toks, g = active[order], best[order]
        took = _accept_in_order(g, weight[toks], room)
        expert[toks[took]] = g[took]
        refused = toks[~took]
        if blocked is not None:
            blocked[refused, g[~took]] = True
        active = _ascending_unique(refused, n)
    return expert


def _ascending_unique(rows: np.ndarray, n: int) -> np.ndarray:
    """``np.sort(rows)`` for distinct rows in ``[0, n)``: a mask scan, linear instead of a sort."""
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return np.flatnonzero(mask)


def _stable_order(keys: np.ndarray) -> np.ndarray:
    """``np.argsort(keys, kind="stable")`` for integer keys (m,); int64 (m,).

    Keys in ``[0, 65536)`` (expert indices) are sorted as uint16, for which
    numpy's stable sort is a radix sort (several times faster than its merge sort).
    """
    if keys.size and keys.dtype.kind in "iu" and keys.min() >= 0 and keys.max() < 1 << 16:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    return np.argsort(keys, kind="stable")


def _descending_order(value: np.ndarray) -> np.ndarray:
    """``np.argsort(-value, kind="stable")`` for float32 values (m,) without NaN; int64 (m,).

    The negated values become order-preserving uint32 keys (the IEEE bits with
    the sign bit set for non-negatives, all bits flipped for negatives; ``+ 0.0``
    first so that -0.0 and 0.0 tie as they do in a float sort), sorted by two
    stable uint16 radix passes: low half, then high half. Other dtypes, or NaN,
    take numpy's float sort.
    """
    if value.dtype != np.float32 or np.isnan(value).any():
        return np.argsort(-value, kind="stable")
    bits = (np.negative(value) + np.float32(0.0)).view(np.uint32)
    key = np.where(bits >> np.uint32(31) != 0, ~bits, bits | np.uint32(0x80000000))
    order = np.argsort((key & np.uint32(0xFFFF)).astype(np.uint16), kind="stable")
    return order[np.argsort((key[order] >> np.uint32(16)).astype(np.uint16), kind="stable")]


def _best_open_expert(ut: np.ndarray, active: np.ndarray, blocked: np.ndarray | None,
                      open_experts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each active token's best expert among ``open_experts`` and not ``blocked`` for it (first on ties).

    ut : (n, E) float32, active : (m,) rows, blocked : (n, E) bool or None,
    open_experts : (E,) bool. Returns ``(expert (m,), utility (m,), alive (m,) bool)``,
    alive False where no expert is left.
    """
    if blocked is not None:
        scores = ut[active]  # a copy (fancy indexing)
        np.putmask(scores, blocked[active], -np.inf)
        scores[:, ~open_experts] = -np.inf
        best = scores.argmax(axis=1)
        value = scores[np.arange(best.shape[0]), best]
        return best, value, np.isfinite(value)
    if not open_experts.any():
        return np.zeros(active.size, dtype=np.int64), np.full(active.size, -np.inf, dtype=ut.dtype), np.zeros(active.size, bool)
    if open_experts.all() and active.size == ut.shape[0]:  # every token active, every expert open: no copy
        best = ut.argmax(axis=1)
        return best, _pick(ut, np.arange(best.shape[0]), best), np.ones(active.size, dtype=bool)
    # Closed experts get -inf added (open ones + 0, unchanged): half the time of a 2-D gather. By blocks of
    # rows through one buffer: a full (m, E) copy per round was fresh pages each time, faulted in at a
    # higher cost than the gather itself.
    closed = None if open_experts.all() else np.where(open_experts, np.float32(0), np.float32(-np.inf)).astype(ut.dtype)
    best = np.empty(active.size, dtype=np.int64)
    value = np.empty(active.size, dtype=ut.dtype)
    buffer = np.empty((min(active.size, ROW_BLOCK), ut.shape[1]), dtype=ut.dtype)
    for lo in range(0, active.size, ROW_BLOCK):
        rows = active[lo:lo + ROW_BLOCK]
        scores = np.take(ut, rows, axis=0, out=buffer[:rows.size])
        if closed is not None:
            np.add(scores, closed, out=scores)
        best[lo:lo + rows.size] = scores.argmax(axis=1)
        value[lo:lo + rows.size] = _pick(scores, np.arange(rows.size), best[lo:lo + rows.size])
    return best, value, np.ones(active.size, dtype=bool)


def top1_gating(affinity: np.ndarray, weight: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Switch/GShard top-1 gating with capacity: overflow tokens are dropped.

    Each token goes to its highest-affinity expert; an expert accepts tokens
    in arrival (row) order while they fit in what is left of its capacity.

    Returns
    -------
    ndarray of shape (n,), int64 -- expert per token, -1 when dropped.
    """
    best = np.ascontiguousarray(affinity).argmax(axis=1).astype(np.int64)
    took = _accept_in_order(best, weight, capacity.astype(np.float64).copy())
    return np.where(took, best, -1)


def hash_experts(token_ids: np.ndarray, n_experts: int) -> np.ndarray:
    """Stable expert index per token id: a 64-bit hash of the UTF-8 id, mod experts.

    The hash is ``pandas.util.hash_array``: SipHash-2-4 under pandas' fixed
    key, then a SplitMix64 finaliser, in compiled code (a quarter of the
    time of a blake2b call per id from Python). The same id maps to the same
    expert on every run and machine (Python's ``hash`` is salted per
    process). Numeric ids are hashed as ``str(id)``.

    >>> hash_experts(np.array(["tok-1", "tok-1"], dtype=object), 64).tolist() == [hash_experts(np.array(["tok-1"], dtype=object), 64)[0]] * 2
    True
    """
    hashed = pd.util.hash_array(np.asarray(token_ids, dtype=object), categorize=False)
    return (hashed % np.uint64(n_experts)).astype(np.int64)


def hash_route(token_ids: np.ndarray, weight: np.ndarray, capacity: np.ndarray | None) -> np.ndarray:
    """Hash routing; with ``capacity``, consistent hashing with bounded loads.

    Without capacity: plain ``hash(token_id) mod E`` (the baseline). With
    capacity: a token whose hashed expert is full probes the next experts in
    ring order (Mirrokni et al., consistent hashing with bounded loads).
    Tokens are placed in order of their 64-bit hash, not row order, so the
    result does not depend on how the input was sorted.

    Returns
    -------
    ndarray of shape (n,), int64 -- expert per token, -1 when nothing fits.
    """
    E = capacity.shape[0] if capacity is not None else None
    if capacity is None:
        raise ValueError("hash_route needs a capacity; use hash_experts for plain hashing")
    home = hash_experts(token_ids, E)
    expert = np.full(home.shape[0], -1, dtype=np.int64)
    room = capacity.astype(np.float64).copy()
    # Placement order: by home expert, then by the id itself (stable across machines).
    pending = np.lexsort((token_ids.astype(str), home))
    for shift in range(E):
        if pending.size == 0:
            break
        target = (home[pending] + shift) % E
        took = _accept_in_order(target, weight[pending], room)
        expert[pending[took]] = target[took]
        pending = pending[~took]
    return expert


def dual_bound(u: np.ndarray, weight: np.ndarray, capacity: np.ndarray, prices: np.ndarray, penalty: float) -> float:
    """Upper bound on the optimal objective from any prices ``>= 0`` (weak duality).

    ``g(p) = sum_t max(max_e(u[t,e] - w[t] p[e]), -penalty w[t]) + sum_e C[e] p[e]``.
    """
    p = np.maximum(prices, 0.0).astype(np.float32)
    ut = np.ascontiguousarray(u, dtype=np.float32)
    w = weight.astype(np.float32)
    best = np.empty(ut.shape[0], dtype=np.float32)
    for lo in range(0, ut.shape[0], ROW_BLOCK):
        best[lo:lo + ROW_BLOCK] = (ut[lo:lo + ROW_BLOCK] - w[lo:lo + ROW_BLOCK, None] * p).max(axis=1)
    best = np.maximum(best, np.float32(-penalty) * w)
    return float(best.sum(dtype=np.float64)) + float(np.dot(capacity, np.maximum(prices, 0.0)))


def objective(u: np.ndarray, weight: np.ndarray, expert: np.ndarray, penalty: float) -> float:
    """``sum u[t, e(t)]`` over routed tokens minus ``penalty * w`` per dropped one."""
    routed = expert >= 0
    gained = float(_pick(u, np.flatnonzero(routed), expert[routed]).astype(np.float64).sum())
    return gained - penalty * float(weight[~routed].sum())


def exact_optimum(
    u: np.ndarray,
    weight: np.ndarray,
    capacity: np.ndarray,
    penalty: float,
    *,
    prices: np.ndarray | None = None,
    start_candidates: int = 8,
    k: int = 1,
) -> dict[str, float | int | str]:
    """Exact LP optimum by column generation with scipy's HiGHS.

    ``k`` experts per token (top-k routing: each token's ``k`` slots, at most
    one per expert, a dropped slot costing ``penalty * w``; a b-matching, as
    integral as the k = 1 case).

    Solves the LP over each token's best ``start_candidates`` experts (best
    after subtracting ``prices``, when a heuristic's prices are given), prices
    every omitted (token, expert) pair with the duals, adds those with a
    positive reduced cost, and repeats until none is left: the restricted LP's
    optimum is then the full LP's. With whole-number complexities and
    capacities the LP is a transportation problem and its optimum is integral,
    i.e. the exact optimum of the assignment; otherwise it is an upper bound.

    Returns
    -------
    dict with ``value`` (optimal objective), ``kind`` ("integral" or
    "lp_upper_bound"), ``rounds`` and ``columns``.
    """
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    n, E = u.shape
    K = min(max(start_candidates, 2 * k), E)
    start = u if prices is None else u - weight[:, None] * prices[None, :]
    cols = np.argsort(-start, axis=1)[:, :K]
    active = np.zeros((n, E), dtype=bool)
    active[np.arange(n)[:, None], cols] = True
    rounds = 0
    while True:
        rounds += 1
        tok, exp = np.nonzero(active)
        m = tok.size
        # Variables: x[t,e] for active pairs, then one drop variable per token.
        c = np.concatenate([-u[tok, exp].astype(np.float64), penalty * weight])
        rows_eq = np.concatenate([tok, np.arange(n)])
        cols_eq = np.arange(m + n)
        A_eq = coo_matrix((np.ones(m + n), (rows_eq, cols_eq)), shape=(n, m + n)).tocsr()
        A_ub = coo_matrix((weight[tok], (exp, np.arange(m))), shape=(E, m + n)).tocsr()
        bounds = np.column_stack([np.zeros(m + n), np.r_[np.ones(m), np.full(n, float(k))]])
        res = linprog(c, A_ub=A_ub, b_ub=capacity, A_eq=A_eq, b_eq=np.full(n, float(k)), bounds=bounds, method="highs")
        if res.status != 0:
            raise RuntimeError(f"exact LP failed: {res.message}")
        pi = -res.eqlin.marginals  # token duals (value units)
        price = np.maximum(res.ineqlin.marginals * -1.0, 0.0)  # expert prices
        reduced = u - pi[:, None] - weight[:, None] * price[None, :]
        add = (reduced > 1e-7) & ~active
        if not add.any():
            break
        active |= add
    x = res.x
    integral = bool(np.all(np.abs(x - np.round(x)) < 1e-7))
    return {"value": float(-res.fun), "kind": "integral" if integral else "lp_upper_bound", "rounds": rounds, "columns": int(m)}


def route_metrics(
    problem: RoutingProblem, expert: np.ndarray, u: np.ndarray, capacity: np.ndarray, penalty: float
) -> dict[str, float | int | list[float]]:
    """Quality figures of one assignment (the same for the plan and each baseline).

    ``load_imbalance`` is max / mean load over experts (1.0 is perfect);
    ``cross_node_fraction`` the share of routed tokens whose expert sits on
    another node than their source (tokens of unknown source excluded).
    """
    E = problem.graph.n_experts
    w = problem.complexity
    routed = expert >= 0
    load = np.bincount(expert[routed], weights=w[routed], minlength=E)
    rows = np.flatnonzero(routed)
    known = routed & (problem.source_node >= 0)
    cross = problem.graph.expert_node[expert[known]] != problem.source_node[known]
    mean_load = load.mean() if E else 0.0
    return {
        "tokens_routed": int(routed.sum()),
        "dropped_tokens": int((~routed).sum()),
        "dropped_complexity": float(w[~routed].sum()),
        "capacity_violations": int((load > capacity + 1e-9).sum()),
        "max_overload": float(max(0.0, (load - capacity).max())),
        "load_imbalance": float(load.max() / mean_load) if mean_load > 0 else 1.0,
        "total_affinity": float(_pick(problem.affinity, rows, expert[routed]).astype(np.float64).sum()),
        "objective": float(_pick(u, rows, expert[routed]).astype(np.float64).sum()),
        "cross_node_fraction": float(cross.mean()) if cross.size else 0.0,
        "expert_load": [round(float(x), 6) for x in load],
    }
