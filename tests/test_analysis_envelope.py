"""The learning-rate envelope (analysis.envelope): the best lr per (size, budget, data) point, edge winners
flagged, and the fits / report / backtest running on the collapsed table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.envelope import collapse_lr, envelope_html

LRS = (1e-4, 3e-4, 1e-3)


def _law(n, c, lr, best_lr):
    """A loss that falls with N and C and is a parabola in log lr around ``best_lr``."""
    return 1.0 + 50.0 / n**0.3 + 80.0 / c**0.1 + 0.2 * (np.log10(lr) - np.log10(best_lr)) ** 2


def _table(best, budgets=(1e11, 3e11)):
    """Trials over width x budget x lr x 2 seeds; ``best[(width, budget)]`` is that point's best lr."""
    rows = []
    for width, n in ((16, 2e5), (32, 5e5)):
        for budget in budgets:
            for lr in LRS:
                for seed in (0, 1):
                    loss = _law(n, budget, lr, best[(width, budget)]) + 0.001 * seed
                    rows.append(
                        {
                            "trial": f"w{width}-b{budget:.0e}-lr{lr:.0e}-s{seed}",
                            "axis.width": width,
                            "axis.compute_budget": budget,
                            "axis.lr": lr,
                            "axis.seed": seed,
                            "train.learning_rate": lr,
                            "N": n,
                            "C": budget,
                            "D": budget / n / 6,
                            "val_nelbo": loss,
                            "status": "finished",
                        }
                    )
    return pd.DataFrame(rows)


BEST = {(16, 1e11): 3e-4, (16, 3e11): 3e-4, (32, 1e11): 3e-4, (32, 3e11): 1e-4}


def test_collapse_keeps_the_best_lr_per_point_with_all_its_seeds():
    table = _table(BEST)
    out, env = collapse_lr(table, "val_nelbo")
    assert env.collapsed and env.lr_col == "axis.lr"
    assert env.point_cols == ["axis.width", "axis.compute_budget"]  # seed and lr are not part of a point
    assert len(out) == 4 * 2 and env.n_before == 24 and env.n_after == 8
    for (w, b), lr in BEST.items():
        kept = out[(out["axis.width"] == w) & (out["axis.compute_budget"] == b)]
        assert set(kept["axis.lr"]) == {lr} and sorted(kept["axis.seed"]) == [0, 1]
    won = env.points.set_index(["axis.width", "axis.compute_budget"])
    assert won.loc[(32, 3e11), "lr"] == 1e-4 and won.loc[(16, 1e11), "lr"] == 3e-4
    assert won.loc[(16, 1e11), "val_nelbo"] == pytest.approx(
        np.mean([_law(2e5, 1e11, 3e-4, 3e-4) + 0.001 * s for s in (0, 1)])
    )
    assert (won["n_lr"] == 3).all() and (won["lr_min"] == 1e-4).all() and (won["lr_max"] == 1e-3).all()


def test_edge_winners_are_flagged_and_interior_ones_are_not():
    out, env = collapse_lr(_table({**BEST, (16, 3e11): 1e-2}), "val_nelbo")
    edges = env.edge_points.set_index(["axis.width", "axis.compute_budget"])["edge"].to_dict()
    # (32, 3e11): best is the smallest lr tried; (16, 3e11): the true best (1e-2) lies above the grid
    assert edges == {(32, 3e11): "smallest", (16, 3e11): "largest"}
    assert any("not bracketed at 2 of 4 points" in n for n in env.notes), env.notes
    html = envelope_html(env)
    assert "Learning-rate envelope" in html and html.count("<b>edge:") == 2 and "edge: largest" in html


def test_ties_go_to_the_smaller_lr_whatever_the_row_order():
    t = pd.DataFrame(
        {
            "trial": ["a", "b", "c"],
            "N": [1e5] * 3,
            "axis.compute_budget": [1e11] * 3,
            "axis.lr": [3e-4, 1e-4, 1e-3],
            "val_nelbo": [2.0, 2.0, 2.5],
        }
    )
    for order in ([0, 1, 2], [2, 1, 0], [1, 0, 2]):
        out, env = collapse_lr(t.iloc[order].reset_index(drop=True), "val_nelbo")
        assert list(out["trial"]) == ["b"] and env.points["edge"].tolist() == ["smallest"]


def test_mean_over_seeds_picks_the_lr_not_a_lucky_seed():
    t = pd.DataFrame(
        {
            "trial": ["a0", "a1", "b0", "b1"],
            "axis.width": [16] * 4,
            "axis.seed": [0, 1, 0, 1],
            "axis.lr": [1e-4, 1e-4, 1e-3, 1e-3],
            "val_nelbo": [1.0, 3.0, 1.5, 1.6],  # lr 1e-4 has the single best trial, 1e-3 the better mean
        }
    )
    out, _ = collapse_lr(t, "val_nelbo")
    assert list(out["trial"]) == ["b0", "b1"]


def test_one_lr_per_point_leaves_the_table_unchanged():
    t = _table(BEST)
    single = t[t["axis.lr"] == 3e-4].reset_index(drop=True)
    out, env = collapse_lr(single, "val_nelbo")
    assert not env.collapsed and out is single and env.notes == [] and envelope_html(env) == ""
    # a table without any lr column, or without the metric: unchanged too
    out, env = collapse_lr(single.drop(columns=["axis.lr", "train.learning_rate"]), "val_nelbo")
    assert not env.collapsed and len(out) == len(single)
    assert collapse_lr(single, "no_such_metric")[0] is single


def test_file_table_without_axes_groups_by_size_budget_and_data():
    t = pd.DataFrame(
        {
            "N": [1e5, 1e5, 1e5, 1e5],
            "compute_budget": [1e11] * 4,
            "data_hours": [0.1, 0.1, 0.2, 0.2],
            "lr": [1e-4, 1e-3, 1e-4, 1e-3],
            "loss": [2.0, 1.9, 1.7, 1.8],
        }
    )
    out, env = collapse_lr(t, "loss")
    assert env.point_cols == ["N", "compute_budget", "data_hours"]
    assert out["lr"].tolist() == [1e-3, 1e-4]  # per data size its own winner


def test_suite_report_and_cli_fit_on_the_collapsed_table(tmp_path):
    from typer.testing import CliRunner

    from analysis.report import write_report
    from analysis.suite import run_suite
    from orchestrator.cli import app

    table = _table(BEST)
    s = run_suite(table, "val_nelbo", approaches=("3",), singles=False, quality=None, n_boot=0)
    assert s.envelope.collapsed and len(s.table) == 8 and set(s.table["trial"]) <= set(table["trial"])
    assert any(n.startswith("lr envelope:") for n in s.notes)
    assert s.to_dict()["envelope"]["n_after"] == 8
    html = write_report(table, tmp_path / "rep", metric="val_nelbo", quality=None, n_boot=0).read_text()
    assert "Learning-rate envelope" in html and "edge: smallest" in html
    p = tmp_path / "t.csv"
    table.to_csv(p, index=False)
    res = CliRunner().invoke(app, ["fit", str(p), "--n-boot", "0", "--approach", "all", "--json"])
    out = json.loads(res.output)
    assert res.exit_code == (0 if out["fits"] else 2), res.output  # exit 2: every fit refused (8 trials)
    assert out["envelope"]["n_after"] == 8 and out["envelope"]["lr_col"] == "axis.lr"
    # backtest: 3 budgets x 2 widths x 2 seeds kept of 36 trials; 2 held out
    wide = _table({**BEST, (16, 1e12): 3e-4, (32, 1e12): 1e-4}, budgets=(1e11, 3e11, 1e12))
    wide.to_csv(p, index=False)
    res = CliRunner().invoke(app, ["backtest", str(p), "--n-boot", "0", "--holdout-top", "2", "--json"])
    assert res.exit_code == 0, res.output
    bt = json.loads(res.output)
    assert (bt["n_train"], bt["n_test"]) == (10, 2)
