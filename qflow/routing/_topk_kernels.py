"""Compiled row kernels of the top-k router (numba): selection, choice and the dual bound's terms.

Each kernel makes one pass over a token's row and keeps its ``m`` best
values in a small sorted buffer (a value enters only if it beats the
buffer's worst, so a row of 256 experts costs about 256 comparisons).
``torch.topk`` sorts a copy of the whole ``u - w * price`` table instead,
which at a million tokens x 256 experts dominated the router and the bound.
Rows are independent, so they run in parallel (``prange``) on numba's
threads. Values are computed in float64 from the float32 utilities. Exact
ties go to the column met first, and :func:`dense_topk` starts each row at
its own column; :func:`choose_rows` breaks them by a pseudo-random key per
(token, expert) instead (see there why).

Compiled on first use and cached on disk (:func:`qflow.core.compiled.kernel`); see README
(routing) for the one-off compile time.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from qflow.core.compiled import kernel

__all__ = ["dense_topk", "choose_rows", "bound_terms", "rule_nodes", "rule_masked_rows", "utility_extremes", "spare_offers",
           "sort_slots", "slot_load", "slot_utilities", "slot_counts", "rows_touching", "slot_traffic",
           "shed_thresholds"]


@kernel(inline="always")
def _insert(values: np.ndarray, index: np.ndarray, m: int, v: float, e: int) -> None:
    """Put ``v`` (column ``e``) into the descending buffer of ``m`` values, dropping its last; caller checks ``v > values[m-1]``."""
    s = m - 1
    while s > 0 and values[s - 1] < v:
        values[s] = values[s - 1]
        index[s] = index[s - 1]
        s -= 1
    values[s] = v
    index[s] = e


@kernel(inline="always")
def _kth_largest(buffer: np.ndarray, kth: int) -> float:
    """The ``kth`` largest value of ``buffer`` (1-based), by quickselect; ``buffer`` is reordered."""
    lo, hi = 0, buffer.shape[0] - 1
    target = kth - 1
    while lo < hi:
        a, b, c = buffer[lo], buffer[(lo + hi) >> 1], buffer[hi]
        pivot = max(min(a, b), min(max(a, b), c))  # median of three
        i, j = lo, hi
        while i <= j:
            while buffer[i] > pivot:
                i += 1
            while buffer[j] < pivot:
                j -= 1
            if i <= j:
                buffer[i], buffer[j] = buffer[j], buffer[i]
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            return buffer[target]
    return buffer[target]


@kernel(inline="always")
def _row_floor(values: np.ndarray, m: int, groups: np.ndarray) -> float:
    """A value the row's ``m``-th largest is at least: the ``m``-th largest of the maxima of ``groups.size`` column groups.

    Needs ``m <= groups.size <= values.size``; ``groups`` is scratch. At
    least ``m`` groups reach it, so at least ``m`` values do. Anything below
    it can never be among the row's ``m`` best, so the selection scan skips it
    without a comparison against its buffer. Groups are strided (column
    ``e`` in group ``e % groups.size``), so each spans every node: with a
    node limit, whole nodes sit at the masked value, and contiguous groups
    there would pull the floor down to it.
    """
    E = values.shape[0]
    G = groups.shape[0]
    for g in range(G):
        top = -np.inf
        for e in range(g, E, G):
            if values[e] > top:
                top = values[e]
        groups[g] = top
    return _kth_largest(groups, m)


@kernel(parallel=True)
def dense_topk(u, offsets, offset_row, w, prices, rows, m, out_u, out_index, out_floor):  # pragma: no cover - compiled
    """For each ``t = rows[j]``: the ``m`` largest ``u[t, e] - w[t] * prices[e]``, descending, into ``out_*[j]``.

    The utility is ``u[t, e] - offsets[offset_row[t], e]`` in float32 (see
    ``qflow.routing._utility.UtilityTable``): u (n, E) and offsets (R, E)
    float32, offset_row (n,) int64; w (n,) float; prices (E,) float64; rows
    (r,) int64; ``m <= E``. Writes out_index (r, m) int64, the experts;
    out_u (r, m) float32, their utilities; out_floor (r,) float64, each row's
    m-th value. Each row's values are computed into a buffer first; only
    those at or above :func:`_row_floor` are offered to the sorted buffer,
    which leaves the result as the plain scan's (the skipped ones could not
    stay in it).
    """
    E = u.shape[1]
    r = rows.shape[0]
    blocks = min(r, 64)
    for b in prange(blocks):
        row = np.empty(E)
        values = np.empty(m)
        groups = np.empty(min(E, max(m, 32)))
        for j in range(b * r // blocks, (b + 1) * r // blocks):
            t = rows[j]
            wt = np.float64(w[t])
            shift = offsets[offset_row[t]]
            for e in range(E):
                row[e] = np.float64(u[t, e] - shift[e]) - wt * prices[e]
            floor = _row_floor(row, m, groups)
            index = out_index[j]
            for s in range(m):
                values[s] = -np.inf
                index[s] = -1
            # Scan from a token-dependent column: among tied experts (many near-zero probabilities) each token
            # then lists a different few, rather than every token the lowest-numbered ones.
            start = (t * 40503) % E
            for i in range(E):
                e = start + i
                if e >= E:
                    e -= E
                v = row[e]
                if v >= floor and v > values[m - 1]:
                    _insert(values, index, m, v, e)
            for s in range(m):
                e = index[s]
                out_u[j, s] = u[t, e] - shift[e] if e >= 0 else -np.inf
            out_floor[j] = values[m - 1]


@kernel(inline="always")
def _tie_key(t: int, e: int) -> int:
    """A pseudo-random order of (token, expert) pairs, used only to break exact ties."""
    return ((t * 2654435761) ^ (e * 2246822519)) & 0xFFFFFFFF


@kernel(parallel=True)
def choose_rows(cand_e, cand_u, w, prices, drop_value, rows, k, drop_expert, chosen, margin, top, kth):  # pragma: no cover
    """Each token's k best candidates at ``prices`` (see ``_topk._Choice``), written in place for ``rows``.

    cand_e (n, c) int64, cand_u (n, c) float32, w (n,), prices (E + 1,)
    float64, drop_value (n,) float64, rows (r,) int64. Writes chosen (n, k)
    int64 (``drop_expert`` where dropping the slot is worth more), margin
    (n, k) float64 (a choice's value over the best unchosen option), top
    (n, k + 1) int64 (the experts of the k + 1 best values) at those rows,
    and kth (r,) float64 (each row's k-th best value).

    Exact ties (experts of equal utility and price, common where many
    probabilities are ~0) go by a pseudo-random key per (token, expert):
    resolving them the same way for every token sends all of them to one
    expert, which then sheds them to its twin and back, a round at a time.
    """
    c = cand_e.shape[1]
    m = k + 1
    r = rows.shape[0]
    blocks = min(r, 64)
    for b in prange(blocks):
        values = np.empty(m)
        index = np.empty(m, dtype=np.int64)
        keys = np.empty(m, dtype=np.int64)
        for j in range(b * r // blocks, (b + 1) * r // blocks):
            t = rows[j]
            wt = np.float64(w[t])
            for s in range(m):
                values[s] = -np.inf
                index[s] = 0
                keys[s] = -1
            for s in range(c):
                v = np.float64(cand_u[t, s]) - wt * prices[cand_e[t, s]]
                if v < values[m - 1]:
                    continue
                key = _tie_key(t, cand_e[t, s])
                if v == values[m - 1] and key <= keys[m - 1]:
                    continue
                q = m - 1
                while q > 0 and (values[q - 1] < v or (values[q - 1] == v and keys[q - 1] < key)):
                    values[q] = values[q - 1]
                    index[q] = index[q - 1]
                    keys[q] = keys[q - 1]
                    q -= 1
                values[q] = v
                index[q] = s
                keys[q] = key
            runner_up = max(values[k], drop_value[t])
            for s in range(m):
                top[t, s] = cand_e[t, index[s]]
            for s in range(k):
                gap = values[s] - runner_up
                chosen[t, s] = top[t, s] if gap >= 0 else drop_expert
                margin[t, s] = abs(gap)
            kth[j] = values[k - 1]


@kernel(parallel=True)
def bound_terms(u, offsets, offset_row, w, prices, penalty, k, chunks):  # pragma: no cover - compiled
    """The dual function's token terms at ``prices``: ``(sum, sum of |terms|, load (E,))``.

    Each token contributes its k best ``max(u[t, e] - w[t] * prices[e],
    -penalty * w[t])``, the utility read as in :func:`dense_topk`; ``load`` is the complexity those choices put on each
    expert (slots worth no more than dropping are dropped, not loaded).
    ``chunks`` row blocks run in parallel, each with its own load row. Only
    values at or above :func:`_row_floor` are offered to the sorted buffer.
    """
    n, E = u.shape
    sums = np.zeros(chunks)
    magnitude = np.zeros(chunks)
    loads = np.zeros((chunks, E))
    for c in prange(chunks):
        values = np.empty(k)
        index = np.empty(k, dtype=np.int64)
        row = np.empty(E)
        groups = np.empty(min(E, max(k, 32)))
        for t in range(c * n // chunks, (c + 1) * n // chunks):
            wt = np.float64(w[t])
            shift = offsets[offset_row[t]]
            for s in range(k):
                values[s] = -np.inf
                index[s] = -1
            for e in range(E):
                row[e] = np.float64(u[t, e] - shift[e]) - wt * prices[e]
            floor = _row_floor(row, k, groups)
            for e in range(E):
                v = row[e]
                if v >= floor and v > values[k - 1]:
                    _insert(values, index, k, v, e)
            drop = -penalty * wt
            for s in range(k):
                if values[s] >= drop:
                    sums[c] += values[s]
                    magnitude[c] += abs(values[s])
                    loads[c, index[s]] += wt
                else:
                    sums[c] += drop
                    magnitude[c] += abs(drop)
    return sums.sum(), magnitude.sum(), loads.sum(axis=0)


@kernel(inline="always")
def _row_nodes(row, slot, take, best, node_score, ranked, ranked_node):  # pragma: no cover - compiled
    """DeepSeek-V3's node choice for one token: its ``ranked_node.size`` best nodes into ``ranked_node``.

    row (E,), the token's scores; slot (E,) int64, the node (0..nodes-1) of
    each expert; best (nodes, take), node_score (nodes,) and ranked
    (node_limit,) are scratch. A node scores the sum of its ``take`` best
    expert scores (fewer when it has fewer experts); ties go to the lower node.
    """
    E = row.shape[0]
    n_nodes = node_score.shape[0]
    node_limit = ranked.shape[0]
    best[:] = -np.inf
    for e in range(E):
        v = np.float64(row[e])
        g = slot[e]
        if v > best[g, take - 1]:
            s = take - 1
            while s > 0 and best[g, s - 1] < v:
                best[g, s] = best[g, s - 1]
                s -= 1
            best[g, s] = v
    for g in range(n_nodes):
        total = 0.0
        for s in range(take):
            if np.isfinite(best[g, s]):
                total += best[g, s]
        node_score[g] = total
    ranked[:] = -np.inf
    ranked_node[:] = 0
    for g in range(n_nodes):
        if node_score[g] > ranked[node_limit - 1]:
            _insert(ranked, ranked_node, node_limit, node_score[g], g)


@kernel(inline="always")
def _node_scratch(n_nodes, take, node_limit):  # pragma: no cover - compiled
    """Per-thread scratch of :func:`_row_nodes`: ``(best, node_score, ranked, ranked_node)``."""
    return np.empty((n_nodes, take)), np.empty(n_nodes), np.empty(node_limit), np.empty(node_limit, dtype=np.int64)


@kernel(parallel=True)
def rule_nodes(scores, slot, n_nodes, take, node_limit):  # pragma: no cover - compiled
    """Each token's rule nodes (:func:`_row_nodes`): ``keep`` (n, n_nodes) bool, True on its ``node_limit`` best."""
    n = scores.shape[0]
    keep = np.zeros((n, n_nodes), dtype=np.bool_)
    blocks = min(n, 64)
    for b in prange(blocks):
        best, node_score, ranked, ranked_node = _node_scratch(n_nodes, take, node_limit)
        for t in range(b * n // blocks, (b + 1) * n // blocks):
            _row_nodes(scores[t], slot, take, best, node_score, ranked, ranked_node)
            for s in range(node_limit):
                keep[t, ranked_node[s]] = True
    return keep


@kernel(parallel=True)
def rule_masked_rows(u, offsets, offset_row, slot, n_nodes, take, node_limit, below, out):  # pragma: no cover - compiled
    """``out`` (n, E) float32 = ``u`` on each token's rule nodes, else ``below``.

    Each token's rule nodes (:func:`_row_nodes`) are picked by its utility
    ``u[t, e] - offsets[offset_row[t], e]`` (float32, as in
    :func:`dense_topk`); ``out`` keeps ``u`` itself there, so the offsets
    still apply to it. One pass over the table: each row's nodes are picked,
    then the row is written while it is still in cache. ``out`` may be ``u``
    itself (a row is read whole before it is written).
    """
    n, E = u.shape
    blocks = min(n, 64)
    for b in prange(blocks):
        best, node_score, ranked, ranked_node = _node_scratch(n_nodes, take, node_limit)
        kept = np.empty(n_nodes, dtype=np.bool_)
        row = np.empty(E, dtype=np.float32)
        for t in range(b * n // blocks, (b + 1) * n // blocks):
            shift = offsets[offset_row[t]]
            for e in range(E):
                row[e] = u[t, e] - shift[e]
            _row_nodes(row, slot, take, best, node_score, ranked, ranked_node)
            kept[:] = False
            for s in range(node_limit):
                kept[ranked_node[s]] = True
            for e in range(E):
                out[t, e] = u[t, e] if kept[slot[e]] else below


@kernel(parallel=True)
def utility_extremes(u, offsets, offset_row):  # pragma: no cover - compiled
    """``(min, max)`` over all ``u[t, e] - offsets[offset_row[t], e]`` (float32, as in :func:`dense_topk`)."""
    n, E = u.shape
    blocks = max(1, min(n, 64))
    lows = np.full(blocks, np.inf)
    highs = np.full(blocks, -np.inf)
    for b in prange(blocks):
        low, high = np.inf, -np.inf
        for t in range(b * n // blocks, (b + 1) * n // blocks):
            shift = offsets[offset_row[t]]
            for e in range(E):
                v = np.float64(u[t, e] - shift[e])
                low = min(low, v)
                high = max(high, v)
        lows[b] = low
        highs[b] = high
    return lows.min(), highs.max()


@kernel(parallel=True)
def spare_offers(cand_e, cand_u, experts, worth, w, room, open_expert):  # pragma: no cover - compiled
    """Each token's best move into an expert with room (see ``_topk._fill_spare_topk``).

    cand_e (n, K) int64 and cand_u (n, K) float32, the shortlists; experts
    (n, k) int64 (-1 dropped) and worth (n, k) float64, the current slots
    and their values; w (n,); room (E,) float64; open_expert (E,) bool.
    Returns ``(target (n,) int64, slot (n,) int64, gain (n,) float64)``:
    the unused listed expert with room for the token worth the most, the
    token's worst slot it would replace, and the gain (-inf: no move).
    Tokens listing no more open experts worth more than their worst slot
    than they already use cannot gain and are skipped cheaply.
    """
    n, K = cand_e.shape
    k = experts.shape[1]
    target = np.full(n, -1, dtype=np.int64)
    slot = np.zeros(n, dtype=np.int64)
    gain = np.full(n, -np.inf)
    for t in prange(n):
        worst = 0
        for s in range(1, k):
            if worth[t, s] < worth[t, worst]:
                worst = s
        floor = worth[t, worst] + 1e-7
        listed = 0
        for c in range(K):
            if open_expert[cand_e[t, c]] and cand_u[t, c] > floor:
                listed += 1
        in_use = 0
        for s in range(k):
            if experts[t, s] >= 0 and open_expert[experts[t, s]] and worth[t, s] > floor:
                in_use += 1
        if listed <= in_use:
            continue
        best_value = -np.inf
        best = -1
        for c in range(K):
            e = cand_e[t, c]
            if room[e] < w[t] - 1e-9:
                continue
            used = False
            for s in range(k):
                if experts[t, s] == e:
                    used = True
            if not used and cand_u[t, c] > best_value:
                best_value = cand_u[t, c]
                best = c
        if best >= 0:
            target[t] = cand_e[t, best]
            slot[t] = worst
            gain[t] = np.float64(best_value) - worth[t, worst]
    return target, slot, gain


@kernel(parallel=True)
def sort_slots(u, offsets, offset_row, experts):  # pragma: no cover - compiled
    """Each row of ``experts`` (n, k) int64 in place, best utility first (read as in :func:`dense_topk`); dropped slots (-1) last; ties keep their order."""
    n, k = experts.shape
    for t in prange(n):
        values = np.empty(k)
        shift = offsets[offset_row[t]]
        for s in range(k):
            e = experts[t, s]
            values[s] = np.float64(u[t, e] - shift[e]) if e >= 0 else -np.inf
        for s in range(1, k):
            v, e = values[s], experts[t, s]
            q = s
            while q > 0 and values[q - 1] < v:
                values[q] = values[q - 1]
                experts[t, q] = experts[t, q - 1]
                q -= 1
            values[q] = v
            experts[t, q] = e


@kernel()
def slot_load(experts, w, n_experts):  # pragma: no cover - compiled
    """Load (n_experts,) float64 the placed slots of ``experts`` (n, k) int64 (-1 dropped) put on each expert.

    Each slot of token ``t`` weighs ``w[t]``. Summed serially in row-major
    slot order, the order of ``np.bincount(experts[placed],
    weights=np.repeat(w, k)[placed.ravel()])``, so the sums are the same to
    the bit, without that expression's (n * k) masks and copies (fresh pages
    at a million tokens, every round of the spare-capacity pass).
    """
    n, k = experts.shape
    load = np.zeros(n_experts)
    for t in range(n):
        for s in range(k):
            e = experts[t, s]
            if e >= 0:
                load[e] += w[t]
    return load


@kernel(parallel=True)
def slot_utilities(u, offsets, offset_row, experts, dropped):  # pragma: no cover - compiled
    """(n, k) float64: each slot's utility (read as in :func:`dense_topk`), ``dropped[t]`` where the slot is -1.

    u (n, E) and offsets (R, E) float32, offset_row (n,) int64, experts (n, k)
    int64, dropped (n,) float64. The same values as gathering ``u`` at the
    slots and casting to float64, without the (n, k) index arrays.
    """
    n, k = experts.shape
    out = np.empty((n, k))
    for t in prange(n):
        shift = offsets[offset_row[t]]
        for s in range(k):
            e = experts[t, s]
            out[t, s] = np.float64(u[t, e] - shift[e]) if e >= 0 else dropped[t]
    return out


@kernel()
def slot_counts(experts, source_node, expert_node):  # pragma: no cover - compiled
    """Integer figures of a top-k assignment: ``(tokens with every slot placed, dropped slots, placed slots of
    tokens of known source, the cross-node ones among those, sum and max over tokens of the nodes they use)``.

    experts (n, k) int64 (-1 dropped); source_node (n,) int64 (-1 unknown);
    expert_node (E,) int64.
    """
    n, k = experts.shape
    nodes = np.empty(k, dtype=np.int64)
    full = dropped = known = cross = distinct_sum = distinct_max = 0
    for t in range(n):
        used = 0
        short = False
        for s in range(k):
            e = experts[t, s]
            if e < 0:
                short = True
                dropped += 1
                continue
            node = expert_node[e]
            if source_node[t] >= 0:
                known += 1
                cross += node != source_node[t]
            seen = False
            for q in range(used):
                seen = seen or nodes[q] == node
            if not seen:
                nodes[used] = node
                used += 1
        full += not short
        distinct_sum += used
        distinct_max = max(distinct_max, used)
    return full, dropped, known, cross, distinct_sum, distinct_max


@kernel()
def rows_touching(top, raised):  # pragma: no cover - compiled
    """Rows of ``top`` (n, c) int64 holding an expert whose ``raised`` (E + 1,) flag is set, ascending."""
    n, c = top.shape
    hit = np.zeros(n, dtype=np.bool_)
    count = 0
    for t in range(n):
        for s in range(c):
            if raised[top[t, s]]:
                hit[t] = True
                count += 1
                break
    rows = np.empty(count, dtype=np.int64)
    j = 0
    for t in range(n):
        if hit[t]:
            rows[j] = t
            j += 1
    return rows


@kernel()
def slot_traffic(experts, source_node, expert_node, n_nodes):  # pragma: no cover - compiled
    """(n_nodes, n_nodes) int64: placed slots from each source node (tokens of known source) to each expert's node."""
    n, k = experts.shape
    traffic = np.zeros((n_nodes, n_nodes), dtype=np.int64)
    for t in range(n):
        source = source_node[t]
        if source < 0:
            continue
        for s in range(k):
            e = experts[t, s]
            if e >= 0:
                traffic[source, expert_node[e]] += 1
    return traffic


@kernel(inline="always")
def _weighted_select(values, weights, lo, hi, target):  # pragma: no cover - compiled
    """The value ``v`` of ``values[lo:hi]`` with weight below ``v`` < ``target`` <= weight at or below ``v``.

    (The value at which the running weight of the ascending order first
    reaches ``target``; needs ``0 < target <= weights[lo:hi].sum()``.)
    Quickselect with a three-way partition; reorders both arrays in the range.
    """
    while True:
        a, b, c = values[lo], values[(lo + hi - 1) >> 1], values[hi - 1]
        pivot = max(min(a, b), min(max(a, b), c))
        less, i, more = lo, lo, hi  # [lo, less) < pivot, [less, i) == pivot, [more, hi) > pivot
        below = 0.0
        equal = 0.0
        while i < more:
            v = values[i]
            if v < pivot:
                values[i], values[less] = values[less], v
                weights[i], weights[less] = weights[less], weights[i]
                below += weights[less]
                less += 1
                i += 1
            elif v > pivot:
                more -= 1
                values[i], values[more] = values[more], v
                weights[i], weights[more] = weights[more], weights[i]
            else:
                equal += weights[i]
                i += 1
        if target <= below:
            hi = less
        elif target <= below + equal or more >= hi:
            return pivot
        else:
            target -= below + equal
            lo = more


@kernel(parallel=True)
def shed_thresholds(chosen, margin, w, over, excess, values, weights):  # pragma: no cover - compiled
    """Per overloaded expert, the margin per unit weight up to which its smallest-margin slots cover its excess.

    chosen (n, k) int64 and margin (n, k) float64, the auction's choices;
    w (n,) float64; over (E + 1,) bool and excess (E + 1,) float64; values
    and weights (n * k,) float64, scratch reused across rounds. Returns
    (E + 1,) float64: for an overloaded expert, the margin per weight of the
    last slot to shed when its slots leave in ascending margin order until
    the weight gone reaches ``excess - 1e-9`` (the rule of
    ``_classical._grouped_shed``, found by selection instead of a sort); NaN
    elsewhere.
    """
    n, k = chosen.shape
    E1 = over.shape[0]
    chunks = 16
    # Counted, then copied, by row chunks in parallel; chunk c's slots of expert e go after chunk c - 1's,
    # so each expert's segment holds its slots in row order.
    count = np.zeros((chunks, E1), dtype=np.int64)
    for c in prange(chunks):
        for t in range(c * n // chunks, (c + 1) * n // chunks):
            for s in range(k):
                if over[chosen[t, s]]:
                    count[c, chosen[t, s]] += 1
    start = np.zeros(E1 + 1, dtype=np.int64)
    fill = np.empty((chunks, E1), dtype=np.int64)
    for e in range(E1):
        start[e + 1] = start[e]
        for c in range(chunks):
            fill[c, e] = start[e + 1]
            start[e + 1] += count[c, e]
    for c in prange(chunks):
        for t in range(c * n // chunks, (c + 1) * n // chunks):
            for s in range(k):
                e = chosen[t, s]
                if over[e]:
                    values[fill[c, e]] = margin[t, s] / w[t]
                    weights[fill[c, e]] = w[t]
                    fill[c, e] += 1
    threshold = np.full(E1, np.nan)
    for e in prange(E1):
        if over[e] and start[e + 1] > start[e]:
            threshold[e] = _weighted_select(values, weights, start[e], start[e + 1], excess[e] - 1e-9)
    return threshold
