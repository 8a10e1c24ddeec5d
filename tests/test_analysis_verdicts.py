"""Issue 17: verdicts on every fit (determined | undetermined, with reasons), no NaN in any printed interval,
no allocation from an undetermined fit, seed-to-seed noise, and the backtest's no-fit baselines."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from analysis import fit as F
from analysis import synthetic as S
from analysis import verdict as V
from analysis.backtest import backtest
from analysis.noise import seed_noise
from orchestrator.cli import app

SIX = tuple(np.geomspace(1e6, 6.4e7, 6))
HOURS = (0.5, 1, 2, 4, 8, 16)
NAN = re.compile(r"\bnan\b", re.IGNORECASE)


def _strict_json(text: str):
    """json.loads that fails on NaN / Infinity (the standard library accepts them by default)."""

    def bad(c):
        raise AssertionError(f"non-finite number {c} in JSON output")

    return json.loads(text, parse_constant=bad)


def _a3(table, n_boot=40):
    return F.fit_approach3(table.N, table.D, table.val_nelbo, n_boot=n_boot, seed=0)


@pytest.fixture(scope="module")
def demo_csv(tmp_path_factory):
    """The demo's shape: 4 sizes over 2.2x in N, 2 data sizes, 3 budgets, one seed."""
    p = tmp_path_factory.mktemp("demo") / "demo.csv"
    S.demo_like_table().to_csv(p, index=False)
    return p


# ----------------------------------------------------------------------------------------------------------
# verdict rules on synthetic tables


def test_known_law_with_six_sizes_is_determined():
    f = _a3(S.sweep_table(sizes=SIX, hours=HOURS, seed=1))
    v = f.assess()
    assert v.verdict == "determined" and v.reasons == [], v.texts
    assert f.to_dict()["verdict"] == "determined" and f.n_converged + f.n_failed == 40
    for k in ("alpha", "beta"):
        lo, hi = f.ci[k]
        assert abs(f.params[k] - S.VITS_LIKE[k]) < 0.1 and hi - lo <= V.EXPONENT_WIDTH_MAX


def test_too_few_sizes_is_undetermined_with_that_reason():
    from analysis.suite import run_suite

    two = S.sweep_table(sizes=SIX[::5], hours=HOURS, seed=1)  # 2 sizes: the fit is refused
    s = run_suite(two, approaches=("3",), singles=False, quality=None, n_boot=10)
    v = s.verdicts()["approach3"]
    assert v.verdict == "undetermined" and "N" in v.needs
    assert "2 distinct values of 'N' (model sizes)" in v.texts[0]
    three = _a3(S.sweep_table(sizes=SIX[::2], hours=HOURS, seed=1))  # 3 sizes: fitted, not determined
    v = three.assess()
    assert v.verdict == "undetermined" and [r.code for r in v.reasons] == ["levels"]
    assert "only 3 distinct model sizes" in v.texts[0] and "at least 4" in v.texts[0]


def test_exponent_on_its_bound_is_undetermined(demo_csv):
    f = _a3(pd.read_csv(demo_csv), n_boot=100)  # the demo's shape: alpha runs to its search bound 5
    v = f.assess()
    assert v.verdict == "undetermined"
    on = [r for r in v.reasons if r.code == "bound" and r.param == "alpha"]
    assert on and "search bound 5" in on[0].text and on[0].needs == ("N",)


def test_exponent_pinned_in_many_resamples_is_undetermined_at_any_level():
    f = _a3(S.sweep_table(sizes=SIX, hours=HOURS, seed=1))
    a = f.samples["alpha"].copy()
    a[: round(0.15 * len(a))] = 5.0  # 15 % of the resamples on the upper bound
    pinned = dataclasses.replace(f, samples={**f.samples, "alpha": a}, level=0.5)
    pinned.ci = F.percentile_ci(pinned.samples, 0.5)  # the 50% interval stays clear of the bound
    assert pinned.ci["alpha"][1] < 5.0 - V.BOUND_TOL
    v = pinned.assess()
    assert v.at_bound_share["alpha"] == pytest.approx(0.15, abs=0.03)
    assert [r.code for r in v.reasons if r.param == "alpha"] == ["pinned"]
    assert v.at_bound_share["a"] is None  # derived, not searched: no bound


def test_E_on_zero_is_undetermined():
    f = _a3(S.sweep_table(sizes=SIX, hours=HOURS, params={**S.VITS_LIKE, "E": 0.0}, seed=1))
    v = f.assess()
    assert v.verdict == "undetermined" and "e_zero" in [r.code for r in v.reasons]
    assert "E is on 0" in " ".join(v.texts)


def test_no_bootstrap_is_undetermined_and_its_intervals_print_as_undetermined():
    f = _a3(S.sweep_table(sizes=SIX, hours=HOURS, seed=1), n_boot=0)
    assert f.verdict == "undetermined" and "no intervals" in f.assess().briefs[0]
    d = _strict_json(json.dumps(f.to_dict()))
    assert d["ci"]["alpha"] == [None, None]
    assert V.interval_text(*f.ci["alpha"]) == "undetermined"


def test_allocation_with_an_interval_reaching_zero_or_nan_is_undetermined():
    ok = V.Verdict("determined")
    out = {"level": 0.9, "N_opt_ci": [0.0, 1.2e6], "D_opt_ci": [1.4e4, float("nan")], "loss_ci": [1.0, 2.0]}
    v = V.judge_allocation(ok, out)
    assert v.verdict == "undetermined"
    assert [r.param for r in v.reasons] == ["N_opt", "D_opt"]
    assert "contains 0" in v.texts[0] and "not finite" in v.texts[1]


# ----------------------------------------------------------------------------------------------------------
# the commands: no allocation from an undetermined fit, no NaN printed


def test_allocate_exits_2_and_prints_no_allocation_from_an_undetermined_fit(demo_csv):
    runner = CliRunner()
    res = runner.invoke(app, ["allocate", "--file", str(demo_csv), "--budget", "1e13", "--n-boot", "20"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "no allocation" in text and "the Approach 3 fit: " in text
    assert "N_opt" not in text and "config." not in text
    res = runner.invoke(
        app, ["allocate", "--file", str(demo_csv), "--budget", "1e13", "--n-boot", "20", "--json"]
    )
    assert res.exit_code == 2
    obj = _strict_json(res.stdout)
    assert obj["verdict"] == "undetermined" and obj["reasons"]
    assert not {"N_opt", "D_opt", "loss", "N_opt_ci", "config", "metric"} & set(obj)


def test_fit_cli_separates_undetermined_fits_and_prints_no_nan(demo_csv):
    runner = CliRunner()
    res = runner.invoke(app, ["fit", str(demo_csv), "--n-boot", "20"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "determined fits" in out and "undetermined fits" in out
    assert out.index("undetermined fits") < out.index("approach3")  # listed under its own heading
    assert "95% interval" in out and not NAN.search(out)
    res = runner.invoke(app, ["fit", str(demo_csv), "--n-boot", "0", "--approach", "3"])
    assert res.exit_code == 0 and "undetermined" in res.output and not NAN.search(res.output)
    res = runner.invoke(app, ["fit", str(demo_csv), "--n-boot", "20", "--json"])
    obj = _strict_json(res.stdout)
    assert obj["fits"]["approach3"]["verdict"] == "undetermined"
    assert obj["verdicts"]["L(C) frontier"]["verdict"] == "undetermined"  # refused: undetermined, with why
    assert all("at_bound_share" in f for f in obj["fits"].values())


def test_backtest_cli_prints_baselines_and_no_nan(demo_csv):
    res = CliRunner().invoke(app, ["backtest", str(demo_csv), "--holdout-top", "6", "--n-boot", "20"])
    assert res.exit_code == 0, res.output
    assert "best_observed" in res.output and "loglog_line" in res.output and not NAN.search(res.output)
    # the largest budget held out: no law can be fitted on two budgets; baselines still shown, exit 2
    res = CliRunner().invoke(app, ["backtest", str(demo_csv), "--holdout-above", "2e11", "--n-boot", "10"])
    assert res.exit_code == 2 and "loglog_line" in res.output and "not fitted" in res.output


def test_report_opens_with_a_paragraph_true_of_its_verdicts(demo_csv, tmp_path):
    from analysis.report import write_report
    from analysis.table import read_file

    path = write_report(read_file(demo_csv), tmp_path, n_boot=20, holdout_top=6, quality=None)
    html = path.read_text()
    assert not NAN.search(re.sub(r"<img[^>]+>", "", html))
    assert html.index("What this sweep determines") < html.index("Determined fits")
    assert html.index("Undetermined fits") < html.index("<h3>approach3")
    fits = _strict_json((tmp_path / "fits.json").read_text())
    answer = fits["answer"]
    assert (
        answer.startswith("No law is determined") and fits["fits"]["approach3"]["verdict"] == "undetermined"
    )
    assert "Not determined: approach3 (" in answer
    assert "best_observed" in answer and "loglog_line" in answer  # the backtest against the baselines
    assert "width [16, 32] x n_layers [1, 2]" in answer and "seeds: 3" in answer  # the sweep's own axes
    assert fits["allocation"]["verdict"] == "undetermined" and "N_opt" not in fits["allocation"]
    assert "No allocation" in html


def test_report_paragraph_names_determined_exponents_with_intervals(tmp_path):
    from analysis.report import write_report

    t = S.sweep_table(sizes=SIX, hours=HOURS, seed=1)
    write_report(t, tmp_path, n_boot=20, holdout_top=6, quality=None, exact_count=False)
    answer = json.loads((tmp_path / "fits.json").read_text())["answer"]
    assert answer.startswith("Determined: approach3 (alpha = ")
    f = json.loads((tmp_path / "fits.json").read_text())["fits"]["approach3"]
    lo, hi = f["ci"]["alpha"]
    assert f"[{lo:.4g}, {hi:.4g}]" in answer and "at 95%" in answer.split(";")[0]


# ----------------------------------------------------------------------------------------------------------
# seed noise


def test_seed_noise_recovered_from_a_table_with_known_noise():
    t = S.demo_like_table(seeds=(0, 1, 2, 3), loss_noise=0.03, seed=5)
    r = seed_noise(t, ["val_nelbo"])
    assert r["reason"] is None and r["seed_column"] == "axis.seed"
    m = r["metrics"]["val_nelbo"]
    assert m["n_points"] == 24 and m["n_trials"] == 96 and m["dof"] == 72
    assert m["rel_std"] == pytest.approx(0.03, rel=0.2)  # log-normal sigma 0.03 = 3% relative
    quiet = seed_noise(S.demo_like_table(seeds=(0, 1, 2, 3), loss_noise=0.005, seed=5), ["val_nelbo"])
    assert quiet["metrics"]["val_nelbo"]["rel_std"] == pytest.approx(0.005, rel=0.2)


def test_seed_noise_bad_input_gives_reasons_not_numbers(tmp_path):
    one_seed = seed_noise(S.demo_like_table(), ["val_nelbo"])
    assert one_seed["metrics"] == {} and "repeated at no point" in one_seed["reason"]
    t = S.demo_like_table()
    t = pd.concat([t, t.iloc[[0]].assign(**{"axis.seed": 1, "trial": "again"})], ignore_index=True)
    single = seed_noise(t, ["val_nelbo"])
    assert "only one point" in single["reason"] and single["metrics"] == {}
    mixed = S.demo_like_table(seeds=(0, 1))
    mixed["axis.seed"] = mixed["axis.seed"].astype(object)
    mixed.loc[3, "axis.seed"] = "x"
    r = seed_noise(mixed, ["val_nelbo"])
    assert "mixes integer seeds with other values: 'x'" in r["reason"] and r["metrics"] == {}
    p = tmp_path / "mixed.csv"  # through the CLI: a clear line, no traceback, no NaN
    mixed.to_csv(p, index=False)
    res = CliRunner().invoke(app, ["fit", str(p), "--approach", "all", "--n-boot", "5"])
    assert res.exit_code == 0 and res.exception is None, res.output
    assert "seed-to-seed noise: not measured" in res.output and not NAN.search(res.output)


# ----------------------------------------------------------------------------------------------------------
# baselines by hand


def test_baselines_equal_a_hand_computation():
    """Two sizes x four budgets (size 2e6 without the 1e13 one); the two trials of the largest budget held
    out. Then, without b2, size 2e6 has one budget below: its line falls back to the compute frontier."""
    rows = [
        # trial, N, C, loss
        ("a1", 1e6, 1e12, 5.0),
        ("a2", 1e6, 3e12, 4.0),
        ("a3", 1e6, 1e13, 3.5),
        ("a4", 1e6, 3e13, 3.0),
        ("b1", 2e6, 1e12, 5.5),
        ("b2", 2e6, 3e12, 3.8),
        ("b4", 2e6, 3e13, 2.8),
    ]
    t = pd.DataFrame(rows, columns=["trial", "N", "C", "val_nelbo"]).assign(D=lambda d: d.C / (6 * d.N))
    r = backtest(t, "val_nelbo", holdout_top=2, n_boot=0)
    b = r["baselines"]
    best = {p["trial"]: p for p in b["best_observed"]["points"]}
    assert best["a4"]["predicted"] == 3.5 and best["a4"]["how"] == "same size"  # min of a1..a3
    assert best["b4"]["predicted"] == 3.8  # min of b1, b2
    line = {p["trial"]: p for p in b["loglog_line"]["points"]}
    # a4: own ladder, the line through (3e12, 4.0) and (1e13, 3.5), at 3e13
    slope = np.log(3.5 / 4.0) / np.log(1e13 / 3e12)
    assert line["a4"]["predicted"] == pytest.approx(3.5 * (3e13 / 1e13) ** slope)
    assert line["a4"]["how"] == "own ladder"
    # b4: its ladder has two budgets below (1e12, 3e12): the line through (1e12, 5.5) and (3e12, 3.8)
    slope_b = np.log(3.8 / 5.5) / np.log(3.0)
    assert line["b4"]["predicted"] == pytest.approx(3.8 * 10.0**slope_b)
    for name in ("best_observed", "loglog_line"):
        pts = b[name]["points"]
        want = np.mean([abs(p["predicted"] - p["observed"]) / p["observed"] for p in pts])
        assert b[name]["mean_abs_rel_error"] == pytest.approx(want) and b[name]["n"] == 2
    # b's ladder without b2: one budget below -> the frontier of every training trial (best per budget:
    # 5.0 at 1e12, 4.0 at 3e12, 3.5 at 1e13), its two largest budgets
    r2 = backtest(t[t.trial != "b2"], "val_nelbo", holdout_top=2, n_boot=0)
    p = {q["trial"]: q for q in r2["baselines"]["loglog_line"]["points"]}["b4"]
    assert p["how"] == "compute frontier"
    assert p["predicted"] == pytest.approx(3.5 * (3e13 / 1e13) ** slope)


def test_a_baseline_that_cannot_be_formed_says_why():
    t = pd.DataFrame(
        {
            "trial": ["a", "b", "c"],
            "N": [1e6, 2e6, 1e6],
            "C": [1e12, 1e12, 3e12],
            "val_nelbo": [5.0, 4.8, 4.0],
        }
    ).assign(D=lambda d: d.C / (6 * d.N))
    r = backtest(t, "val_nelbo", holdout_top=1, n_boot=0)
    assert r["laws"] == {}
    assert r["baselines"]["best_observed"]["points"][0]["predicted"] == 5.0
    assert "fewer than two budgets below 3e+12" in r["baselines_refused"]["loglog_line"]
    assert _strict_json(json.dumps(r))


def test_holdout_by_size_holds_out_the_largest_size_at_every_budget_as_well_as_the_largest_budget():
    from analysis.backtest import split_holdout

    t = S.demo_like_table()
    n_max, c_top = t["N"].max(), t["C"].max()
    train, test = split_holdout(t, holdout_above=c_top * 0.9, holdout_n_above=n_max * 0.99)
    held = t[test]
    assert set(held.index) == set(t.index[(t["C"] > c_top * 0.9) | (t["N"] > n_max * 0.99)])
    assert (held["N"] == n_max).sum() == (t["N"] == n_max).sum()  # every budget of the largest size
    assert not (t[train]["N"] > n_max * 0.99).any() and not (t[train]["C"] > c_top * 0.9).any()
    only_size = split_holdout(t, holdout_n_above=n_max * 0.99)[1]
    assert list(only_size) == list(t["N"] > n_max * 0.99)  # alone: no default compute hold-out added
    with pytest.raises(F.FitRefused, match="no trial has more than"):
        split_holdout(t, holdout_n_above=n_max * 2)
    res = backtest(t, "val_nelbo", holdout_above=c_top * 0.9, holdout_n_above=n_max * 0.99, n_boot=20)
    assert res["n_test"] == int(test.sum()) and res["threshold_N"] < n_max
    assert res["held_out_by"] == f"C > {c_top * 0.9:.3g} or N > {n_max * 0.99:.3g}"
