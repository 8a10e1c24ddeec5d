"""Issue 9: two-step prediction (val_nelbo(N, D) then a logistic map to MOS), chained intervals, and the
held-out extrapolation backtest, on synthetic tables from known laws."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import laws
from analysis import synthetic as S
from analysis.backtest import backtest, split_holdout
from analysis.fit import FitRefused
from analysis.predict import fit_two_step, two_step_from_table

P, M = S.VITS_LIKE, S.MOS_MAP


def _truth(N, D):
    return laws.logistic(laws.chinchilla(N, D, **P), **M)


def test_two_step_recovers_both_steps():
    t = S.sweep_table(sizes=np.geomspace(1e6, 6.4e7, 8), hours=(0.5, 1, 2, 4, 8, 16, 32), seed=1)
    ts = two_step_from_table(t, n_boot=0)
    p1, p2 = ts.step1.params, ts.step2.params
    assert abs(p1["alpha"] - P["alpha"]) < 0.05 and abs(p1["beta"] - P["beta"]) < 0.05
    assert abs(p1["E"] - P["E"]) < 0.2
    assert abs(p2["L0"] - M["L0"]) < 0.1 and abs(p2["k"] - M["k"]) < 0.6
    assert abs(p2["floor"] - M["floor"]) < 0.15 and abs(p2["ceiling"] - M["ceiling"]) < 0.15
    assert 1.0 <= p2["floor"] and p2["ceiling"] <= 5.0  # MOS bounds respected


def test_chained_90pct_interval_covers_truth_in_most_draws():
    pts = (np.array([3.2e7, 1.28e8]), np.array([8 * 3600.0, 32 * 3600.0]))  # inside, and 2x beyond the grid
    truth = _truth(*pts)
    hits, draws = np.zeros(2), 5
    for seed in range(draws):
        t = S.sweep_table(seed=10 + seed)
        ts = fit_two_step(t.N, t.D, t.val_nelbo, t.dnsmos_ovrl, n_boot=40, seed=seed)
        pr = ts.predict(*pts, level=0.9)
        hits += (pr["low"] <= truth) & (truth <= pr["high"])
        assert np.all(pr["low"] <= pr["metric"]) and np.all(pr["metric"] <= pr["high"])
    assert np.all(hits >= 3), hits


def test_budget_prediction_uses_compute_optimal_allocation():
    t = S.sweep_table(seed=2)
    ts = fit_two_step(t.N, t.D, t.val_nelbo, t.dnsmos_ovrl, n_boot=20)
    pr = ts.predict_budget([1e15, 1e16], k=40.0)
    assert np.all(np.diff(pr["metric"]) > 0)  # more compute, better MOS
    assert np.allclose(40.0 * pr["N"] * pr["D"], [1e15, 1e16])


def test_two_step_refuses_non_monotone_metric_and_missing_columns():
    t = S.sweep_table(seed=3)
    rng = np.random.default_rng(0)
    t["dnsmos_ovrl"] = rng.uniform(1, 5, len(t))
    with pytest.raises(FitRefused, match="not monotone"):
        two_step_from_table(t, n_boot=0)
    with pytest.raises(FitRefused, match="no column 'utmos'"):
        two_step_from_table(t, metric="utmos", n_boot=0)


def test_backtest_on_a_lawful_table_has_small_error_and_high_coverage():
    t = S.sweep_table(seed=4)
    r = backtest(t, "val_nelbo", holdout_top=8, n_boot=40)
    a3 = r["laws"]["approach3"]
    assert r["n_test"] == 8 and len(a3["points"]) == 8
    assert a3["mean_abs_rel_error"] < 0.03
    assert a3["coverage"] >= 0.75
    assert "two_step" in r["refused"]  # metric is the loss itself
    q = backtest(t, "dnsmos_ovrl", holdout_top=8, n_boot=40)
    assert q["laws"]["two_step"]["mean_abs_rel_error"] < 0.05 and q["laws"]["two_step"]["coverage"] >= 0.6
    assert "saturating(C)" in q["laws"] and "approach3" in q["refused"]


def test_backtest_detects_a_bend_in_the_law():
    t = S.sweep_table(seed=4)
    _, test = split_holdout(t, holdout_top=8)
    thr = t.loc[~test, "C"].max()
    bent = t.copy()
    red = bent["val_nelbo"] - P["E"]
    bend = np.where(test, (bent["C"] / thr) ** 0.3, 1.0)  # reducible loss falls more slowly beyond thr
    bent["val_nelbo"] = P["E"] + red * bend
    ok = backtest(t, "val_nelbo", holdout_top=8, n_boot=40)["laws"]["approach3"]
    bad = backtest(bent, "val_nelbo", holdout_top=8, n_boot=40)["laws"]["approach3"]
    assert bad["mean_abs_rel_error"] > 3 * ok["mean_abs_rel_error"]
    assert bad["mean_abs_rel_error"] > 0.05
    assert bad["coverage"] <= 0.25


def test_backtest_refusals():
    t = S.sweep_table(sizes=(1e6, 2e6, 4e6), hours=(1, 2, 4), seed=5)  # 9 trials
    r = backtest(t, "val_nelbo", holdout_top=3, n_boot=0)  # 6 left: approach3 needs 8
    assert "too few points" in r["refused"]["approach3"]
    with pytest.raises(FitRefused, match="leaves nothing"):
        backtest(t, "val_nelbo", holdout_top=9)
    with pytest.raises(FitRefused, match="no trial has compute above"):
        backtest(t, "val_nelbo", holdout_above=1e30)
    with pytest.raises(FitRefused, match="no column 'utmos'"):
        backtest(t, "utmos")
    tiny = t.head(4)
    r = backtest(tiny, "val_nelbo", holdout_top=1, n_boot=0)  # no law: the baselines are still reported
    assert r["laws"] == {} and "too few points" in r["refused"]["approach3"]
    assert set(r["baselines"]) | set(r["baselines_refused"]) == {"best_observed", "loglog_line"}
