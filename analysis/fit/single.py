"""Single-variable law with an irreducible term, L(x) = E + A x^-alpha (L(N) per data size, L(D) per size),
and the loss-vs-compute frontier L(C) fitted to the Pareto-optimal trials."""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares

from analysis.fit.checks import check_inputs, level_counts, refuse_at_bounds, refuse_flat_term
from analysis.fit.results import FitRefused, FitResult, fit_result
from analysis.fit.solvers import bootstrap_refit, residual_stats, single_threaded
from analysis.verdict import SearchBound

PL_ALPHA_BOUNDS = (0.0, 5.0)
# theta = (log A, log E, alpha) is searched inside these (the trf path; the fast refit path keeps alpha in them)
PL_BOUNDS = ([-50.0, -20.0, PL_ALPHA_BOUNDS[0]], [200.0, 20.0, PL_ALPHA_BOUNDS[1]])
PL_PARAM_BOUNDS = {
    "A": SearchBound(np.exp(PL_BOUNDS[0][0]), np.exp(PL_BOUNDS[1][0]), log=True),
    "E": SearchBound(np.exp(PL_BOUNDS[0][1]), np.exp(PL_BOUNDS[1][1]), log=True),
    "alpha": SearchBound(*PL_ALPHA_BOUNDS),
}


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
    """Best (cost, theta) over ``starts`` of the starts that converged; (inf, None) when none did."""
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
            bounds=PL_BOUNDS,
            method="trf",
            x_scale="jac",
        )
        if res.status > 0 and res.cost < best[0]:
            best = (float(res.cost), res.x)
    return best


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
    if th is None:
        raise FitRefused(name, "least squares did not converge from any start")

    def params_of(t):
        if t is None:
            return None
        return {"E": float(np.exp(t[1])), "A": float(np.exp(t[0])), "alpha": float(t[2])}

    params = params_of(th)
    refuse_at_bounds(name, params, {"alpha": PL_ALPHA_BOUNDS}, {"alpha": (x_name,)})
    refuse_flat_term(name, x_name, arr[x_name], params["A"], params["alpha"], arr["L"])
    samples, n_failed = bootstrap_refit(
        len(lx), n_boot, seed, lambda w: params_of(_pl_solve(lx, ly, [th], w, fast=True)[1]), x=lx
    )
    r = _pl_residual(th, lx, ly)[0]
    return fit_result(
        name,
        "power_law",
        params,
        samples,
        level=level,
        n_points=len(lx),
        residuals=residual_stats(r, "log"),
        meta={"x": x_name, "levels": level_counts(arr, x_name), "y_min": float(arr["L"].min())},
        n_boot=n_boot,
        n_failed=n_failed,
        bounds=PL_PARAM_BOUNDS,
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
        raise FitRefused(name, f"only {len(idx)} trials are on the compute frontier (need 4)", ("C",))
    lab = None if labels is None else np.asarray(labels, dtype=object)[idx]
    res = fit_power_law(
        arr["C"][idx], arr["L"][idx], n_boot=n_boot, level=level, seed=seed, labels=lab, name=name, x_name="C"
    )
    res.meta["frontier_index"] = [int(i) for i in idx]
    return res
