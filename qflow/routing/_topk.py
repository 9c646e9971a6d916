"""Top-k routing: each token to ``k`` distinct experts under capacity.

The problem (one MoE layer with top-k gating, e.g. Mixtral 2 of 8)::

    maximise   sum_{t,e} u[t, e] x[t, e]  -  penalty * sum_t w[t] d[t]
    subject to sum_e x[t, e] + d[t] = k          for every token t
               sum_t w[t] x[t, e] <= C[e]        for every expert e
               0 <= x[t, e] <= 1,  0 <= d[t] <= k

``d[t]`` counts the token's dropped slots. It is a bipartite b-matching:
with whole-number complexities and capacities the LP is integral, so
:func:`qflow.routing._classical.exact_optimum` (called with ``k``) gives the
true optimum. For any expert prices ``p >= 0`` weak duality gives the bound
``g(p) = sum_t topk_e max(u[t, e] - w[t] p[e], -penalty w[t]) + sum_e C[e] p[e]``
(:func:`topk_dual_bound`).

:func:`route_topk` is the ascending-price auction of ``route_balanced``
generalised to k slots: each token takes its k best experts by
``u - w * price``; the margin of a chosen expert is its value over the
token's best unchosen option (the (k+1)-th expert, or dropping the slot);
an overloaded expert raises its price exactly enough to shed its excess.
Dropping is a pseudo-expert that holds the capacity shortfall and may take
several slots of one token (it appears ``k`` times among the candidates).

Each token bids only on a shortlist of its best experts. When the prices of
its shortlisted experts rise until an expert outside the list could beat its
k-th choice, its list is re-chosen at the current prices (column generation
per token). Without that, scores where many experts are popular with every
token (Dirichlet-like) price the popular ones up against each other while the
rest sit idle outside every list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import get_num_threads

from qflow.routing._classical import BACKOFF, WARM_START_ABOVE, WARM_START_SAMPLE, _accept_in_order, _grouped_shed
from qflow.routing._topk_kernels import (
    bound_terms,
    choose_rows,
    dense_topk,
    rows_touching,
    rule_masked_rows,
    rule_nodes,
    shed_thresholds,
    slot_load,
    slot_utilities,
    sort_slots,
    spare_offers,
)
from qflow.routing._utility import UtilityTable, as_table

#: Price rounds at most of the warm-start sample's auction. Its prices are only a start, shrunk by 2 %,
#: that the full market re-prices: at a million tokens x 256 experts (top-8, node limit 4) the sample's own
#: sample ran its whole budget of 104 rounds from zero prices, about 29 % of the route stage's CPU. With 20
#: the full market took as many rounds and the certified gaps stayed as small or smaller, at 200k and 1M
#: tokens on all three bench distributions (bench/routing.py).
SAMPLE_MAX_ROUNDS = 20

__all__ = ["node_limited_mask", "node_limited_table", "TopkRoute", "route_topk", "topk_dual_bound", "topk_objective", "topk_gating", "topk_uncapped", "combine_weights"]


@dataclass
class TopkRoute:
    """Output of :func:`route_topk`.

    Attributes
    ----------
    experts : ndarray of shape (n, k), int64
        Expert indices per token, best first by utility; -1 marks a dropped slot.
    prices : ndarray of shape (E,)
        Dual prices (affinity per unit complexity) of the penalty formulation.
    iterations : int
        Price rounds run.
    repaired : int
        Slots placed by the repair pass.
    """

    experts: np.ndarray
    prices: np.ndarray
    iterations: int
    repaired: int


def route_topk(
    u: np.ndarray | UtilityTable,
    weight: np.ndarray,
    capacity: np.ndarray,
    k: int,
    *,
    penalty: float,
    max_iter: int | None = None,
    initial_prices: np.ndarray | None = None,
) -> TopkRoute:
    """Capacity-constrained top-k assignment by ascending expert prices.

    Parameters
    ----------
    u : ndarray of shape (n, E), or UtilityTable
        Utility of each token for each expert.
    weight : ndarray of shape (n,)
        Complexity of each token (> 0); one slot on an expert costs it this much load.
    capacity : ndarray of shape (E,)
        Capacity of each expert, complexity units.
    k : int
        Experts per token, ``1 <= k <= E``.
    penalty : float
        Cost of a dropped slot per unit complexity.
    max_iter : int, optional
        Price rounds at most (default: 5e7 candidate evaluations, clamped to [30, 2000]).
    initial_prices : ndarray of shape (E,), optional
        Warm start (prices of the penalty formulation). Above
        ``WARM_START_ABOVE`` tokens, without one, the prices are first solved
        on a random eighth of the tokens (at least ``WARM_START_SAMPLE``) with
        capacities scaled to match, shrunk by 2 %, as ``route_balanced`` does.

    Returns
    -------
    TopkRoute
        Loads never exceed ``capacity``; a token's experts are distinct.
    """
    u = as_table(u)
    n, E = u.shape
    wd = weight.astype(np.float64)
    market, chosen, margin_t, prices, iterations = _priced_market(u, weight, capacity, k, penalty, max_iter, initial_prices)
    experts = np.where(chosen >= E, -1, chosen).astype(np.int64)
    # A slot worth no more than dropping it is dropped, whatever the prices did: with a shortfall the drop
    # option is priced, and a drop price far above the penalty would let the auction prefer an expert that
    # node_limited_table ruled out. Not seen on random instances; this makes "never chosen" hold by construction.
    worthless = (experts >= 0) & (slot_utilities(u.values, u.offsets, u.offset_row, experts, np.full(n, -np.inf))
                                  <= -penalty * wd[:, None])
    experts[worthless] = -1
    real_prices = _real_prices(market, prices, penalty)
    experts, repaired = _repair_topk(u, wd, capacity, experts, margin_t, penalty)
    experts = _fill_spare_topk(u, wd, capacity, experts, market.cand_e[:, :market.shortlist],
                               market.cand_u[:, :market.shortlist], penalty)
    experts = np.ascontiguousarray(experts, dtype=np.int64)
    sort_slots(u.values, u.offsets, u.offset_row, experts)
    return TopkRoute(experts=experts, prices=real_prices, iterations=iterations, repaired=repaired)


def _priced_market(u: UtilityTable, weight: np.ndarray, capacity: np.ndarray, k: int, penalty: float, max_iter: int | None,
                   initial_prices: np.ndarray | None, round_cap: int = 2000) -> tuple[_TopkMarket, np.ndarray, np.ndarray, np.ndarray, int]:
    """The auction of :func:`route_topk`: ``(market, chosen (n, k), margins (n, k), prices (E + 1,), rounds)``.

    ``round_cap`` bounds the rounds whatever ``max_iter`` (or its default) says.
    """
    n = u.shape[0]
    if initial_prices is None and n > WARM_START_ABOVE:
        initial_prices = _sampled_prices(u, weight, capacity, k, penalty)
    market = _topk_market(u, weight, capacity, k, penalty, initial_prices)
    if max_iter is None:
        max_iter = int(np.clip(5e7 / max(n * market.cand_e.shape[1], 1), 30, 2000))
    max_iter = min(max_iter, round_cap)
    steps = (1e-6,) if initial_prices is not None else (1e-3, 1e-4, 1e-5, 1e-6)
    chosen, margin, prices, iterations = _topk_auction(market, weight.astype(np.float64), k, penalty, steps, max_iter)
    return market, chosen, margin, prices, iterations


def _real_prices(market: _TopkMarket, prices: np.ndarray, penalty: float) -> np.ndarray:
    """The experts' prices (E,) of the penalty formulation, >= 0, from the auction's (E + 1,) (the drop option's last)."""
    E = market.u.shape[1]
    real = prices[:E]
    if market.has_drop:  # shift so the drop option's price is the penalty (as route_balanced does)
        real = real + (penalty - prices[E])
    return np.maximum(real, 0.0)


@dataclass
class _TopkMarket:
    """The auction's candidates: each token's shortlist of experts plus ``k`` drop slots (expert ``E``).

    ``cand_e`` and ``cand_u`` are (n, shortlist + k) expert indices and
    utilities; ``cap`` (E + 1,) capacities, the drop option's last;
    ``prices`` (E + 1,) the starting prices; ``w`` (n,) float32 complexities;
    ``drop_value`` (n,) the value of dropping a slot; ``u`` the full (n, E)
    utility table; ``ceiling`` (n,) float64, an upper bound on the value
    ``u - w * price`` of any expert outside a token's shortlist (its
    shortlist's smallest value when the shortlist was chosen: prices only
    rise, and price give-backs raise it by what they gave back).
    """

    cand_e: np.ndarray
    cand_u: np.ndarray
    cap: np.ndarray
    prices: np.ndarray
    w: np.ndarray
    drop_value: np.ndarray
    has_drop: bool
    shortlist: int
    u: UtilityTable
    ceiling: np.ndarray


def _sampled_prices(u: UtilityTable, weight: np.ndarray, capacity: np.ndarray, k: int, penalty: float) -> np.ndarray:
    """Warm-start prices (E,) solved on a random eighth of the tokens, capacities scaled to match, shrunk by 2 %."""
    n = u.shape[0]
    wd = weight.astype(np.float64)
    sample = np.sort(np.random.default_rng(0).choice(n, max(n // 8, WARM_START_SAMPLE), replace=False))
    share = wd[sample].sum() / wd.sum()
    # Only the prices are wanted: the sample's plan (repair, spare-capacity moves) is never built, and its
    # auction stops after SAMPLE_MAX_ROUNDS (the full market re-prices from these anyway).
    market, _, _, prices, _ = _priced_market(u.subset(sample), weight[sample], capacity * share, k, penalty, None, None,
                                             round_cap=SAMPLE_MAX_ROUNDS)
    return 0.98 * _real_prices(market, prices, penalty)


def _topk_market(u: UtilityTable, weight: np.ndarray, capacity: np.ndarray, k: int, penalty: float,
                 initial_prices: np.ndarray | None) -> _TopkMarket:
    """Candidates, capacities and starting prices of :func:`route_topk`'s auction."""
    n, E = u.shape
    shortfall = float(k * weight.astype(np.float64).sum() - capacity.sum())
    has_drop = shortfall > 1e-9
    K = min(E, max(16, 2 * k + 8))
    w = weight.astype(np.float32)
    drop_value = -penalty * w.astype(np.float64)
    prices0 = np.zeros(E) if initial_prices is None else np.asarray(initial_prices, np.float64)
    cand_e, cand_u, ceiling = _shortlist(u, w, prices0, K, np.arange(n))
    # Dropping is expert E, k copies per token. With a shortfall it holds exactly the slots that cannot
    # fit (utility 0, priced like an expert); otherwise it costs the penalty and has no capacity limit.
    # Without a shortfall the drop copies all have the same value (-penalty * w) and no capacity, so they
    # are left out of the candidates (a third narrower rounds): a chosen slot worth less is dropped instead.
    if has_drop or K <= k:
        drop_u = np.zeros(n, np.float32) if has_drop else drop_value.astype(np.float32)
        cand_e = np.concatenate([cand_e, np.full((n, k), E, dtype=np.int64)], axis=1)
        cand_u = np.concatenate([cand_u, np.repeat(drop_u[:, None], k, axis=1)], axis=1)
    cap = np.append(capacity.astype(np.float64), shortfall if has_drop else np.inf)
    prices = np.zeros(cap.shape[0])
    if initial_prices is not None:
        # The drop option (utility 0 with a shortfall) priced at the penalty is worth -penalty * w, as it should.
        prices = np.append(initial_prices, penalty if has_drop else 0.0).astype(np.float64)
    return _TopkMarket(cand_e, cand_u, cap, prices, w, drop_value, has_drop, K, u, ceiling)


def _shortlist(u: UtilityTable, w: np.ndarray, prices: np.ndarray, K: int,
               rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The K best experts by ``u - w * price`` of each of ``rows``: ``(experts (r, K), their u (r, K) float32,
    the smallest of those values (r,))``.

    With K = E every expert is listed and the ceiling is -inf (nothing lies outside).
    """
    E = u.shape[1]
    if K >= E:
        return np.broadcast_to(np.arange(E), (rows.size, E)).copy(), u.rows(rows), np.full(rows.size, -np.inf)
    index = np.empty((rows.size, K), dtype=np.int64)
    values = np.empty((rows.size, K), dtype=np.float32)
    ceiling = np.empty(rows.size)
    dense_topk(u.values, u.offsets, u.offset_row, w, np.ascontiguousarray(prices, dtype=np.float64), rows.astype(np.int64),
               K, values, index, ceiling)
    return index, values, ceiling


def _refresh_stale(market: _TopkMarket, prices: np.ndarray, rows: np.ndarray, kth_value: np.ndarray) -> np.ndarray:
    """Rebuild the shortlists of tokens whose k-th choice is worth less than an expert outside them could be.

    A token's choice is then possibly wrong on the full problem (column
    generation per token): its shortlist is re-chosen at the current prices,
    keeping the drop slots. ``rows`` (r,) are the tokens ``kth_value`` (r,)
    belongs to; returns the tokens refreshed.
    """
    stale = rows[kth_value < market.ceiling[rows]]
    if stale.size == 0:
        return stale
    E = market.u.shape[1]
    rows_e, rows_u, rows_ceiling = _shortlist(market.u, market.w, prices[:E], market.shortlist, stale)
    market.cand_e[stale, :market.shortlist] = rows_e
    market.cand_u[stale, :market.shortlist] = rows_u
    market.ceiling[stale] = rows_ceiling
    return stale


@dataclass
class _Choice:
    """The auction's current choice per token, updated row by row.

    ``chosen`` (n, k) experts (E, the drop option, where dropping the slot is
    worth more); ``margin`` (n, k) >= 0 each choice's value over the best
    unchosen option; ``top`` (n, k + 1) the experts of the k + 1 best values
    (a price rise on any other candidate changes nothing).
    """

    chosen: np.ndarray
    margin: np.ndarray
    top: np.ndarray

    def choose(self, market: _TopkMarket, prices: np.ndarray, k: int, rows: np.ndarray) -> np.ndarray:
        """Re-choose ``rows`` (r,) at ``prices`` among their candidates; returns their k-th best values (r,)."""
        kth = np.empty(rows.size)
        choose_rows(market.cand_e, market.cand_u, market.w, prices, market.drop_value, rows, k, market.u.shape[1],
                    self.chosen, self.margin, self.top, kth)
        return kth

    def update(self, market: _TopkMarket, prices: np.ndarray, k: int, rows: np.ndarray) -> None:
        """Re-choose ``rows`` at ``prices``, first re-listing the stale ones."""
        prices = np.ascontiguousarray(prices, dtype=np.float64)
        kth = self.choose(market, prices, k, rows)
        stale = _refresh_stale(market, prices, rows, kth)
        if stale.size:
            self.choose(market, prices, k, stale)


def _topk_auction(market: _TopkMarket, wd: np.ndarray, k: int, penalty: float, steps: tuple[float, ...],
             max_iter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Ascending prices in phases of finer ``eps``: ``(chosen (n, k), margins (n, k), prices (E + 1,), rounds)``.

    Within a phase a round re-chooses only the tokens whose k + 1 best
    candidates include an expert whose price rose (prices only rise there,
    so no other token's choice or margin can change).
    """
    prices, cap = market.prices, market.cap
    n = wd.shape[0]
    everyone = np.arange(n)
    state = _Choice(np.empty((n, k), dtype=np.int64), np.empty((n, k)), np.empty((n, k + 1), dtype=np.int64))
    # The overloaded slots' margins, reused by every round (fresh (n * k) arrays each round were most of its time).
    scratch_values, scratch_weights = np.empty(n * k), np.empty(n * k)
    iterations, previous_eps = 0, 0.0
    for phase, step in enumerate(steps):
        # A phase that settles early hands its unused rounds to the finer ones.
        rounds_per_step = max(1, (max_iter - iterations) // (len(steps) - phase))
        eps = step * penalty
        lowered = np.maximum(prices - BACKOFF * previous_eps, 0.0)
        # Outside experts gain at most what their price gave back.
        market.ceiling += market.w * float((prices - lowered)[:-1].max(initial=0.0))
        prices = lowered
        previous_eps = eps
        rows = everyone
        for _ in range(rounds_per_step):
            iterations += 1
            state.update(market, prices, k, rows)
            excess = slot_load(state.chosen, wd, cap.shape[0]) - cap
            over = excess > 1e-9
            if not over.any():
                break
            threshold = shed_thresholds(state.chosen, state.margin, wd, over, excess, scratch_values, scratch_weights)
            raised = over & np.isfinite(threshold)
            prices = prices + np.where(raised, threshold + eps, 0.0)
            rows = rows_touching(state.top, raised)
    return state.chosen, state.margin, prices, iterations


def _repair_topk(
    u: UtilityTable, w: np.ndarray, capacity: np.ndarray, experts: np.ndarray, margin: np.ndarray, penalty: float
) -> tuple[np.ndarray, int]:
    """Enforce capacity exactly, then place dropped slots where room is left.

    Overloaded experts (possible after ``max_iter`` or through ties) shed
    their smallest-margin slots. Dropped slots are then offered, in rounds, to
    the best expert with room that the token does not already use and that is
    worth more than dropping the slot (``u > -penalty * w``), experts taking
    them in order of utility while they fit (the greedy of
    ``greedy_balanced``, per slot). The drop test is what keeps experts that
    :func:`node_limited_table` ruled out (off a token's allowed nodes) out of
    the plan: they have room, their utility is finite but below dropping.
    """
    n, k = experts.shape
    E = capacity.shape[0]
    experts = np.ascontiguousarray(experts, dtype=np.int64).copy()
    wd = np.ascontiguousarray(w, dtype=np.float64)
    load = slot_load(experts, wd, E)
    excess = load - capacity
    if (excess > 1e-9).any():
        flat = experts.ravel()
        unit_w = np.repeat(w, k)
        members = np.flatnonzero((flat >= 0) & (excess[np.maximum(flat, 0)] > 1e-9))
        shed, _ = _grouped_shed(flat[members], margin.ravel()[members] / unit_w[members], unit_w[members], np.maximum(excess, 0.0))
        flat[members[shed]] = -1
        experts = flat.reshape(n, k)
        load = slot_load(experts, wd, E)
    room = capacity - load
    repaired = 0
    for _ in range(E):
        token, slot = np.nonzero(experts < 0)
        if token.size == 0 or room.max() <= 1e-9:
            break
        scores = u.rows(token).astype(np.float64)
        used = experts[token]
        rows = np.repeat(np.arange(token.size), k)
        scores[rows[used.ravel() >= 0], used.ravel()[used.ravel() >= 0]] = -np.inf
        scores[:, room < w[token].min() - 1e-9] = -np.inf
        scores[scores <= -penalty * w[token][:, None]] = -np.inf
        # One slot per token per round: its experts must stay distinct.
        first = np.r_[True, token[1:] != token[:-1]]
        token, slot, scores = token[first], slot[first], scores[first]
        best = scores.argmax(axis=1)
        alive = np.isfinite(scores[np.arange(token.size), best])
        if not alive.any():
            break
        token, slot, best, value = token[alive], slot[alive], best[alive], scores[alive, best[alive]]
        order = np.argsort(-value, kind="stable")
        took = _accept_in_order(best[order], w[token[order]], room)
        experts[token[order][took], slot[order][took]] = best[order][took]
        repaired += int(took.sum())
        if not took.any():
            break
    return experts, repaired


def _fill_spare_topk(
    u: UtilityTable, w: np.ndarray, capacity: np.ndarray, experts: np.ndarray, cand_e: np.ndarray, cand_u: np.ndarray,
    penalty: float, rounds: int = 16,
) -> np.ndarray:
    """Move slots into capacity the auction left unused, where they gain.

    Prices only rise, so an expert can end below capacity at a positive
    price (a coarse phase overshot) and no price rise brings tokens back.
    Each round every token with a shortlisted expert that has room offers to
    replace its worst slot (a dropped one first) by its best such expert that
    it does not use yet; experts take the offers in order of gain while they
    fit. ``cand_e``/``cand_u`` (n, K) are the shortlists and their utilities.
    """
    n, k = experts.shape
    E = capacity.shape[0]
    experts = np.ascontiguousarray(experts, dtype=np.int64).copy()
    wd = np.ascontiguousarray(w, dtype=np.float64)
    worth = slot_utilities(u.values, u.offsets, u.offset_row, experts, -penalty * wd)
    cand_e, cand_u = np.ascontiguousarray(cand_e, dtype=np.int64), np.ascontiguousarray(cand_u, dtype=np.float32)
    for _ in range(rounds):
        room = capacity - slot_load(experts, wd, E)
        open_expert = room >= w.min() - 1e-9
        if not open_expert.any():
            break
        target, slot, gain = spare_offers(cand_e, cand_u, experts, worth, w, room, open_expert)
        movers = np.flatnonzero(gain > 1e-7)
        if movers.size == 0:
            break
        movers = movers[np.argsort(-gain[movers], kind="stable")]
        took = _accept_in_order(target[movers], w[movers], room.copy())
        moved = movers[took]
        experts[moved, slot[moved]] = target[moved]
        worth[moved, slot[moved]] = u.at(moved, target[moved])
    return experts


def topk_dual_bound(u: np.ndarray | UtilityTable, weight: np.ndarray, capacity: np.ndarray, prices: np.ndarray, penalty: float,
                    k: int) -> float:
    """Upper bound on the top-k optimum from any prices ``>= 0`` (weak duality; see module docstring)."""
    return _bound_at(as_table(u), weight, capacity, np.maximum(prices, 0.0), penalty, k)[0]


def _bound_at(table: UtilityTable, weight: np.ndarray, capacity: np.ndarray, p: np.ndarray, penalty: float,
              k: int) -> tuple[float, np.ndarray]:
    """``g(p)`` and the load (E,) the tokens' top-k choices at ``p`` put on each expert (its subgradient's part).

    ``table`` is the utility table; each term is computed in float64 from
    its float32 utilities. The bound still adds 2^-22 of each chosen term's
    operands, a margin for the float32 rounding of ``u`` upstream and of the
    sums, so it stays an upper bound. One pass over the table
    (:func:`~qflow.routing._topk_kernels.bound_terms`), no (n, E) copy.
    """
    p = np.ascontiguousarray(p, dtype=np.float64)
    w = np.ascontiguousarray(weight, dtype=np.float64)
    chunks = 8 * max(1, get_num_threads())
    total, magnitude, load = bound_terms(table.values, table.offsets, table.offset_row, w, p, float(penalty), int(k), chunks)
    rounding = 2.0**-22 * (magnitude + 2.0 * k * float(w.sum()) * float(p.max(initial=0.0)))
    return float(total) + float(np.dot(capacity, p)) + rounding, load


def topk_objective(u: np.ndarray, weight: np.ndarray, experts: np.ndarray, penalty: float) -> float:
    """``sum u`` over placed slots minus ``penalty * w`` per dropped slot."""
    placed = experts >= 0
    rows = np.nonzero(placed)[0]
    gained = float(u[rows, experts[placed]].astype(np.float64).sum())
    return gained - penalty * float((weight[:, None] * ~placed).sum())


def topk_uncapped(affinity: np.ndarray, k: int) -> np.ndarray:
    """Each token's k highest-affinity experts, no capacity (plain top-k gating), shape (n, k)."""
    import torch  # baselines only: the router itself never imports torch

    return torch.topk(torch.from_numpy(np.ascontiguousarray(affinity)), k, dim=1).indices.numpy().astype(np.int64)


def topk_gating(affinity: np.ndarray, weight: np.ndarray, capacity: np.ndarray, k: int) -> np.ndarray:
    """Top-k gating with capacity (GShard/Switch style): overflow slots are dropped.

    Each token asks its k highest-affinity experts; an expert accepts the
    requests in arrival (row) order while they fit.

    Returns
    -------
    ndarray of shape (n, k), int64 -- -1 where a slot was dropped.
    """
    wanted = topk_uncapped(affinity, k)
    took = _accept_in_order(wanted.ravel(), np.repeat(weight.astype(np.float64), k), capacity.astype(np.float64).copy())
    return np.where(took.reshape(wanted.shape), wanted, -1)


def combine_weights(probabilities: np.ndarray, experts: np.ndarray, *, gathered: bool = False) -> np.ndarray:
    """Router probabilities of each token's placed experts, renormalised to sum 1 (0 for dropped slots).

    Parameters
    ----------
    probabilities : (n, E), or (n, k) already gathered per slot when ``gathered``
    experts : (n, k) with -1 for dropped slots

    Returns
    -------
    ndarray of shape (n, k), float64
    """
    placed = experts >= 0
    per_slot = probabilities if gathered else np.take_along_axis(probabilities, np.maximum(experts, 0), axis=1)
    chosen = np.where(placed, per_slot, 0.0).astype(np.float64)
    total = chosen.sum(axis=1, keepdims=True)
    uniform = placed / np.maximum(placed.sum(axis=1, keepdims=True), 1)
    return np.where(total > 0, chosen / np.where(total > 0, total, 1.0), uniform)


def node_limited_mask(scores: np.ndarray, expert_node: np.ndarray, k: int, node_limit: int) -> np.ndarray:
    """Experts each token may use when its k experts must lie on at most ``node_limit`` nodes.

    DeepSeek-V3's rule: score each node by the sum of its best
    ``ceil(k / node_limit)`` expert scores for the token, keep the
    ``node_limit`` best nodes (ties to the lower node), and allow every
    expert on them.

    Parameters
    ----------
    scores : (n, E) float
    expert_node : (E,) int, node index of each expert (nodes without experts are ignored)

    Returns
    -------
    ndarray of shape (n, E), bool
    """
    keep, slot = _rule_nodes(scores, expert_node, k, node_limit)
    return keep[:, slot]


def _rule_nodes(scores: np.ndarray, expert_node: np.ndarray, k: int, node_limit: int) -> tuple[np.ndarray, np.ndarray]:
    """``(keep (n, nodes) bool, slot (E,))``: each token's rule nodes among the nodes hosting experts, numbered by ``slot``."""
    nodes, slot = np.unique(expert_node, return_inverse=True)
    table = np.ascontiguousarray(scores, dtype=np.float32)
    take = int(np.ceil(k / node_limit))
    keep = rule_nodes(table, slot.astype(np.int64), int(nodes.size), take, min(node_limit, int(nodes.size)))
    return keep, slot


def node_limited_table(u: UtilityTable, expert_node: np.ndarray, k: int, node_limit: int, penalty: float,
                       weight_max: float, *, in_place: bool = False) -> UtilityTable:
    """``u`` limited to each token's rule nodes (DeepSeek-V3's rule, as :func:`node_limited_mask`), in one pass.

    Returns the table of ``u`` on each token's rule nodes (picked by ``u``
    itself) and below dropping elsewhere (worth less than ``-penalty * w``
    for every token, whatever the offsets subtract). With ``in_place``,
    ``u.values`` itself is overwritten (at a million tokens x 256 experts a
    new table is 1 GB of fresh memory): the caller must not read it off the
    rule nodes afterwards. ``u.values`` is usually the problem's affinities.
    """
    nodes, slot = np.unique(expert_node, return_inverse=True)
    low = u.extremes[0]
    below = np.float32(low - penalty * (weight_max + 1.0) - 1.0 + min(float(u.offsets.min(initial=0.0)), 0.0))
    out = u.values if in_place else np.empty_like(u.values)
    take = int(np.ceil(k / node_limit))
    rule_masked_rows(u.values, u.offsets, u.offset_row, slot.astype(np.int64), int(nodes.size), take,
                     min(node_limit, int(nodes.size)), below, out)
    return UtilityTable(out, u.offsets, u.offset_row)


def aux_loss_free_routing(scores: np.ndarray, k: int, steps: int, step_size: float) -> np.ndarray:
    """DeepSeek-V3's auxiliary-loss-free balancing, simulated on the same scores (an online baseline).

    Tokens arrive in ``steps`` equal batches in row order. Each token takes
    its k best experts by ``score + bias``; after each batch every expert's
    bias moves by ``step_size`` against its deviation from the batch's mean
    load (down when overloaded, up when underloaded). The bias only selects:
    affinity is still the score. No capacity: whatever overflows stays.

    Parameters
    ----------
    scores : (n, E) router probabilities (affinity)
    k : experts per token
    steps : batches (training or serving steps)
    step_size : bias update per step, in score units (DeepSeek-V3 used 0.001)

    Returns
    -------
    ndarray of shape (n, k), int64
    """
    import torch

    n, E = scores.shape
    bias = np.zeros(E, dtype=np.float32)
    experts = np.empty((n, k), dtype=np.int64)
    table = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))
    for batch in np.array_split(np.arange(n), max(1, min(steps, n))):
        chosen = torch.topk(table[batch[0]:batch[-1] + 1] + torch.from_numpy(bias), k, dim=1).indices.numpy()
        experts[batch] = chosen
        load = np.bincount(chosen.ravel(), minlength=E)
        bias += np.float32(step_size) * np.sign(load.mean() - load).astype(np.float32)
    return experts


def tightened_topk_bound(
    u: np.ndarray | UtilityTable, weight: np.ndarray, capacity: np.ndarray, prices: np.ndarray, penalty: float, k: int,
    value: float, *, steps: int = 8, target_gap: float = 1e-3,
) -> tuple[float, np.ndarray]:
    """Lower the certified bound by projected subgradient steps on the dual, starting from the auction's prices.

    ``g(p)`` (:func:`topk_dual_bound`) is convex with subgradient
    ``capacity - load(p)``, where ``load(p)`` is what the tokens' top-k
    choices at prices ``p`` would put on each expert. Polyak's step
    ``(g - value) / |s|^2`` uses the plan's own objective ``value`` (a lower
    bound on min g). Every iterate is a valid bound (weak duality), so the
    smallest is reported; the plan itself is unchanged. This matters where
    the auction stopped at its round budget with prices still far from the
    dual optimum (many near-ties among experts). The steps stop once the
    gap is within ``target_gap`` (the issue's certification target, 1e-3):
    each is a pass over the whole (n, E) table, and on the benchmark's
    instances steps from a gap already below it seldom lowered it.

    Returns
    -------
    bound : float
    prices : ndarray of shape (E,), the prices that gave it
    """
    table = as_table(u)
    p = np.maximum(prices, 0.0).astype(np.float64)
    best_bound, best_p = np.inf, p
    for _ in range(steps + 1):
        bound, load = _bound_at(table, weight, capacity, p, penalty, k)
        if bound < best_bound:
            best_bound, best_p = bound, p.copy()
        if (best_bound - value) <= target_gap * abs(best_bound):
            break
        sub = capacity - load
        sub = np.where((p <= 0) & (sub > 0), 0.0, sub)  # projection onto p >= 0
        norm = float(sub @ sub)
        if norm <= 1e-18:
            break
        p = np.maximum(p - (bound - value) / norm * sub, 0.0)
    return best_bound, best_p
