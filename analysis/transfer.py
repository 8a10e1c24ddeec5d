"""Issue 10's analyses: what an hour of filtered data is worth, and what pretraining transfers.

Data-efficiency multiplier (quality levels): one Approach 3 law shared by every quality level except for
the data term, which sees m_q * D: L = E + A/N^alpha + B/(m_q D)^beta, with m_ref = 1 for the reference
level (unfiltered data). m_q is then "one hour of level-q data is worth m_q hours of reference data at
equal loss" — with shared exponents the multiplier does not depend on the loss, which is what makes it a
single number; the per-level residuals say whether that assumption holds. Huber on log residuals, L-BFGS,
bootstrap over trials, as in ``fit_approach3``.

Transfer (Hernandez et al. 2021, "Scaling Laws for Transfer"): fit the from-scratch law L_s(N, D) on the
scratch trials (Approach 3); for each fine-tuned trial of size N on fine-tune data D_F reaching loss L_ft,
the from-scratch data that reaches the same loss is D_E = (B / (L_ft - E - A/N^alpha))^(1/beta) and the
effective data transferred is D_T = D_E - D_F. Then log D_T = log k + alpha_T log D_F + beta_T log N by
least squares: D_T = k * D_F^alpha_T * N^beta_T. Bootstrap resamples scratch and fine-tune trials together.
A fine-tuned trial whose loss is below the scratch law's floor at its N (E + A/N^alpha) has unbounded D_E;
such trials are left out and counted in ``meta``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import laws
from analysis.fit.approaches import fit_approach3
from analysis.fit.checks import check_inputs, level_counts, refuse_at_bounds
from analysis.fit.results import FitRefused, FitResult, fit_result
from analysis.fit.solvers import (
    A3_BOUNDS,
    A3_PARAM_BOUNDS,
    a3_objective,
    a3_params,
    a3_solve,
    bootstrap_draws,
    bootstrap_refit,
    bootstrap_weights,
    lbfgs_best,
    residual_stats,
    single_threaded,
)
from analysis.verdict import SearchBound

M_LOG_BOUNDS = (-10.0, 10.0)  # log m_q, each quality level's data multiplier

# ----------------------------------------------------------------------------------------------------------
# data-efficiency multiplier per quality level


def _eff_objective(th, logN, logD, logL, G, delta, w=None):
    """th = (a, b, e, alpha, beta, log m_1..log m_{K-1}); G (n, K-1) one-hot of non-reference levels."""
    logDe = logD + G @ th[5:]
    f, g5, g_logD = a3_objective(th[:5], logN, logDe, logL, delta, w)
    return f, np.concatenate([g5, g_logD @ G])


def _eff_solve(starts, logN, logD, logL, G, delta, w=None):
    bounds = A3_BOUNDS + [M_LOG_BOUNDS] * G.shape[1]
    return lbfgs_best(lambda th: _eff_objective(th, logN, logD, logL, G, delta, w), starts, bounds)


@single_threaded
def fit_efficiency(
    N,
    D,
    L,
    level,
    *,
    reference=None,
    delta=1e-3,
    n_boot=100,
    level_ci=0.95,
    seed=0,
    labels=None,
    name="efficiency",
) -> FitResult:
    """Data-efficiency multipliers m_q of each quality ``level`` relative to ``reference`` (default: the
    level with the most data seen in total, taken as the unfiltered pool). Params: E, A, B, alpha, beta and
    ``m[<level>]`` per non-reference level."""
    x = check_inputs(
        name,
        {"N": N, "D": D, "L": L},
        min_points=10,
        positive=("N", "D", "L"),
        distinct={"N": 2},
        labels=labels,
    )
    lev = np.asarray(level, dtype=object)
    levels = list(pd.unique(lev))
    if len(levels) < 2:
        raise FitRefused(
            name, f"a single quality level ({levels[0] if levels else None}): nothing to compare"
        )
    if reference is None:
        reference = max(levels, key=lambda q: x["D"][lev == q].sum())
    if reference not in levels:
        raise FitRefused(name, f"reference level {reference!r} is not among the levels {levels}")
    others = [q for q in levels if q != reference]
    for q in levels:
        nd = len(np.unique(x["D"][lev == q]))
        if nd < 2:
            raise FitRefused(name, f"quality level {q!r} has {nd} data size(s); the data term needs 2")
    G = np.stack([(lev == q).astype(float) for q in others], axis=1)
    logN, logD, logL = np.log(x["N"]), np.log(x["D"]), np.log(x["L"])
    _, th0 = a3_solve(logN, logD, logL, delta)
    f, th = _eff_solve([np.concatenate([th0, np.zeros(len(others))])], logN, logD, logL, G, delta)
    if th is None:
        raise FitRefused(name, "L-BFGS did not converge")

    def params_of(t):
        p = a3_params(t[:5])
        p.update({f"m[{q}]": float(np.exp(v)) for q, v in zip(others, t[5:], strict=True)})
        return p

    params = params_of(th)
    refuse_at_bounds(
        name, params, {"alpha": A3_BOUNDS[3], "beta": A3_BOUNDS[4]}, {"alpha": ("N",), "beta": ("D",)}
    )

    def refit(w):
        tb = _eff_solve([th], logN, logD, logL, G, delta, w)[1]
        return None if tb is None else params_of(tb)

    samples, n_failed = bootstrap_refit(len(logL), n_boot, seed, refit)
    logDe = logD + G @ th[5:]
    r = (
        np.log(laws.chinchilla(x["N"], np.exp(logDe), *(params[k] for k in ("E", "A", "B", "alpha", "beta"))))
        - logL
    )
    per_level = {str(q): float(np.sqrt(np.mean(r[lev == q] ** 2))) for q in levels}
    return fit_result(
        name,
        "efficiency",
        params,
        samples,
        level=level_ci,
        n_points=len(logL),
        residuals={**residual_stats(r, "log"), "objective": f, "rmse_by_level": per_level},
        meta={
            "reference": str(reference),
            "quality_levels": [str(q) for q in levels],
            "levels": level_counts(x, "N", "D"),
            "y_min": float(x["L"].min()),
        },
        n_boot=n_boot,
        n_failed=n_failed,
        bounds={
            **A3_PARAM_BOUNDS,
            **{f"m[{q}]": SearchBound(*np.exp(M_LOG_BOUNDS), log=True) for q in others},
        },
    )


# ----------------------------------------------------------------------------------------------------------
# effective data transferred by pretraining


def _effective_data(p, N, L):
    """From-scratch data reaching loss L at size N under law p; NaN where L is below the law's floor."""
    gap = L - p["E"] - p["A"] * np.power(N, -p["alpha"])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(gap > 0, np.power(p["B"] / gap, 1.0 / p["beta"]), np.nan)


def _transfer_line(p, N, DF, L):
    DE = _effective_data(p, N, L)
    DT = DE - DF
    ok = np.isfinite(DT) & (DT > 0)
    if ok.sum() < 4 or len(np.unique(DF[ok])) < 2 or len(np.unique(N[ok])) < 2:
        return None, ok, DT
    X = np.stack([np.ones(ok.sum()), np.log(DF[ok]), np.log(N[ok])], axis=1)
    coef, *_ = np.linalg.lstsq(X, np.log(DT[ok]), rcond=None)
    return coef, ok, DT


@single_threaded
def fit_transfer(
    scratch: pd.DataFrame, finetune: pd.DataFrame, *, n_boot=100, level=0.95, seed=0, name="transfer"
) -> FitResult:
    """D_T = k * D_F^alpha_T * N^beta_T (Hernandez et al. 2021). ``scratch`` and ``finetune`` have columns
    N, D (fine-tune data for the fine-tuned trials), L. Params: k, alpha_T, beta_T; meta holds the
    scratch law and per-trial D_E, D_T."""
    s = check_inputs(
        name,
        {k: scratch[k] for k in ("N", "D", "L")},
        min_points=8,
        positive=("N", "D", "L"),
        distinct={"N": 2, "D": 2},
    )
    ft = check_inputs(
        name,
        {k: finetune[k] for k in ("N", "D", "L")},
        min_points=4,
        positive=("N", "D", "L"),
        distinct={"N": 2, "D": 2},
    )
    law = fit_approach3(s["N"], s["D"], s["L"], n_boot=0, name=f"{name}: scratch law")
    p = law.params
    coef, ok, DT = _transfer_line(p, ft["N"], ft["D"], ft["L"])
    if coef is None:
        raise FitRefused(
            name,
            f"only {int(ok.sum())} fine-tuned trials gain effective data over scratch (need 4, with 2 sizes and 2 "
            "fine-tune amounts); the rest reach a loss scratch training never does at their size, or none",
        )

    def params_of(c):
        return {"k": float(np.exp(c[0])), "alpha_T": float(c[1]), "beta_T": float(c[2])}

    params = params_of(coef)
    th0 = np.array(law.meta["theta"])
    lN, lD, lL = np.log(s["N"]), np.log(s["D"]), np.log(s["L"])

    def refit(rng):  # one replicate: resample the scratch trials, refit their law, then the fine-tune trials
        w = bootstrap_weights(rng, len(lL))
        _, tb = a3_solve(lN, lD, lL, 1e-3, w, grid=np.empty((0, 5)), n_refine=0, extra_starts=[th0])
        if tb is None:
            return None
        idx = rng.integers(0, len(ft["L"]), len(ft["L"]))
        cb, _, _ = _transfer_line(a3_params(tb), ft["N"][idx], ft["D"][idx], ft["L"][idx])
        return None if cb is None else params_of(cb)

    ps, n_failed = bootstrap_draws(n_boot, seed, refit)
    samples = {k: np.array([q[k] for q in ps]) for k in (ps[0] if ps else {})}
    pred = (
        np.log(params["k"]) + params["alpha_T"] * np.log(ft["D"][ok]) + params["beta_T"] * np.log(ft["N"][ok])
    )
    return fit_result(
        name,
        "transfer",
        params,
        samples,
        level=level,
        n_points=int(ok.sum()),
        residuals=residual_stats(pred - np.log(DT[ok]), "log D_T"),
        meta={
            "scratch_law": {k: float(v) for k, v in p.items()},
            "n_finetune": len(ft["L"]),
            "n_beyond_scratch_floor": int((~ok).sum()),
            "D_T": [float(v) for v in DT],
        },
        n_boot=n_boot,
        n_failed=n_failed,
    )


def split_pretrained(table: pd.DataFrame, col: str = "pretrain_hours") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scratch, fine-tuned) trials by ``pretrain_hours`` (> 0 means the trial started from a checkpoint)."""
    if col not in table.columns:
        raise FitRefused("transfer", f"the table has no column {col!r} (fine-tune trials log pretrain_hours)")
    pre = pd.to_numeric(table[col], errors="coerce").fillna(0.0) > 0
    return table[~pre], table[pre]
