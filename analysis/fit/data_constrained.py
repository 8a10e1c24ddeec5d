"""Approach 3 with Muennighoff et al. 2023's effective data for repeated epochs: L(N, D, U) =
E + A/N^alpha + B/D'(U, D; R*)^beta, R* (how fast repeated data loses value) fitted."""

from __future__ import annotations

import numpy as np

from analysis.fit.checks import check_inputs, level_counts, refuse_at_bounds
from analysis.fit.predictors import PREDICTORS
from analysis.fit.results import FitRefused, FitResult, fit_result
from analysis.fit.solvers import (
    A3_BOUNDS,
    A3_PARAM_BOUNDS,
    a3_objective,
    a3_params,
    a3_solve,
    bootstrap_refit,
    lbfgs_best,
    residual_stats,
    single_threaded,
)
from analysis.verdict import SearchBound

R_STAR_BOUNDS = (0.05, 1e4)  # R*_D searched in log


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
    bounds = A3_BOUNDS + [(np.log(R_STAR_BOUNDS[0]), np.log(R_STAR_BOUNDS[1]))]
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
            ("repeats",),
        )
    logN, logL = np.log(x["N"]), np.log(x["L"])
    f0, th0 = a3_solve(logN, np.log(x["D"]), logL, delta)
    starts = [np.append(th0, np.log(r)) for r in (1.0, 5.0, 15.0, 60.0)]
    f, th = _dc_solve(logN, x["D"], x["U"], logL, delta, starts)
    if th is None:
        raise FitRefused(name, "L-BFGS did not converge from any start")

    def params_of(t):
        return {**a3_params(t[:5]), "R_star": float(np.exp(t[5]))}

    params = params_of(th)
    refuse_at_bounds(
        name, params, {"alpha": A3_BOUNDS[3], "beta": A3_BOUNDS[4]}, {"alpha": ("N",), "beta": ("D",)}
    )

    def refit(w):
        tb = _dc_solve(logN, x["D"], x["U"], logL, delta, [th], w)[1]
        return None if tb is None else params_of(tb)

    samples, n_failed = bootstrap_refit(len(logL), n_boot, seed, refit)
    pred = PREDICTORS["data_constrained"](params, {}, x["N"], x["D"], x["U"])
    return fit_result(
        name,
        "data_constrained",
        params,
        samples,
        level=level,
        n_points=len(logL),
        residuals={**residual_stats(np.log(pred) - logL, "log"), "objective": f},
        meta={
            "delta": delta,
            "n_repeated": int(rep.sum()),
            "levels": level_counts(x, "N", "D"),
            "y_min": float(x["L"].min()),
        },
        n_boot=n_boot,
        n_failed=n_failed,
        bounds={**A3_PARAM_BOUNDS, "R_star": SearchBound(*R_STAR_BOUNDS, log=True)},
    )
