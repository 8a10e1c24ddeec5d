"""Scaling-law fits with bootstrap intervals, on plain arrays. Every fit returns a ``FitResult`` (parameters,
intervals, residual statistics, number of points) or raises ``FitRefused`` naming why the data cannot
support it (too few points, a single size, NaN / infinite values, non-positive values).

Fits:
- ``fit_power_law``: L(x) = E + A x^-alpha (L(N) per data size, L(D) per size, the L(C) frontier).
- ``fit_approach3``: Chinchilla Approach 3, L(N, D) = E + A/N^alpha + B/D^beta, Huber loss (delta 1e-3) on
  log residuals in the log-sum-exp parametrisation, L-BFGS from a grid of initialisations, bootstrap CIs.
- ``fit_approach2``: IsoFLOP profiles -> N_opt(C), D_opt(C) power laws.
- ``fit_approach1``: the minimum-loss envelope of training curves -> N_opt(C), D_opt(C) power laws.
- ``fit_data_constrained``: Approach 3 with Muennighoff et al. 2023 effective data for repeated epochs.
- ``fit_saturating``: y = M - A (x/x_ref)^-alpha for bounded quality metrics (MOS vs compute).
- ``fit_logistic``: the monotone loss -> metric map used by ``analysis.predict``.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import least_squares, minimize

from analysis import laws

# ----------------------------------------------------------------------------------------------------------
# results and refusals


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


class FitRefused(ValueError):
    """The data cannot support this fit. ``reason`` says why in words a user can act on."""

    def __init__(self, fit: str, reason: str):
        self.fit = fit
        self.reason = reason
        super().__init__(f"{fit}: {reason}")


@dataclass
class FitResult:
    name: str  # what was fitted, e.g. "approach3", "L(N) @ D=3600s"
    law: str  # key into PREDICTORS: which functional form ``params`` belong to
    params: dict[str, float]
    ci: dict[str, tuple[float, float]]  # same keys as params, [low, high] at ``level``
    n_points: int
    residuals: dict[str, float]  # rmse / mae / max_abs of the residuals, and the space they are in
    level: float = 0.95
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # bootstrap draws per param
    meta: dict[str, Any] = field(default_factory=dict)  # law constants (x_ref), inputs, notes

    def predict(self, *x, params: dict[str, float] | None = None) -> np.ndarray:
        return PREDICTORS[self.law](params or self.params, self.meta, *x)

    def predict_samples(self, *x) -> np.ndarray:
        """Predictions under every bootstrap draw: shape (n_boot, len(x))."""
        if not self.samples:
            return np.asarray(self.predict(*x), dtype=float)[None]
        keys = list(self.samples)
        n = len(self.samples[keys[0]])
        return np.stack([self.predict(*x, params={k: self.samples[k][i] for k in keys}) for i in range(n)])

    def interval(self, *x, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        s = self.predict_samples(*x)
        q = (1 - level) / 2
        return np.nanquantile(s, q, axis=0), np.nanquantile(s, 1 - q, axis=0)

    def to_dict(self) -> dict[str, Any]:
        meta = {k: v for k, v in self.meta.items() if _jsonable(v)}
        return {
            "name": self.name,
            "law": self.law,
            "params": {k: float(v) for k, v in self.params.items()},
            "ci": {k: [float(lo), float(hi)] for k, (lo, hi) in self.ci.items()},
            "level": self.level,
            "n_points": int(self.n_points),
            "n_boot": int(len(next(iter(self.samples.values())))) if self.samples else 0,
            "residuals": {
                k: (float(v) if isinstance(v, int | float | np.floating) else v)
                for k, v in self.residuals.items()
            },
            "meta": meta,
        }


def _jsonable(v) -> bool:
    return isinstance(v, str | int | float | bool | type(None)) or (
        isinstance(v, list | tuple) and all(isinstance(i, str | int | float) for i in v)
    )


PREDICTORS = {
    "power_law": lambda p, m, x: laws.power_law(x, p["E"], p["A"], p["alpha"]),
    "chinchilla": lambda p, m, N, D: laws.chinchilla(N, D, p["E"], p["A"], p["B"], p["alpha"], p["beta"]),
    "data_constrained": lambda p, m, N, D, U: laws.chinchilla(
        N, laws.effective_data(U, D, p["R_star"]), p["E"], p["A"], p["B"], p["alpha"], p["beta"]
    ),
    "saturating": lambda p, m, x: laws.saturating(x, p["M"], p["A"], p["alpha"], m.get("x_ref", 1.0)),
    "logistic": lambda p, m, L: laws.logistic(L, p["floor"], p["ceiling"], p["k"], p["L0"]),
    # N_opt = N_coef * C^a and D_opt = D_coef * C^b (Approaches 1 and 2): predict returns (N_opt, D_opt)
    "allocation": lambda p, m, C: (
        p["N_coef"] * np.power(np.asarray(C, float), p["a"]),
        p["D_coef"] * np.power(np.asarray(C, float), p["b"]),
    ),
}


def percentile_ci(samples: dict[str, np.ndarray], level: float) -> dict[str, tuple[float, float]]:
    q = (1 - level) / 2
    out = {}
    for k, s in samples.items():
        s = np.asarray(s, dtype=float)
        s = s[np.isfinite(s)]
        out[k] = (float(np.quantile(s, q)), float(np.quantile(s, 1 - q))) if len(s) else (np.nan, np.nan)
    return out


def _residual_stats(r: np.ndarray, space: str) -> dict[str, Any]:
    return {
        "space": space,
        "rmse": float(np.sqrt(np.mean(r**2))),
        "mae": float(np.mean(np.abs(r))),
        "max_abs": float(np.max(np.abs(r))),
    }


DISTINCT_REL_TOL = 0.02  # values within 2 % are one level of an axis
BOUND_TOL = 1e-3  # an exponent this close to its search bound is "on the bound"
FLAT_TERM_REL = 1e-4  # a power-law term moving the loss by less than this fraction is switched off


def check_inputs(
    fit: str,
    columns: dict[str, Any],
    *,
    min_points: int,
    positive: tuple[str, ...] = (),
    distinct: dict[str, int] | None = None,
    labels: Any = None,
) -> dict[str, np.ndarray]:
    """Turn columns into float arrays or refuse: NaN/inf, non-positive where logs are taken, too few
    points, too few distinct values (a single model size). ``labels`` (trial names) make the messages
    name the offending rows."""
    arrs = {k: np.asarray(v, dtype=float).ravel() for k, v in columns.items()}
    n = len(next(iter(arrs.values())))
    names = np.asarray(labels if labels is not None else [f"row {i}" for i in range(n)], dtype=object)
    for k, a in arrs.items():
        if len(a) != n:
            raise FitRefused(fit, f"column {k!r} has {len(a)} values, expected {n}")
        bad = ~np.isfinite(a)
        if bad.any():
            raise FitRefused(fit, f"{k!r} is NaN or infinite for {_few(names[bad])}")
    for k in positive:
        bad = arrs[k] <= 0
        if bad.any():
            raise FitRefused(
                fit, f"{k!r} must be positive (logs are taken) but is <= 0 for {_few(names[bad])}"
            )
    if n < min_points:
        raise FitRefused(fit, f"too few points: {n} (this fit needs at least {min_points})")
    for k, need in (distinct or {}).items():
        u = distinct_levels(arrs[k])
        if len(u) == 1:
            raise FitRefused(fit, f"a single value of {k!r} ({u[0]:.4g}): its exponent is not identifiable")
        if len(u) < need:
            raise FitRefused(fit, f"only {len(u)} distinct values of {k!r} (this fit needs at least {need})")
    return arrs


def distinct_levels(a, rel_tol: float = DISTINCT_REL_TOL) -> np.ndarray:
    """Distinct values of ``a`` where values within ``rel_tol`` of each other count as one level: a budget
    of 1e11 FLOPs run as 99.8 GFLOPs (whole steps) is the same budget, not a new point on the axis."""
    u = np.unique(np.asarray(a, dtype=float))
    if len(u) == 0:
        return u
    keep = [u[0]]
    for v in u[1:]:
        if abs(v - keep[-1]) > rel_tol * max(abs(keep[-1]), abs(v)):
            keep.append(v)
    return np.array(keep)


def refuse_at_bounds(fit: str, params: dict[str, float], bounds: dict[str, tuple[float, float]]) -> None:
    """Refuse a fit whose exponent ended on its search bound: the data did not determine it (for example
    alpha = 0 when loss does not fall with N over the trials), so any number printed would be an artefact."""
    for k, (lo, hi) in bounds.items():
        v = params[k]
        if v <= lo + BOUND_TOL or v >= hi - BOUND_TOL:
            raise FitRefused(
                fit,
                f"{k} = {v:.3g} ended on its search bound [{lo:g}, {hi:g}]: the trials do not determine it "
                f"(the loss does not follow a power law in this variable over their range)",
            )


def refuse_flat_term(fit: str, var: str, x, coef: float, expo: float, L) -> None:
    """Refuse when the fitted ``coef * x^-expo`` term changes the loss by a negligible amount over the
    trials' range of ``x`` (the optimiser switched the term off because loss does not fall with ``x``)."""
    x = np.asarray(x, dtype=float)
    span = coef * (np.min(x) ** -expo - np.max(x) ** -expo)
    if not span > FLAT_TERM_REL * float(np.median(L)):
        raise FitRefused(
            fit,
            f"the fitted {var} term changes the loss by {span:.3g} over the trials' {var} range "
            f"({np.min(x):.3g}..{np.max(x):.3g}): the loss does not fall with {var} over these trials",
        )


def _few(names) -> str:
    names = [str(x) for x in names]
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _weights(rng: np.random.Generator, n: int) -> np.ndarray:
    """A bootstrap resample of n points expressed as integer weights (multinomial counts)."""
    return rng.multinomial(n, np.full(n, 1.0 / n)).astype(float)


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
    """L-BFGS-B (``objective`` returns value and gradient) from every start; the best finite optimum as
    ``(value, theta)``, or ``(inf, None)`` when every start failed."""
    best = (np.inf, None)
    for x0 in starts:
        res = minimize(
            objective, x0, jac=True, method="L-BFGS-B", bounds=bounds, options=options or LBFGS_OPTIONS
        )
        if np.isfinite(res.fun) and res.fun < best[0]:
            best = (float(res.fun), res.x)
    return best


def _a3_refine(starts, logN, logD, logL, delta, w=None, options=None):
    return lbfgs_best(lambda th: a3_objective(th, logN, logD, logL, delta, w)[:2], starts, A3_BOUNDS, options)


def _a3_solve(logN, logD, logL, delta, w=None, *, grid=A3_GRID, n_refine=16, extra_starts=(), options=None):
    """Evaluate the grid vectorised, then refine the best ``n_refine`` starts (and ``extra_starts``) with
    L-BFGS-B. Running L-BFGS from every one of the 4500 grid points gives the same optimum on every
    check we ran (tests/test_analysis_fit.py) at ~100x the cost; the grid's job is to avoid bad basins."""
    vals = a3_grid_values(grid, logN, logD, logL, delta, w)
    order = np.argsort(vals)[:n_refine]
    starts = [grid[i] for i in order] + [np.asarray(s, float) for s in extra_starts]
    return _a3_refine(starts, logN, logD, logL, delta, w, options)


def _a3_params(theta) -> dict[str, float]:
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


@single_threaded
def _a3_boot_chunk(args):
    seeds, logN, logD, logL, delta, theta0 = args
    out = []
    for seed in seeds:
        w = _weights(np.random.default_rng(seed), len(logN))
        f, th = _a3_solve(
            logN,
            logD,
            logL,
            delta,
            w,
            grid=A3_GRID_COARSE,
            n_refine=1,
            extra_starts=[theta0],
            options=LBFGS_BOOT,
        )
        out.append(th if th is not None else np.full(5, np.nan))
    return out


def bootstrap_thetas(worker, logN, logD, logL, delta, theta0, n_boot, seed, workers):
    seeds = np.random.SeedSequence(seed).generate_state(n_boot).tolist()
    if workers <= 1 or n_boot < 2 * workers:
        return np.array(worker((seeds, logN, logD, logL, delta, theta0)))
    from concurrent.futures import ProcessPoolExecutor

    chunks = [seeds[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers) as ex:
        parts = list(ex.map(worker, [(c, logN, logD, logL, delta, theta0) for c in chunks]))
    return np.array([t for p in parts for t in p])


@single_threaded
def fit_approach3(
    N,
    D,
    L,
    *,
    delta: float = 1e-3,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    n_refine: int = 16,
    workers: int = 1,
    labels=None,
    name: str = "approach3",
) -> FitResult:
    """Chinchilla Approach 3: L(N, D) = E + A/N^alpha + B/D^beta.

    Minimises sum Huber_delta(LSE(a - alpha log N, b - beta log D, e) - log L) with L-BFGS-B (analytic
    gradient) from the 4500-point initialisation grid of Hoffmann et al. / Besiroglu et al. (evaluated
    vectorised; the best ``n_refine`` starts are refined). Intervals: ``n_boot`` bootstrap resamples of the
    points, each refitted from the full-data optimum and the best point of a coarse 32-point grid; percentile intervals.

    Check of the machinery: Besiroglu et al. 2024 ("Chinchilla Scaling: A replication attempt") refit
    Chinchilla's data to E=1.82, A=482, B=2085, alpha=0.35, beta=0.37. Their data cannot be downloaded
    here, so ``tests/test_analysis_fit.py`` generates ~250 points from those parameters over Chinchilla's
    ranges (N 7e7..1.6e10, D 5e9..5e11) with 1% log-normal noise and recovers them (alpha, beta within
    0.03; E within 0.1; intervals covering the truth); ``bench/fit_bootstrap.py`` times it.
    """
    x = check_inputs(
        name,
        {"N": N, "D": D, "L": L},
        min_points=8,
        positive=("N", "D", "L"),
        distinct={"N": 3, "D": 3},
        labels=labels,
    )
    logN, logD, logL = np.log(x["N"]), np.log(x["D"]), np.log(x["L"])
    f, theta = _a3_solve(logN, logD, logL, delta, n_refine=n_refine)
    if theta is None:
        raise FitRefused(name, "L-BFGS failed from every initialisation")
    params = _a3_params(theta)
    refuse_at_bounds(name, params, {"alpha": A3_BOUNDS[3], "beta": A3_BOUNDS[4]})
    refuse_flat_term(name, "N", x["N"], params["A"], params["alpha"], x["L"])
    refuse_flat_term(name, "D", x["D"], params["B"], params["beta"], x["L"])
    samples: dict[str, np.ndarray] = {}
    if n_boot > 0:
        thetas = bootstrap_thetas(_a3_boot_chunk, logN, logD, logL, delta, theta, n_boot, seed, workers)
        ps = [_a3_params(t) for t in thetas if np.all(np.isfinite(t))]
        samples = {k: np.array([p[k] for p in ps]) for k in params}
    r = np.log(laws.chinchilla(x["N"], x["D"], *(params[k] for k in ("E", "A", "B", "alpha", "beta")))) - logL
    return FitResult(
        name=name,
        law="chinchilla",
        params=params,
        ci=percentile_ci(samples, level) if samples else {k: (np.nan, np.nan) for k in params},
        n_points=len(logL),
        residuals={**_residual_stats(r, "log"), "objective": f},
        level=level,
        samples=samples,
        meta={"delta": delta, "n_boot": n_boot, "theta": [float(t) for t in theta]},
    )


# ----------------------------------------------------------------------------------------------------------
# Data-constrained Approach 3 (Muennighoff et al. 2023)


def _dc_objective(th6, logN, D, U, logL, delta, w=None):
    rstar = np.exp(th6[5])
    R = np.maximum(D / U - 1.0, 0.0)
    rep = D > U
    ex = np.exp(-R / rstar)
    gain = 1.0 + rstar * (1.0 - ex)
    logDe = np.where(rep, np.log(U) + np.log(gain), np.log(D))
    f, g5, g_logD = a3_objective(th6[:5], logN, logDe, logL, delta, w)
    dlogDe_dr = np.where(rep, rstar * ((1.0 - ex) - (R / rstar) * ex) / gain, 0.0)
    return f, np.append(g5, (g_logD * dlogDe_dr).sum())


def _dc_solve(logN, D, U, logL, delta, starts, w=None):
    bounds = A3_BOUNDS + [(np.log(0.05), np.log(1e4))]
    return lbfgs_best(lambda th: _dc_objective(th, logN, D, U, logL, delta, w), starts, bounds)


@single_threaded
def fit_data_constrained(
    N, D, U, L, *, delta=1e-3, n_boot=100, level=0.95, seed=0, labels=None, name="data_constrained"
) -> FitResult:
    """Approach 3 with D replaced by Muennighoff et al.'s effective data D'(U, R_D; R*_D): the value of
    repeated epochs decays with a fitted R*_D (their fit for language models: R*_D ~ 15). ``U`` is the unique
    training data in the same unit as ``D`` (data_hours * 3600 when D is audio seconds). Refused when no
    trial repeats its data (R*_D would be unidentified)."""
    x = check_inputs(
        name,
        {"N": N, "D": D, "U": U, "L": L},
        min_points=10,
        positive=("N", "D", "U", "L"),
        distinct={"N": 3, "D": 3},
        labels=labels,
    )
    rep = x["D"] > x["U"] * 1.01
    if rep.sum() < 3:
        raise FitRefused(
            name,
            f"only {int(rep.sum())} trials saw their data more than once (need 3 with D > U to fit R*_D)",
        )
    logN, logL = np.log(x["N"]), np.log(x["L"])
    f0, th0 = _a3_solve(logN, np.log(x["D"]), logL, delta)
    starts = [np.append(th0, np.log(r)) for r in (1.0, 5.0, 15.0, 60.0)]
    f, th = _dc_solve(logN, x["D"], x["U"], logL, delta, starts)

    def params_of(t):
        return {**_a3_params(t[:5]), "R_star": float(np.exp(t[5]))}

    params = params_of(th)
    refuse_at_bounds(name, params, {"alpha": A3_BOUNDS[3], "beta": A3_BOUNDS[4]})

    def refit(w):
        tb = _dc_solve(logN, x["D"], x["U"], logL, delta, [th], w)[1]
        return None if tb is None else params_of(tb)

    samples = bootstrap_refit(len(logL), n_boot, seed, refit)
    pred = PREDICTORS["data_constrained"](params, {}, x["N"], x["D"], x["U"])
    return FitResult(
        name=name,
        law="data_constrained",
        params=params,
        ci=percentile_ci(samples, level) if samples else {k: (np.nan, np.nan) for k in params},
        n_points=len(logL),
        residuals={**_residual_stats(np.log(pred) - logL, "log"), "objective": f},
        level=level,
        samples=samples,
        meta={"delta": delta, "n_repeated": int(rep.sum())},
    )


# ----------------------------------------------------------------------------------------------------------
# single-variable law with an irreducible term: L(x) = E + A x^-alpha


def _pl_residual(th, lx, ly):
    # th = (a, e, alpha); log L_hat = LSE(a - alpha lx, e)
    a, e, alpha = th
    t1 = a - alpha * lx
    m = np.maximum(t1, e)
    e1, e2 = np.exp(t1 - m), np.exp(e - m)
    s = e1 + e2
    r = m + np.log(s) - ly
    w1 = e1 / s
    J = np.stack([w1, e2 / s, -w1 * lx], axis=1)
    return r, J


def _pl_solve(lx, ly, starts, w=None, fast=False):
    sw = np.sqrt(w) if w is not None else 1.0
    best = (np.inf, None)
    if fast:  # bootstrap refit from the optimum: unbounded Levenberg-Marquardt, ~10x faster than trf
        res = least_squares(
            lambda th: _pl_residual(th, lx, ly)[0] * sw,
            starts[0],
            jac=lambda th: _pl_residual(th, lx, ly)[1] * (sw[:, None] if w is not None else 1.0),
            method="lm",
        )
        if res.success and 0.0 <= res.x[2] <= 5.0:
            return float(res.cost), res.x
    for x0 in starts:
        res = least_squares(
            lambda th: _pl_residual(th, lx, ly)[0] * sw,
            x0,
            jac=lambda th: _pl_residual(th, lx, ly)[1] * (sw[:, None] if w is not None else 1.0),
            bounds=([-50, -20, PL_ALPHA_BOUNDS[0]], [200, 20, PL_ALPHA_BOUNDS[1]]),
            method="trf",
            x_scale="jac",
        )
        if res.cost < best[0]:
            best = (float(res.cost), res.x)
    return best


PL_ALPHA_BOUNDS = (0.0, 5.0)


def bootstrap_refit(n: int, n_boot: int, seed: int, refit, *, x=None) -> dict[str, np.ndarray]:
    """Bootstrap draws: ``refit(weights) -> params or None`` on ``n`` points resampled with replacement (as
    multiplicity weights). With ``x``, resamples with fewer than 3 distinct x are skipped (single-variable
    laws). Failed refits (None) are dropped. ``{}`` when ``n_boot`` is 0."""
    if n_boot <= 0:
        return {}
    rng = np.random.default_rng(seed)
    ps = []
    for _ in range(n_boot):
        w = _weights(rng, n)
        if x is not None and len(np.unique(x[w > 0])) < 3:
            continue
        p = refit(w)
        if p is not None:
            ps.append(p)
    return {k: np.array([p[k] for p in ps]) for k in (ps[0] if ps else {})}


@single_threaded
def fit_power_law(
    x, y, *, n_boot=200, level=0.95, seed=0, labels=None, name="power_law", x_name="x"
) -> FitResult:
    """L(x) = E + A x^-alpha, least squares on log residuals (log-sum-exp parametrisation, E > 0), started
    from a small grid; bootstrap percentile intervals. Needs 4 points and 3 distinct x."""
    arr = check_inputs(
        name, {x_name: x, "L": y}, min_points=4, positive=(x_name, "L"), distinct={x_name: 3}, labels=labels
    )
    lx, ly = np.log(arr[x_name]), np.log(arr["L"])
    ymin, ymax = arr["L"].min(), arr["L"].max()
    i_max = int(np.argmax(arr["L"]))
    starts = []
    for frac in (0.2, 0.6, 0.9, 0.99):
        E0 = frac * ymin
        for alpha in (0.1, 0.3, 0.7, 1.5):
            a0 = np.log(max(ymax - E0, 1e-12)) + alpha * lx[i_max]
            starts.append(np.array([a0, np.log(E0), alpha]))
    f, th = _pl_solve(lx, ly, starts)

    def params_of(t):
        return {"E": float(np.exp(t[1])), "A": float(np.exp(t[0])), "alpha": float(t[2])}

    params = params_of(th)
    refuse_at_bounds(name, params, {"alpha": PL_ALPHA_BOUNDS})
    refuse_flat_term(name, x_name, arr[x_name], params["A"], params["alpha"], arr["L"])
    samples = bootstrap_refit(
        len(lx), n_boot, seed, lambda w: params_of(_pl_solve(lx, ly, [th], w, fast=True)[1]), x=lx
    )
    r = _pl_residual(th, lx, ly)[0]
    return FitResult(
        name=name,
        law="power_law",
        params=params,
        ci=percentile_ci(samples, level) if samples else {k: (np.nan, np.nan) for k in params},
        n_points=len(lx),
        residuals=_residual_stats(r, "log"),
        level=level,
        samples=samples,
        meta={"x": x_name},
    )


def pareto_frontier(C, L) -> np.ndarray:
    """Indices of the compute frontier: points whose loss is lower than every point with less compute."""
    C, L = np.asarray(C, float), np.asarray(L, float)
    order = np.lexsort((L, C))
    keep, best = [], np.inf
    for i in order:
        if L[i] < best:
            keep.append(i)
            best = L[i]
    return np.array(keep, dtype=int)


def fit_frontier(C, L, *, n_boot=200, level=0.95, seed=0, labels=None, name="L(C) frontier") -> FitResult:
    """The loss-vs-compute frontier L(C) = E + A C^-alpha, fitted to the Pareto-optimal trials."""
    arr = check_inputs(name, {"C": C, "L": L}, min_points=4, positive=("C", "L"), labels=labels)
    idx = pareto_frontier(arr["C"], arr["L"])
    if len(idx) < 4:
        raise FitRefused(name, f"only {len(idx)} trials are on the compute frontier (need 4)")
    lab = None if labels is None else np.asarray(labels, dtype=object)[idx]
    res = fit_power_law(
        arr["C"][idx], arr["L"][idx], n_boot=n_boot, level=level, seed=seed, labels=lab, name=name, x_name="C"
    )
    res.meta["frontier_index"] = [int(i) for i in idx]
    return res


# ----------------------------------------------------------------------------------------------------------
# saturating quality law: y = M - A (x/x_ref)^-alpha


def _sat_residual(th, lxr, y):
    M, la, alpha = th
    t = np.exp(la - alpha * lxr)
    r = M - t - y
    J = np.stack([np.ones_like(y), -t, t * lxr], axis=1)
    return r, J


def _sat_solve(lxr, y, starts, ceiling, w=None):
    sw = np.sqrt(w) if w is not None else np.ones_like(y)
    best = (np.inf, None)
    hi_M = ceiling if ceiling is not None else np.inf
    for x0 in starts:
        x0 = np.array(x0, float)
        x0[0] = min(x0[0], hi_M - 1e-9)
        res = least_squares(
            lambda th: _sat_residual(th, lxr, y)[0] * sw,
            x0,
            jac=lambda th: _sat_residual(th, lxr, y)[1] * sw[:, None],
            bounds=([-np.inf, -30, 1e-4], [hi_M, 30, 5.0]),
            method="trf",
        )
        if res.cost < best[0]:
            best = (float(res.cost), res.x)
    return best


@single_threaded
def fit_saturating(
    x,
    y,
    *,
    ceiling: float | None = 5.0,
    n_boot=200,
    level=0.95,
    seed=0,
    labels=None,
    name="saturating",
    x_name="C",
) -> FitResult:
    """y = M - A (x/x_ref)^-alpha with M <= ``ceiling`` (5 for MOS; None: unbounded). x_ref is the
    geometric mean of x (keeps A well scaled). Least squares on y; bootstrap intervals. Predict at k times
    the largest observed x with ``FitResult.interval``. Needs 5 points and 3 distinct x."""
    arr = check_inputs(
        name, {x_name: x, "y": y}, min_points=5, positive=(x_name,), distinct={x_name: 3}, labels=labels
    )
    x_ref = float(np.exp(np.mean(np.log(arr[x_name]))))
    lxr = np.log(arr[x_name] / x_ref)
    yy = arr["y"]
    span = max(float(yy.max() - yy.min()), 1e-6)
    starts = []
    for dm in (0.05, 0.5, 2.0):
        M0 = yy.max() + dm * span
        for alpha in (0.1, 0.4, 1.0):
            starts.append([M0, np.log(max(M0 - yy.mean(), 1e-6)), alpha])
    f, th = _sat_solve(lxr, yy, starts, ceiling)

    def params_of(t):
        return {"M": float(t[0]), "A": float(np.exp(t[1])), "alpha": float(t[2])}

    params = params_of(th)
    refuse_at_bounds(name, params, {"alpha": (1e-4, 5.0)})
    samples = bootstrap_refit(
        len(lxr), n_boot, seed, lambda w: params_of(_sat_solve(lxr, yy, [th], ceiling, w)[1]), x=lxr
    )
    r = _sat_residual(th, lxr, yy)[0]
    return FitResult(
        name=name,
        law="saturating",
        params=params,
        ci=percentile_ci(samples, level) if samples else {k: (np.nan, np.nan) for k in params},
        n_points=len(yy),
        residuals=_residual_stats(r, "linear"),
        level=level,
        samples=samples,
        meta={"x_ref": x_ref, "x": x_name, "ceiling": ceiling, "x_max": float(arr[x_name].max())},
    )


# ----------------------------------------------------------------------------------------------------------
# logistic loss -> metric map


def _logi_jac(th, L):
    f, c, k, L0 = th
    z = np.clip(k * (L - L0), -60.0, 60.0)
    sig = 1.0 / (1.0 + np.exp(z))
    ds = -sig * (1.0 - sig) * (c - f)
    return np.stack([1.0 - sig, sig, ds * (L - L0), -ds * k], axis=1)


def _logi_solve(L, y, starts, bounds, w=None):
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
        if res.cost < best[0]:
            best = (float(res.cost), res.x)
    return best


@single_threaded
def fit_logistic(
    L,
    y,
    *,
    bounds: tuple[float | None, float | None] = (None, None),
    min_rank_corr: float = 0.6,
    n_boot=200,
    level=0.95,
    seed=0,
    labels=None,
    name="logistic",
    x_name="loss",
) -> FitResult:
    """y = floor + (ceiling - floor) / (1 + exp(k (L - L0))): a monotone saturating map, floor and ceiling
    fitted (kept within ``bounds``, e.g. (1, 5) for MOS). Refused when y is not monotone in L over the
    trials: |Spearman rank correlation| below ``min_rank_corr``. Needs 6 points and 4 distinct losses."""
    from scipy.stats import spearmanr

    arr = check_inputs(name, {x_name: L, "y": y}, min_points=6, distinct={x_name: 4}, labels=labels)
    LL, yy = arr[x_name], arr["y"]
    rho = float(spearmanr(LL, yy).statistic)
    if not np.isfinite(rho) or abs(rho) < min_rank_corr:
        raise FitRefused(
            name,
            f"the metric is not monotone in {x_name} over these trials (Spearman rho = {rho:.2f}, "
            f"need |rho| >= {min_rank_corr})",
        )
    sign = 1.0 if rho < 0 else -1.0  # k > 0: metric falls as loss rises
    lo_b = -np.inf if bounds[0] is None else bounds[0]
    hi_b = np.inf if bounds[1] is None else bounds[1]
    span_L = max(float(LL.max() - LL.min()), 1e-9)
    span_y = max(float(yy.max() - yy.min()), 1e-9)
    kmag_hi = 200.0 / span_L
    kb = (0.0, kmag_hi) if sign > 0 else (-kmag_hi, 0.0)
    bnds = (
        [lo_b, lo_b, kb[0], LL.min() - 2 * span_L],
        [hi_b, hi_b, kb[1], LL.max() + 2 * span_L],
    )
    starts = []
    for pad in (0.1, 1.0):
        for ks in (2.0, 6.0):
            for l0 in np.quantile(LL, [0.3, 0.7]):
                starts.append([yy.min() - pad * span_y, yy.max() + pad * span_y, sign * ks / span_L, l0])
    f, th = _logi_solve(LL, yy, starts, bnds)

    def params_of(t):
        return {"floor": float(t[0]), "ceiling": float(t[1]), "k": float(t[2]), "L0": float(t[3])}

    params = params_of(th)
    samples: dict[str, np.ndarray] = {}
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        ps = []
        for _ in range(n_boot):
            w = _weights(rng, len(yy))
            _, tb = _logi_solve(LL, yy, [th], bnds, w)
            ps.append(params_of(tb))
        samples = {k: np.array([p[k] for p in ps]) for k in params}
    r = laws.logistic(LL, *th) - yy
    return FitResult(
        name=name,
        law="logistic",
        params=params,
        ci=percentile_ci(samples, level) if samples else {k: (np.nan, np.nan) for k in params},
        n_points=len(yy),
        residuals={**_residual_stats(r, "linear"), "spearman_rho": rho},
        level=level,
        samples=samples,
        meta={"x": x_name, "bounds": [bounds[0], bounds[1]]},
    )


# ----------------------------------------------------------------------------------------------------------
# Approaches 1 and 2: N_opt(C), D_opt(C)


def _loglin(lc, ly):
    """Least-squares line ly = c0 + slope * lc; returns (slope, c0)."""
    slope, c0 = np.polyfit(lc, ly, 1)
    return float(slope), float(c0)


def _allocation_result(name, C, Nopt, Dopt, samples, level, n_points, meta) -> FitResult:
    lc = np.log(C)
    a, cN = _loglin(lc, np.log(Nopt))
    b, cD = _loglin(lc, np.log(Dopt))
    params = {"a": a, "b": b, "N_coef": float(np.exp(cN)), "D_coef": float(np.exp(cD))}
    rN = np.log(Nopt) - (cN + a * lc)
    rD = np.log(Dopt) - (cD + b * lc)
    res = {**_residual_stats(rN, "log N_opt"), "rmse_log_D_opt": float(np.sqrt(np.mean(rD**2)))}
    return FitResult(
        name=name,
        law="allocation",
        params=params,
        ci=percentile_ci(samples, level) if samples else {k: (np.nan, np.nan) for k in params},
        n_points=n_points,
        residuals=res,
        level=level,
        samples=samples,
        meta=meta,
    )


def group_budgets(C, tol_dex: float = 0.1) -> np.ndarray:
    """Label trials by compute budget: sorted log10 C, a new group wherever the gap exceeds ``tol_dex``."""
    lc = np.log10(np.asarray(C, float))
    order = np.argsort(lc)
    labels = np.empty(len(lc), dtype=int)
    g = 0
    for j, i in enumerate(order):
        if j > 0 and lc[i] - lc[order[j - 1]] > tol_dex:
            g += 1
        labels[i] = g
    return labels


def _isoflop_minima(N, D, C, L, groups, w=None):
    """Per budget: parabola of L in log N; returns list of (C_g, N_opt, D_opt, detail)."""
    out, notes = [], {}
    for g in np.unique(groups):
        m = groups == g
        if w is not None:
            m = m & (w > 0)
        Cg = float(np.median(C[m])) if m.any() else float(np.median(C[groups == g]))
        lx = np.log(N[m])
        if len(np.unique(lx)) < 3:
            notes[f"{Cg:.3g}"] = f"only {len(np.unique(lx))} model sizes at this budget (need 3)"
            continue
        ww = None if w is None else w[m]
        p2, p1, p0 = np.polyfit(lx, L[m], 2, w=None if ww is None else np.sqrt(ww))
        if p2 <= 0:
            notes[f"{Cg:.3g}"] = "loss is not convex in log N at this budget (no minimum)"
            continue
        x_star = -p1 / (2 * p2)
        if not (lx.min() <= x_star <= lx.max()):
            notes[f"{Cg:.3g}"] = "the parabola's minimum lies outside the sampled model sizes"
            continue
        k = float(np.median(C[m] / (N[m] * D[m])))
        N_opt = float(np.exp(x_star))
        out.append(
            (
                Cg,
                N_opt,
                Cg / (k * N_opt),
                {"p": [float(p2), float(p1), float(p0)], "L_min": float(p0 - p1**2 / (4 * p2))},
            )
        )
    return out, notes


@single_threaded
def fit_approach2(
    N, D, C, L, *, budgets=None, n_boot=200, level=0.95, seed=0, labels=None, name="approach2"
) -> FitResult:
    """Chinchilla Approach 2 (IsoFLOP profiles): trials grouped by compute budget (``budgets`` labels, else
    ``group_budgets(C)``); per budget a parabola of loss in log N gives N_opt; D_opt = C / (k N_opt) with
    k = median C/(N D) of that budget's trials (6 for an LM; measured here). Then N_opt = N_coef C^a and
    D_opt = D_coef C^b by least squares in log-log. Budgets whose parabola has no interior minimum are left
    out with the reason (``meta['skipped']``). Bootstrap: resample trials within each budget."""
    arr = check_inputs(
        name,
        {"N": N, "D": D, "C": C, "L": L},
        min_points=6,
        positive=("N", "D", "C"),
        distinct={"N": 3},
        labels=labels,
    )
    groups = np.asarray(budgets) if budgets is not None else group_budgets(arr["C"])
    _, groups = np.unique(groups, return_inverse=True)
    minima, notes = _isoflop_minima(arr["N"], arr["D"], arr["C"], arr["L"], groups)
    if len(minima) < 2:
        why = "; ".join(f"C={k}: {v}" for k, v in notes.items())
        raise FitRefused(
            name,
            f"only {len(minima)} budgets with an interior IsoFLOP minimum (need 2)"
            + (f" — {why}" if why else ""),
        )
    Cs, Ns, Ds = (np.array([m[i] for m in minima]) for i in range(3))
    samples: dict[str, np.ndarray] = {}
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        ps = []
        for _ in range(n_boot):
            w = np.zeros(len(groups))
            for g in np.unique(groups):
                idx = np.flatnonzero(groups == g)
                w[idx] = rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)))
            mb, _ = _isoflop_minima(arr["N"], arr["D"], arr["C"], arr["L"], groups, w)
            if len(mb) < 2:
                continue
            c, n_, d_ = (np.array([m[i] for m in mb]) for i in range(3))
            a, cN = _loglin(np.log(c), np.log(n_))
            b, cD = _loglin(np.log(c), np.log(d_))
            ps.append({"a": a, "b": b, "N_coef": np.exp(cN), "D_coef": np.exp(cD)})
        samples = {k: np.array([p[k] for p in ps]) for k in ("a", "b", "N_coef", "D_coef")}
    meta = {
        "C_opt": Cs.tolist(),
        "N_opt": Ns.tolist(),
        "D_opt": Ds.tolist(),
        "L_min": [m[3]["L_min"] for m in minima],
        "parabolas": [m[3]["p"] for m in minima],
        "skipped": [f"C={k}: {v}" for k, v in notes.items()],
        "groups": groups.tolist(),
    }
    return _allocation_result(name, Cs, Ns, Ds, samples, level, len(arr["L"]), meta)


def _envelope(curves, c_grid):
    """Minimum loss over curves at each compute in c_grid. curves: list of (N, logC[], logL[], logD[]).
    Returns (c, N_opt, D_opt, L_min) for grid points covered by at least one curve."""
    rows = []
    for lc in c_grid:
        best = None
        for N, lcs, lls, lds in curves:
            if lcs[0] <= lc <= lcs[-1]:
                ll = np.interp(lc, lcs, lls)
                if best is None or ll < best[0]:
                    best = (ll, N, np.interp(lc, lcs, lds))
        if best is not None:
            rows.append((np.exp(lc), best[1], np.exp(best[2]), np.exp(best[0])))
    return rows


@single_threaded
def fit_approach1(curves, *, n_grid=40, n_boot=200, level=0.95, seed=0, name="approach1") -> FitResult:
    """Chinchilla Approach 1: the minimum-loss envelope over all training curves as a function of FLOPs.

    ``curves``: a DataFrame with columns ``trial``, ``N``, ``C`` (cumulative FLOPs), ``D`` (data seen) and
    ``L`` — one row per logged evaluation (``analysis.table.curves``). Each curve is interpolated in
    (log C, log L); at ``n_grid`` log-spaced budgets the lowest curve gives N_opt (its N) and D_opt (its data
    seen at that compute). Then N_opt = N_coef C^a, D_opt = D_coef C^b. A table of final points only (one
    row per trial) gives the Pareto frontier of trials as the envelope. Bootstrap: resample whole curves."""
    import pandas as pd

    df = pd.DataFrame(curves)
    missing = [c for c in ("trial", "N", "C", "D", "L") if c not in df.columns]
    if missing:
        raise FitRefused(name, f"curves table lacks columns {missing}")
    check_inputs(
        name,
        {k: df[k] for k in ("N", "C", "D", "L")},
        min_points=4,
        positive=("N", "C", "D", "L"),
        labels=df["trial"],
    )
    per = []
    for t, g in df.groupby("trial", sort=False):
        g = g.sort_values("C").drop_duplicates("C")
        per.append(
            (
                t,
                float(g["N"].iloc[0]),
                np.log(g["C"].to_numpy()),
                np.log(g["L"].to_numpy()),
                np.log(g["D"].to_numpy()),
            )
        )
    if len({p[1] for p in per}) < 2:
        raise FitRefused(name, "a single model size: the envelope cannot say how N_opt moves with C")
    single = all(len(p[2]) == 1 for p in per)

    def envelope_of(sel):
        if single:
            C = np.array([np.exp(p[2][0]) for p in sel])
            L = np.array([np.exp(p[3][0]) for p in sel])
            idx = pareto_frontier(C, L)
            return [(C[i], sel[i][1], np.exp(sel[i][4][0]), L[i]) for i in idx]
        lo = min(p[2][0] for p in sel)
        hi = max(p[2][-1] for p in sel)
        return _envelope([p[1:] for p in sel if len(p[2]) > 1], np.linspace(lo, hi, n_grid))

    def fit_env(env, sel):
        # an envelope point won by the smallest or largest sampled size (or, from final points only, at the
        # smallest or largest sampled data) is truncated by the sampled range: the optimum may lie beyond
        # it, so it is left out
        n_lo, n_hi = min(p[1] for p in sel), max(p[1] for p in sel)
        env = [e for e in env if n_lo < e[1] < n_hi]
        if single:
            ds = [np.exp(p[4][0]) for p in sel]
            env = [e for e in env if min(ds) < e[2] < max(ds)]
        if len(env) < 3 or len(distinct_levels([e[1] for e in env])) < 3:
            return None  # a power law N_opt(C) through fewer than 3 sizes is not identified
        C, Nn, Dd, Lm = (np.array([e[i] for e in env]) for i in range(4))
        return C, Nn, Dd, Lm

    full = fit_env(envelope_of(per), per)
    if full is None:
        raise FitRefused(
            name,
            "fewer than 3 points of the minimum-loss envelope lie inside the sampled sizes"
            + (
                " and data amounts (final points only: log metric histories for real curves)"
                if single
                else ""
            )
            + ", or fewer than 3 model sizes are on it",
        )
    C, Nn, Dd, Lm = full
    samples: dict[str, np.ndarray] = {}
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        ps = []
        for _ in range(n_boot):
            sel = [per[i] for i in rng.integers(0, len(per), len(per))]
            fb = fit_env(envelope_of(sel), sel)
            if fb is None:
                continue
            a, cN = _loglin(np.log(fb[0]), np.log(fb[1]))
            b, cD = _loglin(np.log(fb[0]), np.log(fb[2]))
            ps.append({"a": a, "b": b, "N_coef": np.exp(cN), "D_coef": np.exp(cD)})
        samples = {k: np.array([p[k] for p in ps]) for k in ("a", "b", "N_coef", "D_coef")}
    meta = {
        "C_env": C.tolist(),
        "N_env": Nn.tolist(),
        "D_env": Dd.tolist(),
        "L_env": Lm.tolist(),
        "from_final_points": single,
    }
    return _allocation_result(name, C, Nn, Dd, samples, level, len(df), meta)
