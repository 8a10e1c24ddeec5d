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
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from analysis.fit import FitRefused, fit_approach3, fit_power_law, fit_saturating, single_threaded
from analysis.predict import DEFAULT_LOSS, fit_two_step, metric_bounds


def split_holdout(
    table: pd.DataFrame,
    *,
    holdout_top: int | None = None,
    holdout_above: float | None = None,
    c_col: str = "C",
):
    """Boolean masks (train, held_out): the ``holdout_top`` trials with the largest compute, or all trials
    with compute above ``holdout_above``. Default: the top 20% (at least 1)."""
    if c_col not in table.columns:
        raise FitRefused("backtest", f"the table has no compute column {c_col!r}")
    C = table[c_col].to_numpy(float)
    if holdout_top is not None and holdout_above is not None:
        raise FitRefused("backtest", "give --holdout-top or --holdout-above, not both")
    if holdout_above is not None:
        test = C > holdout_above
    else:
        k = holdout_top if holdout_top is not None else max(1, int(round(0.2 * len(C))))
        if k < 1 or k >= len(C):
            raise FitRefused(
                "backtest", f"holdout of {k} trials leaves nothing to fit or to test ({len(C)} trials)"
            )
        order = np.argsort(-C, kind="stable")
        test = np.zeros(len(C), bool)
        test[order[:k]] = True
    if not test.any():
        raise FitRefused("backtest", f"no trial has compute above {holdout_above:.3g} FLOPs")
    if test.all():
        raise FitRefused("backtest", "every trial is held out; nothing is left to fit")
    return ~test, test


def _draws_with_noise(draws: np.ndarray, resid: np.ndarray, space: str, rng) -> np.ndarray:
    noise = rng.choice(resid, size=draws.shape) if len(resid) else np.zeros_like(draws)
    return draws * np.exp(noise) if space == "log" else draws + noise


def _score(trials, obs, pred, draws, level) -> dict[str, Any]:
    q = (1 - level) / 2
    lo = np.quantile(draws, q, axis=0)
    hi = np.quantile(draws, 1 - q, axis=0)
    rel = np.abs(pred - obs) / np.maximum(np.abs(obs), 1e-12)
    covered = (obs >= lo) & (obs <= hi)
    return {
        "mean_abs_rel_error": float(np.mean(rel)),
        "coverage": float(np.mean(covered)),
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
    loss: str = DEFAULT_LOSS,
    n_boot: int = 200,
    level: float = 0.9,
    seed: int = 0,
) -> dict[str, Any]:
    """Returns ``{"metric", "level", "n_train", "n_test", "threshold_C", "laws": {LAW: {mean_abs_rel_error,
    coverage, points: [...]}}, "refused": {LAW: reason}}``. Raises ``FitRefused`` when the table cannot be
    split or no law can be fitted."""
    if metric not in table.columns:
        raise FitRefused("backtest", f"the table has no column {metric!r}")
    for col in ("N", "D", "C"):
        if col not in table.columns:
            raise FitRefused("backtest", f"the table has no column {col!r}")
    table = table.reset_index(drop=True)
    train_m, test_m = split_holdout(table, holdout_top=holdout_top, holdout_above=holdout_above)
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
            pred, draws = fn()
            laws_out[name] = _score(trials, obs, pred, draws, level)
        except FitRefused as e:
            refused[name] = e.reason

    def power_C():
        f = fit_power_law(tr["C"], y_tr, n_boot=n_boot, seed=seed, labels=labels, name="L(C)", x_name="C")
        r = _resid_log(f, tr["C"].to_numpy(float), y_tr)
        return f.predict(te["C"].to_numpy(float)), _draws_with_noise(
            f.predict_samples(te["C"].to_numpy(float)), r, "log", rng
        )

    def a3():
        f = fit_approach3(tr["N"], tr["D"], y_tr, n_boot=n_boot, seed=seed, labels=labels)
        r = np.log(y_tr) - np.log(f.predict(tr["N"].to_numpy(float), tr["D"].to_numpy(float)))
        x = (te["N"].to_numpy(float), te["D"].to_numpy(float))
        return f.predict(*x), _draws_with_noise(f.predict_samples(*x), r, "log", rng)

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
        return f.predict(c), _draws_with_noise(f.predict_samples(c), r, "linear", rng)

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
        return p["metric"], _draws_with_noise(ys, ts.chain_residuals, "linear", rng)

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
    if not laws_out:
        raise FitRefused(
            "backtest", "no law could be fitted — " + "; ".join(f"{k}: {v}" for k, v in refused.items())
        )
    return {
        "metric": metric,
        "level": level,
        "n_train": int(train_m.sum()),
        "n_test": int(test_m.sum()),
        "threshold_C": float(tr["C"].max()),
        "laws": laws_out,
        "refused": refused,
    }


def _resid_log(f, x, y):
    return np.log(y) - np.log(f.predict(x))
