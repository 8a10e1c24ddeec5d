"""Bounded quality metrics: the saturating law y = M - A (x/x_ref)^-alpha (MOS vs compute) and the monotone
logistic loss -> metric map y = floor + (ceiling - floor) / (1 + exp(k (L - L0))) used by ``analysis.predict``."""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares

from analysis import laws
from analysis.fit.checks import check_inputs, level_counts, refuse_at_bounds
from analysis.fit.results import FitRefused, FitResult, fit_result
from analysis.fit.solvers import bootstrap_refit, logistic_solve, residual_stats, single_threaded
from analysis.verdict import SearchBound

SAT_ALPHA_BOUNDS = (1e-4, 5.0)
SAT_LOG_A_BOUNDS = (-30.0, 30.0)


def _sat_residual(th, lxr, y):
    M, la, alpha = th
    t = np.exp(la - alpha * lxr)
    r = M - t - y
    J = np.stack([np.ones_like(y), -t, t * lxr], axis=1)
    return r, J


def _sat_solve(lxr, y, starts, ceiling, w=None):
    """Best (cost, theta) over the starts that converged; (inf, None) when none did."""
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
            bounds=(
                [-np.inf, SAT_LOG_A_BOUNDS[0], SAT_ALPHA_BOUNDS[0]],
                [hi_M, SAT_LOG_A_BOUNDS[1], SAT_ALPHA_BOUNDS[1]],
            ),
            method="trf",
        )
        if res.status > 0 and res.cost < best[0]:
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
    if th is None:
        raise FitRefused(name, "least squares did not converge from any start")

    def params_of(t):
        if t is None:
            return None
        return {"M": float(t[0]), "A": float(np.exp(t[1])), "alpha": float(t[2])}

    params = params_of(th)
    refuse_at_bounds(name, params, {"alpha": SAT_ALPHA_BOUNDS}, {"alpha": (x_name,)})
    samples, n_failed = bootstrap_refit(
        len(lxr), n_boot, seed, lambda w: params_of(_sat_solve(lxr, yy, [th], ceiling, w)[1]), x=lxr
    )
    r = _sat_residual(th, lxr, yy)[0]
    return fit_result(
        name,
        "saturating",
        params,
        samples,
        level=level,
        n_points=len(yy),
        residuals=residual_stats(r, "linear"),
        meta={
            "x_ref": x_ref,
            "x": x_name,
            "ceiling": ceiling,
            "x_max": float(arr[x_name].max()),
            "levels": level_counts(arr, x_name),
        },
        n_boot=n_boot,
        n_failed=n_failed,
        bounds={
            "M": SearchBound(-np.inf, np.inf if ceiling is None else float(ceiling)),
            "A": SearchBound(np.exp(SAT_LOG_A_BOUNDS[0]), np.exp(SAT_LOG_A_BOUNDS[1]), log=True),
            "alpha": SearchBound(*SAT_ALPHA_BOUNDS),
        },
    )


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
    span_L = max(float(LL.max() - LL.min()), 1e-9)
    span_y = max(float(yy.max() - yy.min()), 1e-9)
    bnds = logistic_search_bounds(LL, bounds, sign)
    starts = []
    for pad in (0.1, 1.0):
        for ks in (2.0, 6.0):
            for l0 in np.quantile(LL, [0.3, 0.7]):
                starts.append([yy.min() - pad * span_y, yy.max() + pad * span_y, sign * ks / span_L, l0])
    f, th = logistic_solve(LL, yy, starts, bnds)
    if th is None:
        raise FitRefused(name, "least squares did not converge from any start")

    def params_of(t):
        if t is None:
            return None
        return {"floor": float(t[0]), "ceiling": float(t[1]), "k": float(t[2]), "L0": float(t[3])}

    params = params_of(th)
    samples, n_failed = bootstrap_refit(
        len(yy), n_boot, seed, lambda w: params_of(logistic_solve(LL, yy, [th], bnds, w)[1])
    )
    r = laws.logistic(LL, *th) - yy
    return fit_result(
        name,
        "logistic",
        params,
        samples,
        level=level,
        n_points=len(yy),
        residuals={**residual_stats(r, "linear"), "spearman_rho": rho},
        meta={"x": x_name, "bounds": [bounds[0], bounds[1]], "levels": level_counts(arr, x_name)},
        n_boot=n_boot,
        n_failed=n_failed,
        bounds=logistic_bounds(bnds),
    )


def logistic_search_bounds(LL, bounds, sign: float):
    """([lows], [highs]) of (floor, ceiling, k, L0) for ``logistic_solve``: floor and ceiling inside the
    metric's ``bounds``, k of the sign ``sign`` and at most 200 / (loss range) (a step), L0 within two loss
    ranges of the observed losses."""
    lo_b = -np.inf if bounds[0] is None else bounds[0]
    hi_b = np.inf if bounds[1] is None else bounds[1]
    span_L = max(float(np.max(LL) - np.min(LL)), 1e-9)
    kb = (0.0, 200.0 / span_L) if sign > 0 else (-200.0 / span_L, 0.0)
    return (
        [lo_b, lo_b, kb[0], float(np.min(LL)) - 2 * span_L],
        [hi_b, hi_b, kb[1], float(np.max(LL)) + 2 * span_L],
    )


def logistic_bounds(bnds) -> dict[str, SearchBound]:
    """The verdict's view of ``logistic_solve``'s bounds ([lows], [highs] of floor, ceiling, k, L0)."""
    names = ("floor", "ceiling", "k", "L0")
    return {k: SearchBound(float(lo), float(hi)) for k, lo, hi in zip(names, *bnds, strict=True)}
