"""One self-contained HTML report: plots inlined as base64 PNG (SVGs written beside it), fit tables, the
backtest, an allocation example, the data table, and a plain section listing every fit that was refused
and why. ``log_report_to_mlflow`` puts the folder on the sweep's parent run so the MLflow UI shows it."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import plots
from analysis.allocate import allocate
from analysis.backtest import backtest
from analysis.envelope import envelope_html
from analysis.fit import FitRefused, FitResult
from analysis.predict import DEFAULT_LOSS, DEFAULT_QUALITY
from analysis.suite import c_range, k_of, run_suite
from analysis.table import log_artifacts

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}.refused{background:#fff4e5;padding:.5em 1em;border-left:4px solid #f90}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}code{background:#f3f3f3;padding:0 3px}
"""


def _fmt(v: Any) -> str:
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, int | float | np.floating | np.integer):
        v = float(v)
        if not np.isfinite(v):
            return "–"
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    b = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{b}</table>"


def _fit_table(f: FitResult) -> str:
    rows = [
        [k, v, f.ci.get(k, (np.nan, np.nan))[0], f.ci.get(k, (np.nan, np.nan))[1]]
        for k, v in f.params.items()
    ]
    res = ", ".join(f"{k} {_fmt(v)}" for k, v in f.residuals.items())
    return (
        f"<h3>{html.escape(f.name)}</h3><p>{f.n_points} points; {int(f.level * 100)}% bootstrap intervals "
        f"({len(next(iter(f.samples.values()))) if f.samples else 0} resamples); residuals: {res}</p>"
        + _table(["parameter", "value", "low", "high"], rows)
    )


def _img(png: Path) -> str:
    data = base64.b64encode(Path(png).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(Path(png).stem)}">'


def write_report(
    table: pd.DataFrame,
    out_dir: str | Path,
    *,
    metric: str = DEFAULT_LOSS,
    quality: str | None = DEFAULT_QUALITY,
    curves: pd.DataFrame | None = None,
    n_boot: int = 200,
    holdout_top: int | None = None,
    holdout_above: float | None = None,
    seed: int = 0,
    title: str | None = None,
    exact_count: bool = True,
) -> Path:
    """Run every applicable fit, draw the plots, write ``out_dir/report.html`` (+ PNG/SVG, ``fits.json``,
    ``table.csv``). Returns the HTML path. The allocation's config is always sized with ``model.counting``;
    ``exact_count`` is accepted for existing callers and has no effect (see ``allocate.nearest_config``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = run_suite(table, metric, curves=curves, quality=quality, n_boot=n_boot, seed=seed)
    t = s.table
    parts: list[str] = []
    images: list[Path] = []
    refused = dict(s.refused)

    def plot(key: str, fn):
        try:
            images.append(fn())
        except Exception as e:  # a plot must never sink the report; say what failed
            refused[f"plot {key}"] = f"could not be drawn: {type(e).__name__}: {e}"

    src = table.attrs.get("source", "table")
    parts.append(f"<h1>{html.escape(title or 'Scaling report')}</h1>")
    parts.append(
        f"<p>Source: <code>{html.escape(str(src))}</code>. Metric: <code>{html.escape(metric)}</code>. "
        f"{len(t)} finished trials of {len(table)}. Generated {_dt.datetime.now().isoformat(timespec='seconds')}.</p>"
    )
    if s.notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in s.notes) + "</ul>")
    parts.append(
        envelope_html(s.envelope)
    )  # the best lr per point, edge winners flagged ("" without lr axis)

    # fits
    parts.append("<h2>Fits</h2>")
    for key in (
        "approach3",
        "approach2",
        "approach1",
        "L(C) frontier",
        "data_constrained",
        "efficiency",
        "transfer",
    ):
        if key in s.fits:
            parts.append(_fit_table(s.fits[key]))
    for fits in s.per_group.values():
        for f in fits.values():
            parts.append(_fit_table(f))
    sat_key = next((k for k in s.fits if k.endswith("saturating")), None)
    if sat_key:
        f = s.fits[sat_key]
        parts.append(_fit_table(f))
        xmax = f.meta["x_max"]
        xs = np.array([2.0, 10.0, 100.0]) * xmax
        lo, hi = f.interval(xs, level=0.9)
        rows = [
            [f"{m:g}x max compute ({x:.3g} FLOPs)", p, a, b]
            for m, x, p, a, b in zip((2, 10, 100), xs, f.predict(xs), lo, hi, strict=True)
        ]
        if s.two_step is not None:
            ch = s.two_step.predict_budget(xs, k=k_of(t), level=0.9)
            rows = [
                r + [m, a, b] for r, m, a, b in zip(rows, ch["metric"], ch["low"], ch["high"], strict=True)
            ]
            parts.append(
                "<p>Direct saturating fit beside the two-step chain (compute-optimal N, D at each budget), 90% intervals:</p>"
            )
            parts.append(_table(["budget", "direct", "low", "high", "chained", "low", "high"], rows))
        else:
            parts.append(_table(["budget", "predicted", "low", "high"], rows))
    if s.two_step is not None:
        parts.append(
            f"<h3>Two-step: {html.escape(s.two_step.loss)} &rarr; {html.escape(s.two_step.metric)}</h3>"
        )
        parts.append(_fit_table(s.two_step.step2))

    # plots
    k = k_of(t) if len(t) else 6.0
    if "approach3" in s.fits:
        plot("pred_vs_obs", lambda: plots.predicted_vs_observed(t, metric, s.fits["approach3"], out))
    for key, name in (("L(N)", "loss_vs_N"), ("L(D)", "loss_vs_D")):
        if key in s.per_group:
            x = "N" if key == "L(N)" else "D"
            plot(
                name,
                lambda key=key, name=name, x=x: plots.loss_vs_x(
                    t, metric, x, s.group_cols[key], s.per_group[key], out, name
                ),
            )
    if "approach2" in s.fits:
        plot("isoflop", lambda: plots.isoflop(t, metric, s.fits["approach2"], out))
    alloc_fits = {kk: s.fits[kk] for kk in ("approach1", "approach2") if kk in s.fits}
    if alloc_fits or "approach3" in s.fits:
        plot("allocation", lambda: plots.allocation(alloc_fits, s.fits.get("approach3"), k, c_range(t), out))
    if "C" in t.columns and metric in t.columns and len(t):
        plot("frontier", lambda: plots.frontier(t, metric, s.fits.get("L(C) frontier"), out))
    ft = s.full_table if s.full_table is not None else t
    if "pretrain_hours" in ft.columns and metric in ft.columns:
        plot("pretrain_vs_scratch", lambda: plots.pretrain_vs_scratch(ft, metric, out))
    if sat_key:
        plot("quality_vs_compute", lambda: plots.quality_vs_compute(t, quality, s.fits[sat_key], out))

    # backtest
    bt = None
    try:
        bt = backtest(
            t, metric, holdout_top=holdout_top, holdout_above=holdout_above, n_boot=n_boot, seed=seed
        )
        plot("backtest", lambda: plots.backtest_plot(bt, t, out))
    except FitRefused as e:
        refused["backtest"] = e.reason

    # allocation example at 10x the largest compute
    alloc = None
    if "approach3" in s.fits:
        try:
            alloc = allocate(
                s.fits["approach3"],
                budget=10 * c_range(t)[1],
                table=t,
                two_step=s.two_step,
                exact_count=exact_count,
            )
        except FitRefused as e:
            refused["allocation"] = e.reason
        except Exception as e:  # nearest-config counting builds nets; report, don't crash
            refused["allocation"] = f"{type(e).__name__}: {e}"

    parts.append("<h2>Plots</h2>" + "".join(_img(p) for p in images))
    if bt is not None:
        parts.append(
            f"<h2>Backtest</h2><p>Fitted on {bt['n_train']} trials with C &le; {bt['threshold_C']:.3g}; "
            f"{bt['n_test']} held out; {int(bt['level'] * 100)}% prediction intervals.</p>"
        )
        rows = [[law, r["mean_abs_rel_error"], r["coverage"]] for law, r in bt["laws"].items()]
        parts.append(_table(["law", "mean abs rel error", "coverage"], rows))
        rows = [
            [
                law,
                p["trial"],
                p["observed"],
                p["predicted"],
                p["low"],
                p["high"],
                p["rel_error"],
                p["covered"],
            ]
            for law, r in bt["laws"].items()
            for p in r["points"]
        ]
        parts.append(
            _table(["law", "trial", "observed", "predicted", "low", "high", "rel error", "covered"], rows)
        )
        for law, why in bt["refused"].items():
            refused[f"backtest {law}"] = why
    if alloc is not None:
        parts.append("<h2>Allocation at 10x the largest trial's compute</h2>")
        rows = [
            [kk, v if not isinstance(v, list) else f"[{_fmt(v[0])}, {_fmt(v[1])}]"]
            for kk, v in alloc.items()
            if kk != "config"
        ]
        rows += [[f"config.{kk}", v] for kk, v in alloc["config"].items()]
        parts.append(_table(["quantity", "value"], rows))

    parts.append("<h2>Not enough data for</h2>")
    if refused:
        parts.append(
            '<div class="refused"><ul>'
            + "".join(
                f"<li><b>{html.escape(kk)}</b> because {html.escape(v)}</li>" for kk, v in refused.items()
            )
            + "</ul></div>"
        )
    else:
        parts.append("<p>Every fit ran.</p>")

    cols = [
        c
        for c in ("trial", "status", "N", "D", "C", "data_hours", metric, quality)
        if c and c in table.columns
    ]
    cols += [c for c in table.columns if str(c).startswith("axis.") and c not in cols]
    parts.append("<h2>Data</h2>" + _table(cols, table[cols].values.tolist()))

    doc = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title or 'Scaling report')}</title>"
        f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    )
    path = out / "report.html"
    path.write_text(doc, encoding="utf-8")
    summary = s.to_dict()
    summary["refused"] = refused
    summary["backtest"] = bt
    summary["allocation"] = alloc
    (out / "fits.json").write_text(json.dumps(summary, indent=2, default=_json_default), encoding="utf-8")
    table.to_csv(out / "table.csv", index=False)
    return path


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def log_report_to_mlflow(parent_run_id: str, report_dir: str | Path, tracking_uri: str | None = None) -> None:
    """Upload the report folder as artifacts ``report/`` of the sweep's parent run."""
    log_artifacts(parent_run_id, report_dir, tracking_uri, artifact_path="report")
