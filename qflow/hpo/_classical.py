"""Gaussian-process expected improvement, batch proposals and random search.

Inputs are already valid: unit arrays ``U`` of shape (n, d) snapped to the
space (see :class:`~qflow.hpo._schemas.Space`), and losses ``y`` of shape (n,)
to *minimise*. The GP sees categoricals one-hot (``Space.features``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy.stats import norm

from qflow.hpo._schemas import Space

__all__ = ["expected_improvement", "fit_gp", "candidates", "propose_batch", "propose_gp", "propose_random", "gp_slices"]


def expected_improvement(mu: np.ndarray, sigma: np.ndarray, best: float, xi: float = 0.0) -> np.ndarray:
    """EI for minimisation: ``E[max(best - xi - f, 0)]`` with ``f ~ N(mu, sigma^2)``.

    ``EI = (best - xi - mu) Phi(z) + sigma phi(z)``, ``z = (best - xi - mu) / sigma``;
    where ``sigma`` is 0 it is ``max(best - xi - mu, 0)``, so a point the GP is
    certain about and that is worse than ``best`` has EI exactly 0.

    >>> expected_improvement(np.array([2.0, 0.0]), np.array([0.0, 0.0]), best=1.0).tolist()
    [0.0, 1.0]
    """
    mu, sigma = np.asarray(mu, dtype=float), np.asarray(sigma, dtype=float)
    improvement = best - xi - mu
    out = np.maximum(improvement, 0.0)
    positive = sigma > 1e-12
    z = improvement[positive] / sigma[positive]
    out[positive] = improvement[positive] * norm.cdf(z) + sigma[positive] * norm.pdf(z)
    return np.maximum(out, 0.0)


def fit_gp(F: np.ndarray, y: np.ndarray, kernel: str = "matern52", seed: int = 0, optimize: bool = True, template=None):
    """A scikit-learn GP on features ``F`` (n, p) and losses ``y`` (n,).

    Kernel: ``C * Matern(nu=2.5)`` (or RBF) with one fitted length scale per
    feature, plus a small white-noise term (so the noisy benchmark and
    duplicate points do not break the Cholesky factorisation). With
    ``optimize=False`` the hyperparameters of ``template`` (a fitted GP) are
    reused: that is how pending trials are added to a batch cheaply.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern, WhiteKernel

    if template is not None and not optimize:
        k = template.kernel_
    else:
        base = Matern(length_scale=np.full(F.shape[1], 0.5), length_scale_bounds=(1e-2, 1e2), nu=2.5) if kernel == "matern52" \
            else RBF(length_scale=np.full(F.shape[1], 0.5), length_scale_bounds=(1e-2, 1e2))
        k = ConstantKernel(1.0, (1e-3, 1e3)) * base + WhiteKernel(1e-6, (1e-9, 1e-1))
    gp = GaussianProcessRegressor(kernel=k, normalize_y=True, n_restarts_optimizer=2 if optimize else 0,
                                  optimizer="fmin_l_bfgs_b" if optimize else None, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # bounds hit on tiny data sets: harmless here
        gp.fit(F, y)
    return gp


def candidates(space: Space, rng: np.random.Generator, n: int, centres: np.ndarray, scale: float = 0.08) -> np.ndarray:
    """``n`` uniform points plus Gaussian perturbations of each row of ``centres``, snapped: (m, d).

    Local candidates matter: uniform sampling alone rarely lands close
    enough to a narrow optimum in 6 dimensions.
    """
    parts = [space.sample_unit(rng, n)]
    if len(centres):
        for s in (scale, scale / 4):
            local = np.repeat(centres, max(1, n // (4 * len(centres))), axis=0)
            local = local + rng.normal(0.0, s, local.shape)
            # A categorical moves to a random choice now and then, else stays.
            for j, p in enumerate(space.params):
                if p.kind == "categorical" and p.n_choices > 1:
                    flip = rng.random(len(local)) < 0.15
                    local[flip, j] = rng.integers(0, p.n_choices, flip.sum()) / (p.n_choices - 1)
            parts.append(space.snap(local))
    return np.vstack(parts)


Scorer = Callable[[np.ndarray], np.ndarray]


def propose_batch(space: Space, score_factory: Callable[[np.ndarray, np.ndarray], Scorer], U: np.ndarray, y: np.ndarray,
                  pending: np.ndarray, n: int, rng: np.random.Generator, n_candidates: int) -> np.ndarray:
    """``n`` distinct new points maximising a score, each aware of the ones before it.

    ``score_factory(U_known, pending)`` returns a function scoring candidate
    rows (higher is better); after each pick the point joins ``pending``, so
    the next pick knows about it. Points equal to an observed, pending or
    already chosen point are never proposed. Returns shape (n, d).
    """
    chosen: list[np.ndarray] = []
    taken = set(space.keys(U)) | set(space.keys(pending)) if len(pending) else set(space.keys(U))
    order = np.argsort(y)[:5] if len(y) else np.array([], dtype=int)
    for _ in range(n):
        all_pending = np.vstack([pending, *chosen]) if (len(pending) or chosen) else np.zeros((0, space.dim))
        score = score_factory(U, all_pending)
        C = candidates(space, rng, n_candidates, U[order] if len(order) else np.zeros((0, space.dim)))
        s = score(C)
        # Refine around the best few candidates once with smaller steps.
        top = C[np.argsort(-s)[:8]]
        C2 = candidates(space, rng, 0, top, scale=0.02)
        C, s = np.vstack([C, C2]), np.concatenate([s, score(C2)])
        pick = None
        for i in np.argsort(-s, kind="stable"):
            key = space.keys(C[i : i + 1])[0]
            if key not in taken:
                pick = C[i]
                taken.add(key)
                break
        if pick is None:  # every candidate already taken: a fresh random point not yet seen
            for _attempt in range(1000):
                fresh = space.sample_unit(rng, 1)[0]
                key = space.keys(fresh[None])[0]
                if key not in taken:
                    pick = fresh
                    taken.add(key)
                    break
        if pick is None:
            break  # the space is exhausted (tiny discrete space)
        chosen.append(pick)
    return np.array(chosen).reshape(len(chosen), space.dim)


def propose_gp(space: Space, U: np.ndarray, y: np.ndarray, pending: np.ndarray, n: int, rng: np.random.Generator, *,
               kernel: str = "matern52", strategy: str = "kriging_believer", n_candidates: int = 1024, seed: int = 0) -> np.ndarray:
    """GP-EI batch of ``n`` distinct points: (n, d).

    The GP's hyperparameters are fitted once on the observations; pending
    points then enter with a stand-in value -- the GP's own mean (kriging
    believer) or the best value seen (constant liar) -- and fixed
    hyperparameters, which shrinks the posterior variance around them so
    the next pick goes elsewhere.
    """
    F = space.features(U)
    gp = fit_gp(F, y, kernel, seed)
    best = float(np.min(y))

    def factory(U_known: np.ndarray, pend: np.ndarray) -> Scorer:
        model = gp
        if len(pend):
            Fp = space.features(pend)
            lies = gp.predict(Fp) if strategy == "kriging_believer" else np.full(len(pend), best)
            model = fit_gp(np.vstack([F, Fp]), np.concatenate([y, lies]), kernel, seed, optimize=False, template=gp)

        def score(C: np.ndarray) -> np.ndarray:
            mu, sd = model.predict(space.features(C), return_std=True)
            return expected_improvement(mu, sd, best)
        return score

    return propose_batch(space, factory, U, y, pending, n, rng, n_candidates)


def propose_random(space: Space, U: np.ndarray, pending: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct uniform points not yet observed or pending: (n, d)."""
    taken = set(space.keys(U)) | set(space.keys(pending))
    out = []
    for _ in range(50 * n):
        if len(out) == n:
            break
        point = space.sample_unit(rng, 1)[0]
        key = space.keys(point[None])[0]
        if key not in taken:
            taken.add(key)
            out.append(point)
    return np.array(out).reshape(len(out), space.dim)


def gp_slices(space: Space, U: np.ndarray, y: np.ndarray, at: np.ndarray, kernel: str, seed: int, sign: float,
              n_points: int = 60) -> dict[str, dict[str, list]]:
    """GP posterior mean and standard deviation along each parameter through ``at`` (d,).

    Values are in the objective's own units (``sign`` undoes the flip for
    maximisation). Returns ``{name: {"x": [...], "mean": [...], "std": [...]}}``.
    """
    gp = fit_gp(space.features(U), y, kernel, seed)
    out: dict[str, dict[str, list]] = {}
    for j, p in enumerate(space.params):
        grid = np.linspace(0, 1, p.n_choices if p.kind == "categorical" else n_points)
        if p.kind == "int":
            grid = np.unique(space.snap(np.column_stack([grid] * space.dim))[:, j])
        rows = np.repeat(at[None, :], len(grid), axis=0)
        rows[:, j] = grid
        rows = space.snap(rows)
        mu, sd = gp.predict(space.features(rows), return_std=True)
        out[p.name] = {"x": [p.from_unit(u) for u in rows[:, j]], "mean": (sign * mu).round(8).tolist(), "std": sd.round(8).tolist()}
    return out
