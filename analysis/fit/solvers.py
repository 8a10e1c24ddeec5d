"""Solvers the fits share, and that ``analysis.predict`` and ``analysis.transfer`` reuse for their own
joint fits: Chinchilla Approach 3 in the log-sum-exp parametrisation (objective, grid, L-BFGS multistart,
parameters), the logistic loss -> metric least squares, the one bootstrap loop (multinomial weights, refit
per resample, failed refits dropped and counted), residual statistics, and the single-thread BLAS guard.

Convergence: an L-BFGS-B start that stops at its iteration limit, or a least-squares start that stops at its
evaluation limit, has not converged and is never taken as an optimum; a resample none of whose starts
converged is a failed resample (counted, left out of the intervals)."""

from __future__ import annotations

import functools
import itertools
from typing import Any

import numpy as np
from scipy.optimize import least_squares, minimize

from analysis import laws
from analysis.verdict import SearchBound


def single_threaded(fn):
    """Run ``fn`` with BLAS limited to one thread. scipy's L-BFGS-B calls BLAS on 5x5 problems; a
    multi-threaded OpenBLAS on a busy machine makes each call ~50x slower (measured: 15 s vs 0.3 s for one
    Approach 3 fit on 2 shared cores)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return fn(*args, **kwargs)

    return wrapper


def bootstrap_weights(rng: np.random.Generator, n: int) -> np.ndarray:
    """A bootstrap resample of n points expressed as integer weights (multinomial counts)."""
    return rng.multinomial(n, np.full(n, 1.0 / n)).astype(float)


def bootstrap_draws(n_boot: int, seed: int, refit) -> tuple[list, int]:
    """The bootstrap loop: ``n_boot`` replicates from one ``np.random.default_rng(seed)`` stream, each
    ``refit(rng)`` (draws its resample from ``rng`` and refits; None when the refit did not converge or the
    resample cannot support the fit). Returns (the converged draws, how many failed). ``([], 0)`` when
    ``n_boot`` is 0."""
    if n_boot <= 0:
        return [], 0
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        r = refit(rng)
        if r is not None:
            out.append(r)
    return out, n_boot - len(out)


def bootstrap_refit(
    n: int, n_boot: int, seed: int, refit, *, x=None, draw=None
) -> tuple[dict[str, np.ndarray], int]:
    """Bootstrap draws per parameter: ``refit(resample) -> params or None`` on ``n`` points resampled with
    replacement, the resample being multiplicity weights (``bootstrap_weights``) unless ``draw(rng)`` makes
    another kind (whole curves, resampling within groups). With ``x``, weight resamples with fewer than 3
    distinct x fail (single-variable laws). Returns (draws per parameter of the converged refits, how many
    resamples failed); the draws are ``{}`` when ``n_boot`` is 0 or every refit failed."""

    def one(rng):
        s = draw(rng) if draw is not None else bootstrap_weights(rng, n)
        if x is not None and len(np.unique(x[s > 0])) < 3:
            return None
        return refit(s)

    ps, n_failed = bootstrap_draws(n_boot, seed, one)
    return {k: np.array([p[k] for p in ps]) for k in (ps[0] if ps else {})}, n_failed


def residual_stats(r: np.ndarray, space: str) -> dict[str, Any]:
    """rmse / mae / max_abs of residuals ``r`` and the ``space`` they are in ("log", "linear", ...)."""
    return {
        "space": space,
        "rmse": float(np.sqrt(np.mean(r**2))),
        "mae": float(np.mean(np.abs(r))),
        "max_abs": float(np.max(np.abs(r))),
    }


# ----------------------------------------------------------------------------------------------------------
# Chinchilla Approach 3

# Hoffmann et al. 2022 (App. D.2) and Besiroglu et al. 2024 use this grid of initialisations:
# alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25} (4500 starts).
A3_GRID = np.array(
    list(
        itertools.product(
            np.arange(0, 30, 5.0),  # a = log A
            np.arange(0, 30, 5.0),  # b = log B
            np.arange(-1, 1.5, 0.5),  # e = log E
            np.arange(0, 2.5, 0.5),  # alpha
            np.arange(0, 2.5, 0.5),  # beta
        )
    )
)
# Coarse grid for bootstrap resamples: 2^5 = 32 points evaluated, the best refined along with the full-data optimum.
A3_GRID_COARSE = np.array(
    list(itertools.product([5.0, 15.0], [5.0, 15.0], [-0.5, 0.5], [0.3, 1.0], [0.3, 1.0]))
)
A3_BOUNDS = [(-20.0, 80.0), (-20.0, 80.0), (-10.0, 10.0), (0.0, 5.0), (0.0, 5.0)]
# the same bounds per parameter of ``a3_params``, for the verdict (A, B, E are searched in log)
A3_PARAM_BOUNDS = {
    "A": SearchBound(np.exp(A3_BOUNDS[0][0]), np.exp(A3_BOUNDS[0][1]), log=True),
    "B": SearchBound(np.exp(A3_BOUNDS[1][0]), np.exp(A3_BOUNDS[1][1]), log=True),
    "E": SearchBound(np.exp(A3_BOUNDS[2][0]), np.exp(A3_BOUNDS[2][1]), log=True),
    "alpha": SearchBound(*A3_BOUNDS[3]),
    "beta": SearchBound(*A3_BOUNDS[4]),
}
LBFGS_OPTIONS = {"maxiter": 3000, "ftol": 1e-15, "gtol": 1e-12, "maxcor": 20}
# bootstrap refits start next to their optimum; these tolerances reach the same objective to ~1e-15 on the
# Chinchilla-like check with ~30% fewer evaluations
LBFGS_BOOT = {"maxiter": 1000, "ftol": 1e-10, "gtol": 1e-8, "maxcor": 20}


def _lse3(t1, t2, t3):
    m = np.maximum(np.maximum(t1, t2), t3)
    e1, e2, e3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(t3 - m)
    s = e1 + e2 + e3
    return m + np.log(s), e1 / s, e2 / s, e3 / s


def a3_objective(theta, logN, logD, logL, delta=1e-3, w=None):
    """Sum of Huber(delta) of log-sum-exp(a - alpha logN, b - beta logD, e) - log L, and its gradient.

    theta = (a, b, e, alpha, beta) with A = exp(a), B = exp(b), E = exp(e). ``w`` weights the points
    (bootstrap counts). Returns (value, grad[5], dvalue/dlogD per point).
    """
    a, b, e, alpha, beta = theta
    lse, w1, w2, w3 = _lse3(a - alpha * logN, b - beta * logD, np.full_like(logN, e))
    r = lse - logL
    ar = np.abs(r)
    h = np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))
    g = np.clip(r, -delta, delta)
    if w is not None:
        h = h * w
        g = g * w
    gw1, gw2 = g * w1, g * w2
    grad = np.array([gw1.sum(), gw2.sum(), (g * w3).sum(), -(gw1 * logN).sum(), -(gw2 * logD).sum()])
    return h.sum(), grad, -beta * gw2


def a3_grid_values(thetas, logN, logD, logL, delta=1e-3, w=None) -> np.ndarray:
    """Objective at many starting points at once: thetas (G, 5) -> (G,). Vectorised over the grid."""
    a, b, e, al, be = (thetas[:, i : i + 1] for i in range(5))
    t1 = a - al * logN[None]
    t2 = b - be * logD[None]
    t3 = np.broadcast_to(e, t1.shape)
    m = np.maximum(np.maximum(t1, t2), t3)
    r = m + np.log(np.exp(t1 - m) + np.exp(t2 - m) + np.exp(t3 - m)) - logL[None]
    ar = np.abs(r)
    h = np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))
    return (h * w[None]).sum(1) if w is not None else h.sum(1)


def lbfgs_best(objective, starts, bounds, options=None):
    """L-BFGS-B (``objective`` returns value and gradient) from every start; the best finite optimum of the
    starts that converged as ``(value, theta)``, or ``(inf, None)`` when none did. A start stopped by the
    iteration limit (scipy status 1) has not converged and is not an optimum."""
    best = (np.inf, None)
    for x0 in starts:
        res = minimize(
            objective, x0, jac=True, method="L-BFGS-B", bounds=bounds, options=options or LBFGS_OPTIONS
        )
        if res.status != 1 and np.isfinite(res.fun) and res.fun < best[0]:
            best = (float(res.fun), res.x)
    return best


def a3_refine(starts, logN, logD, logL, delta, w=None, options=None):
    """``lbfgs_best`` of the Approach 3 objective from ``starts`` (points weighted by ``w``)."""
    return lbfgs_best(lambda th: a3_objective(th, logN, logD, logL, delta, w)[:2], starts, A3_BOUNDS, options)


def a3_solve(logN, logD, logL, delta, w=None, *, grid=A3_GRID, n_refine=16, extra_starts=(), options=None):
    """Evaluate the grid vectorised, then refine the best ``n_refine`` starts (and ``extra_starts``) with
    L-BFGS-B. Running L-BFGS from every one of the 4500 grid points gives the same optimum on every
    check we ran (tests/test_analysis_fit.py) at ~100x the cost; the grid's job is to avoid bad basins."""
    vals = a3_grid_values(grid, logN, logD, logL, delta, w)
    order = np.argsort(vals)[:n_refine]
    starts = [grid[i] for i in order] + [np.asarray(s, float) for s in extra_starts]
    return a3_refine(starts, logN, logD, logL, delta, w, options)


def a3_params(theta) -> dict[str, float]:
    """theta = (a, b, e, alpha, beta) -> E, A, B, alpha, beta and the allocation exponents a, b."""
    a, b, e, alpha, beta = (float(t) for t in theta)
    s = alpha + beta
    return {
        "E": np.exp(e),
        "A": np.exp(a),
        "B": np.exp(b),
        "alpha": alpha,
        "beta": beta,
        "a": beta / s if s > 0 else np.nan,  # N_opt ∝ C^a
        "b": alpha / s if s > 0 else np.nan,  # D_opt ∝ C^b
    }


# ----------------------------------------------------------------------------------------------------------
# logistic loss -> metric map


def _logi_jac(th, L):
    f, c, k, L0 = th
    z = np.clip(k * (L - L0), -60.0, 60.0)
    sig = 1.0 / (1.0 + np.exp(z))
    ds = -sig * (1.0 - sig) * (c - f)
    return np.stack([1.0 - sig, sig, ds * (L - L0), -ds * k], axis=1)


def logistic_solve(L, y, starts, bounds, w=None):
    """Least squares (trf, analytic Jacobian) of y = logistic(L; floor, ceiling, k, L0) from each start
    inside ``bounds`` (points weighted by ``w``); the best converged one as ``(cost, theta)``, ``(inf,
    None)`` when no start converged (every one stopped at its evaluation limit)."""
    sw = np.sqrt(w) if w is not None else np.ones_like(y)
    best = (np.inf, None)
    for x0 in starts:
        x0 = np.clip(np.asarray(x0, float), np.asarray(bounds[0]) + 1e-9, np.asarray(bounds[1]) - 1e-9)
        res = least_squares(
            lambda th: (laws.logistic(L, *th) - y) * sw,
            x0,
            jac=lambda th: _logi_jac(th, L) * sw[:, None],
            bounds=bounds,
            method="trf",
            x_scale="jac",
        )
        if res.status > 0 and res.cost < best[0]:
            best = (float(res.cost), res.x)
    return best
