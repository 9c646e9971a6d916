"""QAOA refinement of a routing plan on expert-pair sub-problems.

A block is a pair of experts ``(a, b)`` and up to ``max_qubits`` tokens
currently on either; bit ``x_i = 1`` puts token ``i`` on ``b``, ``0`` on
``a``. Its cost, to be minimised, is::

    C(x) = -sum_i u[i, a](1 - x_i) + u[i, b] x_i  +  rho (L_b(x) - T_b)^2

-- affinity and locality as the local fields, congestion (squared distance of
``b``'s load from its capacity-proportional share of the pair) as the
couplings ``J_ij = rho w_i w_j / 2``. ``rho`` makes one average token of
imbalance cost as much as the median affinity difference in the block, so
neither term swamps the other. Every block is also solved exactly (at most
20 variables), the better of the two feasible answers is kept, and it is
applied only when it lowers the block cost without breaking a capacity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qflow.core.qaoa import IsingModel, QaoaResult, approximation_ratio, bits_of, run_qaoa, solve_exact
from qflow.core.quantum import QuantumBudget, QuantumDevice

__all__ = ["Block", "block_model", "select_blocks", "refine_with_qaoa", "classical_drop_in"]


@dataclass(frozen=True)
class Block:
    """One sub-problem: experts ``a`` and ``b`` and the tokens that may swap."""

    expert_a: int
    expert_b: int
    tokens: np.ndarray  # (m,) token indices


def select_blocks(
    u: np.ndarray, expert: np.ndarray, load: np.ndarray, capacity: np.ndarray, block_size: int, n_blocks: int
) -> list[Block]:
    """Pick disjoint expert pairs with the most contested tokens.

    For each routed token, its runner-up expert and the utility it would lose
    by moving there. Pairs are ranked by how many tokens are nearly
    indifferent between them, weighted towards pairs whose loads are uneven
    (there is balance to gain); each chosen pair gets its ``block_size``
    most indifferent tokens, taken from both sides.
    """
    routed = np.flatnonzero(expert >= 0)
    if routed.size < 2:
        return []
    ur = u[routed].copy()
    cur = expert[routed]
    ur[np.arange(routed.size), cur] = -np.inf
    alt = ur.argmax(axis=1)
    loss = u[routed, cur] - u[routed, alt]
    a, b = np.minimum(cur, alt), np.maximum(cur, alt)
    E = u.shape[1]
    pair = a * E + b
    # Closeness: tokens within the smallest quarter of losses count most.
    scale = np.quantile(loss, 0.25) + 1e-9
    closeness = np.exp(-loss / scale)
    score = np.bincount(pair, weights=closeness, minlength=E * E)
    fill = load / np.maximum(capacity, 1e-9)
    imbalance = np.abs(fill[:, None] - fill[None, :]).ravel()
    score = score * (1.0 + imbalance)
    blocks: list[Block] = []
    used: set[int] = set()
    for p in np.argsort(-score):
        if len(blocks) >= n_blocks or score[p] <= 0:
            break
        ea, eb = int(p // E), int(p % E)
        if ea in used or eb in used:
            continue
        members = np.flatnonzero(pair == p)
        if members.size < 2:
            continue
        take = members[np.argsort(loss[members], kind="stable")[:block_size]]
        blocks.append(Block(ea, eb, np.sort(routed[take])))
        used.update((ea, eb))
    return blocks


def block_model(
    block: Block, u: np.ndarray, weight: np.ndarray, expert: np.ndarray, load: np.ndarray, capacity: np.ndarray
) -> tuple[IsingModel, np.ndarray, Callable[[np.ndarray], bool]]:
    """Ising model of one block, the current bits, and a feasibility check.

    Returns
    -------
    model : IsingModel
        Energy = block cost ``C(x)`` (see module docstring).
    current : ndarray of shape (m,)
        Bits of the plan as it stands (1 = on expert ``b``).
    feasible : callable
        ``feasible(bits)`` is True when both experts stay within capacity.
    """
    t, a, b = block.tokens, block.expert_a, block.expert_b
    w = weight[t].astype(float)
    current = (expert[t] == b).astype(np.int64)
    fixed_a = load[a] - w[current == 0].sum()
    fixed_b = load[b] - w[current == 1].sum()
    total = fixed_a + fixed_b + w.sum()
    target_b = total * capacity[b] / max(capacity[a] + capacity[b], 1e-12)
    gain = u[t, b].astype(float) - u[t, a].astype(float)
    rho = (np.median(np.abs(gain)) + 1e-6) / (w.mean() ** 2)
    dev = fixed_b - target_b
    linear = -gain + rho * (2.0 * dev * w + w**2)
    quadratic = np.triu(2.0 * rho * np.outer(w, w), 1)
    constant = -float(u[t, a].astype(float).sum()) + rho * dev**2
    model = IsingModel.from_qubo(linear, quadratic, constant)

    def feasible(bits: np.ndarray) -> bool:
        moved_b = float(w @ bits)
        return fixed_b + moved_b <= capacity[b] + 1e-9 and fixed_a + (w.sum() - moved_b) <= capacity[a] + 1e-9

    return model, current, feasible


def classical_drop_in(
    model: IsingModel,
    layers: int,
    device: QuantumDevice,
    budget: QuantumBudget,
    *,
    warm_bits: np.ndarray | None = None,
    max_steps: int = 40,
    tol: float = 1e-3,
    patience: int = 5,
    stepsize: float = 0.1,
    seed: int = 0,
) -> QaoaResult:
    """Same signature as :func:`~qflow.core.qaoa.run_qaoa`, no circuit: exact enumeration.

    What the ``simulator`` toggle swaps in, so the rest of the pipeline runs
    unchanged where a quantum simulator must not be used.
    """
    bits, best, _ = solve_exact(model)
    return QaoaResult(bits=bits, energy=best, expectation_history=[best], steps=0, circuits_run=0,
                      probability=1.0, angles=np.zeros((2, layers)), n_qubits=model.n)


def _best_feasible(model: IsingModel, feasible: Callable[[np.ndarray], bool]) -> tuple[np.ndarray | None, float]:
    """Exact best feasible bitstring of a block (enumeration, <= 20 bits)."""
    energies = model.energies()
    for idx in np.argsort(energies, kind="stable")[:4096]:
        bits = bits_of(int(idx), model.n)
        if feasible(bits):
            return bits, float(energies[idx])
    return None, float("inf")


def refine_with_qaoa(
    u: np.ndarray,
    weight: np.ndarray,
    expert: np.ndarray,
    capacity: np.ndarray,
    *,
    layers: int,
    block_size: int,
    n_blocks: int,
    warm_start: bool,
    device: QuantumDevice,
    budget: QuantumBudget,
    max_steps: int,
    seed: int,
    solver: Callable[..., QaoaResult] = run_qaoa,
) -> tuple[np.ndarray, list[dict]]:
    """Improve ``expert`` block by block; returns the new assignment and per-block reports.

    Raises
    ------
    QuantumUnavailableError
        From the budget checks or the simulator; the caller falls back.
    """
    expert = expert.copy()
    E = capacity.shape[0]
    routed = expert >= 0
    load = np.bincount(expert[routed], weights=weight[routed], minlength=E)
    reports: list[dict] = []
    for k, block in enumerate(select_blocks(u, expert, load, capacity, block_size, n_blocks)):
        model, current, feasible = block_model(block, u, weight, expert, load, capacity)
        _, ground, worst = solve_exact(model)
        exact_bits, exact_cost = _best_feasible(model, feasible)
        result = solver(model, layers, device, budget, warm_bits=current if warm_start else None,
                        max_steps=max_steps, seed=seed + k)
        qaoa_feasible = feasible(result.bits)
        current_cost = model.energy(current)
        candidates = [(exact_cost, "exact", exact_bits)]
        if qaoa_feasible:
            candidates.insert(0, (result.energy, "qaoa", result.bits))  # QAOA wins ties
        best_cost, source, best_bits = min(candidates, key=lambda c: c[0])
        applied = best_bits is not None and best_cost < current_cost - 1e-9
        if applied:
            t = block.tokens
            new = np.where(best_bits == 1, block.expert_b, block.expert_a)
            np.subtract.at(load, expert[t], weight[t])
            np.add.at(load, new, weight[t])
            expert[t] = new
        reports.append({
            "experts": [int(block.expert_a), int(block.expert_b)],
            "qubits": model.n,
            "ratio": approximation_ratio(worst, result.energy, ground),
            "qaoa_cost": result.energy,
            "exact_cost": ground,
            "exact_feasible_cost": exact_cost if exact_bits is not None else None,
            "current_cost": current_cost,
            "worst_cost": worst,
            "qaoa_feasible": bool(qaoa_feasible),
            "qaoa_probability": result.probability,
            "steps": result.steps,
            "circuits": result.circuits_run,
            "history": result.expectation_history,
            "applied": bool(applied),
            "applied_from": source if applied else None,
            "tokens_moved": int((best_bits != current).sum()) if applied else 0,
        })
    return expert, reports
