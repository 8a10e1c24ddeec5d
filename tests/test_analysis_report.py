"""Plots, the self-contained HTML report, allocation, and the CLI's JSON shapes."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pytest
from typer.testing import CliRunner

from analysis import synthetic as S
from orchestrator.cli import app


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.tags = [], 0

    def handle_starttag(self, tag, attrs):
        self.tags += 1
        if tag == "img":
            self.srcs.append(dict(attrs).get("src", ""))


@pytest.fixture(scope="module")
def sweep_csv(tmp_path_factory):
    d = tmp_path_factory.mktemp("tables")
    t = S.sweep_table(seed=7)
    p = d / "sweep.csv"
    t.to_csv(p, index=False)
    return p


@pytest.fixture(scope="module")
def report_dir(sweep_csv, tmp_path_factory):
    import pandas as pd

    from analysis.report import write_report
    from analysis.table import read_file

    out = tmp_path_factory.mktemp("report")
    t = read_file(sweep_csv)
    t = pd.concat(
        [t, t.iloc[[0]].assign(trial="failed1", status="failed", val_nelbo=np.nan)], ignore_index=True
    )
    write_report(t, out, n_boot=10, holdout_top=6, exact_count=False)
    return out


def test_report_is_self_contained_html_with_every_plot_embedded(report_dir):
    html = (report_dir / "report.html").read_text()
    p = _Images()
    p.feed(html)
    pngs = sorted(report_dir.glob("*.png"))
    assert len(pngs) >= 7  # pred_vs_obs, loss_vs_N, loss_vs_D, allocation, frontier, quality, backtest
    assert len(p.srcs) == len(pngs)
    assert all(s.startswith("data:image/png;base64,") and len(s) > 2000 for s in p.srcs)
    for png in pngs:
        assert png.stat().st_size > 5000 and png.with_suffix(".svg").stat().st_size > 5000
    for section in ("approach3", "Backtest", "Not enough data for", "Allocation", "Data", "Two-step"):
        assert section in html
    # a grid sweep has no IsoFLOP budgets: refused, with the reason, not silently dropped
    assert "approach2" in html and "interior IsoFLOP minimum" in html
    assert "1 trials not finished" in html
    fits = json.loads((report_dir / "fits.json").read_text())
    assert fits["fits"]["approach3"]["n_points"] == 42
    assert fits["backtest"]["n_test"] == 6


def test_plots_for_isoflop_and_approach1(tmp_path):
    from analysis import fit as F
    from analysis import plots

    df = S.isoflop_table(np.geomspace(1e19, 1e21, 4), n_per=7, seed=1)
    a2 = F.fit_approach2(df.N, df.D, df.C, df.L, budgets=df.budget, n_boot=20)
    cv = S.curves_table(np.geomspace(1e8, 1e10, 8), D_max=5e11)
    a1 = F.fit_approach1(cv, n_boot=10)
    for png in (
        plots.isoflop(df, "L", a2, tmp_path),
        plots.allocation({"approach1": a1, "approach2": a2}, None, 6.0, (1e19, 1e21), tmp_path),
    ):
        assert png.stat().st_size > 10000 and png.with_suffix(".svg").exists()


def test_allocate_budget_and_gpu_hours():
    from analysis.allocate import allocate, gpu_throughput
    from analysis.fit import FitRefused, fit_approach3
    from analysis.predict import two_step_from_table
    from analysis.throughput import ACCELERATORS, VITS_MFU

    t = S.sweep_table(seed=8)
    f = fit_approach3(t.N, t.D, t.val_nelbo, n_boot=30)
    ts = two_step_from_table(t, n_boot=20)
    r = allocate(f, budget=1e16, table=t, two_step=ts, exact_count=False)
    assert r["k"] == pytest.approx(40.0)
    assert r["N_opt"] * r["D_opt"] * 40.0 == pytest.approx(1e16, rel=1e-6)
    assert r["N_opt_ci"][0] <= r["N_opt"] <= r["N_opt_ci"][1]
    assert r["metric_ci"][0] <= r["metric"] <= r["metric_ci"][1] and 1.0 <= r["metric"] <= 5.0
    assert abs(np.log(r["config"]["N"] / r["N_opt"])) < 0.35
    g = allocate(f, gpu_hours=2.0, gpu="h100", table=t, exact_count=False)
    assert g["budget_flops"] == pytest.approx(2 * 3600 * ACCELERATORS["h100"].bf16 * VITS_MFU)
    assert g["throughput_source"].startswith("assumed")
    t2 = t.assign(gpu="NVIDIA H100 80GB HBM3", wall_s=t["C"] / 3e14)
    tp, src = gpu_throughput("h100", t2)
    assert tp == pytest.approx(3e14) and src.startswith("measured")
    t3 = t2.assign(steps_per_s=2.0, flops_per_step=1e14)
    assert gpu_throughput("H100", t3)[0] == pytest.approx(2e14)
    assert gpu_throughput("a100", t3)[1].startswith("assumed")  # no trial on an A100
    with pytest.raises(FitRefused, match="unknown accelerator .tpu9.; known: .*h100"):
        gpu_throughput("tpu9", t3)


def _run(args):
    res = CliRunner().invoke(app, args)
    return res


def test_cli_fit_json_shape_for_a_csv(tmp_path):
    df = S.chinchilla_points(80, seed=2).rename(columns={"N": "params", "D": "tokens", "L": "loss"})
    p = tmp_path / "c.csv"
    df.to_csv(p, index=False)
    res = _run(
        [
            "fit",
            str(p),
            "--n-col",
            "params",
            "--d-col",
            "tokens",
            "--metric",
            "loss",
            "--approach",
            "3",
            "--json",
            "--n-boot",
            "20",
        ]
    )
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    params = {"E", "A", "B", "alpha", "beta", "a", "b"}
    extra = {"verdict", "reasons", "at_bound_share", "level", "n_boot", "n_converged", "n_failed"}
    assert set(obj) == params | {"n_points", "ci"} | extra and obj["n_points"] == 80
    assert set(obj["ci"]) == params and all(len(v) == 2 for v in obj["ci"].values())
    assert obj["verdict"] in ("determined", "undetermined") and isinstance(obj["reasons"], list)
    assert set(obj["at_bound_share"]) == params and obj["level"] == 0.95
    assert obj["n_boot"] == 20 and obj["n_converged"] + obj["n_failed"] == 20
    assert abs(obj["alpha"] - S.CHINCHILLA["alpha"]) < 0.08
    # refused fits exit 2 with the reason
    df.head(5).to_csv(p, index=False)
    res = _run(
        [
            "fit",
            str(p),
            "--n-col",
            "params",
            "--d-col",
            "tokens",
            "--metric",
            "loss",
            "--approach",
            "3",
            "--json",
        ]
    )
    assert res.exit_code == 2 and "too few points" in " ".join(res.output.split())
    res = _run(["fit", str(p), "--n-col", "nope", "--approach", "3"])
    assert res.exit_code == 2 and "no column 'nope'" in " ".join(res.output.split())


def test_cli_backtest_json_shape(sweep_csv):
    res = _run(
        [
            "backtest",
            str(sweep_csv),
            "--metric",
            "val_nelbo",
            "--holdout-top",
            "6",
            "--json",
            "--n-boot",
            "20",
        ]
    )
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert obj["metric"] == "val_nelbo"
    for law in obj["laws"].values():
        assert {"mean_abs_rel_error", "coverage", "points"} <= set(law)
        assert len(law["points"]) == 6
        assert set(law["points"][0]) >= {"trial", "observed", "predicted", "low", "high", "covered"}


def test_cli_allocate_json(sweep_csv):
    res = _run(["allocate", "--budget", "1e16", "--file", str(sweep_csv), "--json", "--n-boot", "20"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert {"N_opt", "D_opt", "loss", "metric", "metric_ci", "config"} <= set(obj)
    res = _run(["allocate", "--budget", "1e16"])
    assert res.exit_code == 2 and "--sweep NAME or --file" in " ".join(res.output.split())


def test_nearest_config_is_the_closest_candidate_counted_by_model_counting():
    counting = pytest.importorskip("model.counting")
    from analysis.allocate import nearest_config, variant
    from model.config import ModelConfig, TrialConfig

    def counted(w, d):
        cfg = TrialConfig(model=variant(ModelConfig(), w, d))
        return counting.parameter_counts(cfg)["generator"]["total"]

    base = ModelConfig()
    aspect0 = base.n_layers / base.hidden_channels
    target, widths, depths = 2.2e7, (64, 96, 128, 192), (2, 3, 6)
    c = nearest_config(target, widths=widths, depths=depths)
    assert c["N"] == counted(c["width"], c["depth"]) and c["width"] % c["heads"] == 0
    # every candidate counted exactly: the chosen one has the best score (log distance + aspect preference)
    score = {
        (w, d): abs(np.log(counted(w, d) / target)) + 0.02 * abs(np.log((d / w) / aspect0))
        for w in widths
        for d in depths
    }
    assert (c["width"], c["depth"]) == min(score, key=score.get)
    full = nearest_config(4e7)  # the whole default grid
    assert full["N"] == counted(full["width"], full["depth"]) and abs(np.log(full["N"] / 4e7)) < 0.05


def test_allocate_refuses_when_loss_does_not_fall_with_N():
    """A demo-sized sweep can give alpha = 0 (bigger models got fewer steps and were not better): no
    compute-optimal split exists, and allocate must say so instead of dividing by zero."""
    import dataclasses

    from analysis.allocate import allocate
    from analysis.fit import FitRefused, fit_approach3

    t = S.sweep_table(seed=8)
    f = fit_approach3(t.N, t.D, t.val_nelbo, n_boot=0)
    flat = dataclasses.replace(f, params={**f.params, "alpha": 0.0}, samples={})
    with pytest.raises(FitRefused, match="alpha = 0.*does not fall with N"):
        allocate(flat, budget=1e16, table=t, exact_count=False)


def test_nearest_config_varies_the_sweeps_own_architecture():
    """The allocation's nearest config is a variant of what the sweep trained (read back from its params,
    which MLflow stores as strings), not of the public full-size model."""
    import pandas as pd

    from analysis.allocate import base_model_from_table, nearest_config
    from model.config import flatten, tiny_config
    from model.counting import parameter_counts

    cfg = tiny_config()
    row = {k: str(v) for k, v in flatten(cfg.to_dict()).items() if k.startswith(("model.", "data."))}
    base = base_model_from_table(pd.DataFrame([row]))
    assert base.model == cfg.model and base.data.hop_length == cfg.data.hop_length
    target = parameter_counts(cfg)["generator"]["total"]
    out = nearest_config(target, base)
    assert abs(np.log(out["N"] / target)) < 0.5, out


def test_cli_allocate_reads_renamed_columns_and_prints_no_internal_names(sweep_csv, tmp_path):
    """N, D, C under other names are read through --n-col/--d-col/--c-col (the same options as fit, backtest,
    report); the printed table labels rows in words, not with field names or module paths."""
    import pandas as pd

    p = tmp_path / "renamed.csv"
    pd.read_csv(sweep_csv).rename(columns={"N": "params", "D": "seconds", "C": "flops"}).to_csv(
        p, index=False
    )
    args = ["allocate", "--gpu-hours", "10", "--gpu", "h200", "--file", str(p), "--n-boot", "20"]
    res = _run([*args, "--n-col", "params", "--d-col", "seconds", "--c-col", "flops"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "FLOPs per parameter per audio second" in out and "median C/(N*D) over 42 trials" in out
    assert "H200 SXM dense bf16 peak 9.89e+14" in out and "MFU 0.015" in out
    for internal in ("counted_by", "model.counting", "config.", "_ci", "N_opt", "budget_flops", "k_source"):
        assert internal not in out, internal
    for cmd in ("fit", "allocate", "backtest", "report"):  # one way to name columns, on every table command
        h = " ".join(_run([cmd, "--help"]).output.split())
        assert all(o in h for o in ("--n-col", "--d-col", "--c-col")), cmd
