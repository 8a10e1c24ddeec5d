"""Held-out extrapolation backtest (issue 9): fit every applicable law on the trials below a compute
threshold, predict the held-out trials with the largest compute, and score the predictions.

Intervals here are *prediction* intervals for one trial's observation: each bootstrap replicate's
prediction plus one of the law's own in-sample residuals drawn at random (multiplicative for laws fitted on
log residuals, additive for the others). A confidence interval for the mean alone would be too narrow to
cover noisy observations even when the law holds.

Laws (each reported, or refused with its reason):
- ``L(C)``: single-variable loss-vs-compute law E + A C^-alpha over the training trials (loss-like metrics).
- ``approach3``: L(N, D) = E + A/N^alpha + B/D^beta (loss-like metrics).
- ``saturating(C)``: M - A C^-alpha, the direct fit of a quality metric against compute (rising metrics).
- ``two_step``: ``val_nelbo``(N, D) then a logistic map to the metric (any metric other than the loss).

Each law carries the verdict of the fit it predicted with. Beside the laws, no-fit baselines that a law
must beat to be worth its parameters (naive baselines reach ~18 % error on language-model ladders, Choshen
et al. 2024), each per held-out trial h (C_h its compute; "below C_h" means below by more than
``DISTINCT_REL_TOL``, so a budget run as whole steps is not "lower compute" than itself):

- ``best_observed``: the best metric (lowest for a falling metric, highest for a rising one) among the
  training trials of the same size (N within ``DISTINCT_REL_TOL``) with compute below C_h; when no trial of
  that size has less compute, the best among all training trials below C_h.
- ``loglog_line``: a straight line in (log C, log metric) through the two largest budgets below C_h of h's
  own ladder (training trials at h's coordinates except compute and seed: the ``axis.*`` columns, else N and
  data_hours; seed repeats at a budget averaged in log), extrapolated to C_h; when the ladder has fewer than
  two budgets below C_h, through the best observed metric at each of the two largest budgets below C_h over
  all training trials (the compute frontier).

A baseline that cannot be formed for a trial says why (``skipped``); one formed for no trial is listed in
``baselines_refused``. Baselines have no intervals (no coverage).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from analysis import verdict as V
from analysis.fit import (
    DISTINCT_REL_TOL,
    FitRefused,
    fit_approach3,
    fit_power_law,
    fit_saturating,
    group_budgets,
    single_threaded,
)
from analysis.noise import seed_column
from analysis.predict import DEFAULT_LOSS, fit_two_step, metric_bounds

COMPUTE_AXES = ("axis.compute_budget", "axis.steps", "axis.budget")
BASELINES = {
    "best_observed": "best observed metric at lower compute (same size where there is one)",
    "loglog_line": "log-log line through the two largest budgets below (own ladder, else the frontier)",
}


def split_holdout(
    table: pd.DataFrame,
    *,
    holdout_top: int | None = None,
    holdout_above: float | None = None,
    holdout_n_above: float | None = None,
    c_col: str = "C",
    n_col: str = "N",
):
    """Boolean masks (train, held_out). Held out: the ``holdout_top`` trials with the largest compute, or
    the trials with compute above ``holdout_above``, and (a union) the trials with more than
    ``holdout_n_above`` parameters, so a ladder can hold out both its largest budget and its largest size.
    With none of the three: the top 20% by compute (at least 1)."""
    if c_col not in table.columns:
        raise FitRefused("backtest", f"the table has no compute column {c_col!r}")
    C = table[c_col].to_numpy(float)
    if holdout_top is not None and holdout_above is not None:
        raise FitRefused("backtest", "give --holdout-top or --holdout-above, not both")
    test = np.zeros(len(C), bool)
    if holdout_above is not None:
        test = C > holdout_above
        if not test.any():
            raise FitRefused("backtest", f"no trial has compute above {holdout_above:.3g} FLOPs")
    elif holdout_top is not None or holdout_n_above is None:
        k = holdout_top if holdout_top is not None else max(1, int(round(0.2 * len(C))))
        if k < 1 or k >= len(C):
            raise FitRefused(
                "backtest", f"holdout of {k} trials leaves nothing to fit or to test ({len(C)} trials)"
            )
        order = np.argsort(-C, kind="stable")
        test[order[:k]] = True
    if holdout_n_above is not None:
        if n_col not in table.columns:
            raise FitRefused("backtest", f"the table has no parameter-count column {n_col!r}")
        big = table[n_col].to_numpy(float) > holdout_n_above
        if not big.any():
            raise FitRefused("backtest", f"no trial has more than {holdout_n_above:.3g} parameters")
        test = test | big
    if test.all():
        raise FitRefused("backtest", "every trial is held out; nothing is left to fit")
    return ~test, test


def _held_out_by(top: int | None, above: float | None, n_above: float | None) -> str:
    """In words, which trials were held out (for the command's and the report's text)."""
    parts = []
    if above is not None:
        parts.append(f"C > {above:.3g}")
    elif top is not None or n_above is None:
        parts.append(f"the {top} largest-compute trials" if top is not None else "the top 20% by compute")
    if n_above is not None:
        parts.append(f"N > {n_above:.3g}")
    return " or ".join(parts)


def _draws_with_noise(draws: np.ndarray, resid: np.ndarray, space: str, rng) -> np.ndarray:
    noise = rng.choice(resid, size=draws.shape) if len(resid) else np.zeros_like(draws)
    return draws * np.exp(noise) if space == "log" else draws + noise


def _rel_error(pred, obs) -> np.ndarray:
    return np.abs(np.asarray(pred, float) - obs) / np.maximum(np.abs(obs), 1e-12)


def _score(trials, obs, pred, draws, level) -> dict[str, Any]:
    """Mean absolute relative error over the held-out trials, and the coverage of the ``level`` prediction
    intervals over the trials whose interval is finite (a draw that is not finite is left out; an interval
    with no finite draw is undetermined, printed as such, and not counted as covering)."""
    q = (1 - level) / 2
    draws = np.asarray(draws, float)
    finite = np.isfinite(draws).any(axis=0)
    d = np.where(np.isfinite(draws), draws, np.nan)
    d[:, ~finite] = 0.0  # no all-NaN column reaches nanquantile; these intervals are set to NaN below
    lo = np.where(finite, np.nanquantile(d, q, axis=0), np.nan)
    hi = np.where(finite, np.nanquantile(d, 1 - q, axis=0), np.nan)
    rel = _rel_error(pred, obs)
    covered = finite & (obs >= lo) & (obs <= hi)
    return {
        "mean_abs_rel_error": float(np.mean(rel)),
        "coverage": float(np.mean(covered[finite])) if finite.any() else None,
        "n": len(obs),
        "n_intervals": int(finite.sum()),
        "points": [
            {
                "trial": str(t),
                "observed": float(o),
                "predicted": float(p),
                "low": float(a),
                "high": float(b),
                "rel_error": float(r),
                "covered": bool(c),
            }
            for t, o, p, a, b, r, c in zip(trials, obs, pred, lo, hi, rel, covered, strict=True)
        ],
    }


@single_threaded
def backtest(
    table: pd.DataFrame,
    metric: str = DEFAULT_LOSS,
    *,
    holdout_top: int | None = None,
    holdout_above: float | None = None,
    holdout_n_above: float | None = None,
    loss: str = DEFAULT_LOSS,
    n_boot: int = 200,
    level: float = 0.9,
    seed: int = 0,
) -> dict[str, Any]:
    """Returns ``{"metric", "level", "n_train", "n_test", "threshold_C", "threshold_N", "held_out_by", "laws": {LAW: {mean_abs_rel_error,
    coverage, n, n_intervals, verdict, reasons, points: [...]}}, "refused": {LAW: reason}, "baselines":
    {NAME: {description, mean_abs_rel_error, n, points: [...], skipped: [...]}}, "baselines_refused": {NAME:
    reason}}``, with no NaN (null where a number is missing). ``laws`` is empty when no law could be fitted
    (``refused`` says why; the baselines are still there). Raises ``FitRefused`` when the table cannot be
    split."""
    if metric not in table.columns:
        raise FitRefused("backtest", f"the table has no column {metric!r}")
    for col in ("N", "D", "C"):
        if col not in table.columns:
            raise FitRefused("backtest", f"the table has no column {col!r}")
    table = table.reset_index(drop=True)
    train_m, test_m = split_holdout(
        table, holdout_top=holdout_top, holdout_above=holdout_above, holdout_n_above=holdout_n_above
    )
    tr, te = table[train_m], table[test_m]
    obs = te[metric].to_numpy(float)
    if not np.all(np.isfinite(obs)):
        raise FitRefused(
            "backtest", f"{metric!r} is NaN for held-out trials {list(te.loc[~np.isfinite(obs), 'trial'])}"
        )
    trials = te["trial"].tolist() if "trial" in te else [str(i) for i in te.index]
    labels = tr["trial"] if "trial" in tr else None
    y_tr = tr[metric].to_numpy(float)
    ok = np.isfinite(y_tr)
    rho = float(spearmanr(tr["C"].to_numpy(float)[ok], y_tr[ok]).statistic) if ok.sum() > 2 else np.nan
    falling = not (rho > 0)  # loss-like unless the metric clearly rises with compute
    rng = np.random.default_rng(seed + 1)
    laws_out: dict[str, Any] = {}
    refused: dict[str, str] = {}

    def attempt(name, fn):
        try:
            pred, draws, verdict = fn()
            laws_out[name] = {**_score(trials, obs, pred, draws, level), **verdict.to_dict()}
        except FitRefused as e:
            refused[name] = e.reason

    def power_C():
        f = fit_power_law(tr["C"], y_tr, n_boot=n_boot, seed=seed, labels=labels, name="L(C)", x_name="C")
        r = _resid_log(f, tr["C"].to_numpy(float), y_tr)
        c = te["C"].to_numpy(float)
        return f.predict(c), _draws_with_noise(f.predict_samples(c), r, "log", rng), f.assess()

    def a3():
        f = fit_approach3(tr["N"], tr["D"], y_tr, n_boot=n_boot, seed=seed, labels=labels)
        r = np.log(y_tr) - np.log(f.predict(tr["N"].to_numpy(float), tr["D"].to_numpy(float)))
        x = (te["N"].to_numpy(float), te["D"].to_numpy(float))
        return f.predict(*x), _draws_with_noise(f.predict_samples(*x), r, "log", rng), f.assess()

    def sat():
        f = fit_saturating(
            tr["C"],
            y_tr,
            ceiling=metric_bounds(metric)[1],
            n_boot=n_boot,
            seed=seed,
            labels=labels,
            name="saturating(C)",
        )
        r = y_tr - f.predict(tr["C"].to_numpy(float))
        c = te["C"].to_numpy(float)
        return f.predict(c), _draws_with_noise(f.predict_samples(c), r, "linear", rng), f.assess()

    def two():
        if loss not in table.columns:
            raise FitRefused("two_step", f"the table has no loss column {loss!r}")
        ts = fit_two_step(
            tr["N"],
            tr["D"],
            tr[loss],
            y_tr,
            loss_name=loss,
            metric_name=metric,
            n_boot=n_boot,
            seed=seed,
            labels=labels,
        )
        p = ts.predict(te["N"].to_numpy(float), te["D"].to_numpy(float), level=level)
        _, ys = ts.draws(te["N"].to_numpy(float), te["D"].to_numpy(float))
        return p["metric"], _draws_with_noise(ys, ts.chain_residuals, "linear", rng), ts.assess()

    if falling:
        attempt("L(C)", power_C)
        attempt("approach3", a3)
    else:
        refused["L(C)"] = refused["approach3"] = (
            f"{metric!r} rises with compute (Spearman rho {rho:.2f}); a decreasing law does not apply"
        )
        attempt("saturating(C)", sat)
    if metric != loss:
        attempt("two_step", two)
    else:
        refused["two_step"] = f"the metric is the loss {loss!r} itself"
    baselines, baselines_refused = no_fit_baselines(tr, te, metric, falling=falling)
    return V.clean(
        {
            "metric": metric,
            "level": level,
            "n_train": int(train_m.sum()),
            "n_test": int(test_m.sum()),
            "threshold_C": float(tr["C"].max()),
            "threshold_N": float(tr["N"].max()),
            "held_out_by": _held_out_by(holdout_top, holdout_above, holdout_n_above),
            "laws": laws_out,
            "refused": refused,
            "baselines": baselines,
            "baselines_refused": baselines_refused,
        }
    )


# ----------------------------------------------------------------------------------------------------------
# no-fit baselines (module docstring)


def _below(C_train: np.ndarray, c: float) -> np.ndarray:
    return C_train < c * (1.0 - DISTINCT_REL_TOL)


def ladder_keys(table: pd.DataFrame) -> list[str]:
    """The coordinates of a trial's own ladder: its ``axis.*`` columns except compute and seed, else N and
    data_hours."""
    seed = seed_column(table)
    keys = [c for c in table.columns if str(c).startswith("axis.") and c not in COMPUTE_AXES and c != seed]
    return keys or [c for c in ("N", "data_hours") if c in table.columns]


def _same(frame: pd.DataFrame, row: pd.Series, keys: list[str]) -> np.ndarray:
    m = np.ones(len(frame), bool)
    for k in keys:
        a, b = frame[k], row[k]
        m &= (a.isna() & pd.isna(b)).to_numpy() | (a == b).to_numpy()
    return m


def _line_through_top_two(C: np.ndarray, y: np.ndarray, c: float, best=None) -> float | None:
    """The value at ``c`` of the line in (log C, log y) through the two largest budgets of (C, y): per
    budget (``group_budgets`` at ``DISTINCT_REL_TOL``) the mean log y, or the ``best`` of y when given. None
    with fewer than two budgets."""
    g = group_budgets(C, tol_dex=float(np.log10(1.0 + DISTINCT_REL_TOL)))
    top = sorted(set(g.tolist()))[-2:]
    if len(top) < 2:
        return None
    pts = []
    for lev in top:
        m = g == lev
        yy = best(y[m]) if best is not None else float(np.exp(np.mean(np.log(y[m]))))
        pts.append((float(np.mean(np.log(C[m]))), float(np.log(yy))))
    (x0, y0), (x1, y1) = pts
    return float(np.exp(y0 + (y1 - y0) * (np.log(c) - x0) / (x1 - x0)))


def no_fit_baselines(
    train: pd.DataFrame, test: pd.DataFrame, metric: str, *, falling: bool = True
) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``best_observed`` and ``loglog_line`` predictions of every held-out trial (module docstring):
    ``({name: {description, mean_abs_rel_error, n, points, skipped}}, {name: reason}``) for the baselines
    formed for at least one trial, and the reasons of the others."""
    best = np.min if falling else np.max
    C_tr = train["C"].to_numpy(float)
    y_tr = train[metric].to_numpy(float)
    N_tr = train["N"].to_numpy(float)
    ok = np.isfinite(C_tr) & np.isfinite(y_tr)
    keys = [k for k in ladder_keys(train) if k in test.columns]
    out: dict[str, dict[str, Any]] = {
        k: {"description": d, "points": [], "skipped": []} for k, d in BASELINES.items()
    }
    positive = bool(np.all(y_tr[ok] > 0))
    for _, h in test.iterrows():
        c, y_h = float(h["C"]), float(h[metric])
        trial = str(h["trial"]) if "trial" in h else str(h.name)
        below = ok & _below(C_tr, c)
        if not below.any():
            why = f"no training trial has less compute than {c:.3g} FLOPs"
            for k in out:
                out[k]["skipped"].append({"trial": trial, "reason": why})
            continue
        size = below & (np.abs(N_tr / float(h["N"]) - 1.0) <= DISTINCT_REL_TOL)
        pick, how = (size, "same size") if size.any() else (below, "any size")
        out["best_observed"]["points"].append(_point(trial, y_h, float(best(y_tr[pick])), how))
        if not positive:
            out["loglog_line"]["skipped"].append(
                {"trial": trial, "reason": f"{metric!r} is not positive everywhere: no log-log line"}
            )
            continue
        own = below & _same(train, h, keys)
        p = _line_through_top_two(C_tr[own], y_tr[own], c)
        how = "own ladder"
        if p is None:
            p, how = _line_through_top_two(C_tr[below], y_tr[below], c, best=best), "compute frontier"
        if p is not None and not np.isfinite(p):
            out["loglog_line"]["skipped"].append({"trial": trial, "reason": "the line's value is not finite"})
            continue
        if p is None:
            n_lev = len(set(group_budgets(C_tr[below], tol_dex=float(np.log10(1.0 + DISTINCT_REL_TOL)))))
            out["loglog_line"]["skipped"].append(
                {
                    "trial": trial,
                    "reason": f"fewer than two budgets below {c:.3g} FLOPs ({n_lev} among the training trials)",
                }
            )
            continue
        out["loglog_line"]["points"].append(_point(trial, y_h, p, how))
    formed, refused = {}, {}
    for k, b in out.items():
        if not b["points"]:
            refused[k] = b["skipped"][0]["reason"] if b["skipped"] else "no held-out trials"
            continue
        rel = [p["rel_error"] for p in b["points"]]
        formed[k] = {**b, "mean_abs_rel_error": float(np.mean(rel)), "n": len(rel)}
    return formed, refused


def _point(trial: str, observed: float, predicted: float, how: str) -> dict[str, Any]:
    rel = float(_rel_error(predicted, np.array(observed))) if np.isfinite(predicted) else None
    return {"trial": trial, "observed": observed, "predicted": predicted, "rel_error": rel, "how": how}


def _resid_log(f, x, y):
    return np.log(y) - np.log(f.predict(x))
